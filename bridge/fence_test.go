package bridge

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/segmentio/kafka-go"

	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/natsutil"
)

// newTestBridge is a bridge connected to NATS with its stream provisioned,
// without a consumer group: tests drive partition workers directly.
func newTestBridge(t *testing.T, s *setup, name string, env map[string]string) *bridge {
	t.Helper()
	// Batches fill to KAFKA_BATCH_SIZE whenever that many messages wait,
	// however slow the machine.
	e := map[string]string{"KAFKA_BATCH_TIMEOUT_MS": "1000"}
	for k, v := range s.env {
		e[k] = v
	}
	e["KAFKA_BATCH_TIMEOUT_MS"] = "1000"
	for k, v := range env {
		e[k] = v
	}
	b, err := newBridge(Deps{Config: testenv.Config(t, e), Log: testLogger(t).With("bridge", name), Options: testOptions(name)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testenv.Context(t)
	if b.nc, err = natsutil.Connect(ctx, b.cfg.NATS, name, b.log); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.nc.Close)
	if b.js, err = jetstream.New(b.nc); err != nil {
		t.Fatal(err)
	}
	if b.stream, err = b.provision(ctx); err != nil {
		t.Fatal(err)
	}
	return b
}

// produceTo writes msgs to one partition.
func (s *setup) produceTo(partition int, msgs []kafka.Message) {
	s.t.Helper()
	w := s.kafka.Writer(s.t, s.topic)
	w.Balancer = kafka.BalancerFunc(func(kafka.Message, ...int) int { return partition })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		s.t.Fatal(err)
	}
}

func (w *partitionWorker) start(t *testing.T, ctx context.Context) {
	t.Helper()
	off, err := w.recover(ctx, -1)
	if err != nil {
		t.Fatal(err)
	}
	w.reader = w.b.newPartitionReader(w.partition)
	t.Cleanup(func() { _ = w.reader.Close() })
	w.seek(off)
}

// TestFenceTwoOwners: two bridges that both believe they own partition 0
// take turns; each batch of the one that lost the race is refused by the
// fence, it re-reads the checkpoint and resumes after it: no duplicates,
// no gaps.
func TestFenceTwoOwners(t *testing.T) {
	s := newSetup(t)
	c := newCorpus()
	s.produceTo(0, c.messages(400, 9))
	ctx := testenv.Context(t)
	a := newTestBridge(t, s, "a", map[string]string{"KAFKA_BATCH_SIZE": "100"}).newWorker(0)
	b := newTestBridge(t, s, "b", map[string]string{"KAFKA_BATCH_SIZE": "30"}).newWorker(0)
	a.start(t, ctx)
	b.start(t, ctx)
	fenced0 := fencedTotal.Get()

	a.publish(ctx, a.collect(ctx)) // 0..99
	if a.acked.Load() != 100 {
		t.Fatalf("a acked %d", a.acked.Load())
	}
	b.publish(ctx, b.collect(ctx)) // 0..29: fenced, resumes at 100
	if got := fencedTotal.Get() - fenced0; got != 1 || b.next != 100 || b.prevSeq != a.prevSeq {
		t.Fatalf("b not fenced: fenced %d, next %d, prevSeq %d vs %d", got, b.next, b.prevSeq, a.prevSeq)
	}
	b.publish(ctx, b.collect(ctx)) // 100..129
	if b.acked.Load() != 130 {
		t.Fatalf("b acked %d", b.acked.Load())
	}
	a.publish(ctx, a.collect(ctx)) // 100..199: fenced, resumes at 130
	if got := fencedTotal.Get() - fenced0; got != 2 || a.next != 130 {
		t.Fatalf("a not fenced: fenced %d, next %d", got, a.next)
	}

	// Then both race on the rest.
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{}, 2)
	for _, w := range []*partitionWorker{a, b} {
		go func() {
			defer func() { done <- struct{}{} }()
			for rctx.Err() == nil {
				if bt := w.collect(rctx); bt != nil {
					w.publish(rctx, bt)
				}
			}
		}()
	}
	s.produceTo(0, c.messages(600, 9))
	s.waitCaughtUp(s.nats.JetStream(t), 30*time.Second)
	cancel()
	<-done
	<-done
	s.verifyExactlyOnce(s.nats.JetStream(t), c)
	t.Logf("fenced batches: %d", fencedTotal.Get()-fenced0)
}

// TestLostAck: a batch committed whose acknowledgement was lost is not
// published again — the retry is refused by the fence and the checkpoint
// shows the batch is in.
func TestLostAck(t *testing.T) {
	s := newSetup(t)
	c := newCorpus()
	s.produceTo(3, c.messages(50, 5))
	ctx := testenv.Context(t)
	w := newTestBridge(t, s, "a", nil).newWorker(3)
	w.start(t, ctx)
	bt := w.collect(ctx)
	if _, err := sendBatch(ctx, w.b.js, bt, w.prevSeq, time.Second); err != nil {
		t.Fatal(err)
	}
	fenced0 := fencedTotal.Get()
	w.publish(ctx, bt) // same batch, stale fence: must be recognised as done
	if fencedTotal.Get() != fenced0 || w.acked.Load() != bt.last+1 {
		t.Fatalf("fenced %d, acked %d", fencedTotal.Get()-fenced0, w.acked.Load())
	}
	s.verifyExactlyOnce(s.nats.JetStream(t), c)
}

// TestCheckpointRefresh: a quiet partition re-publishes its checkpoint
// (same offset, new sequence) so it never ages out of the stream.
func TestCheckpointRefresh(t *testing.T) {
	s := newSetup(t)
	c := newCorpus()
	s.produceTo(5, c.messages(20, 4))
	b := newTestBridge(t, s, "a", nil)
	b.opts.CheckpointRefresh = 200 * time.Millisecond
	w := b.newWorker(5)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.run(ctx, ctx, -1) }()
	js := s.nats.JetStream(t)
	s.waitCaughtUp(js, 30*time.Second)
	subj := natsutil.OffsetSubject(s.topic, 5)
	first, err := readCheckpoint(ctx, b.stream, subj, s.topic, 5)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		ck, err := readCheckpoint(ctx, b.stream, subj, s.topic, 5)
		if err != nil {
			return err
		}
		if ck.Seq == first.Seq || ck.Offset != 19 {
			return fmt.Errorf("checkpoint %+v not refreshed (was seq %d)", ck, first.Seq)
		}
		return nil
	})
	s.produceTo(5, c.messages(10, 4))
	s.waitCaughtUp(js, 30*time.Second)
	cancel()
	<-done
	s.verifyExactlyOnce(js, c)
}

// TestResumeFromCheckpoint: on assignment the stream's checkpoint wins over
// the group's committed offset, behind or ahead; without a checkpoint the
// committed offset (or the start) is used.
func TestResumeFromCheckpoint(t *testing.T) {
	s := newSetup(t)
	c := newCorpus()
	s.produceTo(2, c.messages(40, 0))
	ctx := testenv.Context(t)
	b := newTestBridge(t, s, "a", nil)
	w := b.newWorker(2)
	w.start(t, ctx)
	w.publish(ctx, w.collect(ctx))
	if w.acked.Load() != 40 {
		t.Fatalf("acked %d", w.acked.Load())
	}
	for _, committed := range []int64{-1, 5, 40, 1000} {
		if got, err := b.newWorker(2).recover(ctx, committed); err != nil || got != 40 {
			t.Errorf("committed %d: resume at %d, %v; want 40", committed, got, err)
		}
	}
	if got, _ := b.newWorker(7).recover(ctx, 7); got != 7 {
		t.Errorf("no checkpoint, committed 7: resume at %d", got)
	}
	if got, _ := b.newWorker(7).recover(ctx, -1); got != kafka.FirstOffset {
		t.Errorf("no checkpoint, nothing committed: resume at %d", got)
	}
}
