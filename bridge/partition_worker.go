package bridge

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/segmentio/kafka-go"

	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/faultpoint"
	"github.com/stacklens/stacklens/internal/natsutil"
	"github.com/stacklens/stacklens/internal/retry"
)

// fetcher is the part of *kafka.Reader a worker uses.
type fetcher interface {
	FetchMessage(ctx context.Context) (kafka.Message, error)
	SetOffset(offset int64) error
	Close() error
}

// partitionWorker forwards one Kafka partition: it recovers the
// partition's checkpoint from the stream, fetches from the offset after
// it, and publishes ordered atomic batches, one at a time.
type partitionWorker struct {
	b         *bridge
	topic     string
	partition int
	subject   string // checkpoint subject
	log       *slog.Logger
	builder   *messageBuilder
	gauges    partitionGauges
	gapWarned bool // the first offset gap was logged at warn level
	reader    fetcher
	group     *groupPublisher // nil: publish alone (tests)

	prevSeq uint64    // stream sequence of the latest checkpoint (the fence); 0: none
	next    int64     // next Kafka offset to forward
	hwm     int64     // the partition's high-water mark as of the latest fetched message
	ckTime  time.Time // when the latest checkpoint was written

	// acked is the offset after the last acknowledged batch (what the
	// committer commits to Kafka); -1 before the first.
	acked     atomic.Int64
	committed int64 // owned by the committer
}

func (b *bridge) newWorker(partition int) *partitionWorker {
	w := &partitionWorker{
		b:         b,
		topic:     b.cfg.Kafka.InputTopic,
		partition: partition,
		subject:   natsutil.OffsetSubject(b.cfg.Kafka.InputTopic, partition),
		log:       b.log.With("partition", partition),
		builder:   newMessageBuilder(b.cfg.Kafka.InputTopic, partition, b.cfg.NATS.Shards, b.limits),
		gauges:    gaugesFor(partition),
		committed: -1,
	}
	w.acked.Store(-1)
	return w
}

// recover reads the checkpoint (retrying while NATS is unavailable) and
// returns the offset to resume from: after the checkpoint when there is
// one — the stream is the record of what was forwarded — else the group's
// committed offset (or the start of the partition).
func (w *partitionWorker) recover(ctx context.Context, committed int64) (int64, error) {
	bo := retry.New(100*time.Millisecond, 5*time.Second)
	for {
		ck, err := readCheckpoint(ctx, w.b.stream, w.subject, w.topic, w.partition)
		if err == nil {
			w.prevSeq = ck.Seq
			w.ckTime = ck.Time
			if w.ckTime.IsZero() {
				w.ckTime = time.Now()
			}
			start := committed
			if ck.Found {
				start = ck.Offset + 1
				if committed >= 0 && committed != start {
					w.log.Info("resuming from the stream checkpoint, not the group's committed offset",
						"checkpoint", ck.Offset, "committed", committed)
				}
			} else if start < 0 {
				start = kafka.FirstOffset
			}
			w.log.Debug("partition assigned", "resume", start, "checkpoint_seq", ck.Seq)
			return start, nil
		}
		w.log.Warn("cannot read checkpoint; retrying", "err", err)
		w.b.setNATSErr(err)
		if !bo.Wait(ctx) {
			return 0, ctx.Err()
		}
	}
}

// run forwards the partition until ctx ends (generation over, or bridge
// stopping): stop fetching, finish the batch in hand, return. pubCtx
// bounds the publish of that last batch.
func (w *partitionWorker) run(ctx, pubCtx context.Context, committed int64) {
	start, err := w.recover(ctx, committed)
	if err != nil {
		return
	}
	if w.reader == nil {
		w.reader = w.b.newPartitionReader(w.partition)
	}
	defer func() {
		if err := w.reader.Close(); err != nil {
			w.log.Debug("closing reader", "err", err)
		}
	}()
	w.seek(start)
	for ctx.Err() == nil {
		b := w.collect(ctx)
		if b == nil {
			continue
		}
		faultpoint.Hit(hookAfterFetch)
		w.publish(pubCtx, b)
	}
}

func (w *partitionWorker) seek(offset int64) {
	w.next = offset
	if err := w.reader.SetOffset(offset); err != nil {
		w.log.Warn("seek", "offset", offset, "err", err)
	}
}

// collect fetches up to BatchSize messages: it waits for the first one,
// then for more until KAFKA_BATCH_TIMEOUT_MS after it, but no longer than
// KAFKA_LINGER between messages once it has everything the broker held.
// It returns nil when nothing was fetched.
func (w *partitionWorker) collect(ctx context.Context) *batch {
	cfg := w.b.cfg.Kafka
	fctx, fcancel := ctx, context.CancelFunc(func() {})
	refresh := w.b.opts.CheckpointRefresh
	if w.prevSeq != 0 && refresh > 0 {
		fctx, fcancel = context.WithDeadline(ctx, w.ckTime.Add(refresh))
	}
	m, err := w.reader.FetchMessage(fctx)
	fcancel()
	if err != nil {
		if ctx.Err() == nil && fctx.Err() != nil {
			return w.refreshBatch()
		}
		if ctx.Err() == nil {
			w.log.Warn("fetch", "err", err)
			w.b.setKafkaErr(err)
			retry.New(time.Second, time.Second).Wait(ctx)
		}
		return nil
	}
	w.b.setKafkaErr(nil)
	b := &batch{msgs: make([]*nats.Msg, 0, cfg.BatchSize+1), first: -1}
	now := time.Now()
	w.add(b, &m, now)
	// While the broker is known to hold more (the fetch's high-water mark is
	// ahead), wait for it up to the batch timeout; once caught up, wait only
	// KAFKA_LINGER for one more, so a lone message is not held back for the
	// whole batch timeout (docs/bridge.md, Batching).
	// One context for the batch; a linger context only for fetches made
	// once caught up, so draining a backlog adds no timer per message.
	bctx, bcancel := context.WithTimeout(ctx, time.Duration(cfg.BatchTimeoutMS)*time.Millisecond)
	defer bcancel()
	for b.consumed < cfg.BatchSize {
		fctx, cancel := bctx, context.CancelFunc(nil)
		if w.next >= w.hwm {
			fctx, cancel = context.WithTimeout(bctx, cfg.Linger)
		}
		m, err := w.reader.FetchMessage(fctx)
		if cancel != nil {
			cancel()
		}
		if err != nil {
			break
		}
		w.add(b, &m, now)
	}
	if b.consumed == 0 {
		return nil
	}
	b.msgs = append(b.msgs, checkpointMsg(w.subject, Checkpoint{
		Topic: w.topic, Partition: w.partition, Offset: b.last, Count: b.consumed, Time: now.UTC(),
	}))
	consumedTotal.Add(b.consumed)
	return b
}

// refreshBatch re-publishes the current checkpoint (same offset, fenced
// like any batch) so that a partition quiet for longer than the stream's
// MaxAge keeps its resume point.
func (w *partitionWorker) refreshBatch() *batch {
	last := w.next - 1
	w.log.Debug("refreshing the checkpoint of a quiet partition", "offset", last)
	return &batch{
		msgs: []*nats.Msg{checkpointMsg(w.subject, Checkpoint{
			Topic: w.topic, Partition: w.partition, Offset: last, Time: time.Now().UTC(),
		})},
		first: last + 1,
		last:  last,
	}
}

func (w *partitionWorker) add(b *batch, m *kafka.Message, now time.Time) {
	if m.Offset < w.next {
		return // before the position (a stale prefetch)
	}
	if m.Offset > w.next && w.next >= 0 {
		// Compaction, retention or transaction markers: not forwardable.
		// Counted; the first while this worker holds the partition is a
		// warning (docs/bridge.md, "Kafka gaps"), later ones debug (a
		// transactional topic has one per commit).
		w.gauges.gaps.Inc()
		if !w.gapWarned {
			w.gapWarned = true
			w.log.Warn("offset gap: offsets missing from the partition skipped (further gaps only counted: stacklens_bridge_offset_gaps_total)",
				"expected", w.next, "got", m.Offset)
		} else {
			w.log.Debug("offset gap", "expected", w.next, "got", m.Offset)
		}
	}
	w.next = m.Offset + 1
	if m.HighWaterMark > 0 {
		w.hwm = m.HighWaterMark
		w.gauges.lag.Set(float64(m.HighWaterMark - m.Offset - 1))
	}
	msg, reason := w.builder.build(m, now)
	b.msgs = append(b.msgs, msg)
	if b.first < 0 {
		b.first = m.Offset
		b.oldest = m.Time
	}
	b.last = m.Offset
	b.consumed++
	if reason == "" {
		b.events++
	} else {
		if b.dead == nil {
			b.dead = map[event.Reason]int{}
		}
		b.dead[reason]++
	}
}

// publish publishes b until it is in the stream (by this or an earlier
// attempt) or fenced by another owner, retrying with backoff while NATS is
// slow or away (fetching is paused meanwhile: backpressure). It gives up
// only when ctx ends; the batch is then redone by whoever resumes from the
// checkpoint.
//
// The first attempt goes out in a group with other partitions' batches;
// once an attempt has failed, the batch is retried alone, so that neither
// another partition's trouble (a stale fence, an unreadable checkpoint)
// nor a group over the server's batch limit holds this one back.
func (w *partitionWorker) publish(ctx context.Context, b *batch) {
	bo := retry.New(50*time.Millisecond, 5*time.Second)
	alone := w.group == nil
	for {
		t0 := time.Now()
		var seq uint64
		var err error
		if !alone {
			seq, err = w.group.send(ctx, b, w.prevSeq)
		} else {
			seq, err = sendBatch(ctx, w.b.js, b, w.prevSeq, w.b.opts.PublishTimeout)
		}
		if err == nil {
			publishSeconds.UpdateDuration(t0)
			w.done(b, seq)
			w.b.setNATSErr(nil)
			return
		}
		if ctx.Err() != nil {
			w.log.Warn("stopping with an unpublished batch; it is redone from the checkpoint",
				"first", b.first, "last", b.last)
			return
		}
		if errors.Is(err, errNotConnected) {
			// Nothing was sent: wait for the connection, then retry.
			w.b.setNATSErr(err)
			if !waitConnected(ctx, w.b.nc) {
				return
			}
			continue
		}
		grouped := !alone
		alone = true
		w.log.Warn("publish batch", "first", b.first, "last", b.last, "grouped", grouped, "err", err)
		publishRetries.Inc()
		// The outcome is unknown (or fenced): the checkpoint says.
		ck, rerr := readCheckpoint(ctx, w.b.stream, w.subject, w.topic, w.partition)
		switch {
		case rerr != nil:
			w.b.setNATSErr(rerr)
		case !ck.Found:
			w.prevSeq = 0 // no checkpoint at all (expired or purged): fence on "none"
		case ck.Seq == w.prevSeq:
			// Not committed: retry the same batch.
			if isFenceError(err) && grouped {
				continue // another partition's fence refused the group: at once, alone
			}
			if !isFenceError(err) {
				w.b.setNATSErr(err)
			}
		case ck.Offset == b.last:
			// An earlier attempt of this batch was committed.
			w.done(b, ck.Seq)
			w.b.setNATSErr(nil)
			return
		default:
			// Another owner forwarded this partition: resume after it.
			fencedTotal.Inc()
			w.log.Warn("fenced: another bridge advanced the checkpoint; resuming after it",
				"checkpoint", ck.Offset, "batch_first", b.first, "batch_last", b.last)
			w.prevSeq = ck.Seq
			w.acked.Store(ck.Offset + 1)
			w.seek(ck.Offset + 1)
			return
		}
		if !bo.Wait(ctx) {
			return
		}
	}
}

// done records an acknowledged batch.
func (w *partitionWorker) done(b *batch, seq uint64) {
	w.prevSeq = seq
	w.ckTime = time.Now()
	forwardedTotal.Add(b.events)
	for r, n := range b.dead {
		deadLetteredCounter(r).Add(n)
	}
	if b.consumed > 0 {
		batchSizeHist.Update(float64(b.consumed))
		if !b.oldest.IsZero() {
			delaySeconds.UpdateDuration(b.oldest)
		}
	}
	w.acked.Store(b.last + 1)
	faultpoint.Hit(hookAfterPublish)
}

// waitConnected polls the connection until it is up; false if ctx ended.
func waitConnected(ctx context.Context, nc *nats.Conn) bool {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for !nc.IsConnected() {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
	return true
}
