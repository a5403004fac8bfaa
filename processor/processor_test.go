package processor

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/stacklens/stacklens/internal/agg"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/lease"
	"github.com/stacklens/stacklens/internal/natsutil"
)

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

func TestSingleWorkerExact(t *testing.T) {
	h := newHarness(t, nil)
	r := rand.New(rand.NewPCG(1, 2))
	base := time.Now().Add(-10 * time.Minute).Truncate(time.Minute)
	before := progress()
	h.publish(genEvents(r, 3000, 20, base, 5*time.Minute)...)
	h.startWorker("w1", nil)
	h.waitExact(30 * time.Second)
	// More while running.
	h.publish(genEvents(r, 2000, 20, base, 8*time.Minute)...)
	h.waitExact(30 * time.Second)
	// The progress line's figures moved with the work (other tests of the
	// package may add to the same counters, never subtract).
	after := progress()
	if after["in"]-before["in"] < 5000 || after["out"] <= before["out"] || after["owned_shards"] < 1 {
		t.Errorf("progress figures before %v, after %v: want in +5000 or more, out up, shards owned", before, after)
	}
}

// progress reads ProgressFigures by name.
func progress() map[string]float64 {
	m := map[string]float64{}
	for _, f := range ProgressFigures() {
		m[f.Name] = f.Value
	}
	return m
}

// TestNaiveTimestampsInEventTimezone: with EVENT_TIMEZONE set, the
// processor reads naive timestamps (Python's datetime.now().isoformat())
// in that zone, as the bridge did, so they land in the windows of their
// true instant; timestamps with an offset are unaffected.
func TestNaiveTimestampsInEventTimezone(t *testing.T) {
	h := newHarness(t, map[string]string{"EVENT_TIMEZONE": "America/Los_Angeles"})
	la, err := time.LoadLocation("America/Los_Angeles")
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 4))
	base := time.Now().Add(-10 * time.Minute).Truncate(time.Minute)
	evs := genEvents(r, 400, 5, base, 5*time.Minute)
	for i := range evs {
		if i%2 == 0 {
			evs[i].Stamp = evs[i].Time.In(la).Format("2006-01-02T15:04:05.999999999")
		}
	}
	h.publish(evs...)
	h.startWorker("w1", nil)
	h.waitExact(30 * time.Second)
}

// TestOverflow caps the services per bucket: the first MAX_SERVICES
// services of a shard get their own keys, the rest are summed under the
// shard's _overflow-<shard> key, and the totals stay exact.
func TestOverflow(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "1", "MAX_SERVICES": "3", "AGGREGATION_WINDOWS": "1min"})
	ctx := testenv.Context(t)
	b0 := time.Now().Add(-time.Hour).Truncate(time.Minute)
	var evs []testEvent
	for i := 0; i < 6; i++ {
		for j := 0; j <= i; j++ {
			evs = append(evs, ev(fmt.Sprintf("s%d", i), b0.Add(time.Duration(j)*time.Second), float64(i+1)))
		}
	}
	over0 := overflowEvents.Get()
	h.publish(evs...)
	h.startWorker("w", nil)
	testenv.Eventually(t, 20*time.Second, func() error {
		got, err := h.readAll(ctx)
		if err != nil {
			return err
		}
		var total, services uint64
		for k, a := range got {
			total += a.Count
			if !strings.HasPrefix(k.Service, "_overflow-") {
				services++
			} else if k.Service != "_overflow-0" {
				return fmt.Errorf("overflow key %q", k.Service)
			}
		}
		if total != uint64(len(evs)) || services != 3 {
			return fmt.Errorf("total %d of %d, %d services (%v)", total, len(evs), services, got)
		}
		o := got[expKey{Service: "_overflow-0", Window: "1min", Start: b0.Unix()}]
		if o == nil || o.Count != 4+5+6 {
			return fmt.Errorf("overflow %+v", o)
		}
		return nil
	})
	if overflowEvents.Get()-over0 != 15 {
		t.Errorf("overflow_events_total rose by %d, want 15", overflowEvents.Get()-over0)
	}
}

// TestNATSRestart restarts the server under a running processor: it
// reconnects, re-consumes from its checkpoints and stays exact.
func TestNATSRestart(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "2"})
	r := rand.New(rand.NewPCG(15, 16))
	base := time.Now().Add(-10 * time.Minute).Truncate(time.Minute)
	h.publish(genEvents(r, 1000, 10, base, 5*time.Minute)...)
	w := h.startWorker("w", nil)
	h.waitExact(20 * time.Second)
	h.nats.Restart()
	h.publish(genEvents(r, 1000, 10, base, 5*time.Minute)...)
	h.waitExact(60 * time.Second)
	w.stop(t)
}

// TestLeaseStolen takes a shard's lease away from a running member (as a
// member that outlived a stall would find it): the member drops the shard
// without writing, keeps the others, and takes it back once the lease is
// free again; the aggregates stay exact throughout.
func TestLeaseStolen(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "2", "LEASE_TTL": "1s"})
	ctx := testenv.Context(t)
	r := rand.New(rand.NewPCG(17, 18))
	base := time.Now().Add(-10 * time.Minute).Truncate(time.Minute)
	h.publish(genEvents(r, 500, 10, base, 5*time.Minute)...)
	w := h.startWorker("a", nil)
	h.waitOwners(20*time.Second, ownsAll("a", 2))
	h.waitExact(20 * time.Second)
	kv, err := h.js.KeyValue(ctx, natsutil.ProcessorBucket)
	if err != nil {
		t.Fatal(err)
	}
	steal := func(owner string, expires time.Time) {
		e, err := kv.Get(ctx, leaseKey(0))
		if err != nil {
			t.Fatal(err)
		}
		var v lease.Value
		if err := json.Unmarshal(e.Value(), &v); err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(lease.Value{Owner: owner, Epoch: v.Epoch + 1, Expires: expires})
		if _, err := kv.Put(ctx, leaseKey(0), b); err != nil {
			t.Fatal(err)
		}
	}
	steal("intruder", time.Now().Add(time.Hour))
	h.waitOwners(20*time.Second, func(by map[string]int) error {
		if by["a"] != 1 || by["intruder"] != 1 {
			return errors.New("want a to have dropped shard 0")
		}
		return nil
	})
	h.publish(genEvents(r, 500, 10, base, 5*time.Minute)...)
	steal("", time.Time{}) // released
	h.waitOwners(20*time.Second, ownsAll("a", 2))
	h.waitExact(20 * time.Second)
	w.stop(t)
}

// TestMetricsExposed checks that every processor metric is exported under
// its full name.
func TestMetricsExposed(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "1"})
	h.publish(ev("m", time.Now().Add(-time.Minute), 1))
	h.startWorker("w", nil)
	h.waitExact(20 * time.Second)
	var b strings.Builder
	metrics.WritePrometheus(&b, false)
	for _, name := range []string{
		`stacklens_processor_events_folded_total{shard="0"}`, "stacklens_processor_flushes_total",
		"stacklens_processor_flush_seconds_bucket", "stacklens_processor_cas_conflicts_total",
		`stacklens_processor_lag_events{shard="0"}`, "stacklens_processor_owned_shards",
		"stacklens_processor_late_events_total", "stacklens_processor_too_late_total",
		"stacklens_processor_overflow_events_total", "stacklens_processor_watermark_delay_seconds",
		"stacklens_processor_unreadable_aggregates", "stacklens_processor_unparsable_metadata_total",
	} {
		if !strings.Contains(b.String(), name) {
			t.Errorf("metric %s missing", name)
		}
	}
}

// TestDeletedKeyDoesNotWedge deletes and purges live aggregate keys (an
// operator's `nats kv del`): the processor writes over the markers instead
// of failing its CAS forever.
func TestDeletedKeyDoesNotWedge(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "1", "AGGREGATION_WINDOWS": "1min"})
	ctx := testenv.Context(t)
	b0 := time.Now().Add(-time.Hour).Truncate(time.Minute)
	h.publish(ev("d1", b0, 1), ev("d2", b0, 1))
	w := h.startWorker("w", nil)
	h.waitExact(20 * time.Second)
	kv, err := h.js.KeyValue(ctx, natsutil.AggBucket("1min"))
	if err != nil {
		t.Fatal(err)
	}
	k1, k2 := agg.Key{Service: "d1", Start: b0.Unix()}.KVKey(), agg.Key{Service: "d2", Start: b0.Unix()}.KVKey()
	if err := kv.Delete(ctx, k1); err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(ctx, k2); err != nil {
		t.Fatal(err)
	}
	h.publish(ev("d1", b0.Add(time.Second), 2), ev("d2", b0.Add(time.Second), 2), ev("d3", b0, 3))
	testenv.Eventually(t, 20*time.Second, func() error {
		for _, k := range []string{k1, k2, agg.Key{Service: "d3", Start: b0.Unix()}.KVKey()} {
			e, err := kv.Get(ctx, k)
			if err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
			a, err := agg.Decode(e.Value())
			if err != nil {
				return err
			}
			if a.Count == 0 {
				return fmt.Errorf("%s empty", k)
			}
		}
		return nil
	})
	// After a restart from scratch (the deleted keys' first touch happens
	// through the bucket listing) it still works.
	w.stop(t)
	h.publish(ev("d1", b0.Add(2*time.Second), 2))
	h.startWorker("w2", nil)
	testenv.Eventually(t, 20*time.Second, func() error {
		e, err := kv.Get(ctx, k1)
		if err != nil {
			return err
		}
		a, err := agg.Decode(e.Value())
		if err != nil {
			return err
		}
		if a.Count != 2 {
			return fmt.Errorf("d1 count %d, want 2 (one before, one after the restart)", a.Count)
		}
		return nil
	})
}

// TestOverflowAfterRestart: re-consuming from a checkpoint in the middle of
// a bucket that is past MAX_SERVICES routes every event as before (the
// admitted services are counted from the bucket's existing keys), so an
// event already in the overflow aggregate is not counted again under its
// own service.
func TestOverflowAfterRestart(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "1", "MAX_SERVICES": "3", "AGGREGATION_WINDOWS": "1min"})
	ctx := testenv.Context(t)
	b0 := time.Now().Add(-time.Hour).Truncate(time.Minute)
	h.publish(ev("s0", b0, 1), ev("s1", b0, 1), ev("s2", b0, 1), ev("s3", b0, 1)) // seq 1–4
	w := h.startWorker("w", nil)
	overflow := func(want uint64) func(*agg.Aggregate) error {
		return func(a *agg.Aggregate) error {
			if a.Count != want {
				return fmt.Errorf("overflow count %d, want %d", a.Count, want)
			}
			return nil
		}
	}
	h.waitAgg("1min", "_overflow-0", b0, overflow(1))
	h.publish(ev("s4", b0, 1), ev("s3", b0, 1)) // seq 5–6
	h.waitAgg("1min", "_overflow-0", b0, overflow(3))
	w.stop(t)
	kv, err := h.js.KeyValue(ctx, natsutil.ProcessorBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, ckptKey(0), []byte(`{"seq":4}`)); err != nil {
		t.Fatal(err)
	}
	h.publish(ev("s5", b0, 1)) // seq 7
	h.startWorker("w2", nil)
	h.waitAgg("1min", "_overflow-0", b0, overflow(4))
	got, err := h.readAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var total uint64
	for k, a := range got {
		total += a.Count
		if k.Service == "s4" || k.Service == "s5" || k.Service == "s3" {
			t.Errorf("%s got its own key after the restart", k.Service)
		}
	}
	if total != 7 {
		t.Errorf("total %d, want 7", total)
	}
}
