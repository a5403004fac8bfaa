package bridge

import (
	"errors"
	"testing"
	"time"

	"github.com/stacklens/stacklens/internal/embedded"
	"github.com/stacklens/stacklens/internal/harness/testenv"
)

// TestBridgeHappyPath: mixed valid and bad messages over 12 partitions end
// up in the stream exactly once, in partition order, bad ones in the DLQ
// with their reason and coordinates; a quiet topic is forwarded promptly.
func TestBridgeHappyPath(t *testing.T) {
	s := newSetup(t)
	c := newCorpus()
	s.produce(c.messages(3000, 7))
	rb := s.start("a")
	js := s.nats.JetStream(t)
	s.waitCaughtUp(js, 60*time.Second)
	testenv.Eventually(t, 5*time.Second, rb.ready)

	// A single message on a quiet topic arrives well under a second.
	t0 := time.Now()
	s.produce(c.messages(1, 0))
	s.waitCaughtUp(js, 10*time.Second)
	if d := time.Since(t0); d > time.Second {
		t.Errorf("a message on a quiet topic took %v", d)
	}
	s.verifyExactlyOnce(js, c)
	rb.stop(t)
	if rb.ready() == nil {
		t.Error("ready after stop")
	}
}

// TestKafkaRestart stops the Kafka broker under the bridge and starts it
// again on the same port and data: the bridge reports not ready, then
// reconnects (readers and group) and forwards the rest exactly once.
func TestKafkaRestart(t *testing.T) {
	port, err := embedded.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := newSetup(t)
	start := func() *embedded.Kafka {
		c, err := embedded.StartKafka(embedded.KafkaOptions{Port: port, DataDir: dir, Topics: []string{s.topic}, Partitions: testPartitions})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	kc := start()
	s.kafka = &testenv.KafkaBroker{Brokers: kc.ListenAddrs(), Cluster: kc}
	s.env["KAFKA_BOOTSTRAP_SERVERS"] = kc.ListenAddrs()[0]
	c := newCorpus()
	s.produce(c.messages(1000, 8))
	rb := s.start("a")
	js := s.nats.JetStream(t)
	s.waitCaughtUp(js, 30*time.Second)
	testenv.Eventually(t, 10*time.Second, rb.ready)

	kc.Close()
	testenv.Eventually(t, 15*time.Second, func() error {
		if rb.ready() == nil {
			return errors.New("still ready with Kafka down")
		}
		return nil
	})
	kc = start()
	defer kc.Close()
	s.produce(c.messages(1000, 8))
	s.waitCaughtUp(js, 60*time.Second)
	testenv.Eventually(t, 15*time.Second, rb.ready)
	rb.stop(t)
	s.verifyExactlyOnce(js, c)
}
