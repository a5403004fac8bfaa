package kafkautil

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

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/stacklens/stacklens/internal/config"
)

// selfSigned writes a CA-signed-by-itself server certificate for 127.0.0.1.
func selfSigned(t *testing.T) (certFile, keyFile string, cert tls.Certificate) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kfake"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, err = tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, cert
}

func listTopics(t *testing.T, c config.Kafka, addr string) error {
	t.Helper()
	d, err := Dialer(c)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.ReadPartitions("t")
	return err
}

func TestSASLMechanismsAgainstBroker(t *testing.T) {
	cl, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"), kfake.EnableSASL(),
		kfake.Superuser("PLAIN", "plainuser", "plainpw"),
		kfake.Superuser("SCRAM-SHA-256", "s256", "pw256"),
		kfake.Superuser("SCRAM-SHA-512", "s512", "pw512"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	addr := cl.ListenAddrs()[0]
	for _, tc := range []struct{ mech, user, pw string }{
		{"PLAIN", "plainuser", "plainpw"}, {"SCRAM-SHA-256", "s256", "pw256"}, {"SCRAM-SHA-512", "s512", "pw512"},
	} {
		good := config.Kafka{SASLMechanism: tc.mech, SASLUsername: tc.user, SASLPassword: tc.pw}
		if err := listTopics(t, good, addr); err != nil {
			t.Errorf("%s with the right password: %v", tc.mech, err)
		}
		bad := good
		bad.SASLPassword = "wrong"
		if err := listTopics(t, bad, addr); err == nil {
			t.Errorf("%s with a wrong password was accepted", tc.mech)
		}
	}
	if err := listTopics(t, config.Kafka{}, addr); err == nil {
		t.Error("no SASL accepted by a SASL broker")
	}
	tr, err := Transport(config.Kafka{SASLMechanism: "PLAIN", SASLUsername: "plainuser", SASLPassword: "plainpw"})
	if err != nil || tr.SASL == nil {
		t.Fatalf("transport %v %v", tr, err)
	}
	w := &kafka.Writer{Addr: kafka.TCP(addr), Topic: "t", Transport: tr, RequiredAcks: kafka.RequireAll}
	if err := w.WriteMessages(context.Background(), kafka.Message{Value: []byte("x")}); err != nil {
		t.Errorf("write through the SASL transport: %v", err)
	}
	_ = w.Close()
}

func TestTLSAgainstBroker(t *testing.T) {
	certFile, keyFile, cert := selfSigned(t)
	cl, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"), kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	addr := cl.ListenAddrs()[0]
	if err := listTopics(t, config.Kafka{TLS: true, TLSCAFile: certFile}, addr); err != nil {
		t.Errorf("TLS with the CA: %v", err)
	}
	if err := listTopics(t, config.Kafka{TLS: true, TLSCAFile: certFile, TLSCertFile: certFile, TLSKeyFile: keyFile}, addr); err != nil {
		t.Errorf("TLS with a client certificate: %v", err)
	}
	if err := listTopics(t, config.Kafka{TLS: true}, addr); err == nil {
		t.Error("an unknown CA was trusted")
	}
	if err := listTopics(t, config.Kafka{TLS: true, TLSSkipVerify: true}, addr); err != nil {
		t.Errorf("skip-verify: %v", err)
	}
}

func TestBadFilesNameTheVariable(t *testing.T) {
	junk := filepath.Join(t.TempDir(), "junk.pem")
	_ = os.WriteFile(junk, []byte("not pem"), 0o600)
	for _, tc := range []struct {
		c    config.Kafka
		want string
	}{
		{config.Kafka{TLS: true, TLSCAFile: "/nonexistent"}, "KAFKA_TLS_CA_FILE"},
		{config.Kafka{TLS: true, TLSCAFile: junk}, "KAFKA_TLS_CA_FILE"},
		{config.Kafka{TLS: true, TLSCertFile: junk, TLSKeyFile: junk}, "KAFKA_TLS_CERT_FILE"},
		{config.Kafka{SASLMechanism: "GSSAPI", SASLUsername: "u"}, "KAFKA_SASL_MECHANISM"},
		{config.Kafka{SASLMechanism: "PLAIN"}, "KAFKA_SASL_USERNAME"},
	} {
		_, err1 := Dialer(tc.c)
		_, err2 := Transport(tc.c)
		for _, err := range []error{err1, err2} {
			var ce *config.Error
			if !errors.As(err, &ce) || ce.Var != tc.want {
				t.Errorf("%+v: %v, want an error naming %s", tc.c, err, tc.want)
			}
		}
	}
	if tc, err := TLSConfig(config.Kafka{}); tc != nil || err != nil {
		t.Error("TLS off should give nil")
	}
}
