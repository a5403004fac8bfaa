package processor

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/agg"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/natsutil"
)

// configKV returns the stacklens_config bucket, created as the API does.
func (h *harness) configKV(ctx context.Context) jetstream.KeyValue {
	h.t.Helper()
	kv, err := natsutil.EnsureKV(ctx, h.js, natsutil.ConfigBucketConfig(h.cfg.NATS))
	if err != nil {
		h.t.Fatal(err)
	}
	return kv
}

func (h *harness) putThresholds(ctx context.Context, ts ...float64) {
	h.t.Helper()
	if _, err := h.configKV(ctx).Put(ctx, natsutil.SLOThresholdsKey, agg.EncodeThresholds(ts)); err != nil {
		h.t.Fatal(err)
	}
}

// stored returns the stored aggregate of (service, window, start), or nil.
func (h *harness) stored(ctx context.Context, service, window string, start time.Time) *agg.Aggregate {
	h.t.Helper()
	all, err := h.readAll(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	return all[expKey{Service: service, Window: window, Start: start.Unix()}]
}

// waitApplied publishes probe events, each for a new service (so a new
// aggregate), until one is stored counting exactly want: the running
// processor has applied the set.
func (h *harness) waitApplied(ctx context.Context, at time.Time, want ...float64) {
	h.t.Helper()
	n := 0
	testenv.Eventually(h.t, 20*time.Second, func() error {
		n++
		svc := fmt.Sprintf("probe-%d-%d", len(want), n)
		h.publish(testEvent{Service: svc, Time: at, Latency: 1, Level: "info", Risk: -1})
		var got *agg.Aggregate
		testenv.Eventually(h.t, 10*time.Second, func() error {
			if got = h.stored(ctx, svc, "1min", at.Truncate(time.Minute)); got == nil {
				return fmt.Errorf("probe %s not stored yet", svc)
			}
			return nil
		})
		if ts := got.Thresholds(); !slices.Equal(ts, want) {
			return fmt.Errorf("probe counts %v, want %v", ts, want)
		}
		return nil
	})
}

func latencyEvents(svc string, at time.Time, lat ...float64) []testEvent {
	out := make([]testEvent, len(lat))
	for i, l := range lat {
		out[i] = testEvent{Service: svc, Time: at.Add(time.Duration(i) * time.Millisecond), Latency: l, Level: "info", Risk: -1}
	}
	return out
}

// goodMap is an aggregate's latency_good as threshold key → count.
func goodMap(a *agg.Aggregate) map[string]uint64 {
	m := map[string]uint64{}
	for _, g := range a.LatencyGood {
		m[agg.ThresholdKey(g.ThresholdMS)] = g.Count
	}
	return m
}

func sameGood(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestThresholdsLoadedBeforeFirstFetch: thresholds present when the
// processor starts are counted by the very first aggregates it creates.
func TestThresholdsLoadedBeforeFirstFetch(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "1", "AGGREGATION_WINDOWS": "1min,5min"})
	ctx := testenv.Context(t)
	base := time.Now().Add(-20 * time.Minute).Truncate(5 * time.Minute)
	h.putThresholds(ctx, 100, 2.5)
	h.publish(latencyEvents("svc", base, 1, 2.5, 3, 100, 100.25, 500)...)
	h.startWorker("w", nil)
	h.waitExact(20 * time.Second)
	for _, win := range []string{"1min", "5min"} {
		if got, want := goodMap(h.stored(ctx, "svc", win, base)), map[string]uint64{"2.5": 2, "100": 4}; !sameGood(got, want) {
			t.Errorf("%s latency_good %v, want %v", win, got, want)
		}
	}
}

// TestThresholdChangesApplyToNewAggregates: without the key nothing is
// counted; a threshold set while the processor runs is counted by the
// aggregates created afterwards only (an existing one keeps its set, so
// its counts stay exact); a deleted key stops the counting of new ones.
func TestThresholdChangesApplyToNewAggregates(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "1", "AGGREGATION_WINDOWS": "1min"})
	ctx := testenv.Context(t)
	base := time.Now().Add(-20 * time.Minute).Truncate(time.Minute)
	a, b, c := base, base.Add(time.Minute), base.Add(2*time.Minute)
	h.startWorker("w", nil)

	// No key: no counts.
	h.publish(latencyEvents("svc", a, 10, 200)...)
	h.waitExact(20 * time.Second)
	if g := h.stored(ctx, "svc", "1min", a); len(g.LatencyGood) != 0 {
		t.Fatalf("counted without thresholds: %v", goodMap(g))
	}

	h.putThresholds(ctx, 100)
	h.waitApplied(ctx, base.Add(5*time.Minute), 100)
	h.publish(latencyEvents("svc", b, 50, 150)...) // new aggregate: {100}
	h.publish(latencyEvents("svc", a, 50)...)      // existing, created without: none
	h.waitExact(20 * time.Second)

	h.putThresholds(ctx, 100, 300)
	h.waitApplied(ctx, base.Add(6*time.Minute), 100, 300)
	h.publish(latencyEvents("svc", b, 250, 99)...)  // existing {100}: keeps it
	h.publish(latencyEvents("svc", c, 250, 350)...) // new: {100, 300}
	h.waitExact(20 * time.Second)

	for _, x := range []struct {
		at   time.Time
		want map[string]uint64
	}{
		{a, map[string]uint64{}},
		{b, map[string]uint64{"100": 2}},
		{c, map[string]uint64{"100": 0, "300": 1}},
	} {
		if got := goodMap(h.stored(ctx, "svc", "1min", x.at)); !sameGood(got, x.want) {
			t.Errorf("window %s: latency_good %v, want %v", x.at.Format("15:04"), got, x.want)
		}
	}

	// A deleted key: new aggregates count nothing; an unreadable value is
	// ignored (the previous set stays).
	kv := h.configKV(ctx)
	if _, err := kv.Put(ctx, natsutil.SLOThresholdsKey, []byte("not json")); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, natsutil.SLOThresholdsKey); err != nil {
		t.Fatal(err)
	}
	h.waitApplied(ctx, base.Add(7*time.Minute))
}

// TestReplayCountsCurrentThresholds: a threshold defined after the events
// were processed is counted exactly in history by a replay.
func TestReplayCountsCurrentThresholds(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "2", "AGGREGATION_WINDOWS": "1min"})
	ctx := testenv.Context(t)
	base := time.Now().Add(-30 * time.Minute).Truncate(time.Minute)
	h.publish(latencyEvents("svc", base, 10, 20, 30, 40)...)
	w := h.startWorker("w", nil)
	h.waitExact(20 * time.Second)
	w.stop(t)
	if g := h.stored(ctx, "svc", "1min", base); len(g.LatencyGood) != 0 {
		t.Fatalf("counted before any threshold: %v", goodMap(g))
	}
	h.putThresholds(ctx, 25)
	if _, err := Replay(ctx, h.cfg, h.nats.Conn(t), nil, ReplayOptions{Suffix: "slo"}); err != nil {
		t.Fatal(err)
	}
	if got, want := goodMap(h.stored(ctx, "svc", "1min", base)), map[string]uint64{"25": 2}; !sameGood(got, want) {
		t.Fatalf("after replay latency_good %v, want %v", got, want)
	}
	// An unreadable value fails the replay rather than rebuilding without it.
	if _, err := h.configKV(ctx).Put(ctx, natsutil.SLOThresholdsKey, []byte("[-1]")); err != nil {
		t.Fatal(err)
	}
	if _, err := Replay(ctx, h.cfg, h.nats.Conn(t), nil, ReplayOptions{Suffix: "bad"}); err == nil {
		t.Fatal("replay with an unreadable thresholds value succeeded")
	}
}

// TestThresholdSourceFailures: no bucket, an unreachable server and a
// cancelled watch are handled: nothing is counted, nothing hangs.
func TestThresholdSourceFailures(t *testing.T) {
	if ts := (&shared{}).thresholds(); ts != nil {
		t.Fatalf("no set: %v", ts)
	}
	sh := &shared{slo: &sloThresholds{}}
	if !sh.setThresholds([]float64{1}) || sh.setThresholds([]float64{1}) {
		t.Fatal("setThresholds does not report changes")
	}
	ctx := testenv.Context(t)
	if ts, err := readThresholds(ctx, nil); ts != nil || err != nil {
		t.Fatalf("no bucket: %v, %v", ts, err)
	}
	h := newHarness(t, nil)
	nc := h.nats.Conn(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := natsutil.EnsureKV(ctx, js, natsutil.ConfigBucketConfig(h.cfg.NATS))
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	if _, err := readThresholds(ctx, kv); err == nil {
		t.Fatal("read on a closed connection succeeded")
	}
	wctx, cancel := context.WithCancel(ctx)
	ready := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		watchThresholds(wctx, sh, kv, testLogger(t, "w"), ready)
	}()
	time.AfterFunc(300*time.Millisecond, cancel) // a few failed attempts first
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not end with its context")
	}
	select {
	case <-ready:
	default:
		t.Fatal("ready not closed when the watch ended")
	}
	if ts := sh.thresholds(); !slices.Equal(ts, []float64{1}) {
		t.Fatalf("set changed without a value: %v", ts)
	}
}
