package api

import (
	"context"
	"fmt"
	"github.com/stacklens/stacklens/internal/harness/procstat"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5"

	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/schema"
)

// TestBenchAPI measures the dashboard queries at 32 concurrent clients
// over real TCP, next to a static JSON route served by the same Fiber app
// through the same middleware chain, while a simulated projection upserts
// the current minute of every service every 250 ms.
//
//	STACKLENS_BENCH=1 go test ./api -run TestBenchAPI -v
//
// STACKLENS_BENCH_SECONDS sets the duration per endpoint (default 2).
// Besides latency and throughput it reports the CPU time of this process
// (server and load-generating client together) per request, which —
// unlike latency on a shared machine — does not depend on other load.
// Each database endpoint runs twice: with request coalescing (identical
// concurrent reads share one query) and without it (every request runs
// its own query); /metrics, /health-status and /alerts a third time on a
// replica that reuses answers until their table changes (the api role's
// default, API_CACHE_MAX_AGE): the simulated projection's upserts notify
// it four times a second.
func TestBenchAPI(t *testing.T) {
	if os.Getenv("STACKLENS_BENCH") != "1" {
		t.Skip("set STACKLENS_BENCH=1 to run the API benchmark")
	}
	per := 2 * time.Second
	if s := os.Getenv("STACKLENS_BENCH_SECONDS"); s != "" {
		d, err := time.ParseDuration(s + "s")
		if err != nil {
			t.Fatal(err)
		}
		per = d
	}
	const (
		services = 50
		clients  = 32
	)
	ctx := context.Background()
	pg := testenv.Postgres(t)
	db, err := pgx.Connect(ctx, pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	if _, err := schema.Up(ctx, db, schema.Options{Timescale: "off"}, nil); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Minute)
	t0 := time.Now()
	n := seedBench(t, db, now, services)
	t.Logf("seeded %d rows (%d services × 24 h of 1min, 5min, 1hour; 600 alerts) in %v", n, services, time.Since(t0).Round(time.Millisecond))
	seedBenchSLOs(t, db)

	static := []byte(`{"count":1,"window":"1min","metrics":[{"service":"static","count":1}]}`)
	cfg := testConfig(pg.DSN)
	cfg.DB.PoolMax = 8
	// serve runs a replica with cfg until the test ends; its base URL.
	serve := func(cfg Config, deps Deps) string {
		srv, err := New(cfg, deps)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- srv.Serve(sctx, ln) }()
		t.Cleanup(func() { cancel(); <-done })
		return "http://" + ln.Addr().String()
	}
	raw := cfg
	raw.DisableCoalescing = true
	baseRaw := serve(raw, Deps{})
	// A static answer of the same bytes as /metrics' 100 rows: what the
	// payload alone costs, without a query.
	large := func() []byte {
		resp, err := http.Get(baseRaw + "/metrics?window=1min&limit=100")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("/metrics: %d %v", resp.StatusCode, err)
		}
		return b
	}()
	base := serve(cfg, Deps{Mount: func(s *Server) error {
		for path, body := range map[string][]byte{"/bench/static": static, "/bench/static-large": large} {
			s.Route("GET", path, AccessReader, func(c *fiber.Ctx) error {
				c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
				return c.Send(body)
			})
		}
		return nil
	}})
	// A third replica reuses answers until their table changes
	// (API_CACHE_MAX_AGE, as the api role runs by default).
	follow := cfg
	follow.API.CacheMaxAge = 10 * time.Second
	baseFollow := serve(follow, Deps{})

	// Simulated projection: upsert the current minute of every service.
	ingestCtx, stopIngest := context.WithCancel(ctx)
	var upserts atomic.Int64
	var ingestWG sync.WaitGroup
	ingestWG.Add(1)
	go func() {
		defer ingestWG.Done()
		ic, err := pgx.Connect(ingestCtx, pg.DSN)
		if err != nil {
			return
		}
		defer ic.Close(context.Background())
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for v := int64(2); ; v++ {
			select {
			case <-ingestCtx.Done():
				return
			case <-tick.C:
			}
			b := &pgx.Batch{}
			ts := time.Now().UTC().Truncate(time.Minute)
			for s := 0; s < services; s++ {
				b.Queue(`INSERT INTO analytics_metrics_1min (service, timestamp, count, error_count, error_rate, latency_p99_ms, version, updated_at)
					VALUES ($1, $2, $3, 1, 1, 100, $4, now())
					ON CONFLICT (service, timestamp) DO UPDATE SET count = EXCLUDED.count, version = EXCLUDED.version, updated_at = now()
					WHERE analytics_metrics_1min.version < EXCLUDED.version`, fmt.Sprintf("svc-%02d", s), ts, v*10, v)
			}
			if err := ic.SendBatch(ingestCtx, b).Close(); err == nil {
				upserts.Add(services)
			}
		}
	}()
	defer func() { stopIngest(); ingestWG.Wait() }()

	tr := &http.Transport{MaxIdleConns: clients * 2, MaxIdleConnsPerHost: clients * 2, MaxConnsPerHost: clients * 2}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	defer tr.CloseIdleConnections()

	type result struct {
		name           string
		n, errs        int
		rps            float64
		p50, p99, pmax time.Duration
		bytes          int
		cpuPerReq      time.Duration
	}
	run := func(name, base, path string) result {
		// Warm up connections, statement caches and buffers.
		for i := 0; i < clients*2; i++ {
			if resp, err := client.Get(base + path); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
		}
		var (
			mu    sync.Mutex
			all   []time.Duration
			errs  int
			bytes int
			wg    sync.WaitGroup
		)
		cpu0 := procstat.ProcessCPU()
		start := time.Now()
		deadline := start.Add(per)
		for c := 0; c < clients; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				lat := make([]time.Duration, 0, 4096)
				e, nb := 0, 0
				for time.Now().Before(deadline) {
					t1 := time.Now()
					resp, err := client.Get(base + path)
					if err != nil {
						e++
						continue
					}
					k, _ := io.Copy(io.Discard, resp.Body)
					_ = resp.Body.Close()
					lat = append(lat, time.Since(t1))
					if resp.StatusCode != 200 {
						e++
					}
					nb = int(k)
				}
				mu.Lock()
				all = append(all, lat...)
				errs += e
				bytes = nb
				mu.Unlock()
			}()
		}
		wg.Wait()
		el := time.Since(start)
		cpu := procstat.ProcessCPU() - cpu0
		slices.Sort(all)
		q := func(p float64) time.Duration {
			if len(all) == 0 {
				return 0
			}
			return all[min(len(all)-1, int(p*float64(len(all))))]
		}
		return result{name: name, n: len(all), errs: errs, rps: float64(len(all)) / el.Seconds(),
			p50: q(0.50), p99: q(0.99), pmax: all[len(all)-1], bytes: bytes, cpuPerReq: cpu / time.Duration(max(1, len(all)))}
	}
	cases := []struct{ name, path string }{
		{"/metrics (1min, 100 rows)", "/metrics?window=1min&limit=100"},
		{"/metrics?service= (100 rows)", "/metrics?service=svc-07&limit=100"},
		{"/health-status (50 services)", "/health-status"},
		{"/alerts?status=active (20)", "/alerts?status=active"},
		{"/slos (4 SLOs, 50 services)", "/slos"},
	}
	results := []result{run("static JSON (same app)", base, "/bench/static"),
		run("static JSON, /metrics' bytes", base, "/bench/static-large")}
	for _, c := range cases {
		results = append(results, run(c.name, base, c.path))
	}
	for _, c := range cases {
		results = append(results, run(c.name+" uncoalesced", baseRaw, c.path))
	}
	for _, c := range cases[:4] { // /slos has its own cache (API_SLO_CACHE_TTL)
		results = append(results, run(c.name+" until changed", baseFollow, c.path))
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n%d clients, %v per endpoint, GOMAXPROCS=%d, simulated projection upserts during the run: %d\n", clients, per, runtimeProcs(), upserts.Load())
	fmt.Fprintf(&sb, "load average before the run: %s\n", procstat.LoadAvg())
	fmt.Fprintf(&sb, "%-42s %9s %8s %9s %9s %9s %6s %6s %9s\n", "endpoint", "requests", "req/s", "p50", "p99", "max", "errors", "bytes", "cpu/req")
	for _, r := range results {
		fmt.Fprintf(&sb, "%-42s %9d %8.0f %9s %9s %9s %6d %6d %9s\n", r.name, r.n, r.rps, r.p50.Round(10*time.Microsecond), r.p99.Round(10*time.Microsecond), r.pmax.Round(100*time.Microsecond), r.errs, r.bytes, r.cpuPerReq.Round(time.Microsecond))
	}
	t.Log(sb.String())
	for _, r := range results {
		if r.errs > 0 {
			t.Errorf("%s: %d errors", r.name, r.errs)
		}
	}
}

// seedBench inserts services × 24 h of 1min rows, the matching 5min and
// 1hour rows, and 600 alerts, with COPY.
func seedBench(t testing.TB, db *pgx.Conn, now time.Time, services int) int64 {
	t.Helper()
	ctx := context.Background()
	cols := []string{"service", "timestamp", "count", "error_count", "warning_count", "error_rate", "throughput_per_sec",
		"latency_avg_ms", "latency_min_ms", "latency_max_ms", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
		"risk_score_avg", "risk_score_max", "latency_sum", "latency_sq_sum", "risk_sum", "final", "version", "last_seq", "updated_at"}
	var total int64
	for _, w := range []struct {
		table string
		step  time.Duration
	}{{"analytics_metrics_1min", time.Minute}, {"analytics_metrics_5min", 5 * time.Minute}, {"analytics_metrics_1hour", time.Hour}} {
		var rows [][]any
		steps := int(24 * time.Hour / w.step)
		for s := 0; s < services; s++ {
			svc := fmt.Sprintf("svc-%02d", s)
			for i := 0; i < steps; i++ {
				ts := now.Truncate(w.step).Add(-time.Duration(i) * w.step)
				cnt := int64(1000 + (s*37+i*11)%500)
				errs := cnt * int64(s%7) / 100
				p99 := float64(80 + (s*13+i*7)%900)
				rows = append(rows, []any{svc, ts, cnt, errs, cnt / 50, 100 * float64(errs) / float64(cnt), float64(cnt) / w.step.Seconds(),
					40.0, 1.0, p99 * 1.5, 35.0, p99 * 0.8, p99, 0.2, 0.9, 40 * float64(cnt), 2000 * float64(cnt), 0.2 * float64(cnt),
					i > 0, int64(1), int64(i), ts.Add(w.step)})
			}
		}
		n, err := db.CopyFrom(ctx, pgx.Identifier{w.table}, cols, pgx.CopyFromRows(rows))
		if err != nil {
			t.Fatal(err)
		}
		total += n
	}
	_, err := db.Exec(ctx, `INSERT INTO analytics_alerts (alert_id, fingerprint, rule_name, service, severity, status, metric_name,
		value, threshold, fired_at, acknowledged_at, resolved_at)
		SELECT 'bench-' || g, 'fp-' || g, 'High Error Rate', 'svc-' || lpad((g % 50)::text, 2, '0'),
		       (ARRAY['info','warning','critical'])[1 + g % 3],
		       CASE WHEN g <= 20 THEN 'active' WHEN g <= 40 THEN 'acknowledged' ELSE 'resolved' END,
		       'error_rate', 8, 5, now() - g * interval '1 minute',
		       CASE WHEN g > 20 AND g <= 40 THEN now() END,
		       CASE WHEN g > 40 THEN now() END
		FROM generate_series(1, 600) g`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ctx, `ANALYZE`); err != nil {
		t.Fatal(err)
	}
	return total + 600
}

// seedBenchSLOs defines four SLOs over seedBench's rows — every service and
// one, availability and latency — with every row counting the 300 ms
// threshold.
func seedBenchSLOs(t testing.TB, db *pgx.Conn) {
	t.Helper()
	if _, err := db.Exec(context.Background(), `UPDATE analytics_metrics_1min SET latency_good = jsonb_build_object('300', count - error_count);
		UPDATE analytics_metrics_5min SET latency_good = jsonb_build_object('300', count - error_count);
		UPDATE analytics_metrics_1hour SET latency_good = jsonb_build_object('300', count - error_count);
		INSERT INTO analytics_slos (name, service, objective, latency_threshold_ms, target, period) VALUES
		('all available', NULL, 'availability', NULL, 99.9, '30 days'), ('all fast', NULL, 'latency', 300, 99, '7 days'),
		('svc-07 available', 'svc-07', 'availability', NULL, 99.5, '30 days'), ('svc-07 fast', 'svc-07', 'latency', 300, 99, '1 day')`); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkQueries measures one request's work sequentially (no
// concurrency): the store query plus encoding, per endpoint, on the
// benchmark data set. It needs PostgreSQL (testenv).
//
//	go test ./api -run '^$' -bench BenchmarkQueries -benchtime 2s
func BenchmarkQueries(b *testing.B) {
	ctx := context.Background()
	pg := testenv.Postgres(b)
	db, err := pgx.Connect(ctx, pg.DSN)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close(ctx)
	if _, err := schema.Up(ctx, db, schema.Options{Timescale: "off"}, nil); err != nil {
		b.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Minute)
	seedBench(b, db, now, 50)
	seedBenchSLOs(b, db)
	srv, err := New(testConfig(pg.DSN), Deps{})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.closePools()
	st := srv.st
	b.Run("metrics-100", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			rows, err := st.metrics(ctx, "1min", "", nil, nil, 100)
			if err != nil {
				b.Fatal(err)
			}
			r := MetricsResponse{Count: len(rows), Window: "1min", Metrics: rows}
			_ = appendMetricsResponse(make([]byte, 0, 64+len(rows)*420), &r)
		}
	})
	b.Run("metrics-100-query-only", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := st.metrics(ctx, "1min", "", nil, nil, 100); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("health-status", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			rows, err := st.serviceHealth(ctx)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = marshalJSON(HealthStatusResponse{Count: len(rows), Services: rows})
		}
	})
	b.Run("alerts-active", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			rows, err := st.alerts(ctx, "active", "", "", 100)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = marshalJSON(AlertsResponse{Count: len(rows), Alerts: rows})
		}
	})
	b.Run("slos", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			st, err := st.sloStatuses(ctx, nil, now, srv.cfg.Windows)
			if err != nil || len(st) != 4 {
				b.Fatal(len(st), err)
			}
			_, _ = marshalJSON(SLOsResponse{SLOs: st})
		}
	})
	b.Run("http-metrics-100", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			req, _ := http.NewRequest("GET", "/metrics?limit=100", nil)
			resp, err := srv.App().Test(req, -1)
			if err != nil || resp.StatusCode != 200 {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
		}
	})
}
