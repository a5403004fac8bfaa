package processor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/schollz/progressbar/v3"

	"github.com/stacklens/stacklens/internal/agg"
	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/lease"
	"github.com/stacklens/stacklens/internal/natsutil"
	"github.com/stacklens/stacklens/internal/window"
)

// ReplayOptions configure Replay.
type ReplayOptions struct {
	// FromSeq / FromTime start the rebuild at a stream sequence or time;
	// both zero: from the beginning of the stream.
	FromSeq  uint64
	FromTime time.Time
	// IntoFresh only builds the fresh buckets and leaves the live ones
	// alone; otherwise the result is swapped into the live buckets.
	IntoFresh bool
	// Suffix names the fresh buckets stacklens_agg_<window>_<Suffix>
	// (default replay_<unix-seconds>).
	Suffix string
	// Keep keeps the fresh buckets after a swap.
	Keep bool
	// Force swaps even if shard leases look held (processors running).
	Force bool
	// Progress receives a progress bar (nil: none).
	Progress io.Writer
	// Clock defaults to the system clock (finality of rebuilt buckets).
	Clock Clock
}

// ReplayResult describes a finished replay.
type ReplayResult struct {
	Buckets []string       // the fresh buckets, per window
	Events  uint64         // stream messages folded or dead-lettered
	Keys    int            // aggregates built
	Swapped int            // aggregates written into the live buckets
	EndSeq  map[int]uint64 // per shard, the last sequence folded
}

// ErrProcessorsRunning is returned by a swapping Replay while shard leases
// are held.
var ErrProcessorsRunning = errors.New("processors are running (shard leases are held): stop them first, or use --into-fresh")

// FreshBucket is the name of a window's replay bucket.
func FreshBucket(w window.Window, suffix string) string {
	return natsutil.AggBucket(w.Name) + "_" + suffix
}

// Replay rebuilds the aggregates from the event stream into fresh buckets
// stacklens_agg_<window>_<suffix>, with the processor's own folding code
// (so the result equals what live processing produced), and unless
// IntoFresh swaps them into the live buckets: every rebuilt aggregate is
// written over its live key with a version above the live one (so
// projections accept it), and every shard checkpoint is set to the end of
// the replay, so processors started afterwards continue from there. A
// swap requires the processors to be stopped.
func Replay(ctx context.Context, cfg *config.Config, nc *nats.Conn, log *slog.Logger, o ReplayOptions) (ReplayResult, error) {
	var res ReplayResult
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = RealClock
	}
	if o.Suffix == "" {
		o.Suffix = "replay_" + strconv.FormatInt(time.Now().Unix(), 10)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(8192))
	if err != nil {
		return res, err
	}
	st, err := js.Stream(ctx, natsutil.StreamEvents)
	if err != nil {
		return res, fmt.Errorf("stream %s: %w", natsutil.StreamEvents, err)
	}
	windows, err := cfg.Pipeline.ValidWindows()
	if err != nil {
		return res, err
	}
	coord, err := natsutil.EnsureKV(ctx, js, CoordBucketConfig(cfg))
	if err != nil {
		return res, err
	}
	if !o.IntoFresh && !o.Force {
		if err := checkStopped(ctx, coord, cfg.NATS.Shards, o.Clock.Now()); err != nil {
			return res, err
		}
	}
	if !o.IntoFresh {
		// The swap writes into the live buckets: make sure they exist
		// (an operator may have removed one to rebuild it) before
		// anything is built.
		for _, w := range windows {
			if _, err := natsutil.EnsureKV(ctx, js, AggBucketConfig(cfg, w, natsutil.AggBucket(w.Name))); err != nil {
				return res, err
			}
		}
	}
	bs := bucketSet{windows: windows}
	for _, w := range windows {
		name := FreshBucket(w, o.Suffix)
		kv, err := natsutil.EnsureKV(ctx, js, AggBucketConfig(cfg, w, name))
		if err != nil {
			return res, err
		}
		if err := bs.add(ctx, js, name, kv); err != nil {
			return res, err
		}
	}
	res.Buckets = bs.names
	lim, err := limitsOf(cfg)
	if err != nil {
		return res, err
	}
	sh := &shared{cfg: cfg, log: log, clock: o.Clock, js: js, stream: st, buckets: bs, limits: lim, id: "replay", unreadable: &unreadableSet{}, slo: &sloThresholds{}}
	// Rebuilt aggregates count the SLO latency thresholds defined now, so
	// history gets exact counts for thresholds defined after its events.
	ckv, err := js.KeyValue(ctx, natsutil.ConfigBucket)
	if err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
		return res, fmt.Errorf("kv bucket %s: %w", natsutil.ConfigBucket, err)
	}
	ts, err := readThresholds(ctx, ckv)
	if err != nil {
		return res, err
	}
	sh.setThresholds(ts)
	if len(ts) > 0 {
		log.Info("replay counts the SLO latency thresholds", "thresholds_ms", ts)
	}

	// Progress: the total grows as each shard reports its backlog.
	var total, done atomic.Int64
	var bar *progressbar.ProgressBar
	if o.Progress != nil {
		bar = progressbar.NewOptions64(-1, progressbar.OptionSetWriter(o.Progress),
			progressbar.OptionSetDescription("replaying"), progressbar.OptionShowCount(),
			progressbar.OptionShowIts(), progressbar.OptionSetItsString("events"),
			progressbar.OptionThrottle(100*time.Millisecond))
	}
	stopBar := make(chan struct{})
	var barWG sync.WaitGroup
	if bar != nil {
		safeGo(&barWG, func() {
			t := time.NewTicker(100 * time.Millisecond)
			defer t.Stop()
			for {
				if n := total.Load(); n > 0 {
					bar.ChangeMax64(n)
				}
				_ = bar.Set64(done.Load())
				select {
				case <-stopBar:
					return
				case <-t.C:
				}
			}
		})
	}

	workers := make([]*shardWorker, cfg.NATS.Shards)
	errs := make([]error, cfg.NATS.Shards)
	var wg sync.WaitGroup
	for s := range workers {
		w := newShardWorker(sh, s, nil)
		w.fromSeq, w.fromTime = o.FromSeq, o.FromTime
		first := true
		w.onFold = func(int) {
			if first { // called with w.mu held
				first = false
				total.Add(int64(w.pending) + 1)
			}
			done.Add(1)
		}
		workers[s] = w
		safeGo(&wg, func() { errs[s] = w.replay(ctx) })
	}
	wg.Wait()
	close(stopBar)
	barWG.Wait()
	if bar != nil {
		_ = bar.Finish()
		fmt.Fprintln(o.Progress)
	}
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	res.EndSeq = map[int]uint64{}
	for s, w := range workers {
		res.EndSeq[s] = w.consumed
		res.Events += uint64(w.folded)
	}
	for _, kv := range bs.agg {
		n, err := countKeys(ctx, kv)
		if err != nil {
			return res, err
		}
		res.Keys += n
	}
	log.Info("replay built", "buckets", bs.names, "events", res.Events, "aggregates", res.Keys)
	if o.IntoFresh {
		return res, nil
	}
	swapFrom := int64(0)
	if o.FromSeq > 0 || !o.FromTime.IsZero() {
		t := o.FromTime
		if o.FromSeq > 0 {
			m, err := st.GetMsg(ctx, o.FromSeq)
			if err != nil {
				return res, fmt.Errorf("replay start seq %d: %w", o.FromSeq, err)
			}
			t = m.Time
		}
		// Buckets that may hold events published before the start are
		// incomplete in the replay; the live ones are kept.
		swapFrom = t.Add(cfg.Pipeline.MaxFutureSkew).Unix()
	}
	if res.Swapped, err = swap(ctx, js, windows, bs, swapFrom); err != nil {
		return res, err
	}
	for s, w := range workers {
		v := checkpointValue{Seq: w.consumed, Open: w.openWindows(), Owner: "replay", Updated: time.Now().UTC()}
		if w.consumed == 0 {
			continue
		}
		b, _ := json.Marshal(v)
		if _, err := coord.Put(ctx, ckptKey(s), b); err != nil {
			return res, err
		}
	}
	if !o.Keep {
		for _, name := range bs.names {
			if err := js.DeleteKeyValue(ctx, name); err != nil {
				return res, err
			}
		}
	}
	log.Info("replay swapped in", "aggregates", res.Swapped)
	return res, nil
}

// replay runs one shard from its start to the stream head seen at start,
// flushing into the fresh buckets, then finalizes what is due.
func (w *shardWorker) replay(ctx context.Context) error {
	defer func() {
		w.mu.Lock()
		w.gen++
		if w.cc != nil {
			w.cc.Stop()
			w.cc = nil
		}
		w.mu.Unlock()
		w.stopF()
	}()
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	head, err := w.shardHead(hctx)
	cancel()
	if err != nil {
		return err
	}
	w.mu.Lock()
	err = w.restartLocked()
	w.mu.Unlock()
	if err != nil {
		return err
	}
	t := time.NewTicker(w.sh.cfg.Processor.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		w.mu.Lock()
		if w.needReset {
			err = w.restartLocked()
		} else if w.consumed >= head {
			// Everything up to the head is folded: stop consuming, treat
			// the shard as caught up, and write the rest with finality.
			if w.cc != nil {
				w.cc.Stop()
				w.cc = nil
			}
			w.gen++
			w.pending, w.marks, w.msgsSince = 0, nil, 0
			w.caughtUpAt = w.sh.clock.Now()
			err = w.flushLocked()
			w.mu.Unlock()
			if err != nil {
				return fmt.Errorf("replay shard %d: %w", w.shard, err)
			}
			return nil
		} else if err = w.flushLocked(); err != nil {
			err = w.restartLocked()
		}
		w.mu.Unlock()
		if err != nil {
			return fmt.Errorf("replay shard %d: %w", w.shard, err)
		}
	}
}

func checkStopped(ctx context.Context, coord jetstream.KeyValue, shards int, now time.Time) error {
	for s := 0; s < shards; s++ {
		e, err := coord.Get(ctx, leaseKey(s))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		var v lease.Value
		if json.Unmarshal(e.Value(), &v) == nil && v.Owner != "" && v.Expires.After(now) {
			return fmt.Errorf("shard %d is held by %s: %w", s, v.Owner, ErrProcessorsRunning)
		}
	}
	return nil
}

func listKeys(ctx context.Context, kv jetstream.KeyValue) ([]string, error) {
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	_ = lister.Stop() // "invalid subscription" once the listing has ended
	return keys, nil
}

func countKeys(ctx context.Context, kv jetstream.KeyValue) (int, error) {
	keys, err := listKeys(ctx, kv)
	return len(keys), err
}

// swap copies the rebuilt aggregates over the live ones, each with a
// version above the live version.
func swap(ctx context.Context, js jetstream.JetStream, windows []window.Window, bs bucketSet, from int64) (int, error) {
	n := 0
	for i, w := range windows {
		live, err := js.KeyValue(ctx, natsutil.AggBucket(w.Name))
		if err != nil {
			return n, err
		}
		keys, err := listKeys(ctx, bs.agg[i])
		if err != nil {
			return n, err
		}
		for _, key := range keys {
			k, err := agg.ParseKVKey(key)
			if err != nil || k.Start < from {
				continue
			}
			fe, err := bs.agg[i].Get(ctx, key)
			if err != nil {
				return n, err
			}
			a, err := agg.Decode(fe.Value())
			if err != nil {
				return n, err
			}
			if le, err := live.Get(ctx, key); err == nil {
				if la, err := agg.Decode(le.Value()); err == nil {
					a.Version = max(a.Version, la.Version) + 1
				}
			} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
				return n, err
			}
			if _, err := live.Put(ctx, key, a.Encode(nil, w)); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}
