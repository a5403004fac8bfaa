package projections

import (
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stacklens/stacklens/internal/window"
)

// TestBenchUpsert (STACKLENS_BENCH=1) measures the metrics upsert path —
// inserts of new rows, then updates of the same rows with newer versions —
// next to a bare pgx CopyFrom of the same rows into a scratch table without
// indexes (the ceiling), in the same run, with the same batch size; and
// the same for raw events (InsertEvents vs bare CopyFrom).
func TestBenchUpsert(t *testing.T) {
	if os.Getenv("STACKLENS_BENCH") != "1" {
		t.Skip("set STACKLENS_BENCH=1 to measure")
	}
	h := newHarness(t, "", nil)
	wr := NewWriter(h.pool)
	w := window.MustParse("1min")
	const batch, total = 500, 50_000
	r := rand.New(rand.NewPCG(9, 10))
	start := w.Start(time.Now()).Unix()
	rows := make([]MetricRow, total)
	for i := range rows {
		a := mkAgg(r, "service-"+strconv.Itoa(i%5000), w, start-int64(i/5000)*60, 3, true)
		rows[i] = RowOf(a, w)
	}
	metricVals := func(x *MetricRow) []any {
		var ravg, rmax *float64
		if x.RiskCount > 0 {
			ravg, rmax = &x.RiskScoreAvg, &x.RiskScoreMax
		}
		return []any{x.Service, x.Timestamp, x.Count, x.ErrorCount, x.WarningCount, x.ErrorRate,
			x.ThroughputPerSec, x.LatencyAvgMS, x.LatencyMinMS, x.LatencyMaxMS, x.LatencyP50MS,
			x.LatencyP95MS, x.LatencyP99MS, ravg, rmax, x.LatencySum,
			x.LatencySqSum, x.RiskSum, x.Final, x.Version, x.LastSeq}
	}
	cols := []string{"service", "timestamp", "count", "error_count", "warning_count", "error_rate",
		"throughput_per_sec", "latency_avg_ms", "latency_min_ms", "latency_max_ms", "latency_p50_ms",
		"latency_p95_ms", "latency_p99_ms", "risk_score_avg", "risk_score_max", "latency_sum",
		"latency_sq_sum", "risk_sum", "final", "version", "last_seq"}
	if ff := os.Getenv("STACKLENS_BENCH_FILLFACTOR"); ff != "" { // what-if for the schema: room for HOT updates
		if _, err := h.pool.Exec(h.ctx, `ALTER TABLE analytics_metrics_1min SET (fillfactor = `+strconv.Itoa(must(strconv.Atoi(ff)))+`)`); err != nil {
			t.Fatal(err)
		}
		t.Logf("analytics_metrics_1min fillfactor = %s", ff)
	}
	for _, ddl := range []string{
		`CREATE TABLE scratch_plain (LIKE analytics_metrics_1min INCLUDING DEFAULTS)`,
		`CREATE TABLE scratch_indexed (LIKE analytics_metrics_1min INCLUDING ALL)`,
	} {
		if _, err := h.pool.Exec(h.ctx, ddl); err != nil {
			t.Fatal(err)
		}
	}
	copyInto := func(table string) func(b []MetricRow) error {
		return func(b []MetricRow) error {
			_, err := h.pool.CopyFrom(h.ctx, pgx.Identifier{table}, cols, pgx.CopyFromSlice(len(b), func(j int) ([]any, error) {
				return metricVals(&b[j]), nil
			}))
			return err
		}
	}
	upsert := func(b []MetricRow) error { _, err := wr.UpsertMetrics(h.ctx, w, b); return err }
	// The machine is shared: the phases are interleaved batch by batch, so
	// that the ceiling and the upsert see the same load.
	type phase struct {
		name string
		f    func(b []MetricRow) error
		lat  []time.Duration
	}
	run := func(phases ...*phase) {
		for i := 0; i < total; i += batch {
			for _, p := range phases {
				t0 := time.Now()
				if err := p.f(rows[i : i+batch]); err != nil {
					t.Fatal(err)
				}
				p.lat = append(p.lat, time.Since(t0))
			}
		}
	}
	rate := func(p *phase) float64 {
		var sum time.Duration
		for _, d := range p.lat {
			sum += d
		}
		return float64(len(p.lat)*batch) / sum.Seconds()
	}
	pct := func(p *phase, q float64) time.Duration {
		l := slices.Clone(p.lat)
		slices.Sort(l)
		return l[min(len(l)-1, int(float64(len(l))*q))].Round(10 * time.Microsecond)
	}
	plain := &phase{name: "ceiling: CopyFrom, no indexes", f: copyInto("scratch_plain")}
	indexed := &phase{name: "ceiling: CopyFrom, same indexes", f: copyInto("scratch_indexed")}
	ins := &phase{name: "upsert: insert new rows", f: upsert}
	upd := &phase{name: "upsert: update (newer version)", f: upsert}
	same := &phase{name: "upsert: redelivery (same version)", f: upsert}
	run(plain, indexed, ins)
	for i := range rows {
		rows[i].Version++
	}
	if _, err := h.pool.Exec(h.ctx, `TRUNCATE scratch_plain, scratch_indexed`); err != nil {
		t.Fatal(err)
	}
	run(plain, indexed, upd, same)
	c0, c1 := rate(plain), rate(indexed)
	for _, p := range []*phase{plain, indexed, ins, upd, same} {
		r := rate(p)
		t.Logf("SUMMARY %-34s %8.0f rows/s = %.2f × CopyFrom no indexes, %.2f × CopyFrom same indexes; batch(%d) p50 %v p99 %v",
			p.name, r, r/c0, r/c1, batch, pct(p, 0.5), pct(p, 0.99))
	}

	// Raw events: InsertEvents (COPY to staging + INSERT … ON CONFLICT) vs
	// bare CopyFrom of the same rows.
	const ebatch, etotal = 2000, 50_000
	payload := []byte(`{"timestamp":"2026-11-29T01:00:00.123456","service":"checkout","level":"info","latency_ms":50.0,"risk_score":0.1,"endpoint":"/api/v1/cart","host":"web-1"}`)
	evs := make([]EventRow, etotal)
	now := time.Now().UTC()
	for i := range evs {
		risk := 0.1
		evs[i] = EventRow{Seq: uint64(i + 1), Time: now.Add(-time.Duration(i) * time.Millisecond), Service: "service-" + strconv.Itoa(i%500),
			Level: "info", LatencyMS: 50, Risk: &risk, Payload: payload}
	}
	if _, err := h.pool.Exec(h.ctx, `CREATE TABLE scratch_events (LIKE analytics_events INCLUDING DEFAULTS)`); err != nil {
		t.Fatal(err)
	}
	var copyT, insT time.Duration
	var lat []time.Duration
	for i := 0; i < etotal; i += ebatch {
		b := evs[i : i+ebatch]
		t0 := time.Now()
		if _, err := h.pool.CopyFrom(h.ctx, pgx.Identifier{"scratch_events"}, eventCols, pgx.CopyFromSlice(len(b), func(j int) ([]any, error) {
			return eventValues(&b[j]), nil
		})); err != nil {
			t.Fatal(err)
		}
		copyT += time.Since(t0)
		t0 = time.Now()
		if _, err := wr.InsertEvents(h.ctx, b); err != nil {
			t.Fatal(err)
		}
		d := time.Since(t0)
		insT += d
		lat = append(lat, d)
	}
	ec := float64(etotal) / copyT.Seconds()
	ei := float64(etotal) / insT.Seconds()
	slices.Sort(lat)
	t.Logf("SUMMARY events: InsertEvents %.0f rows/s vs bare CopyFrom (no indexes) %.0f rows/s: ratio %.2f; batch(%d) p99 %v",
		ei, ec, ei/ec, ebatch, lat[len(lat)*99/100].Round(10*time.Microsecond))
	// Redelivery of the same events: the idempotent staging path.
	began := time.Now()
	for i := 0; i < etotal; i += ebatch {
		if n, err := wr.InsertEvents(h.ctx, evs[i:i+ebatch]); err != nil || n != 0 {
			t.Fatal(n, err)
		}
	}
	t.Logf("SUMMARY events: redelivery (all conflicts) %.0f rows/s", float64(etotal)/time.Since(began).Seconds())
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
