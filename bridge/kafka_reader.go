package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/kafkautil"
)

// newDialer builds the Kafka dialer from configuration (TLS, SASL PLAIN or
// SCRAM-SHA-256/512; see internal/kafkautil).
func newDialer(k config.Kafka) (*kafka.Dialer, error) {
	d, err := kafkautil.Dialer(k)
	if err != nil {
		return nil, err
	}
	d.ClientID = "stacklens-bridge"
	return d, nil
}

// kafkaLogger adapts kafka-go's printf logger to slog and reports errors
// to the bridge's Kafka readiness.
type kafkaLogger struct {
	log   *slog.Logger
	level slog.Level
	onErr func(error)
}

func (l kafkaLogger) Printf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.log.Log(context.Background(), l.level, "kafka: "+msg)
	if l.onErr != nil {
		l.onErr(errors.New(msg))
	}
}

// newPartitionReader returns a reader of one partition, positioned by the
// caller with SetOffset. MinBytes 1 and a short MaxWait make a quiet topic
// answer at once when a message arrives; QueueCapacity bounds what is
// prefetched while the batch in flight waits for NATS.
func (b *bridge) newPartitionReader(partition int) *kafka.Reader {
	return kafka.NewReader(kafka.ReaderConfig{
		Brokers:          b.cfg.Kafka.BootstrapServers,
		Topic:            b.cfg.Kafka.InputTopic,
		Partition:        partition,
		Dialer:           b.dialer,
		MinBytes:         1,
		MaxBytes:         8 << 20,
		MaxWait:          b.opts.MaxWait,
		ReadBatchTimeout: 10 * time.Second,
		QueueCapacity:    max(2*b.cfg.Kafka.BatchSize, 256),
		ReadLagInterval:  -1,
		ReadBackoffMin:   50 * time.Millisecond,
		ReadBackoffMax:   2 * time.Second,
		MaxAttempts:      3,
		// Reader errors are retried by kafka-go (reconnects with backoff);
		// they are logged, and readiness comes from the probe.
		ErrorLogger: kafkaLogger{log: b.log, level: slog.LevelInfo},
	})
}

// newConsumerGroup joins the bridges' consumer group on the input topic.
func (b *bridge) newConsumerGroup() (*kafka.ConsumerGroup, error) {
	return kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                b.cfg.Kafka.GroupID,
		Brokers:           b.cfg.Kafka.BootstrapServers,
		Dialer:            b.dialer,
		Topics:            []string{b.cfg.Kafka.InputTopic},
		HeartbeatInterval: b.opts.HeartbeatInterval,
		SessionTimeout:    b.opts.SessionTimeout,
		RebalanceTimeout:  b.opts.RebalanceTimeout,
		JoinGroupBackoff:  time.Second,
		StartOffset:       kafka.FirstOffset,
		// Partitions added to the topic trigger a rebalance.
		WatchPartitionChanges:  true,
		PartitionWatchInterval: 10 * time.Second,
		RetentionTime:          7 * 24 * time.Hour,
		Timeout:                10 * time.Second,
		ErrorLogger:            kafkaLogger{log: b.log, level: slog.LevelWarn, onErr: b.setKafkaErr},
	})
}
