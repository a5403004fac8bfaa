package processor

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/agg"
	"github.com/stacklens/stacklens/internal/faultpoint"
	"github.com/stacklens/stacklens/internal/lease"
)

// flush is one FLUSH_INTERVAL step: restart if needed, finalize, write every
// dirty key with CAS (pipelined), then the checkpoint.
func (w *shardWorker) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ctx.Err() != nil {
		return
	}
	if w.needReset {
		if !w.stopping {
			w.restartOrLog()
		}
		return
	}
	if err := w.flushLocked(); err != nil {
		if errors.Is(err, errLeaseExpired) {
			return // the lease loop renews it or drops the shard
		}
		w.log.Warn("flush failed; re-consuming the shard from its checkpoint", "err", err)
		if w.stopping {
			w.clearLocked()
			return
		}
		w.restartOrLog()
	}
}

// restartOrLog restarts the shard, logging failures (NATS down) only now
// and then.
func (w *shardWorker) restartOrLog() {
	err := w.restartLocked()
	if err == nil {
		if w.restartFailures > 0 {
			w.log.Info("shard consumer restarted", "after_failures", w.restartFailures)
		}
		w.restartFailures = 0
		return
	}
	if w.restartFailures%40 == 0 {
		w.log.Warn("cannot (re)start the shard consumer; retrying", "err", err, "failures", w.restartFailures+1)
	}
	w.restartFailures++
}

// Bounds of what a shard keeps for reuse between flushes.
const (
	maxSpareDeltas = 1024
	maxEncBuf      = 4 << 20
)

type pendingWrite struct {
	e   *entry
	fut jetstream.PubAckFuture
}

// flushLocked writes every dirty key and then the checkpoint. It is called
// with w.mu held and returns with it held, but releases it while waiting
// for the acknowledgements, so folding goes on during the round trips: the
// deltas written are detached first, and the checkpoint covers only what
// was consumed when the flush began.
func (w *shardWorker) flushLocked() error {
	now := w.sh.clock.Now()
	if w.lease != nil && !w.lease.Valid(now, w.sh.cfg.Processor.LeaseTTL/4) {
		return errLeaseExpired
	}
	began := time.Now()
	w.settleIdle()
	w.advanceWatermark(now)
	w.finalize(now)
	if len(w.dirty) == 0 && w.consumed <= w.ckptSeq && !w.openChanged() {
		w.updateGauges(now)
		return nil
	}
	writes := make([]pendingWrite, 0, len(w.dirty))
	// Every value is encoded into one buffer, reused by the next flush
	// once all of this one's writes are acknowledged (until then the
	// client may still resend a message); taken out meanwhile.
	buf := w.encBuf[:0]
	w.encBuf = nil
	var firstErr error
	for _, e := range w.dirty {
		if e.delta == nil && !e.markFinal {
			continue
		}
		// Merged in place: if any write of this flush fails, all of the
		// shard's memory is discarded and re-read anyway.
		v := e.stored
		if v == nil {
			v = agg.NewAggregate(e.key.Service, e.key.Start)
			e.stored = v
		}
		v.Merge(e.delta)
		v.Version++
		if e.markFinal {
			v.Final = true
		}
		win := w.sh.buckets.windows[e.key.Window]
		from := len(buf)
		buf = v.Encode(buf, win)
		msg := &nats.Msg{
			Subject: "$KV." + w.sh.buckets.names[e.key.Window] + "." + e.kvKey,
			Data:    buf[from:len(buf):len(buf)],
		}
		fut, err := w.sh.js.PublishMsgAsync(msg, jetstream.WithExpectLastSequencePerSubject(e.rev))
		if err != nil {
			firstErr = err
			break
		}
		writes = append(writes, pendingWrite{e: e, fut: fut})
		if len(writes) == 2 && faultpoint.Enabled() {
			// Make sure the first writes reached the server, so a crash
			// here really leaves a flush half applied.
			_ = w.sh.js.Conn().Flush()
			faultpoint.Hit("mid-writes")
		}
	}
	if firstErr != nil {
		return fmt.Errorf("aggregate write: %w", firstErr)
	}
	for _, e := range w.dirty {
		// Merged into e.stored above, which keeps none of its memory.
		if e.delta != nil && len(w.spare) < maxSpareDeltas {
			w.spare = append(w.spare, e.delta)
		}
		e.delta, e.dirty, e.markFinal = nil, false, false
	}
	w.dirty = w.dirty[:0]
	flushSeq, gen, open := w.consumed, w.gen, w.openWindows()
	oldest := w.oldestTS
	if w.msgsSince == 0 {
		oldest = 0 // a flush of finality or open windows only
	}
	w.msgsSince = 0

	w.mu.Unlock()
	revs, err := w.waitWrites(writes)
	acked := err == nil
	if err == nil {
		faultpoint.Hit("before-checkpoint")
		ctx, cancel := w.opCtx()
		err = w.writeCheckpoint(ctx, now, flushSeq, open)
		cancel()
	}
	w.mu.Lock()
	if acked && cap(buf) <= maxEncBuf {
		w.encBuf = buf[:0]
	}

	flushSeconds.UpdateDuration(began)
	flushesTotal.Inc()
	if gen != w.gen {
		return nil // stopped or restarted meanwhile: nothing of this flush is kept
	}
	if err != nil {
		return err
	}
	for i := range writes {
		writes[i].e.rev = revs[i]
	}
	if oldest > 0 {
		delaySeconds.Update(time.Since(time.Unix(0, oldest)).Seconds())
	}
	w.evict(now)
	w.updateGauges(now)
	return nil
}

// waitWrites waits for every acknowledgement and returns the new revisions.
func (w *shardWorker) waitWrites(writes []pendingWrite) ([]uint64, error) {
	ctx, cancel := w.opCtx()
	defer cancel()
	revs := make([]uint64, len(writes))
	var firstErr error
	conflict := false
	for i := range writes {
		select {
		case ack := <-writes[i].fut.Ok():
			revs[i] = ack.Sequence
		case err := <-writes[i].fut.Err():
			if lease.IsConflict(err) {
				conflict = true
			}
			if firstErr == nil {
				firstErr = err
			}
		case <-ctx.Done():
			if firstErr == nil {
				firstErr = ctx.Err()
			}
		}
	}
	if conflict {
		casConflicts.Inc()
	}
	if firstErr != nil {
		return nil, fmt.Errorf("aggregate write: %w", firstErr)
	}
	return revs, nil
}

// openWindows returns, per window name, the oldest bucket start with a
// stored non-final aggregate.
func (w *shardWorker) openWindows() map[string]int64 {
	var open map[string]int64
	for _, e := range w.entries {
		if e.marker || e.stored == nil || e.stored.Final {
			continue
		}
		if open == nil {
			open = map[string]int64{}
		}
		name := w.sh.buckets.windows[e.key.Window].Name
		if s, ok := open[name]; !ok || e.key.Start < s {
			open[name] = e.key.Start
		}
	}
	return open
}

func (w *shardWorker) openChanged() bool {
	open := w.openWindows()
	if len(open) != len(w.ckptOpen) {
		return true
	}
	for k, v := range open {
		if w.ckptOpen[k] != v {
			return true
		}
	}
	return false
}
