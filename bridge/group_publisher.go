package bridge

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// maxGroupMsgs bounds a group commit: the server's default limit of
// messages per atomic batch.
const maxGroupMsgs = 1000

// groupPublishers is how many group commits may be in flight at once.
// While they are, the batches that partitions finish meanwhile queue up
// and go out together in the next group.
const groupPublishers = 2

// groupPublisher merges the batches that a generation's partition workers
// hand it into as few atomic batches as the size limit allows (group
// commit). Each atomic batch costs the server a fixed amount — for a
// single-replica file stream it stages the batch in a store of its own —
// so at modest rates, when every partition's batch holds a few messages,
// one commit for all partitions instead of one each is most of the
// server's work saved. Each partition still has at most one batch in
// flight, so the groups in flight never share a checkpoint subject.
type groupPublisher struct {
	js      jetstream.JetStream
	timeout time.Duration
	reqs    chan *publishReq
}

type publishReq struct {
	fencedBatch
	done chan publishRes // buffered: the publisher never waits for the worker
}

type publishRes struct {
	seq uint64
	err error
}

func newGroupPublisher(js jetstream.JetStream, timeout time.Duration) *groupPublisher {
	return &groupPublisher{js: js, timeout: timeout, reqs: make(chan *publishReq)}
}

// run publishes groups until ctx ends; requests still queued then are
// never sent (their workers have stopped waiting; whoever resumes the
// partition redoes them from its checkpoint).
func (g *groupPublisher) run(ctx context.Context) {
	done := make(chan struct{})
	for range groupPublishers {
		go func() {
			defer func() { done <- struct{}{} }()
			var carry *publishReq
			for {
				first := carry
				carry = nil
				if first == nil {
					select {
					case first = <-g.reqs:
					case <-ctx.Done():
						return
					}
				}
				group, n := []*publishReq{first}, len(first.b.msgs)
			gather:
				for n < maxGroupMsgs {
					select {
					case r := <-g.reqs:
						if n+len(r.b.msgs) > maxGroupMsgs {
							carry = r
							break gather
						}
						group, n = append(group, r), n+len(r.b.msgs)
					default:
						break gather
					}
				}
				g.publish(ctx, group)
			}
		}()
	}
	for range groupPublishers {
		<-done
	}
}

func (g *groupPublisher) publish(ctx context.Context, group []*publishReq) {
	fb := make([]fencedBatch, len(group))
	for i, r := range group {
		fb[i] = r.fencedBatch
	}
	var seqs []uint64
	err := ctx.Err() // stopping: nobody waits for these any more
	if err == nil {
		seqs, err = sendBatches(ctx, g.js, fb, g.timeout)
	}
	if len(group) > 1 {
		groupSizeHist.Update(float64(len(group)))
	}
	if err == nil {
		atomicBatches.Inc()
	}
	for i, r := range group {
		res := publishRes{err: err}
		if err == nil {
			res.seq = seqs[i]
		}
		r.done <- res
	}
}

// send hands b to the group publisher and waits for the outcome of the
// group it went out in.
func (g *groupPublisher) send(ctx context.Context, b *batch, prevSeq uint64) (uint64, error) {
	r := &publishReq{fencedBatch: fencedBatch{b, prevSeq}, done: make(chan publishRes, 1)}
	select {
	case g.reqs <- r:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	select {
	case res := <-r.done:
		return res.seq, res.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}
