package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/schema"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const (
	readerKey = "reader-key-0123456789abcdef"
	adminKey  = "admin-key-0123456789abcdef0"
)

// fixture is a migrated database with seeded rows and a server on it.
type fixture struct {
	t   testing.TB
	dsn string
	db  *pgx.Conn // superuser connection for seeding and assertions
	srv *Server
	now time.Time // seeding reference (minute-aligned)
}

// testConfig is a loopback configuration without rate limit.
func testConfig(dsn string) Config {
	return Config{
		API: config.API{
			Host: "127.0.0.1", Port: 0, RateLimit: 0, MaxBodyBytes: 65536,
			QueryTimeout: 2 * time.Second,
		},
		DB:      config.DB{URL: dsn, PoolMax: 8, ReaderUser: "stacklens_reader"},
		Version: "test",
	}
}

func withCreds(c *Config) {
	c.API.ReaderKeys = []string{readerKey}
	c.API.AdminKeys = []string{adminKey}
	c.API.Users = []string{"alice:wonderland:admin", "bob:builder:reader"}
}

// newDB returns a migrated, seeded database.
func newDB(t testing.TB) (dsn string, db *pgx.Conn, now time.Time) {
	t.Helper()
	pg := testenv.Postgres(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	if _, err := schema.Up(ctx, conn, schema.Options{Timescale: "off"}, nil); err != nil {
		t.Fatal(err)
	}
	now = time.Now().UTC().Truncate(time.Minute)
	seed(t, conn, now)
	return pg.DSN, conn, now
}

func newFixture(t testing.TB, mutate func(*Config)) *fixture {
	t.Helper()
	dsn, db, now := newDB(t)
	return serverOn(t, dsn, db, now, mutate)
}

func serverOn(t testing.TB, dsn string, db *pgx.Conn, now time.Time, mutate func(*Config)) *fixture {
	t.Helper()
	cfg := testConfig(dsn)
	if mutate != nil {
		mutate(&cfg)
	}
	srv, err := New(cfg, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.closePools)
	return &fixture{t: t, dsn: dsn, db: db, srv: srv, now: now}
}

type metricSeed struct {
	service string
	errRate float64
	p99     float64
	risk    bool
}

// seed inserts metric rows for four services over the last 15 minutes
// (1min), 6 five-minute and 3 hourly windows, three alerts, a silence and
// an SLO.
func seed(t testing.TB, db *pgx.Conn, now time.Time) {
	t.Helper()
	ctx := context.Background()
	services := []metricSeed{
		{service: "checkout", errRate: 1, p99: 120, risk: true},
		{service: "payments", errRate: 8, p99: 300},
		{service: "search", errRate: 2, p99: 1500, risk: true},
		{service: "deployment-test-service", errRate: 0, p99: 50, risk: true},
	}
	insert := func(table string, svc metricSeed, ts time.Time, final bool) {
		count := int64(600)
		errs := int64(float64(count) * svc.errRate / 100)
		var riskAvg, riskMax any
		if svc.risk {
			riskAvg, riskMax = 0.1, 0.4
		}
		_, err := db.Exec(ctx, `INSERT INTO `+table+` (service, timestamp, count, error_count, warning_count,
			error_rate, throughput_per_sec, latency_avg_ms, latency_min_ms, latency_max_ms, latency_p50_ms,
			latency_p95_ms, latency_p99_ms, risk_score_avg, risk_score_max, latency_sum, latency_sq_sum, risk_sum,
			final, version, last_seq, updated_at)
			VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22)`,
			svc.service, ts, count, errs, int64(3), 100*float64(errs)/float64(count), float64(count)/60, 40.0, 1.0,
			svc.p99*1.2, 30.0, svc.p99*0.8, svc.p99, riskAvg, riskMax, 40.0*float64(count), 2000.0*float64(count), 0.1*float64(count),
			final, int64(1), int64(10), ts.Add(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, svc := range services {
		for m := 0; m < 15; m++ {
			ts := now.Add(-time.Duration(m) * time.Minute)
			insert("analytics_metrics_1min", svc, ts, m > 0)
		}
		for m := 0; m < 6; m++ {
			insert("analytics_metrics_5min", svc, now.Truncate(5*time.Minute).Add(-time.Duration(m)*5*time.Minute), m > 0)
		}
		for h := 0; h < 3; h++ {
			insert("analytics_metrics_1hour", svc, now.Truncate(time.Hour).Add(-time.Duration(h)*time.Hour), h > 0)
		}
	}
	_, err := db.Exec(ctx, `INSERT INTO analytics_alerts
		(alert_id, fingerprint, rule_id, rule_name, service, severity, status, metric_name, value, threshold, "window",
		 window_start, message, fired_at, acknowledged_at, acknowledged_by, resolved_at)
		VALUES
		('a-1', 'fp-1', 1, 'High Error Rate', 'payments', 'warning', 'active', 'error_rate', 8, 5, '1min', $1, 'error rate 8 > 5', $1, NULL, NULL, NULL),
		('a-2', 'fp-2', 4, 'Critical P99 Latency', 'search', 'critical', 'acknowledged', 'latency_p99_ms', 1500, 1000, '1min', $2, 'p99 1500 > 1000', $2, $1, 'user:alice', NULL),
		('a-3', 'fp-3', 2, 'Critical Error Rate', 'checkout', 'critical', 'resolved', 'error_rate', 25, 20, '1min', $3, 'error rate 25 > 20', $3, NULL, NULL, $2)`,
		now.Add(-2*time.Minute), now.Add(-5*time.Minute), now.Add(-30*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	_, err = db.Exec(ctx, `INSERT INTO analytics_alert_silences (rule_name, service, severity, starts_at, ends_at, created_by, comment)
		VALUES (NULL, 'search', NULL, now() - interval '1 hour', now() + interval '1 hour', 'user:alice', 'maintenance')`)
	if err != nil {
		t.Fatal(err)
	}
	_, err = db.Exec(ctx, `INSERT INTO analytics_slos (name, service, objective, target, notification_channels)
		VALUES ('checkout availability', 'checkout', 'availability', 99.9, '{slack}')`)
	if err != nil {
		t.Fatal(err)
	}
}

// request performs one request against the app.
func (f *fixture) request(method, target, body string, hdr map[string]string) (*http.Response, []byte) {
	f.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, target, r)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := f.srv.App().Test(req, 10000)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, target, err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp, b
}

func bearer(key string) map[string]string { return map[string]string{"Authorization": "Bearer " + key} }

func basic(user, pw string) map[string]string {
	return map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pw))}
}

// getJSON GETs target and decodes the body; it fails unless the status is want.
func (f *fixture) getJSON(target string, hdr map[string]string, want int) map[string]any {
	f.t.Helper()
	resp, b := f.request("GET", target, "", hdr)
	if resp.StatusCode != want {
		f.t.Fatalf("GET %s: status %d, want %d: %s", target, resp.StatusCode, want, b)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		f.t.Fatalf("GET %s: %v: %s", target, err, b)
	}
	return m
}

// expectError checks an error response: status and the field named.
func (f *fixture) expectError(method, target, body string, hdr map[string]string, status int, field string) {
	f.t.Helper()
	resp, b := f.request(method, target, body, hdr)
	if resp.StatusCode != status {
		f.t.Fatalf("%s %s: status %d, want %d: %s", method, target, resp.StatusCode, status, b)
	}
	var e errorBody
	if err := json.Unmarshal(b, &e); err != nil || e.Error == "" {
		f.t.Fatalf("%s %s: not an error body: %s", method, target, b)
	}
	if field != "" && e.Field != field {
		f.t.Fatalf("%s %s: field %q, want %q (%s)", method, target, e.Field, field, e.Error)
	}
}

// rowCounts counts the rows of every table the API reads or writes.
func rowCounts(t testing.TB, db *pgx.Conn) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, tbl := range []string{"analytics_metrics_1min", "analytics_metrics_5min", "analytics_metrics_1hour",
		"analytics_alerts", "analytics_alert_rules", "analytics_alert_silences", "analytics_events"} {
		var n int64
		if err := db.QueryRow(context.Background(), "SELECT count(*) FROM "+tbl).Scan(&n); err != nil {
			t.Fatal(err)
		}
		out[tbl] = n
	}
	var n int64
	if err := db.QueryRow(context.Background(), "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	out["pg_class(public)"] = n
	return out
}

func jsonDecode(b []byte, v any) error { return json.Unmarshal(b, v) }

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }
