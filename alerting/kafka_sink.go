package alerting

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/kafkautil"
)

// kafkaSink writes alert events to the output topic (analytics-alerts):
// key = fingerprint (so one alert's events stay ordered on one partition),
// value = the Event JSON, all in-sync replicas acknowledging.
type kafkaSink struct {
	w       *kafka.Writer
	timeout time.Duration
}

func newKafkaSink(k config.Kafka, timeout time.Duration) (*kafkaSink, error) {
	tr, err := kafkautil.Transport(k)
	if err != nil {
		return nil, err
	}
	tr.DialTimeout, tr.ClientID = timeout, "stacklens-alerting"
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
