package bridge

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

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
	before := progressFigures()
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
	// The progress line's figures: every consumed message was published
	// as an event or dead-lettered (other tests may add to the counters,
	// never subtract).
	after := progressFigures()
	in, out, dead := after["in"]-before["in"], after["out"]-before["out"], after["dead_letters"]-before["dead_letters"]
	if in < 3001 || out < 1 || dead < 1 || out+dead < in {
		t.Errorf("progress figures moved by in %v, out %v, dead_letters %v; want in ≥ 3001 = out + dead_letters", in, out, dead)
	}
	rb.stop(t)
	if rb.ready() == nil {
		t.Error("ready after stop")
	}
}

// progressFigures reads ProgressFigures by name.
func progressFigures() map[string]float64 {
	m := map[string]float64{}
	for _, f := range ProgressFigures() {
		m[f.Name] = f.Value
	}
	return m
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

// TestLingerWithTheSeedBatchTimeout: with the seed's KAFKA_BATCH_SIZE=100
// and KAFKA_BATCH_TIMEOUT_MS=10000, a backlog is still forwarded in full
// batches, the tail of each partition does not wait out the 10 s, and a
// lone message on a quiet topic is published after KAFKA_LINGER, not after
// the batch timeout.
func TestLingerWithTheSeedBatchTimeout(t *testing.T) {
	s := newSetup(t)
	s.env["KAFKA_BATCH_SIZE"] = "100"
	s.env["KAFKA_BATCH_TIMEOUT_MS"] = "10000"
	c := newCorpus()
	const backlog = 3000
	s.produce(c.messages(backlog, 0))
	hwm := s.highWaterMarks()
	js := s.nats.JetStream(t)
	batches0 := batchCount(t)
	t0 := time.Now()
	rb := s.start("a")
	testenv.Eventually(t, 30*time.Second, func() error { return s.caughtUp(js, hwm) })
	took := time.Since(t0)
	// Batches: at most BatchSize events, so ⌈n/100⌉ per partition at best.
	ideal := 0
	for _, end := range hwm {
		ideal += int((end + 99) / 100)
	}
	checkpoints := batchCount(t) - batches0
	t.Logf("backlog of %d forwarded in %v with %d batches (%d at best)", backlog, took.Round(time.Millisecond), checkpoints, ideal)
	if checkpoints > 2*ideal {
		t.Errorf("%d batches for %d messages: batching lost (at best %d)", checkpoints, backlog, ideal)
	}
	if took > 8*time.Second {
		t.Errorf("backlog took %v: a partition's last partial batch waited for the batch timeout", took)
	}
	testenv.Eventually(t, 5*time.Second, rb.ready)

	t1 := time.Now()
	s.produce(c.messages(1, 0))
	s.waitCaughtUp(js, 15*time.Second)
	if d := time.Since(t1); d > 2*time.Second {
		t.Errorf("a lone message took %v with KAFKA_BATCH_TIMEOUT_MS=10000", d)
	} else {
		t.Logf("a lone message took %v", d.Round(time.Millisecond))
	}
	s.verifyExactlyOnce(js, c)
}

// batchCount is the number of batches published so far by this process
// (stacklens_bridge_batch_size_count).
func batchCount(t *testing.T) int {
	t.Helper()
	var buf bytes.Buffer
	metrics.WritePrometheus(&buf, false)
	for _, line := range strings.Split(buf.String(), "\n") {
		if v, ok := strings.CutPrefix(line, "stacklens_bridge_batch_size_count "); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	return 0
}
