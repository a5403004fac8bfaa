package bridge

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/natsutil"
)

// TestGroupCommitAllOrNothing: a group with one stale fence is refused
// whole — nothing of it is stored — and a later group that reuses the
// refused commit message in the middle (its leftover commit header must
// not end that group early) stores every batch once, contiguously, with
// each checkpoint at the sequence sendBatches returned.
func TestGroupCommitAllOrNothing(t *testing.T) {
	s := newSetup(t)
	c := newCorpus()
	ctx := testenv.Context(t)
	b := newTestBridge(t, s, "a", nil)
	workers := map[int]*partitionWorker{}
	batches := map[int]*batch{}
	for _, p := range []int{1, 2, 3} {
		s.produceTo(p, c.messages(10, 0))
		w := b.newWorker(p)
		w.start(t, ctx)
		workers[p], batches[p] = w, w.collect(ctx)
	}
	js := s.nats.JetStream(t)
	// Partition 1's fence is stale (a checkpoint that never existed).
	_, err := sendBatches(ctx, b.js, []fencedBatch{{batches[1], 12345}, {batches[2], workers[2].prevSeq}}, 5*time.Second)
	if !isFenceError(err) {
		t.Fatalf("stale fence in the group: err %v, want a fence error", err)
	}
	if got := readStream(t, js); len(got) != 0 {
		t.Fatalf("a refused group stored %d messages", len(got))
	}
	// Partition 2's checkpoint was that attempt's commit message; now it
	// sits in the middle of the group.
	group := []fencedBatch{{batches[2], workers[2].prevSeq}, {batches[3], workers[3].prevSeq}, {batches[1], workers[1].prevSeq}}
	seqs, err := sendBatches(ctx, b.js, group, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	msgs := readStream(t, js)
	if want := len(batches[1].msgs) + len(batches[2].msgs) + len(batches[3].msgs); len(msgs) != want {
		t.Fatalf("stored %d messages, want %d", len(msgs), want)
	}
	bySeq := map[uint64]storedMsg{}
	for _, m := range msgs {
		bySeq[m.seq] = m
	}
	for i, g := range group {
		p := g.b.msgs[len(g.b.msgs)-1]
		m, ok := bySeq[seqs[i]]
		if !ok || m.subject != p.Subject || m.subject != natsutil.OffsetSubject(s.topic, workers[[]int{2, 3, 1}[i]].partition) {
			t.Errorf("batch %d: sequence %d holds %q, want its checkpoint %q", i, seqs[i], m.subject, p.Subject)
		}
		ck, err := decodeCheckpoint(m.data)
		if err != nil || ck.Offset != g.b.last {
			t.Errorf("checkpoint at %d: %+v %v, want offset %d", seqs[i], ck, err, g.b.last)
		}
	}
	if seqs[0] >= seqs[1] || seqs[1] >= seqs[2] {
		t.Errorf("checkpoint sequences %v not in group order", seqs)
	}
	// The same fences again are stale now: a replay of the group is refused.
	if _, err := sendBatches(ctx, b.js, group, 5*time.Second); !isFenceError(err) {
		t.Fatalf("replayed group: %v, want a fence error", err)
	}
	if n := len(readStream(t, js)); n != len(msgs) {
		t.Fatalf("replayed group changed the stream: %d → %d messages", len(msgs), n)
	}
}

// TestGroupPublisherMergesAndSplits: batches handed to the group publisher
// at once go out in few groups, never more than maxGroupMsgs messages per
// group, and every worker gets its own checkpoint's sequence back.
func TestGroupPublisherMergesAndSplits(t *testing.T) {
	s := newSetup(t)
	c := newCorpus()
	ctx := testenv.Context(t)
	b := newTestBridge(t, s, "a", map[string]string{"KAFKA_BATCH_SIZE": "400"})
	g := newGroupPublisher(b.js, 5*time.Second)
	gctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { g.run(gctx); close(done) }()
	defer func() { cancel(); <-done }()
	type result struct {
		p   int
		seq uint64
		err error
	}
	res := make(chan result)
	var ws []*partitionWorker
	for p := range testPartitions {
		s.produceTo(p, c.messages(400, 0))
		w := b.newWorker(p)
		w.start(t, ctx)
		ws = append(ws, w)
	}
	for _, w := range ws {
		bt := w.collect(ctx)
		go func() {
			seq, err := g.send(ctx, bt, w.prevSeq)
			res <- result{w.partition, seq, err}
		}()
	}
	js := s.nats.JetStream(t)
	st, err := js.Stream(ctx, natsutil.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	for range ws {
		r := <-res
		if r.err != nil {
			t.Fatalf("partition %d: %v", r.p, r.err)
		}
		m, err := st.GetMsg(ctx, r.seq)
		if err != nil || m.Subject != natsutil.OffsetSubject(s.topic, r.p) {
			t.Fatalf("partition %d: sequence %d is %v %v, want its checkpoint", r.p, r.seq, m, err)
		}
	}
	msgs := readStream(t, js)
	if want := testPartitions * 401; len(msgs) != want {
		t.Fatalf("stored %d messages, want %d", len(msgs), want)
	}
	// Batches of 401 messages: at most two fit in a group.
	groups := map[string]int{}
	for _, m := range msgs {
		if id := m.hdr["Nats-Batch-Id"]; len(id) > 0 {
			groups[id[0]]++
		}
	}
	merged := 0
	for id, n := range groups {
		if n > maxGroupMsgs {
			t.Errorf("group %s holds %d messages", id, n)
		}
		if n == 2*401 {
			merged++
		}
	}
	if len(groups) >= testPartitions || merged == 0 {
		t.Errorf("%d batches went out in %d groups (%d of two): nothing was merged", testPartitions, len(groups), merged)
	}
	t.Logf("%d batches in %d groups", testPartitions, len(groups))
}

// TestFailedGroupRetriedAlone: when the group a batch went out in is
// refused — by another partition's stale fence, or for any other reason
// such as a server batch limit below the group's size — the batch is
// retried on its own, not handed to the group publisher again, and lands
// exactly once. (The test stands in for the group publisher and answers
// the worker's request with the refusal.)
func TestFailedGroupRetriedAlone(t *testing.T) {
	for _, tc := range []struct {
		name   string
		refuse error
	}{
		{"another partition's fence", &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence, Description: "wrong last sequence"}},
		{"batch too large", errors.New("atomic publish batch is too large")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSetup(t)
			c := newCorpus()
			ctx := testenv.Context(t)
			s.produceTo(4, c.messages(40, 0))
			b := newTestBridge(t, s, "a", map[string]string{"KAFKA_BATCH_SIZE": "20"})
			w := b.newWorker(4)
			w.start(t, ctx)
			w.publish(ctx, w.collect(ctx)) // offsets 0..19, alone: a checkpoint to fence on
			g := newGroupPublisher(b.js, 5*time.Second)
			w.group = g
			bt := w.collect(ctx) // 20..39
			done := make(chan struct{})
			go func() { defer close(done); w.publish(ctx, bt) }()
			r := <-g.reqs
			r.done <- publishRes{err: tc.refuse}
			select {
			case <-done:
			case r := <-g.reqs:
				t.Fatalf("the batch went back to the group publisher (offsets %d..%d)", r.b.first, r.b.last)
			case <-time.After(30 * time.Second):
				t.Fatal("the batch was not retried")
			}
			if got := w.acked.Load(); got != 40 {
				t.Fatalf("acked %d, want 40", got)
			}
			s.verifyExactlyOnce(s.nats.JetStream(t), c)
		})
	}
}
