// Package kafkautil builds kafka-go transports and dialers from
// configuration: TLS (CA, client certificate, skip-verify) and SASL
// (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).
package kafkautil

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/stacklens/stacklens/internal/config"
)

// TLSConfig returns the TLS configuration, or nil when KAFKA_TLS is off.
func TLSConfig(c config.Kafka) (*tls.Config, error) {
	if !c.TLS {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.TLSSkipVerify} //nolint:gosec // opt-in, documented as testing only
	if c.TLSCAFile != "" {
		pem, err := os.ReadFile(c.TLSCAFile)
		if err != nil {
			return nil, &config.Error{Var: "KAFKA_TLS_CA_FILE", Msg: err.Error()}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &config.Error{Var: "KAFKA_TLS_CA_FILE", Msg: "no PEM certificates found"}
		}
		tc.RootCAs = pool
	}
	if c.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
		if err != nil {
			return nil, &config.Error{Var: "KAFKA_TLS_CERT_FILE", Msg: err.Error()}
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// Mechanism returns the SASL mechanism, or nil when none is configured.
// Mechanism names are case-insensitive.
func Mechanism(c config.Kafka) (sasl.Mechanism, error) {
	mech := strings.ToUpper(c.SASLMechanism)
	switch mech {
	case "":
		return nil, nil
	case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
	default:
		return nil, &config.Error{Var: "KAFKA_SASL_MECHANISM", Msg: fmt.Sprintf("unsupported %q", c.SASLMechanism)}
	}
	if c.SASLUsername == "" {
		return nil, &config.Error{Var: "KAFKA_SASL_USERNAME", Msg: "required with KAFKA_SASL_MECHANISM"}
	}
	if mech == "PLAIN" {
		return plain.Mechanism{Username: c.SASLUsername, Password: c.SASLPassword}, nil
	}
	algo := scram.SHA256
	if mech == "SCRAM-SHA-512" {
		algo = scram.SHA512
	}
	m, err := scram.Mechanism(algo, c.SASLUsername, c.SASLPassword)
	if err != nil {
		return nil, &config.Error{Var: "KAFKA_SASL_MECHANISM", Msg: err.Error()}
	}
	return m, nil
}

// Transport is the RoundTripper for kafka.Writer and kafka.Client.
func Transport(c config.Kafka) (*kafka.Transport, error) {
	tc, err := TLSConfig(c)
	if err != nil {
		return nil, err
	}
	m, err := Mechanism(c)
	if err != nil {
		return nil, err
	}
	return &kafka.Transport{TLS: tc, SASL: m, DialTimeout: 10 * time.Second, IdleTimeout: 30 * time.Second}, nil
}

// Dialer is the Dialer for kafka.Reader and consumer groups.
func Dialer(c config.Kafka) (*kafka.Dialer, error) {
	tc, err := TLSConfig(c)
	if err != nil {
		return nil, err
	}
	m, err := Mechanism(c)
	if err != nil {
		return nil, err
	}
	return &kafka.Dialer{Timeout: 10 * time.Second, DualStack: true, TLS: tc, SASLMechanism: m}, nil
}
