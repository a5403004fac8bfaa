package projections

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/agg"
	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/natsutil"
	"github.com/stacklens/stacklens/internal/telemetry"
	"github.com/stacklens/stacklens/internal/window"
	"github.com/stacklens/stacklens/schema"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func testLog(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.DiscardHandler)
}

// migrate applies the schema to dsn.
func migrate(t testing.TB, dsn string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := schema.Up(ctx, conn, schema.Options{}, nil); err != nil {
		t.Fatal(err)
	}
}

// harness is one test's PostgreSQL, NATS and projections.
type harness struct {
	t      testing.TB
	ctx    context.Context
	dsn    string
	pool   *pgxpool.Pool
	nc     *nats.Conn
	js     jetstream.JetStream
	cfg    *config.Config
	health *telemetry.Health
	wins   []window.Window
	kv     map[string]jetstream.KeyValue
}

func newHarness(t testing.TB, dsn string, ns *testenv.NATSServer) *harness {
	t.Helper()
	if dsn == "" {
		dsn = testenv.Postgres(t).DSN
	}
	migrate(t, dsn)
	if ns == nil {
		ns = testenv.NATS(t)
	}
	ctx := testenv.Context(t)
	h := &harness{t: t, ctx: ctx, dsn: dsn, nc: ns.Conn(t), health: telemetry.NewHealth(), kv: map[string]jetstream.KeyValue{}}
	var err error
	if h.js, err = jetstream.New(h.nc); err != nil {
		t.Fatal(err)
	}
	h.cfg = testenv.Config(t, map[string]string{"AGGREGATION_WINDOWS": "1min,5min,1hour", "DB_POOL_MIN": "1", "DB_POOL_MAX": "4"})
	if h.wins, err = h.cfg.Pipeline.ValidWindows(); err != nil {
		t.Fatal(err)
	}
	for _, w := range h.wins {
		kv, err := h.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: natsutil.AggBucket(w.Name), History: 4})
		if err != nil {
			t.Fatal(err)
		}
		h.kv[w.Name] = kv
	}
	if _, err := natsutil.EnsureEventsStream(ctx, h.js, h.cfg.NATS); err != nil {
		t.Fatal(err)
	}
	h.pool, err = OpenPool(ctx, dsn, 1, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.pool.Close)
	return h
}

// start runs the projections until the returned stop is called (or the
// test ends).
func (h *harness) start(o Options) (stop func()) {
	h.t.Helper()
	if o.BatchWait == 0 {
		o.BatchWait = 20 * time.Millisecond
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = 500 * time.Millisecond
	}
	ctx, cancel := context.WithCancel(h.ctx)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Deps{Config: h.cfg, Log: testLog(h.t), Health: h.health, NATS: h.nc, Pool: h.pool, Options: o})
	}()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				h.t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			h.t.Error("Run did not return")
		}
	}
	h.t.Cleanup(stop)
	return stop
}

func (h *harness) ready() bool {
	st, _ := h.health.Snapshot(h.ctx)
	s, ok := st[HealthName]
	return ok && s.OK
}

// mkAgg builds an aggregate of n events with deterministic content.
func mkAgg(r *rand.Rand, service string, w window.Window, start int64, n int, withRisk bool) *agg.Aggregate {
	a := agg.NewAggregate(service, start)
	if len(service)%2 == 0 { // some rows carry latency_good
		a.SetThresholds([]float64{0.5, 300, 1000})
	}
	addEvents(r, a, w, n, withRisk)
	return a
}

func addEvents(r *rand.Rand, a *agg.Aggregate, w window.Window, n int, withRisk bool) {
	for range n {
		e := event.Event{
			Time:      time.Unix(a.Start, 0).Add(time.Duration(r.Int64N(int64(w.Size)))).UTC(),
			Service:   a.Service,
			Level:     event.Level(r.IntN(event.NumLevels)),
			LatencyMS: float64(r.IntN(100000)) / 64,
		}
		if withRisk {
			e.Risk, e.HasRisk = float64(r.IntN(1024))/1024, true
		}
		a.Add(e)
		a.LastSeq++
	}
	a.Version++
}

func (h *harness) put(w window.Window, key string, a *agg.Aggregate) {
	h.t.Helper()
	if _, err := h.kv[w.Name].Put(h.ctx, key, a.Encode(nil, w)); err != nil {
		h.t.Fatal(err)
	}
}

func ownKey(a *agg.Aggregate) string {
	return agg.Key{Service: a.Service, Start: a.Start}.KVKey()
}

// kvRows computes the rows the KV bucket of w implies: the row of every
// current value, parts merged per (service, start).
func (h *harness) kvRows(w window.Window) (map[rowKey]MetricRow, error) {
	kv := h.kv[w.Name]
	lister, err := kv.ListKeys(h.ctx)
	if err != nil {
		return nil, err
	}
	out := map[rowKey]MetricRow{}
	groups := map[rowKey]*partGroup{}
	for key := range lister.Keys() {
		e, err := kv.Get(h.ctx, key)
		if err != nil {
			return nil, err
		}
		a, err := agg.Decode(e.Value())
		if err != nil {
			return nil, err
		}
		svc, part := rowIdentity(key, a)
		k := rowKey{svc, a.Start}
		if !part {
			out[k] = RowOf(a, w)
			continue
		}
		if groups[k] == nil {
			groups[k] = &partGroup{service: svc, start: a.Start, parts: map[string]*agg.Aggregate{}}
		}
		groups[k].put(key, a)
	}
	for k, g := range groups {
		out[k] = RowOf(g.merged(), w)
	}
	return out, nil
}

// dbRows reads analytics_metrics_<w>.
func dbRows(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, w window.Window) (map[rowKey]MetricRow, error) {
	table, _ := MetricsTable(w)
	out := map[rowKey]MetricRow{}
	rows, err := q.Query(ctx, `SELECT service, timestamp, count, error_count, warning_count, error_rate,
		throughput_per_sec, latency_avg_ms, latency_min_ms, latency_max_ms, latency_p50_ms,
		latency_p95_ms, latency_p99_ms, risk_score_avg, risk_score_max, latency_sum,
		latency_sq_sum, risk_sum, final, version, last_seq, latency_good FROM `+table)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var r MetricRow
		var ravg, rmax *float64
		var good map[string]uint64
		if err := rows.Scan(&r.Service, &r.Timestamp, &r.Count, &r.ErrorCount, &r.WarningCount, &r.ErrorRate,
			&r.ThroughputPerSec, &r.LatencyAvgMS, &r.LatencyMinMS, &r.LatencyMaxMS, &r.LatencyP50MS,
			&r.LatencyP95MS, &r.LatencyP99MS, &ravg, &rmax, &r.LatencySum, &r.LatencySqSum, &r.RiskSum,
			&r.Final, &r.Version, &r.LastSeq, &good); err != nil {
			return nil, err
		}
		r.LatencyGood = canonGood(good)
		if ravg != nil {
			r.RiskScoreAvg, r.RiskScoreMax, r.RiskCount = *ravg, *rmax, 1
		}
		r.Window = w.Name
		r.Timestamp = r.Timestamp.UTC()
		out[rowKey{r.Service, r.Timestamp.Unix()}] = r
	}
	return out, rows.Err()
}

// sameRow compares everything PostgreSQL stores (RiskCount only as
// zero/non-zero: NULL risk).
// canonGood spells a latency_good object read from PostgreSQL as RowOf
// does: thresholds ascending by value, no spaces.
func canonGood(m map[string]uint64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		x, _ := strconv.ParseFloat(keys[i], 64)
		y, _ := strconv.ParseFloat(keys[j], 64)
		return x < y
	})
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%q:%d", k, m[k])
	}
	b.WriteByte('}')
	return b.String()
}

func sameRow(a, b MetricRow) bool {
	a.RiskCount, b.RiskCount = min(a.RiskCount, 1), min(b.RiskCount, 1)
	a.Timestamp, b.Timestamp = a.Timestamp.UTC(), b.Timestamp.UTC()
	return a == b
}

// diffRows describes how want and got differ ("" when equal).
func diffRows(want, got map[rowKey]MetricRow) string {
	var out []string
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("missing %v", k))
		case !sameRow(w, g):
			out = append(out, fmt.Sprintf("%v: want %+v\n got %+v", k, w, g))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			out = append(out, fmt.Sprintf("unexpected %v", k))
		}
	}
	sort.Strings(out)
	if len(out) > 5 {
		out = append(out[:5], fmt.Sprintf("… %d more", len(out)-5))
	}
	return strings.Join(out, "\n")
}

// checkI4 is docs/ARCHITECTURE.md §8 I4: PostgreSQL rows equal the KV aggregates, for
// every window.
func (h *harness) checkI4() error {
	for _, w := range h.wins {
		want, err := h.kvRows(w)
		if err != nil {
			return err
		}
		got, err := dbRows(h.ctx, h.pool, w)
		if err != nil {
			return err
		}
		if d := diffRows(want, got); d != "" {
			return fmt.Errorf("window %s: %s", w.Name, d)
		}
	}
	return nil
}

// drained reports whether a consumer exists and has nothing pending or
// unacknowledged.
func (h *harness) drained(stream, consumer string) error {
	c, err := h.js.Consumer(h.ctx, stream, consumer)
	if err != nil {
		return err
	}
	info, err := c.Info(h.ctx)
	if err != nil {
		return err
	}
	if info.NumPending != 0 || info.NumAckPending != 0 {
		return fmt.Errorf("%s: %d pending, %d unacknowledged", consumer, info.NumPending, info.NumAckPending)
	}
	return nil
}
