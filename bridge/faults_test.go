package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/segmentio/kafka-go"

	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/natsutil"
)

// healthMessage is the bridge's readiness message ("" when ready).
func (rb *runningBridge) healthMessage() string {
	st, _ := rb.health.Snapshot(context.Background())
	return st[HealthName].Message
}

// waitHealth waits until the readiness message contains sub n times.
func (rb *runningBridge) waitHealth(t *testing.T, sub string, n int) {
	t.Helper()
	testenv.Eventually(t, 20*time.Second, func() error {
		if m := rb.healthMessage(); strings.Count(m, sub) < n {
			return fmt.Errorf("readiness %q", m)
		}
		return nil
	})
}

// stopWithin stops the bridge and fails if it takes longer than d.
func (rb *runningBridge) stopWithin(t *testing.T, d time.Duration) {
	t.Helper()
	began := time.Now()
	rb.stop(t)
	if took := time.Since(began); took > d {
		t.Errorf("stopping took %v, want < %v", took, d)
	}
}

// TestProvisionBlocked: while the event stream cannot be created (an
// operator's stream holds its subjects), the bridge retries, forwards
// nothing and reports not ready; a stop meanwhile returns promptly. Once
// the obstacle is gone it provisions and forwards exactly once.
func TestProvisionBlocked(t *testing.T) {
	s := newSetup(t)
	ctx := testenv.Context(t)
	js := s.nats.JetStream(t)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BLOCK", Subjects: []string{natsutil.EventsPrefix + ">"}}); err != nil {
		t.Fatal(err)
	}
	c := newCorpus()
	s.produce(c.messages(200, 10))

	rb := s.start("a")
	rb.waitHealth(t, "event stream not provisioned", 1)
	rb.stopWithin(t, 5*time.Second)

	rb = s.start("b")
	rb.waitHealth(t, "event stream not provisioned", 1)
	if _, err := js.Stream(ctx, natsutil.StreamEvents); err == nil {
		t.Fatal("event stream created despite the overlap")
	}
	if err := js.DeleteStream(ctx, "BLOCK"); err != nil {
		t.Fatal(err)
	}
	s.waitCaughtUp(js, 30*time.Second)
	testenv.Eventually(t, 10*time.Second, rb.ready)
	rb.stop(t)
	s.verifyExactlyOnce(js, c)
}

// TestUnreadableCheckpoint: a checkpoint that does not decode (and has no
// usable Kafka-Offset header) is never guessed around: its partition
// forwards nothing while the others go on, readiness reports it, and a
// stop meanwhile returns promptly. Once an operator purges it, the
// partition starts over from the beginning and everything is in the
// stream exactly once.
func TestUnreadableCheckpoint(t *testing.T) {
	s := newSetup(t)
	ctx := testenv.Context(t)
	js := s.nats.JetStream(t)
	st, err := natsutil.EnsureEventsStream(ctx, js, s.config().NATS)
	if err != nil {
		t.Fatal(err)
	}
	const bad = 3
	subj := natsutil.OffsetSubject(s.topic, bad)
	if _, err := js.Publish(ctx, subj, []byte("not a checkpoint")); err != nil {
		t.Fatal(err)
	}
	c := newCorpus()
	s.produce(c.messages(400, 10))
	hwm := s.highWaterMarks()
	if hwm[bad] == 0 {
		t.Fatalf("no message in partition %d", bad)
	}
	others := map[int]int64{}
	for p, end := range hwm {
		if p != bad {
			others[p] = end
		}
	}

	rb := s.start("a")
	testenv.Eventually(t, 30*time.Second, func() error { return s.caughtUp(js, others) })
	rb.waitHealth(t, subj, 1)
	if n := countPartition(t, js, bad); n != 0 {
		t.Fatalf("%d messages of partition %d forwarded past an unreadable checkpoint", n, bad)
	}
	rb.stopWithin(t, 10*time.Second)

	if err := st.Purge(ctx, jetstream.WithPurgeSubject(subj)); err != nil {
		t.Fatal(err)
	}
	rb = s.start("b")
	s.waitCaughtUp(js, 30*time.Second)
	rb.stop(t)
	s.verifyExactlyOnce(js, c)
}

// countPartition counts the stream's event and dead-letter messages of a
// Kafka partition.
func countPartition(t *testing.T, js jetstream.JetStream, partition int) int {
	t.Helper()
	n := 0
	for _, m := range readStream(t, js) {
		if !strings.HasPrefix(m.subject, natsutil.OffsetsPrefix) && m.partition == partition {
			n++
		}
	}
	return n
}

// TestStopWhileNATSDown: a bridge holding a fetched batch while NATS is
// down stops within its shutdown grace (the batch is abandoned, not
// acknowledged to Kafka); after NATS is back, another bridge resumes from
// the stream checkpoint and every message is there exactly once.
func TestStopWhileNATSDown(t *testing.T) {
	s := newSetup(t)
	c := newCorpus()
	s.produce(c.messages(200, 10))
	rb := s.start("a")
	js := s.nats.JetStream(t)
	s.waitCaughtUp(js, 30*time.Second)
	s.nats.Shutdown()
	s.produce(c.messages(200, 10))
	// Disconnected, and a worker's batch waits for the connection: both
	// the connection state and the worker report it.
	rb.waitHealth(t, "nats: not connected", 2)
	rb.stopWithin(t, testOptions("a").ShutdownGrace+10*time.Second)
	s.nats.Restart()
	rb = s.start("b")
	s.waitCaughtUp(js, 30*time.Second)
	rb.stop(t)
	s.verifyExactlyOnce(js, c)
}

// TestSubjectCacheBounded: the per-partition cache of service subjects
// stays bounded under unbounded service cardinality, and subjects stay
// right after it is reset.
func TestSubjectCacheBounded(t *testing.T) {
	b := newMessageBuilder("t", 0, 16, event.Limits{MaxBytes: 1 << 20, MaxFutureSkew: time.Hour, Horizon: 24 * time.Hour})
	now := time.Now().UTC()
	for i := range 20000 {
		svc := fmt.Sprintf("svc-%d", i)
		m := &kafka.Message{Value: []byte(fmt.Sprintf(`{"timestamp":%q,"service":%q,"level":"info","latency_ms":1}`, now.Format(time.RFC3339Nano), svc))}
		msg, reason := b.build(m, now)
		if reason != "" {
			t.Fatalf("%s: %s", svc, reason)
		}
		if want := natsutil.EventSubject(event.Shard(svc, 16), svc); msg.Subject != want {
			t.Fatalf("%s: subject %s, want %s", svc, msg.Subject, want)
		}
		if len(b.subjects) > 16384 {
			t.Fatalf("%d subjects cached", len(b.subjects))
		}
	}
}

// TestCollectPositions drives one worker's fetching over the real broker:
// messages before the worker's position (a stale prefetch) are dropped; an
// offset gap (compaction, retention, transaction markers) is skipped and
// forwarding goes on from the offsets that exist; a reader that fails is
// reported as a Kafka error without losing the position.
func TestCollectPositions(t *testing.T) {
	s := newSetup(t)
	c := newCorpus()
	s.produceTo(0, c.messages(10, 0))
	ctx := testenv.Context(t)
	w := newTestBridge(t, s, "a", map[string]string{"KAFKA_BATCH_TIMEOUT_MS": "200"}).newWorker(0)
	w.reader = w.b.newPartitionReader(0)
	defer func() { _ = w.reader.Close() }()

	// Positioned after everything, the reader behind it: nothing to send.
	if err := w.reader.SetOffset(0); err != nil {
		t.Fatal(err)
	}
	w.next = 10
	if b := w.collect(ctx); b != nil {
		t.Fatalf("stale messages batched: %d, offsets %d-%d", b.consumed, b.first, b.last)
	}
	if w.next != 10 {
		t.Fatalf("position moved to %d", w.next)
	}

	// The reader ahead of the position: the batch starts where it is.
	if err := w.reader.SetOffset(5); err != nil {
		t.Fatal(err)
	}
	w.next = 3
	gaps := w.gauges.gaps.Get()
	logs := &testenv.SyncBuffer{}
	w.log = slog.New(slog.NewTextHandler(logs, nil))
	b := w.collect(ctx)
	if b == nil || b.first != 5 || b.last != 9 || b.consumed != 5 || b.events != 5 || w.next != 10 {
		t.Fatalf("batch %+v, next %d", b, w.next)
	}
	if n := w.gauges.gaps.Get() - gaps; n != 1 {
		t.Fatalf("stacklens_bridge_offset_gaps_total rose by %d, want 1", n)
	}
	if !strings.Contains(logs.String(), "level=WARN msg=\"offset gap") {
		t.Fatalf("first gap not logged at warn level: %s", logs.String())
	}
	if len(b.msgs) != 6 || !strings.HasPrefix(b.msgs[5].Subject, natsutil.OffsetsPrefix) {
		t.Fatalf("%d messages, last on %s: want 5 events and the checkpoint", len(b.msgs), b.msgs[len(b.msgs)-1].Subject)
	}

	// A reader that fails (closed): reported, position kept.
	if err := w.reader.Close(); err != nil {
		t.Fatal(err)
	}
	w.seek(7)
	if w.next != 7 {
		t.Fatalf("position %d after a refused seek, want 7", w.next)
	}
	if b := w.collect(ctx); b != nil {
		t.Fatalf("batch from a closed reader: %+v", b)
	}
	if e := w.b.kafkaErr.Load(); e == nil {
		t.Error("fetch failure not reported")
	}
}
