package processor

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/agg"
	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/natsutil"
	"github.com/stacklens/stacklens/internal/window"
)

// get reads one stored aggregate.
func (h *harness) get(ctx context.Context, window, service string, start time.Time) (*agg.Aggregate, error) {
	kv, err := h.js.KeyValue(ctx, natsutil.AggBucket(window))
	if err != nil {
		return nil, err
	}
	e, err := kv.Get(ctx, agg.Key{Service: service, Start: start.Unix()}.KVKey())
	if err != nil {
		return nil, err
	}
	return agg.Decode(e.Value())
}

func (h *harness) waitAgg(window, service string, start time.Time, cond func(a *agg.Aggregate) error) *agg.Aggregate {
	h.t.Helper()
	ctx := testenv.Context(h.t)
	var got *agg.Aggregate
	testenv.Eventually(h.t, 20*time.Second, func() error {
		a, err := h.get(ctx, window, service, start)
		if err != nil {
			return err
		}
		got = a
		return cond(a)
	})
	return got
}

func isFinal(want bool) func(a *agg.Aggregate) error {
	return func(a *agg.Aggregate) error {
		if a.Final != want {
			return fmt.Errorf("final %v, want %v (count %d, version %d)", a.Final, want, a.Count, a.Version)
		}
		return nil
	}
}

func ev(svc string, t time.Time, lat float64) testEvent {
	return testEvent{Service: svc, Time: t, Latency: lat, Level: "info", Risk: -1}
}

// TestFinalityLateFutureOutOfOrder walks one shard through the time rules
// with a fake clock: out-of-order events, a late event within the
// lateness, finality of an idle shard, a correction after finality, a
// future event, and a too_late event dead-lettered.
func TestFinalityLateFutureOutOfOrder(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "1", "AGGREGATION_WINDOWS": "1min,5min"})
	ctx := testenv.Context(t)
	b0 := time.Now().Truncate(5 * time.Minute).Add(-time.Hour) // a 5min-aligned bucket start
	clock := newFakeClock(b0.Add(40 * time.Second))
	// Out of order: second bucket first, then first bucket, interleaved.
	h.publish(ev("api", b0.Add(70*time.Second), 10), ev("api", b0.Add(5*time.Second), 2.5),
		ev("api", b0.Add(65*time.Second), 4), ev("web", b0.Add(30*time.Second), 1.25))
	h.startWorker("w", clock)
	h.waitExact(20 * time.Second)
	h.waitAgg("1min", "api", b0, isFinal(false))

	// Within the lateness (clock 10s after the bucket end): applied, not final.
	clock.Set(b0.Add(70 * time.Second))
	h.publish(ev("api", b0.Add(50*time.Second), 0.5))
	h.waitExact(20 * time.Second)
	a := h.waitAgg("1min", "api", b0, isFinal(false))
	if a.Count != 2 {
		t.Fatalf("count %d", a.Count)
	}

	// Past end + lateness, shard idle: final, without new events.
	clock.Set(b0.Add(91 * time.Second))
	fin := h.waitAgg("1min", "api", b0, isFinal(true))
	h.waitAgg("1min", "web", b0, isFinal(true))
	h.waitAgg("1min", "api", b0.Add(time.Minute), isFinal(false))
	h.waitAgg("5min", "api", b0, isFinal(false))

	// A correction: late event for the final bucket; version rises, final stays.
	late0 := lateEvents.Get()
	h.publish(ev("api", b0.Add(10*time.Second), 8))
	h.waitExact(20 * time.Second)
	corr := h.waitAgg("1min", "api", b0, func(a *agg.Aggregate) error {
		if a.Count != 3 {
			return fmt.Errorf("count %d", a.Count)
		}
		return nil
	})
	if !corr.Final || corr.Version <= fin.Version {
		t.Fatalf("correction: final %v version %d (was %d)", corr.Final, corr.Version, fin.Version)
	}
	if lateEvents.Get() <= late0 {
		t.Fatal("late_events_total did not rise")
	}
	// A new service's late event in the final bucket is final at once.
	h.publish(ev("late-svc", b0.Add(20*time.Second), 3))
	h.waitExact(20 * time.Second)
	h.waitAgg("1min", "late-svc", b0, isFinal(true))

	// A future event (ahead of the clock) is kept in its bucket, open.
	fut := clock.Now().Add(3 * time.Minute)
	h.publish(ev("api", fut, 7))
	h.waitExact(20 * time.Second)
	fb := time.Unix(fut.Unix()/60*60, 0)
	h.waitAgg("1min", "api", fb, isFinal(false))
	clock.Set(fb.Add(time.Minute + 31*time.Second))
	h.waitAgg("1min", "api", fb, isFinal(true))
	h.waitAgg("5min", "api", b0, isFinal(true))

	// Too late: older than the stream's horizon when it entered the stream.
	tooLate0 := tooLateEvents.Get()
	js, err := jetstream.New(h.nats.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	old := ev("api", time.Now().Add(-h.cfg.NATS.EventsMaxAge-time.Hour), 1)
	if _, err := js.Publish(ctx, natsutil.EventSubject(0, "api"), old.JSON()); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		m, err := h.nats.JetStream(t).Stream(ctx, natsutil.StreamEvents)
		if err != nil {
			return err
		}
		msg, err := m.GetLastMsgForSubject(ctx, natsutil.DLQSubject("processor", event.ReasonTooLate))
		if err != nil {
			return err
		}
		if msg.Header.Get(natsutil.HdrDLQReason) != string(event.ReasonTooLate) || string(msg.Data) != string(old.JSON()) {
			return errors.New("bad dead letter")
		}
		return nil
	})
	if tooLateEvents.Get() <= tooLate0 {
		t.Fatal("too_late_total did not rise")
	}
	h.waitExact(20 * time.Second) // nothing counted for it
}

// TestConcurrentWritersStayExact runs two workers on the same shard at
// once, without leases — the worst case of a stale owner waking up — and
// checks that CAS and last_seq keep the aggregates exact.
func TestConcurrentWritersStayExact(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "1"})
	ctx := testenv.Context(t)
	r := rand.New(rand.NewPCG(9, 10))
	base := time.Now().Add(-10 * time.Minute).Truncate(time.Minute)
	h.publish(genEvents(r, 2000, 10, base, 5*time.Minute)...)
	var ws []*shardWorker
	for i := 0; i < 2; i++ {
		sh, err := setup(ctx, h.nats.Conn(t), h.cfg, testLogger(t, "c"), RealClock, fmt.Sprintf("c%d", i))
		if err != nil {
			t.Fatal(err)
		}
		w := newShardWorker(sh, 0, nil)
		ws = append(ws, w)
		go w.run(ctx)
	}
	conflicts0 := casConflicts.Get()
	for i := 0; i < 5; i++ {
		h.publish(genEvents(r, 500, 10, base, 5*time.Minute)...)
	}
	h.waitExact(30 * time.Second)
	for _, w := range ws {
		w.stop(ctx)
	}
	h.waitExact(10 * time.Second)
	t.Logf("CAS conflicts: %d", casConflicts.Get()-conflicts0)
}

// TestRedeliveryNotCountedTwice re-consumes a shard from an old checkpoint
// (as after a crash between the aggregate writes and the checkpoint): the
// events already in the aggregates are skipped by last_seq.
func TestRedeliveryNotCountedTwice(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "2"})
	ctx := testenv.Context(t)
	r := rand.New(rand.NewPCG(11, 12))
	base := time.Now().Add(-10 * time.Minute).Truncate(time.Minute)
	h.publish(genEvents(r, 1000, 10, base, 5*time.Minute)...)
	w := h.startWorker("w", nil)
	h.waitExact(20 * time.Second)
	w.stop(t)
	// Rewind every checkpoint to 0: the whole stream is delivered again.
	kv, err := h.js.KeyValue(ctx, natsutil.ProcessorBucket)
	if err != nil {
		t.Fatal(err)
	}
	for s := 0; s < 2; s++ {
		if _, err := kv.Put(ctx, ckptKey(s), []byte(`{"seq":0}`)); err != nil {
			t.Fatal(err)
		}
	}
	h.publish(genEvents(r, 300, 10, base, 5*time.Minute)...)
	skipped0 := skippedFolds.Get()
	w2 := h.startWorker("w2", nil)
	h.waitExact(20 * time.Second)
	if got := skippedFolds.Get() - skipped0; got != 3*1000 {
		t.Errorf("redelivered folds skipped: %d, want %d (1000 events × 3 windows)", got, 3*1000)
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		for s := 0; s < 2; s++ {
			e, err := kv.Get(ctx, ckptKey(s))
			if err != nil {
				return err
			}
			if string(e.Value()) == `{"seq":0}` {
				return errors.New("checkpoint not advanced")
			}
		}
		return nil
	})
	w2.stop(t)
	h.waitExact(5 * time.Second)
}

// TestReplayEqualsLive rebuilds the aggregates from the stream into fresh
// buckets and compares them with what live processing produced; then swaps
// a replay in with the processors stopped and checks that processing
// continues exactly from the replay's end.
func TestReplayEqualsLive(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "4"})
	ctx := testenv.Context(t)
	r := rand.New(rand.NewPCG(13, 14))
	base := time.Now().Add(-20 * time.Minute).Truncate(time.Minute)
	h.publish(genEvents(r, 3000, 15, base, 15*time.Minute)...)
	h.publish(genEvents(r, 200, 15, time.Now().Add(-30*time.Second), 20*time.Second)...) // open buckets
	w := h.startWorker("w", nil)
	h.waitExact(30 * time.Second)
	w.stop(t)
	live, err := h.readAll(ctx)
	if err != nil {
		t.Fatal(err)
	}

	var progress testenv.SyncBuffer
	res, err := Replay(ctx, h.cfg, h.nats.Conn(t), testLogger(t, "replay"), ReplayOptions{IntoFresh: true, Suffix: "t1", Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	if res.Events != 3200 {
		t.Errorf("replayed %d events, want 3200", res.Events)
	}
	fresh, err := readBuckets(ctx, h.js, h.windows, func(w window.Window) string { return FreshBucket(w, "t1") })
	if err != nil {
		t.Fatal(err)
	}
	compareAggs(t, live, fresh)
	if !strings.Contains(progress.String(), "replaying") {
		t.Errorf("no progress bar: %q", progress.String())
	}

	// Swap: wipe one live key to show the swap restores it; processors are
	// stopped, so it is allowed.
	kv, err := h.js.KeyValue(ctx, natsutil.AggBucket("1min"))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := listKeys(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(ctx, keys[0]); err != nil {
		t.Fatal(err)
	}
	res, err = Replay(ctx, h.cfg, h.nats.Conn(t), nil, ReplayOptions{Suffix: "t2"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Swapped != len(live) {
		t.Errorf("swapped %d, want %d", res.Swapped, len(live))
	}
	after, err := h.readAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	compareAggs(t, live, after)
	purged := expKeyOf(t, keys[0], "1min")
	for k, a := range after {
		if k != purged && a.Version <= live[k].Version {
			t.Errorf("%v: version %d not above live %d", k, a.Version, live[k].Version)
		}
	}
	if _, err := h.js.KeyValue(ctx, FreshBucket(h.windows[0], "t2")); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Errorf("fresh bucket not deleted: %v", err)
	}
	// Processing resumes after the replay's checkpoints, exactly.
	h.publish(genEvents(r, 500, 15, base, 15*time.Minute)...)
	w2 := h.startWorker("w2", nil)
	h.waitExact(30 * time.Second)
	// With a processor running, a swap is refused.
	h.waitOwners(20*time.Second, ownsAll("w2", 4))
	if _, err := Replay(ctx, h.cfg, h.nats.Conn(t), nil, ReplayOptions{Suffix: "t3"}); !errors.Is(err, ErrProcessorsRunning) {
		t.Errorf("swap with running processors: %v", err)
	}
	w2.stop(t)
}

func expKeyOf(t *testing.T, kvKey, window string) expKey {
	k, err := agg.ParseKVKey(kvKey)
	if err != nil {
		t.Fatal(err)
	}
	return expKey{Service: k.Service, Window: window, Start: k.Start}
}

// compareAggs checks that two sets of aggregates hold the same statistics
// (versions aside).
func compareAggs(t *testing.T, want, got map[expKey]*agg.Aggregate) {
	t.Helper()
	if len(want) != len(got) {
		t.Errorf("%d aggregates, want %d", len(got), len(want))
	}
	for k, w := range want {
		g := got[k]
		if g == nil {
			t.Errorf("%v missing", k)
			continue
		}
		if g.Count != w.Count || g.ErrorCount != w.ErrorCount || g.WarningCount != w.WarningCount ||
			g.LatencySum != w.LatencySum || g.LatencySqSum != w.LatencySqSum || g.RiskSum != w.RiskSum ||
			g.RiskCount != w.RiskCount || g.LatencyMin != w.LatencyMin || g.LatencyMax != w.LatencyMax ||
			g.FirstEvent != w.FirstEvent || g.LastEvent != w.LastEvent || g.LastSeq != w.LastSeq ||
			g.Final != w.Final || g.Quantile(0.5) != w.Quantile(0.5) || g.Quantile(0.99) != w.Quantile(0.99) {
			t.Errorf("%v differs:\n got %+v\nwant %+v", k, *g, *w)
		}
	}
}

// TestFinalityAfterHandover: a member stops with open (non-final) buckets;
// a new owner, with no new events at all, finds them through the
// checkpoint's open list and finalizes them.
func TestFinalityAfterHandover(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "2", "AGGREGATION_WINDOWS": "1min,1hour"})
	b0 := time.Now().Truncate(time.Hour).Add(-2 * time.Hour)
	clock := newFakeClock(b0.Add(20 * time.Second))
	h.publish(ev("h1", b0.Add(time.Second), 1), ev("h2", b0.Add(2*time.Second), 2), ev("h3", b0.Add(3*time.Second), 3))
	a := h.startWorker("a", clock)
	h.waitExact(20 * time.Second)
	h.waitAgg("1min", "h1", b0, isFinal(false))
	a.stop(t)
	clock.Set(b0.Add(time.Hour + time.Minute))
	h.startWorker("b", clock)
	for _, s := range []string{"h1", "h2", "h3"} {
		h.waitAgg("1min", s, b0, isFinal(true))
		h.waitAgg("1hour", s, b0, isFinal(true))
	}
}
