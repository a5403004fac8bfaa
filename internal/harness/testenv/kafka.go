package testenv

import (
	"context"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/stacklens/stacklens/internal/embedded"
)

// KafkaBroker is a Kafka-protocol broker for one test: kfake in-process,
// or the external cluster named by KAFKA_BOOTSTRAP_SERVERS.
type KafkaBroker struct {
	Brokers []string
	Cluster *embedded.Kafka // nil for an external broker
}

// Kafka returns a broker for the test. With the embedded broker the topics
// are created with the given partitions; with an external one the caller
// should use unique topic names (see Name) and CreateTopic.
func Kafka(t testing.TB, partitions int, topics ...string) *KafkaBroker {
	t.Helper()
	if ext := os.Getenv("KAFKA_BOOTSTRAP_SERVERS"); ext != "" {
		k := &KafkaBroker{Brokers: strings.Split(ext, ",")}
		for _, tp := range topics {
			k.CreateTopic(t, tp, partitions)
		}
		return k
	}
	c, err := embedded.StartKafka(embedded.KafkaOptions{Topics: topics, Partitions: int32(partitions)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return &KafkaBroker{Brokers: c.ListenAddrs(), Cluster: c}
}

// CreateTopic creates topic with n partitions (no-op when it exists).
func (k *KafkaBroker) CreateTopic(t testing.TB, topic string, n int) {
	t.Helper()
	conn, err := kafka.Dial("tcp", k.Brokers[0])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctrl, err := conn.Controller()
	if err != nil {
		t.Fatal(err)
	}
	cc, err := kafka.Dial("tcp", net.JoinHostPort(ctrl.Host, strconv.Itoa(ctrl.Port)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	err = cc.CreateTopics(kafka.TopicConfig{Topic: topic, NumPartitions: n, ReplicationFactor: 1})
	if err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
}

// Writer returns a producer writing to topic with all acks; closed at
// test end.
func (k *KafkaBroker) Writer(t testing.TB, topic string) *kafka.Writer {
	t.Helper()
	w := &kafka.Writer{
		Addr:         kafka.TCP(k.Brokers...),
		Topic:        topic,
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: 5 * time.Millisecond,
		BatchSize:    1000,
	}
	t.Cleanup(func() { _ = w.Close() })
	return w
}

// Produce writes messages to topic and waits for their acknowledgement.
func (k *KafkaBroker) Produce(t testing.TB, topic string, msgs ...kafka.Message) {
	t.Helper()
	w := k.Writer(t, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
}
