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
	consumed int // Kafka messages
}

// errNotConnected: NATS is disconnected; the batch is retried after reconnect.
var errNotConnected = errors.New("nats: not connected")

// sendBatch publishes b as one atomic batch fenced on the checkpoint
// subject: the server commits it only if the last message on that subject
// is still prevSeq (0: none), and then stores all of it or nothing. It
// returns the stream sequence of the new checkpoint.
func sendBatch(ctx context.Context, js jetstream.JetStream, b *batch, prevSeq uint64, timeout time.Duration) (uint64, error) {
	nc := js.Conn()
	if !nc.IsConnected() {
		return 0, errNotConnected
	}
	bp, err := jetstreamext.NewBatchPublisher(js, jetstreamext.BatchFlowControl{AckFirst: false, AckTimeout: timeout})
	if err != nil {
		return 0, err
	}
	n := len(b.msgs) - 1
	half := n / 2
	for i, m := range b.msgs[:n] {
		if err := bp.AddMsg(m); err != nil {
			_ = bp.Discard()
			return 0, fmt.Errorf("batch message %d: %w", i+1, err)
		}
		if i == half && testHook != nil {
			_ = nc.Flush() // the first half reached the server
			testHook(hookMidBatch)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ack, err := bp.CommitMsg(cctx, b.msgs[n], jetstreamext.WithBatchExpectLastSequencePerSubject(prevSeq))
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
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

// Fault-injection points for tests (see testHook).
const (
	hookAfterFetch   = "after_fetch"   // a batch is collected, nothing published
	hookMidBatch     = "mid_batch"     // half of a batch reached the server, no commit
	hookAfterPublish = "after_publish" // the batch is acknowledged, Kafka not committed
	hookAfterCommit  = "after_commit"  // Kafka offsets committed
)

// testHook, when set (tests only), is called at the named points; a test
// process kills itself there to simulate a crash.
var testHook func(point string)

func hook(point string) {
	if testHook != nil {
		testHook(point)
	}
}
