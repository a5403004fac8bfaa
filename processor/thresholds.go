package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/agg"
	"github.com/stacklens/stacklens/internal/natsutil"
)

// The SLO latency thresholds (docs/processor.md, "Latency good-event
// counts") come from the API through the stacklens_config bucket. A new
// aggregate counts the set known when it is created; an aggregate that
// exists keeps its own set, so every count it carries is exact.

// sloThresholds is the current set, written by the watcher and read by
// the shard workers.
type sloThresholds struct{ p atomic.Pointer[[]float64] }

// thresholds returns the current set (nil: none).
func (sh *shared) thresholds() []float64 {
	if sh.slo == nil {
		return nil
	}
	if p := sh.slo.p.Load(); p != nil {
		return *p
	}
	return nil
}

// setThresholds installs ts and reports whether the set changed.
func (sh *shared) setThresholds(ts []float64) bool {
	if slices.Equal(sh.thresholds(), ts) {
		return false
	}
	sh.slo.p.Store(&ts)
	return true
}

// readThresholds returns the thresholds stored in kv; none when the key
// (or the bucket, kv == nil) does not exist.
func readThresholds(ctx context.Context, kv jetstream.KeyValue) ([]float64, error) {
	if kv == nil {
		return nil, nil
	}
	e, err := kv.Get(ctx, natsutil.SLOThresholdsKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", natsutil.SLOThresholdsKey, err)
	}
	return agg.DecodeThresholds(e.Value())
}

// watchThresholds follows the thresholds key until ctx ends, applying each
// value; ready is closed once the value present at the start is applied
// (or known absent). A broken watch is re-established; an unreadable value
// is logged and the previous set kept.
func watchThresholds(ctx context.Context, sh *shared, kv jetstream.KeyValue, log *slog.Logger, ready chan<- struct{}) {
	signalled := false
	signal := func() {
		if !signalled {
			signalled = true
			close(ready)
		}
	}
	defer signal()
	apply := func(ts []float64) {
		if sh.setThresholds(ts) {
			log.Info("SLO latency thresholds changed; new aggregates count them", "thresholds_ms", ts)
		}
	}
	for wait := 100 * time.Millisecond; ctx.Err() == nil; wait = min(2*wait, 5*time.Second) {
		w, err := kv.Watch(ctx, natsutil.SLOThresholdsKey)
		if err != nil {
			log.Warn("cannot watch the SLO latency thresholds; retrying", "err", err, "in", wait)
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
			continue
		}
		for e := range w.Updates() {
			if e == nil { // the initial value is delivered
				signal()
				continue
			}
			wait = 100 * time.Millisecond
			if e.Operation() != jetstream.KeyValuePut {
				apply(nil)
				continue
			}
			ts, err := agg.DecodeThresholds(e.Value())
			if err != nil {
				log.Error("unreadable SLO latency thresholds ignored; keeping the previous set",
					"key", natsutil.SLOThresholdsKey, "err", err)
				continue
			}
			apply(ts)
		}
		_ = w.Stop()
	}
}

// newDelta returns the delta of entry e: an existing stored aggregate's
// thresholds (an aggregate never gains one mid-window), else the current
// set. A delta flushed earlier is reused when there is one.
func (w *shardWorker) newDelta(e *entry) *agg.Aggregate {
	var d *agg.Aggregate
	if n := len(w.spare); n > 0 {
		d, w.spare = w.spare[n-1], w.spare[:n-1]
		d.Reset()
		d.Service, d.Start = e.key.Service, e.key.Start
	} else {
		d = agg.NewAggregate(e.key.Service, e.key.Start)
	}
	if e.stored != nil && e.stored.Count > 0 {
		d.SetThresholdsLike(e.stored)
	} else {
		d.SetThresholds(w.sh.thresholds())
	}
	return d
}
