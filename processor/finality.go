package processor

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/stacklens/stacklens/internal/agg"
	"github.com/stacklens/stacklens/internal/event"
)

// Finality (docs/ARCHITECTURE.md §4): a bucket is final once the clock is past its end
// plus ALLOWED_LATENESS and the shard has caught up to that moment. "Caught
// up to t" is tracked with watermarks. At each flush the shard's backlog is
// sampled in messages: those handled so far plus the consumer's pending
// count reported with the last one, at the time that message entered the
// stream (coveredAt). The pending count is the shard's own
// (the consumer is filtered) while stream sequences also step over the
// other shards' messages, so the sample is a count, not a sequence. Once
// that many messages are handled, every event published before the
// sample's time has been folded. A restart's sample is the shard's last
// stream sequence. A message reporting nothing pending covers every
// sample. An idle shard whose samples still wait re-reads its head (see
// settleIdle), and an idle shard (nothing pending, nothing delivered for
// a flush interval) is caught up to now.

// reached reports whether the shard has consumed up to the sample m.
func (w *shardWorker) reached(m watermark) bool {
	return w.consumed >= m.seq && w.handled >= m.n
}

// settleIdle is for a shard that received nothing for a flush interval
// while its samples still wait for messages: if none of the shard's
// messages lies past what it consumed (the rest of its backlog was
// removed by the stream's limits before delivery), every sample is
// reached and nothing is pending. Without this, such a shard would stay
// behind until its next event.
func (w *shardWorker) settleIdle() {
	if w.msgsSince > 0 || (w.pending == 0 && len(w.marks) == 0) {
		return
	}
	ctx, cancel := w.opCtx()
	defer cancel()
	head, err := w.shardHead(ctx)
	if err != nil || head > w.consumed {
		return // retried at the next idle flush
	}
	w.popMarks(len(w.marks))
	w.pending = 0
}

// popMarks drops the first n samples, reached: the shard is caught up to
// their times.
func (w *shardWorker) popMarks(n int) {
	for _, m := range w.marks[:n] {
		w.caughtUpTo(m.t)
	}
	w.marks = w.marks[n:]
}

func (w *shardWorker) caughtUpTo(t time.Time) {
	if t.After(w.caughtUpAt) {
		w.caughtUpAt = t
	}
}

// advanceWatermark updates caughtUpAt.
func (w *shardWorker) advanceWatermark(now time.Time) {
	if w.pending > 0 {
		if n := len(w.marks); n == 0 || w.marks[n-1].n < w.handled+w.pending {
			w.marks = append(w.marks, watermark{t: w.coveredAt, n: w.handled + w.pending})
		}
		if len(w.marks) > 4096 {
			w.marks = append(w.marks[:0], w.marks[len(w.marks)-2048:]...)
		}
	}
	n := len(w.marks) // a message reporting nothing pending covers every sample
	if w.handled == 0 || w.pending > 0 {
		n = 0
		for n < len(w.marks) && w.reached(w.marks[n]) {
			n++
		}
	}
	w.popMarks(n)
	if w.pending == 0 && len(w.marks) == 0 {
		if w.msgsSince > 0 {
			w.caughtUpTo(w.coveredAt)
		} else {
			w.caughtUpTo(now.Add(-w.sh.cfg.Processor.FlushInterval))
		}
	}
}

// deadline is when a bucket may become final.
func (w *shardWorker) deadline(bk bucketKey) time.Time {
	win := w.sh.buckets.windows[bk.w]
	return time.Unix(bk.start, 0).Add(win.Size + w.sh.cfg.Processor.AllowedLateness)
}

// finalize marks the aggregates of buckets whose deadline the shard has
// caught up to as final (written by this flush).
func (w *shardWorker) finalize(time.Time) {
	if w.caughtUpAt.IsZero() {
		return
	}
	for bk, b := range w.buckets {
		if w.deadline(bk).After(w.caughtUpAt) {
			continue
		}
		for _, e := range b.entries {
			if e.marker || e.final() || e.markFinal || (e.stored == nil && e.delta == nil) {
				continue
			}
			e.markFinal = true
			if !e.dirty {
				e.dirty = true
				w.dirty = append(w.dirty, e)
			}
		}
	}
}

// evict drops buckets whose aggregates are all final and written: memory
// holds only open buckets. A late event for an evicted bucket reloads its
// key from KV (a correction).
func (w *shardWorker) evict(time.Time) {
	if w.caughtUpAt.IsZero() {
		return
	}
	evicted := false
	for bk, b := range w.buckets {
		if w.deadline(bk).After(w.caughtUpAt) {
			continue
		}
		done := true
		for _, e := range b.entries {
			if e.dirty || (!e.marker && e.stored != nil && !e.stored.Final) {
				done = false
				break
			}
		}
		if !done {
			continue
		}
		for _, e := range b.entries {
			delete(w.entries, e.key)
		}
		delete(w.buckets, bk)
		evicted = true
	}
	if evicted {
		clear(w.last)
	}
}

// recoverOpen loads the non-final aggregates of this shard in the buckets
// the checkpoint lists as open, so they become final even if no later event
// touches them (the previous owner stopped before finalizing them).
func (w *shardWorker) recoverOpen(ctx context.Context) error {
	if len(w.ckptOpen) == 0 {
		return nil
	}
	now := w.sh.clock.Now()
	for wi, win := range w.sh.buckets.windows {
		from, ok := w.ckptOpen[win.Name]
		if !ok {
			continue
		}
		to := win.StartUnix(now.Add(10 * time.Minute).UnixNano())
		var filters []string
		step := int64(win.Size / time.Second)
		if (to-from)/step <= 256 {
			for s := from; s <= to; s += step {
				filters = append(filters, "*."+strconv.FormatInt(s, 10))
			}
		} else {
			filters = []string{">"}
		}
		lister, err := w.sh.buckets.agg[wi].ListKeysFiltered(ctx, filters...)
		if err != nil {
			return err
		}
		var keys []string
		for k := range lister.Keys() {
			keys = append(keys, k)
		}
		_ = lister.Stop()
		for _, key := range keys {
			k, err := agg.ParseKVKey(key)
			if err != nil || k.Start < from || !w.ownsService(k.Service) {
				continue
			}
			k.Window = uint8(wi)
			if w.entries[k] != nil {
				continue
			}
			stored, rev, err := w.load(uint8(wi), key)
			if err != nil {
				return err
			}
			bk := bucketKey{w: uint8(wi), start: k.Start}
			b := w.buckets[bk]
			if b == nil {
				// The listing covered the whole bucket: no need to list it
				// again on first touch.
				b = &bucketState{listed: true, exists: map[string]bool{}}
				w.buckets[bk] = b
			}
			if stored == nil { // a deletion marker: read again on touch
				b.exists[key] = false
				continue
			}
			e := &entry{key: k, kvKey: key, stored: stored, rev: rev}
			if k.Service != w.overflowN {
				b.admitted++
			}
			b.entries = append(b.entries, e)
			w.entries[k] = e
		}
	}
	return nil
}

// ownsService reports whether the service's aggregates belong to this
// shard (its own overflow service included).
func (w *shardWorker) ownsService(s string) bool {
	if strings.HasPrefix(s, agg.OverflowService+"-") {
		return s == w.overflowN
	}
	return event.Shard(s, w.sh.cfg.NATS.Shards) == w.shard
}

// updateGauges publishes the shard's lag and watermark delay.
func (w *shardWorker) updateGauges(now time.Time) {
	g := shardCounters(w.shard)
	g.lag.Set(float64(w.pending))
	delay := 0.0
	if !w.caughtUpAt.IsZero() {
		delay = now.Sub(w.caughtUpAt).Seconds()
	}
	setWatermarkDelay(w.shard, delay)
}
