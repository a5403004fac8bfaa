package projections

import (
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/agg"
	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/window"
)

// TestMetricsKVToRows: every KV value becomes a row equal to the decoded
// aggregate's Row and raw sums (I4); updates, out-of-order older versions,
// KV deletions and a restart (redelivery) keep it so.
func TestMetricsKVToRows(t *testing.T) {
	h := newHarness(t, "", nil)
	r := rand.New(rand.NewPCG(1, 2))
	base := time.Now().Add(-3 * time.Hour).Unix()
	services := []string{"checkout", "a.b", "a_b", "ünïcødé svc", "payments-v2", "x"}
	type item struct {
		w   window.Window
		a   *agg.Aggregate
		old []*agg.Aggregate
	}
	var items []*item
	for _, w := range h.wins {
		for i, svc := range services {
			for b := range 3 {
				start := w.Start(time.Unix(base, 0)).Unix() + int64(b)*int64(w.Seconds())
				a := mkAgg(r, svc, w, start, 1+r.IntN(50), i%2 == 0)
				items = append(items, &item{w: w, a: a})
			}
		}
	}
	for _, it := range items {
		h.put(it.w, ownKey(it.a), it.a)
	}
	stop := h.start(Options{})
	testenv.Eventually(t, 20*time.Second, h.checkI4)

	// Updates, including a correction of a final window.
	for _, it := range items[:len(items)/2] {
		it.old = append(it.old, it.a.Clone())
		addEvents(r, it.a, it.w, 5, true)
		it.a.Final = r.IntN(2) == 0
		h.put(it.w, ownKey(it.a), it.a)
	}
	testenv.Eventually(t, 20*time.Second, h.checkI4)

	// Older versions written after newer ones: the rows do not move.
	want := map[string]map[rowKey]MetricRow{}
	for _, w := range h.wins {
		m, err := dbRows(h.ctx, h.pool, w)
		if err != nil {
			t.Fatal(err)
		}
		want[w.Name] = m
	}
	for _, it := range items[:len(items)/2] {
		h.put(it.w, ownKey(it.old[0]), it.old[0])
	}
	// A KV delete (TTL expiry, purge) does not delete the row.
	del := items[len(items)-1]
	if err := h.kv[del.w.Name].Delete(h.ctx, ownKey(del.a)); err != nil {
		t.Fatal(err)
	}
	if err := h.kv[del.w.Name].Purge(h.ctx, ownKey(items[len(items)-2].a)); err != nil {
		t.Fatal(err)
	}
	// Values that are not aggregates of this window are skipped, not fatal.
	if _, err := h.kv[h.wins[0].Name].Put(h.ctx, "garbage.0", []byte("not an aggregate")); err != nil {
		t.Fatal(err)
	}
	other := mkAgg(r, "other-window", h.wins[1], h.wins[1].Start(time.Unix(base, 0)).Unix(), 1, false)
	if _, err := h.kv[h.wins[0].Name].Put(h.ctx, ownKey(other), other.Encode(nil, h.wins[1])); err != nil {
		t.Fatal(err)
	}
	// A sentinel written last: once it is visible, everything before it
	// was processed.
	sentinel := mkAgg(r, "sentinel", h.wins[0], h.wins[0].Start(time.Unix(base, 0)).Unix(), 1, false)
	h.put(h.wins[0], ownKey(sentinel), sentinel)
	want[h.wins[0].Name][rowKey{"sentinel", sentinel.Start}] = RowOf(sentinel, h.wins[0])
	check := func() error {
		for _, w := range h.wins {
			got, err := dbRows(h.ctx, h.pool, w)
			if err != nil {
				return err
			}
			if d := diffRows(want[w.Name], got); d != "" {
				return errorString(d)
			}
		}
		return nil
	}
	testenv.Eventually(t, 20*time.Second, check)

	// Restart: the durable consumers resume; a consumer deleted while
	// stopped is re-created and redelivers everything (harmless).
	stop()
	if err := h.js.DeleteConsumer(h.ctx, "KV_stacklens_agg_5min", "stacklens_projections_5min"); err != nil {
		t.Fatal(err)
	}
	h.start(Options{})
	testenv.Eventually(t, 20*time.Second, func() error {
		return h.drained("KV_stacklens_agg_5min", "stacklens_projections_5min")
	})
	testenv.Eventually(t, 20*time.Second, check)
	if !h.ready() {
		t.Error("not ready after catching up")
	}
}

type errorString string

func (e errorString) Error() string { return string(e) }

// TestUpsertIdempotentShuffled calls the writer directly with every
// version of every row, shuffled into random batches, twice: the table
// ends up with the newest version of each row, as when written in order.
func TestUpsertIdempotentShuffled(t *testing.T) {
	h := newHarness(t, "", nil)
	w := window.MustParse("1min")
	wr := NewWriter(h.pool)
	r := rand.New(rand.NewPCG(3, 4))
	start := w.Start(time.Now()).Unix()
	var all []MetricRow
	want := map[rowKey]MetricRow{}
	for s := range 40 {
		for b := range 5 {
			a := mkAgg(r, "svc-"+string(rune('a'+s%26))+string(rune('a'+s/26)), w, start-int64(b)*60, 3, s%3 != 0)
			for v := 0; v < 6; v++ {
				all = append(all, RowOf(a, w))
				want[rowKey{a.Service, a.Start}] = RowOf(a, w)
				addEvents(r, a, w, 2, true)
			}
		}
	}
	for round := range 2 {
		rows := append([]MetricRow(nil), all...)
		r.Shuffle(len(rows), func(i, j int) { rows[i], rows[j] = rows[j], rows[i] })
		for len(rows) > 0 {
			n := min(len(rows), 1+r.IntN(100))
			if _, err := wr.UpsertMetrics(h.ctx, w, rows[:n]); err != nil {
				t.Fatal(err)
			}
			rows = rows[n:]
		}
		got, err := dbRows(h.ctx, h.pool, w)
		if err != nil {
			t.Fatal(err)
		}
		if d := diffRows(want, got); d != "" {
			t.Fatalf("round %d: %s", round, d)
		}
	}
	// In order, into a fresh table state, gives the same.
	if _, err := h.pool.Exec(h.ctx, `TRUNCATE analytics_metrics_1min`); err != nil {
		t.Fatal(err)
	}
	if _, err := wr.UpsertMetrics(h.ctx, w, append([]MetricRow(nil), all...)); err != nil {
		t.Fatal(err)
	}
	got, err := dbRows(h.ctx, h.pool, w)
	if err != nil {
		t.Fatal(err)
	}
	if d := diffRows(want, got); d != "" {
		t.Fatal(d)
	}
	if n, err := wr.UpsertMetrics(h.ctx, w, nil); n != 0 || err != nil {
		t.Fatal(n, err)
	}
	if _, err := wr.UpsertMetrics(h.ctx, window.Window{Name: "bad-name", Size: time.Minute}, all[:1]); err == nil {
		t.Fatal("want error for a window without table")
	}
}

// TestOverflowParts: aggregates stored in several KV keys for one
// (service, start) — per-shard _overflow — are summed into one row, also
// after a restart that lost the in-memory parts.
func TestOverflowParts(t *testing.T) {
	h := newHarness(t, "", nil)
	w := h.wins[0]
	r := rand.New(rand.NewPCG(5, 6))
	start := w.Start(time.Now().Add(-10 * time.Minute)).Unix()
	partKey := func(shard int) string {
		return event.ServiceToken(agg.OverflowService+"/"+string(rune('0'+shard))) + "." + itoa(start)
	}
	parts := make([]*agg.Aggregate, 3)
	for i := range parts {
		parts[i] = mkAgg(r, agg.OverflowService, w, start, 10+i, true)
		h.put(w, partKey(i), parts[i])
	}
	// A normal row next to them.
	own := mkAgg(r, "normal", w, start, 4, false)
	h.put(w, ownKey(own), own)
	stop := h.start(Options{})
	testenv.Eventually(t, 20*time.Second, h.checkI4)
	stop()
	// New parts and updates while stopped; after the restart the first
	// change seen for the group must be merged with the stored parts.
	addEvents(r, parts[1], w, 7, false)
	h.put(w, partKey(1), parts[1])
	parts = append(parts, mkAgg(r, agg.OverflowService, w, start, 2, false))
	h.put(w, partKey(3), parts[3])
	h.start(Options{})
	testenv.Eventually(t, 20*time.Second, h.checkI4)
	got, err := dbRows(h.ctx, h.pool, w)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	var ver int64
	for _, p := range parts {
		total += int64(p.Count)
		ver += int64(p.Version)
	}
	row := got[rowKey{agg.OverflowService, start}]
	if row.Count != total || row.Version != ver {
		t.Fatalf("overflow row count %d version %d, want %d %d", row.Count, row.Version, total, ver)
	}
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

// TestOverflowShards: the processors' per-shard overflow aggregates
// (service "_overflow-<shard>", each under its own key) are summed into
// one "_overflow" row; after a restart the siblings are read back from KV.
func TestOverflowShards(t *testing.T) {
	h := newHarness(t, "", nil)
	w := h.wins[1]
	r := rand.New(rand.NewPCG(11, 12))
	start := w.Start(time.Now().Add(-time.Hour)).Unix()
	parts := map[int]*agg.Aggregate{}
	for _, sh := range []int{0, 3, 15} {
		parts[sh] = mkAgg(r, agg.OverflowService+"-"+itoa(int64(sh)), w, start, 5+sh, sh != 3)
		h.put(w, ownKey(parts[sh]), parts[sh])
	}
	stop := h.start(Options{})
	testenv.Eventually(t, 20*time.Second, h.checkI4)
	stop()
	addEvents(r, parts[3], w, 4, true)
	parts[3].Final = true
	h.put(w, ownKey(parts[3]), parts[3])
	h.start(Options{})
	testenv.Eventually(t, 20*time.Second, h.checkI4)
	got, err := dbRows(h.ctx, h.pool, w)
	if err != nil {
		t.Fatal(err)
	}
	var count, ver int64
	for _, p := range parts {
		count += int64(p.Count)
		ver += int64(p.Version)
	}
	row, ok := got[rowKey{agg.OverflowService, start}]
	if !ok || row.Count != count || row.Version != ver || row.Final || len(got) != 1 {
		t.Fatalf("rows %+v; want one _overflow row with count %d version %d", got, count, ver)
	}
	for s, want := range map[string]bool{"_overflow-0": true, "_overflow-15": true, "_overflow-": false, "_overflow-01": false, "_overflow-x": false, "_overflow": false, "checkout": false} {
		if isOverflowShard(s) != want {
			t.Errorf("isOverflowShard(%q) = %v", s, !want)
		}
	}
}

// TestDependenciesComeLate: projections started before the KV bucket
// exists wait (not ready) and start once it appears; a NATS server restart
// mid-run is ridden out.
func TestDependenciesComeLate(t *testing.T) {
	ns := testenv.NATS(t)
	h := newHarness(t, "", ns)
	w := h.wins[2]
	if err := h.js.DeleteKeyValue(h.ctx, "stacklens_agg_"+w.Name); err != nil {
		t.Fatal(err)
	}
	h.start(Options{AckWait: 3 * time.Second})
	testenv.Eventually(t, 10*time.Second, func() error {
		if h.ready() {
			return errorString("ready without its bucket")
		}
		return nil
	})
	kv, err := h.js.CreateKeyValue(h.ctx, jetstream.KeyValueConfig{Bucket: "stacklens_agg_" + w.Name, History: 4})
	if err != nil {
		t.Fatal(err)
	}
	h.kv[w.Name] = kv
	r := rand.New(rand.NewPCG(13, 14))
	a := mkAgg(r, "late", w, w.Start(time.Now()).Unix(), 3, true)
	h.put(w, ownKey(a), a)
	testenv.Eventually(t, 20*time.Second, h.checkI4)
	testenv.Eventually(t, 10*time.Second, func() error {
		if !h.ready() {
			return errorString("not ready")
		}
		return nil
	})

	// The consumer deleted under the running projector is re-created.
	if err := h.js.DeleteConsumer(h.ctx, "KV_stacklens_agg_"+w.Name, "stacklens_projections_"+w.Name); err != nil {
		t.Fatal(err)
	}
	addEvents(r, a, w, 1, false)
	h.put(w, ownKey(a), a)
	testenv.Eventually(t, 30*time.Second, h.checkI4)

	ns.Restart()
	time.Sleep(500 * time.Millisecond)
	testenv.Eventually(t, 10*time.Second, func() error {
		addEvents(r, a, w, 1, false)
		_, err := h.kv[w.Name].Put(h.ctx, ownKey(a), a.Encode(nil, w))
		return err
	})
	testenv.Eventually(t, 30*time.Second, h.checkI4)
}

// TestRefusedRowDoesNotBlock: a row PostgreSQL refuses is dropped (and
// counted); the other rows of its batch and everything after it go in.
func TestRefusedRowDoesNotBlock(t *testing.T) {
	h := newHarness(t, "", nil)
	if _, err := h.pool.Exec(h.ctx, `ALTER TABLE analytics_metrics_1min ADD CONSTRAINT test_refuse CHECK (service <> 'refused')`); err != nil {
		t.Fatal(err)
	}
	w := h.wins[0]
	r := rand.New(rand.NewPCG(15, 16))
	start := w.Start(time.Now()).Unix()
	bad := mkAgg(r, "refused", w, start, 2, false)
	good := mkAgg(r, "accepted", w, start, 2, false)
	h.put(w, ownKey(bad), bad)
	h.put(w, ownKey(good), good)
	before := badMessages.Get()
	h.start(Options{BatchWait: 200 * time.Millisecond})
	later := mkAgg(r, "later", w, start, 1, true)
	h.put(w, ownKey(later), later)
	testenv.Eventually(t, 20*time.Second, func() error {
		got, err := dbRows(h.ctx, h.pool, w)
		if err != nil {
			return err
		}
		want := map[rowKey]MetricRow{
			{good.Service, start}:  RowOf(good, w),
			{later.Service, start}: RowOf(later, w),
		}
		if d := diffRows(want, got); d != "" {
			return errorString(d)
		}
		return nil
	})
	if badMessages.Get() <= before {
		t.Error("refused row not counted")
	}
}

// TestLatencyGoodProjected: latency_good of the metrics table is the
// aggregate's exact counts, keyed by the threshold's shortest decimal form;
// an overflow row merged from parts keeps only the thresholds every part
// counts; an aggregate without thresholds gives {}.
func TestLatencyGoodProjected(t *testing.T) {
	h := newHarness(t, "", nil)
	w := h.wins[0]
	start := w.Start(time.Now().Add(-10 * time.Minute)).Unix()
	mk := func(service string, ts []float64, lat ...float64) *agg.Aggregate {
		a := agg.NewAggregate(service, start)
		a.SetThresholds(ts)
		for i, l := range lat {
			a.Add(event.Event{Time: time.Unix(start, int64(i)), Service: service, Level: event.LevelInfo, LatencyMS: l})
			a.LastSeq++
		}
		a.Version = 1
		return a
	}
	own := mk("checkout", []float64{2.5, 300}, 1, 2.5, 299, 300, 301)
	none := mk("legacy", nil, 1, 2)
	h.put(w, ownKey(own), own)
	h.put(w, ownKey(none), none)
	partKey := func(shard int) string {
		return event.ServiceToken(agg.OverflowService+"/"+string(rune('0'+shard))) + "." + itoa(start)
	}
	h.put(w, partKey(0), mk(agg.OverflowService, []float64{10, 300}, 5, 400))
	h.put(w, partKey(1), mk(agg.OverflowService, []float64{300, 1000}, 300))
	h.start(Options{})
	testenv.Eventually(t, 20*time.Second, h.checkI4)
	table, _ := MetricsTable(w)
	for svc, want := range map[string]string{
		"checkout":          `{"2.5": 2, "300": 4}`,
		"legacy":            `{}`,
		agg.OverflowService: `{"300": 2}`,
	} {
		var got string
		if err := h.pool.QueryRow(h.ctx, `SELECT latency_good::text FROM `+table+` WHERE service = $1 AND timestamp = to_timestamp($2)`,
			svc, start).Scan(&got); err != nil {
			t.Fatalf("%s: %v", svc, err)
		}
		if got != want {
			t.Errorf("%s: latency_good %s, want %s", svc, got, want)
		}
	}
}
