package alerting

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"

	"github.com/stacklens/stacklens/internal/config"
)

// kafkaSink writes alert events to the output topic (analytics-alerts):
// key = fingerprint (so one alert's events stay ordered on one partition),
// value = the Event JSON, all in-sync replicas acknowledging.
type kafkaSink struct {
	w       *kafka.Writer
	timeout time.Duration
}

func newKafkaSink(k config.Kafka, timeout time.Duration) (*kafkaSink, error) {
	tr := &kafka.Transport{DialTimeout: timeout, ClientID: "stacklens-alerting", IdleTimeout: time.Minute}
	if k.TLS {
		tc, err := kafkaTLS(k)
		if err != nil {
			return nil, err
		}
		tr.TLS = tc
	}
	mech, err := saslMechanism(k)
	if err != nil {
		return nil, err
	}
	tr.SASL = mech
	return &kafkaSink{timeout: timeout, w: &kafka.Writer{
		Addr:                   kafka.TCP(k.BootstrapServers...),
		Topic:                  k.OutputTopic,
		Balancer:               &kafka.Hash{},
		RequiredAcks:           kafka.RequireAll,
		BatchSize:              500,
		BatchTimeout:           time.Millisecond,
		WriteTimeout:           timeout,
		ReadTimeout:            timeout,
		MaxAttempts:            2,
		WriteBackoffMin:        20 * time.Millisecond,
		WriteBackoffMax:        200 * time.Millisecond,
		AllowAutoTopicCreation: true,
		Transport:              tr,
	}}, nil
}

func (s *kafkaSink) send(ctx context.Context, evs []*Event) []error {
	msgs := make([]kafka.Message, len(evs))
	for i, ev := range evs {
		v, _ := json.Marshal(ev)
		msgs[i] = kafka.Message{Key: []byte(ev.Fingerprint), Value: v, Headers: []kafka.Header{
			{Key: "alert_id", Value: []byte(ev.AlertID)}, {Key: "state", Value: []byte(ev.State)},
		}}
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	err := s.w.WriteMessages(ctx, msgs...)
	errs := make([]error, len(evs))
	if err == nil {
		return errs
	}
	var we kafka.WriteErrors
	if errors.As(err, &we) && len(we) == len(evs) {
		copy(errs, we)
		return errs
	}
	for i := range errs {
		errs[i] = fmt.Errorf("kafka: %w", err)
	}
	return errs
}

func (s *kafkaSink) Close() error { return s.w.Close() }

func kafkaTLS(k config.Kafka) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: k.TLSSkipVerify} //nolint:gosec // operator's explicit choice
	if k.TLSCAFile != "" {
		pem, err := os.ReadFile(k.TLSCAFile)
		if err != nil {
			return nil, &config.Error{Var: "KAFKA_TLS_CA_FILE", Msg: err.Error()}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &config.Error{Var: "KAFKA_TLS_CA_FILE", Msg: "no PEM certificate found"}
		}
		tc.RootCAs = pool
	}
	if k.TLSCertFile != "" || k.TLSKeyFile != "" {
		cert, err := tls.LoadX509KeyPair(k.TLSCertFile, k.TLSKeyFile)
		if err != nil {
			return nil, &config.Error{Var: "KAFKA_TLS_CERT_FILE", Msg: err.Error()}
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

func saslMechanism(k config.Kafka) (sasl.Mechanism, error) {
	switch strings.ToUpper(k.SASLMechanism) {
	case "":
		return nil, nil
	case "PLAIN":
		return plain.Mechanism{Username: k.SASLUsername, Password: k.SASLPassword}, nil
	case "SCRAM-SHA-256", "SCRAM-SHA-512":
		m, err := newSCRAM(strings.ToUpper(k.SASLMechanism), k.SASLUsername, k.SASLPassword)
		if err != nil {
			return nil, &config.Error{Var: "KAFKA_SASL_USERNAME", Msg: err.Error()}
		}
		return m, nil
	}
	return nil, &config.Error{Var: "KAFKA_SASL_MECHANISM", Msg: fmt.Sprintf("unsupported mechanism %q", k.SASLMechanism)}
}
