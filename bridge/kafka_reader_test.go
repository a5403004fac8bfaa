package bridge

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/stacklens/stacklens/internal/config"
)

// dialAndList connects with the bridge's dialer and reads the topic's
// partitions (authentication and TLS included).
func dialAndList(t *testing.T, k config.Kafka, addr, topic string) error {
	t.Helper()
	d, err := newDialer(k)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	_, err = conn.ReadPartitions(topic)
	return err
}

// TestKafkaSASL authenticates against a kfake broker with PLAIN,
// SCRAM-SHA-256 and SCRAM-SHA-512, and fails with a wrong password.
func TestKafkaSASL(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(),
		kfake.Superuser("PLAIN", "plain-user", "plain-pass"),
		kfake.Superuser("SCRAM-SHA-256", "scram256", "pass,=256"),
		kfake.Superuser("SCRAM-SHA-512", "scram=512", "pass512"),
		kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	addr := c.ListenAddrs()[0]
	for _, tc := range []struct{ mech, user, pass string }{
		{"PLAIN", "plain-user", "plain-pass"},
		{"SCRAM-SHA-256", "scram256", "pass,=256"},
		{"scram-sha-512", "scram=512", "pass512"},
	} {
		k := config.Kafka{SASLMechanism: tc.mech, SASLUsername: tc.user, SASLPassword: tc.pass}
		if err := dialAndList(t, k, addr, "t"); err != nil {
			t.Errorf("%s: %v", tc.mech, err)
		}
		k.SASLPassword = "wrong"
		if err := dialAndList(t, k, addr, "t"); err == nil {
			t.Errorf("%s: wrong password accepted", tc.mech)
		}
	}
	var ce *config.Error
	if _, err := newDialer(config.Kafka{SASLMechanism: "GSSAPI"}); !errors.As(err, &ce) || ce.Var != "KAFKA_SASL_MECHANISM" {
		t.Errorf("GSSAPI: %v", err)
	}
	if _, err := newDialer(config.Kafka{SASLMechanism: "SCRAM-SHA-256"}); !errors.As(err, &ce) || ce.Var != "KAFKA_SASL_USERNAME" {
		t.Errorf("SCRAM without user: %v", err)
	}
}

// TestKafkaTLS connects over TLS with a CA file, and refuses a bad one.
func TestKafkaTLS(t *testing.T) {
	dir := t.TempDir()
	cert, certFile, keyFile := selfSigned(t, dir)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"),
		kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	addr := c.ListenAddrs()[0]
	k := config.Kafka{TLS: true, TLSCAFile: certFile, TLSCertFile: certFile, TLSKeyFile: keyFile}
	if err := dialAndList(t, k, addr, "t"); err != nil {
		t.Fatalf("tls: %v", err)
	}
	if err := dialAndList(t, config.Kafka{TLS: true}, addr, "t"); err == nil {
		t.Error("unknown CA accepted")
	}
	if err := dialAndList(t, config.Kafka{TLS: true, TLSSkipVerify: true}, addr, "t"); err != nil {
		t.Errorf("skip verify: %v", err)
	}
	var ce *config.Error
	for _, tc := range []struct {
		k   config.Kafka
		env string
	}{
		{config.Kafka{TLS: true, TLSCAFile: filepath.Join(dir, "missing.pem")}, "KAFKA_TLS_CA_FILE"},
		{config.Kafka{TLS: true, TLSCAFile: keyFile + ".empty"}, "KAFKA_TLS_CA_FILE"},
		{config.Kafka{TLS: true, TLSCertFile: certFile}, "KAFKA_TLS_CERT_FILE"},
	} {
		if tc.env == "KAFKA_TLS_CA_FILE" && filepath.Ext(tc.k.TLSCAFile) == ".empty" {
			_ = os.WriteFile(tc.k.TLSCAFile, []byte("no pem here"), 0o600)
		}
		if _, err := newDialer(tc.k); !errors.As(err, &ce) || ce.Var != tc.env {
			t.Errorf("%+v: %v", tc.k, err)
		}
	}
}

func selfSigned(t *testing.T, dir string) (tls.Certificate, string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kfake"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert, certFile, keyFile
}
