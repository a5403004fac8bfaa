package bridge

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/faultpoint"
)

// batch is what one atomic publish carries: the stream messages of the
// Kafka messages first..last of a partition, in offset order, followed by
// the checkpoint message.
type batch struct {
	msgs     []*nats.Msg // events and dead letters, then the checkpoint
	first    int64       // first Kafka offset
	last     int64       // last Kafka offset (the checkpoint)
	events   int         // valid events
	dead     map[event.Reason]int
	consumed int       // Kafka messages
	oldest   time.Time // Kafka timestamp of the first message
}

// errNotConnected: NATS is disconnected; the batch is retried after reconnect.
var errNotConnected = errors.New("nats: not connected")

// sendBatch publishes b as one atomic batch fenced on the checkpoint
// subject: the server commits it only if the last message on that subject
// is still prevSeq (0: none), and then stores all of it or nothing. It
// returns the stream sequence of the new checkpoint.
func sendBatch(ctx context.Context, js jetstream.JetStream, b *batch, prevSeq uint64, timeout time.Duration) (uint64, error) {
	seqs, err := sendBatches(ctx, js, []fencedBatch{{b, prevSeq}}, timeout)
	if err != nil {
		return 0, err
	}
	return seqs[0], nil
}

// fencedBatch is a partition's batch with the checkpoint sequence it
// expects to follow.
type fencedBatch struct {
	b       *batch
	prevSeq uint64
}

// sendBatches publishes the batches of several partitions as one atomic
// batch (group commit): every partition's checkpoint is fenced on its own
// previous sequence, and the server stores all of it or nothing — so a
// stale fence of one partition rejects the whole group, and each partition
// resolves the outcome from its checkpoint as for a single batch. It
// returns the stream sequence of each partition's new checkpoint: the
// group is stored contiguously, so they follow from the commit's.
func sendBatches(ctx context.Context, js jetstream.JetStream, group []fencedBatch, timeout time.Duration) ([]uint64, error) {
	nc := js.Conn()
	if !nc.IsConnected() {
		return nil, errNotConnected
	}
	bp, err := jetstreamext.NewBatchPublisher(js, jetstreamext.BatchFlowControl{AckFirst: false, AckTimeout: timeout})
	if err != nil {
		return nil, err
	}
	total := 0
	for _, g := range group {
		total += len(g.b.msgs)
	}
	half, k := (total-1)/2, 0
	lastG := group[len(group)-1]
	commit := lastG.b.msgs[len(lastG.b.msgs)-1]
	for _, g := range group {
		ck := len(g.b.msgs) - 1
		for i, m := range g.b.msgs {
			if m == commit {
				break
			}
			if m.Header != nil {
				// A message that was the commit of an earlier,
				// failed attempt must not commit this one early.
				m.Header.Del(jetstreamext.BatchCommitHeader)
			}
			var opts []jetstreamext.BatchMsgOpt
			if i == ck {
				opts = append(opts, jetstreamext.WithBatchExpectLastSequencePerSubject(g.prevSeq))
			}
			if err := bp.AddMsg(m, opts...); err != nil {
				_ = bp.Discard()
				return nil, fmt.Errorf("batch message %d: %w", k+1, err)
			}
			if k == half && faultpoint.Enabled() {
				_ = nc.Flush() // the first half reached the server
				faultpoint.Hit(hookMidBatch)
			}
			k++
		}
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ack, err := bp.CommitMsg(cctx, commit, jetstreamext.WithBatchExpectLastSequencePerSubject(lastG.prevSeq))
	if err != nil {
		return nil, err
	}
	seqs := make([]uint64, len(group))
	end := ack.Sequence
	for i := len(group) - 1; i >= 0; i-- {
		seqs[i] = end
		end -= uint64(len(group[i].b.msgs))
	}
	return seqs, nil
}

// isFenceError reports whether err says the checkpoint subject's last
// sequence was not the expected one.
func isFenceError(err error) bool {
	var ae *jetstream.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
	}
	return false
}

// Fault points where crash tests kill the bridge (internal/faultpoint).
const (
	hookAfterFetch   = "after_fetch"   // a batch is collected, nothing published
	hookMidBatch     = "mid_batch"     // half of a batch reached the server, no commit
	hookAfterPublish = "after_publish" // the batch is acknowledged, Kafka not committed
	hookAfterCommit  = "after_commit"  // Kafka offsets committed
)
