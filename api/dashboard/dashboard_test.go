package dashboard_test

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/api"
	"github.com/stacklens/stacklens/api/dashboard"
	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/natsutil"
	"github.com/stacklens/stacklens/internal/window"
	"github.com/stacklens/stacklens/schema"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const (
	readerKey = "dash-reader-key-0123456789abcdef"
	adminKey  = "dash-admin-key-0123456789abcdef0"
	chromium  = "/usr/bin/chromium"
)

func apiConfig(dsn string, creds bool) api.Config {
	c := api.Config{
		API: config.API{Host: "127.0.0.1", Port: 0, MaxBodyBytes: 65536, QueryTimeout: 2 * time.Second},
		DB:  config.DB{URL: dsn, PoolMax: 4, ReaderUser: "stacklens_reader"},
		// Version shows in the footer and the pipeline panel.
		Version: "dashboard-test",
	}
	if creds {
		c.API.ReaderKeys = []string{readerKey}
		c.API.AdminKeys = []string{adminKey}
	}
	return c
}

// TestAssets checks what the server side does: GET / is the dashboard (not
// the API's placeholder), assets carry their types, ETags and security
// headers, gzip is offered, unknown files are 404, and the mount keeps the
// API's own routes and auth.
func TestAssets(t *testing.T) {
	// The pools connect lazily: these requests never reach the database.
	srv, err := api.New(apiConfig("postgres://stacklens@127.0.0.1:1/none?sslmode=disable", true), api.Deps{Mount: dashboard.Mount})
	if err != nil {
		t.Fatal(err)
	}
	get := func(target string, hdr ...string) (*http.Response, []byte) {
		t.Helper()
		req := httptest.NewRequest("GET", target, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := srv.App().Test(req, 5000)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		return resp, b
	}

	resp, body := get("/")
	if resp.StatusCode != 200 || !strings.Contains(string(body), `<script type="module" src="/dashboard/app.js">`) {
		t.Fatalf("GET / (no credentials): %d %.200s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Fatalf("GET / content type %q", ct)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
		t.Fatalf("CSP %q", csp)
	}
	for _, name := range []string{"app.js", "chart.js", "slo.js", "style.css", "favicon.svg"} {
		resp, body := get(dashboard.Prefix + name)
		if resp.StatusCode != 200 || len(body) == 0 {
			t.Fatalf("GET %s: %d", name, resp.StatusCode)
		}
		want, _ := readAsset(name)
		if string(body) != string(want) {
			t.Fatalf("GET %s: body differs from the embedded file", name)
		}
		etag := resp.Header.Get("ETag")
		if etag == "" || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("GET %s: headers %v", name, resp.Header)
		}
		if r2, _ := get(dashboard.Prefix+name, "If-None-Match", etag); r2.StatusCode != 304 {
			t.Fatalf("GET %s with If-None-Match: %d, want 304", name, r2.StatusCode)
		}
	}
	if ct := func() string { r, _ := get(dashboard.Prefix + "app.js"); return r.Header.Get("Content-Type") }(); !strings.HasPrefix(ct, "text/javascript") {
		t.Fatalf("app.js content type %q", ct)
	}
	resp, body = get(dashboard.Prefix+"app.js", "Accept-Encoding", "gzip, deflate")
	if resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("app.js not gzipped: %v", resp.Header)
	}
	zr, err := gzip.NewReader(strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := io.ReadAll(zr)
	if want, _ := readAsset("app.js"); string(plain) != string(want) {
		t.Fatal("gzipped app.js differs")
	}
	for _, p := range []string{dashboard.Prefix + "nope.js", dashboard.Prefix, dashboard.Prefix + "../dashboard.go", "/index.html"} {
		if resp, _ := get(p); resp.StatusCode != 404 {
			t.Fatalf("GET %s: %d, want 404", p, resp.StatusCode)
		}
	}
	// The API's routes keep their auth, and the OpenAPI document lists the
	// dashboard's routes.
	if resp, _ := get("/metrics"); resp.StatusCode != 401 {
		t.Fatalf("GET /metrics without credentials: %d, want 401", resp.StatusCode)
	}
	resp, body = get("/openapi.json", "Authorization", "Bearer "+readerKey)
	var doc struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(body, &doc); resp.StatusCode != 200 || err != nil {
		t.Fatalf("GET /openapi.json: %d %v", resp.StatusCode, err)
	}
	for _, p := range []string{"/", dashboard.Prefix + "app.js", dashboard.Prefix + "style.css", dashboard.WindowsPath, "/metrics"} {
		if doc.Paths[p]["get"] == nil {
			t.Errorf("OpenAPI document has no GET %s", p)
		}
	}
}

func readAsset(name string) ([]byte, error) {
	f, err := dashboard.FS().Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// ---------- end to end ----------

// svc describes one seeded service.
type svc struct {
	name    string
	rate    float64 // events/s
	errPct  float64
	p50     float64
	p99     float64
	hasRisk bool
}

var services = []svc{
	{name: "checkout", rate: 180, errPct: 0.8, p50: 42, p99: 210, hasRisk: true},
	{name: "inventory", rate: 95, errPct: 0.3, p50: 12, p99: 64},
	{name: "payments", rate: 60, errPct: 7.5, p50: 85, p99: 420, hasRisk: true},
	{name: "search", rate: 240, errPct: 1.6, p50: 130, p99: 1350},
}

// seed writes metric rows as the projections would: 1-minute windows for
// the last 90 minutes, 5-minute windows for 7 hours and hourly windows for 8
// days, the newest of each still open (final = false, partly filled), plus
// an active, an acknowledged and a resolved alert.
func seed(t *testing.T, db *pgx.Conn, now time.Time) {
	t.Helper()
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(8, 8))
	cols := []string{"service", "timestamp", "count", "error_count", "warning_count", "error_rate",
		"throughput_per_sec", "latency_avg_ms", "latency_min_ms", "latency_max_ms", "latency_p50_ms",
		"latency_p95_ms", "latency_p99_ms", "risk_score_avg", "risk_score_max", "latency_sum",
		"latency_sq_sum", "risk_sum", "final", "version", "last_seq", "updated_at"}
	seq := int64(0)
	for _, w := range []struct {
		table string
		size  time.Duration
		n     int
	}{
		{"analytics_metrics_1min", time.Minute, 90},
		{"analytics_metrics_5min", 5 * time.Minute, 84},
		{"analytics_metrics_1hour", time.Hour, 192},
	} {
		var rows [][]any
		newest := now.Truncate(w.size)
		for _, s := range services {
			for i := w.n - 1; i >= 0; i-- {
				ts := newest.Add(-time.Duration(i) * w.size)
				end := ts.Add(w.size)
				final := !end.After(now.Add(-30 * time.Second))
				filled := 1.0
				if end.After(now) {
					filled = math.Max(now.Sub(ts).Seconds()/w.size.Seconds(), 0.05)
				}
				// daily curve plus noise; a latency bump 20-30 minutes ago
				hour := float64(ts.Hour()) + float64(ts.Minute())/60
				load := 0.75 + 0.25*math.Sin((hour-9)/24*2*math.Pi) + 0.08*rng.NormFloat64()
				count := int64(math.Round(s.rate * load * w.size.Seconds() * filled))
				if count < 1 {
					count = 1
				}
				errPct := math.Max(0, s.errPct*(1+0.3*rng.NormFloat64()))
				errs := int64(math.Round(float64(count) * errPct / 100))
				bump := 1.0
				if age := now.Sub(ts); age >= 20*time.Minute && age < 30*time.Minute && w.size == time.Minute {
					bump = 1.6
				}
				p50 := s.p50 * bump * (1 + 0.1*rng.NormFloat64())
				p99 := s.p99 * bump * (1 + 0.12*rng.NormFloat64())
				p95 := p50 + (p99-p50)*0.55
				avg := p50 * 1.15
				var riskAvg, riskMax any
				riskSum := 0.0
				if s.hasRisk {
					ra := 0.1 + 0.05*rng.Float64()
					riskAvg, riskMax, riskSum = ra, math.Min(1, ra*4), ra*float64(count)
				}
				seq += count
				updated := end
				if updated.After(now) {
					updated = now
				}
				rows = append(rows, []any{s.name, ts, count, errs, count / 50, 100 * float64(errs) / float64(count),
					float64(count) / w.size.Seconds(), avg, p50 * 0.1, p99 * 1.8, p50, p95, p99, riskAvg, riskMax,
					avg * float64(count), avg * avg * 1.3 * float64(count), riskSum, final, int64(1), seq, updated})
			}
		}
		if _, err := db.CopyFrom(ctx, pgx.Identifier{w.table}, cols, pgx.CopyFromRows(rows)); err != nil {
			t.Fatalf("seed %s: %v", w.table, err)
		}
	}
	_, err := db.Exec(ctx, `INSERT INTO analytics_alerts
		(alert_id, fingerprint, rule_id, rule_name, service, severity, status, metric_name, value, threshold, "window",
		 window_start, message, fired_at, acknowledged_at, acknowledged_by, resolved_at)
		VALUES
		('dash-1', 'fp-payments-high-error-rate', (SELECT id FROM analytics_alert_rules WHERE rule_name = 'High Error Rate'),
		 'High Error Rate', 'payments', 'warning', 'active', 'error_rate', 7.9, 5, '1min', $1,
		 'payments: error_rate 7.9 > 5 for 1 window', $1, NULL, NULL, NULL),
		('dash-2', 'fp-search-critical-p99', (SELECT id FROM analytics_alert_rules WHERE rule_name = 'Critical P99 Latency'),
		 'Critical P99 Latency', 'search', 'critical', 'acknowledged', 'latency_p99_ms', 1420, 1000, '1min', $2,
		 'search: latency_p99_ms 1420 > 1000 for 1 window', $2, $1, 'user:oncall', NULL),
		('dash-3', 'fp-checkout-high-p99', (SELECT id FROM analytics_alert_rules WHERE rule_name = 'High P99 Latency'),
		 'High P99 Latency', 'checkout', 'warning', 'resolved', 'latency_p99_ms', 640, 500, '1min', $3,
		 'checkout: latency_p99_ms 640 > 500 for 1 window', $3, NULL, NULL, $4)`,
		now.Add(-3*time.Minute), now.Add(-12*time.Minute), now.Add(-26*time.Minute), now.Add(-19*time.Minute))
	if err != nil {
		t.Fatalf("seed alerts: %v", err)
	}
}

// serve runs an API server with the dashboard on a loopback port until the
// test ends and returns its base URL.
func serve(t *testing.T, cfg api.Config) string {
	t.Helper()
	return serveWith(t, cfg, api.Deps{})
}

// serveWith is serve with collaborators (the pipeline probe).
func serveWith(t *testing.T, cfg api.Config, deps api.Deps) string {
	t.Helper()
	deps.Mount = dashboard.Mount
	srv, err := api.New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

// getJSON GETs base+path with an optional bearer key into v.
func getJSON(t *testing.T, url, key string, v any) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

type metricRow struct {
	Service          string    `json:"service"`
	Timestamp        time.Time `json:"timestamp"`
	Count            int64     `json:"count"`
	ErrorRate        float64   `json:"error_rate"`
	ThroughputPerSec float64   `json:"throughput_per_sec"`
	LatencyP50Ms     float64   `json:"latency_p50_ms"`
	LatencyP95Ms     float64   `json:"latency_p95_ms"`
	LatencyP99Ms     float64   `json:"latency_p99_ms"`
	Final            bool      `json:"final"`
}

// shown is what the page displays for one service (the data-value
// attributes of the services table and the health grid).
type shown struct {
	Service    string  `json:"service"`
	Count      float64 `json:"count"`
	Throughput float64 `json:"throughput"`
	ErrorRate  float64 `json:"error_rate"`
	P50        float64 `json:"p50"`
	P95        float64 `json:"p95"`
	P99        float64 `json:"p99"`
	Timestamp  string  `json:"timestamp"`
	CountText  string  `json:"count_text"`
	P99Text    string  `json:"p99_text"`
}

const readServicesJS = `[...document.querySelectorAll('[data-testid=service-row]')].map(tr => {
  const v = (id) => Number(tr.querySelector('[data-testid=' + id + ']').dataset.value);
  const tx = (id) => tr.querySelector('[data-testid=' + id + ']').textContent;
  return {service: tr.dataset.service, count: v('svc-count'), throughput: v('svc-throughput'),
    error_rate: v('svc-error-rate'), p50: v('svc-p50'), p95: v('svc-p95'), p99: v('svc-p99'),
    timestamp: tr.querySelector('[data-testid=svc-window]').dataset.timestamp,
    count_text: tx('svc-count'), p99_text: tx('svc-p99')};
})`

type healthShown struct {
	Service    string  `json:"service"`
	Status     string  `json:"status"`
	ErrorRate  float64 `json:"error_rate"`
	P99        float64 `json:"p99"`
	Throughput float64 `json:"throughput"`
	LastSeen   string  `json:"last_seen"`
}

const readHealthJS = `[...document.querySelectorAll('[data-testid=health-card]')].map(li => ({
  service: li.dataset.service, status: li.dataset.status,
  error_rate: Number(li.querySelector('[data-testid=health-error-rate]').dataset.value),
  p99: Number(li.querySelector('[data-testid=health-p99]').dataset.value),
  throughput: Number(li.querySelector('[data-testid=health-throughput]').dataset.value),
  last_seen: li.querySelector('time').getAttribute('datetime')}))`

// checkServices compares the services table with /metrics for the window.
func checkServices(t *testing.T, ctx context.Context, base, key, win string) []shown {
	t.Helper()
	got, err := chromedp.Run(ctx, chromedp.Evaluate[[]shown](readServicesJS))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(services) {
		t.Fatalf("%s: services table has %d rows, want %d: %+v", win, len(got), len(services), got)
	}
	for i, g := range got {
		if g.Service != services[i].name {
			t.Fatalf("%s: row %d is %q, want %q (alphabetical)", win, i, g.Service, services[i].name)
		}
		var m struct {
			Metrics []metricRow `json:"metrics"`
		}
		getJSON(t, base+"/metrics?window="+win+"&service="+g.Service+"&limit=1", key, &m)
		if len(m.Metrics) != 1 {
			t.Fatalf("%s: /metrics for %s: %+v", win, g.Service, m)
		}
		w := m.Metrics[0]
		if g.Count != float64(w.Count) || g.Throughput != w.ThroughputPerSec || g.ErrorRate != w.ErrorRate ||
			g.P50 != w.LatencyP50Ms || g.P95 != w.LatencyP95Ms || g.P99 != w.LatencyP99Ms {
			t.Errorf("%s %s: page shows %+v, /metrics has %+v", win, g.Service, g, w)
		}
		if ts, err := time.Parse(time.RFC3339Nano, g.Timestamp); err != nil || !ts.Equal(w.Timestamp) {
			t.Errorf("%s %s: window %q, /metrics %v", win, g.Service, g.Timestamp, w.Timestamp)
		}
		if digits := strings.Map(func(r rune) rune {
			if r >= '0' && r <= '9' {
				return r
			}
			return -1
		}, g.CountText); digits != fmt.Sprint(w.Count) {
			t.Errorf("%s %s: count text %q, want %d", win, g.Service, g.CountText, w.Count)
		}
		if !strings.Contains(g.P99Text, "ms") && !strings.Contains(g.P99Text, " s") {
			t.Errorf("%s %s: p99 text %q has no unit", win, g.Service, g.P99Text)
		}
	}
	return got
}

// checkKPIs compares the overview figures (all services, newest complete
// window) with what /metrics gives for that window.
func checkKPIs(t *testing.T, ctx context.Context, base, key, win string) {
	t.Helper()
	var m struct {
		Metrics []metricRow `json:"metrics"`
	}
	getJSON(t, base+"/metrics?window="+win+"&limit=200", key, &m)
	type agg struct {
		final     bool
		count     int64
		tput, p99 float64
	}
	byTS := map[time.Time]*agg{}
	for _, r := range m.Metrics {
		a := byTS[r.Timestamp]
		if a == nil {
			a = &agg{final: true}
			byTS[r.Timestamp] = a
		}
		a.final = a.final && r.Final
		a.count += r.Count
		a.tput += r.ThroughputPerSec
		a.p99 = math.Max(a.p99, r.LatencyP99Ms)
	}
	var keys []time.Time
	for ts, a := range byTS {
		if a.final {
			keys = append(keys, ts)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].After(keys[j]) })
	if len(keys) == 0 {
		t.Fatalf("%s: no final window in /metrics", win)
	}
	want := byTS[keys[0]]
	got, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]float64](`({
	  count: Number(document.querySelector('[data-testid=kpi-count]').dataset.value),
	  tput: Number(document.querySelector('[data-testid=kpi-throughput]').dataset.value),
	  p99: Number(document.querySelector('[data-testid=kpi-p99]').dataset.value)})`))
	if err != nil {
		t.Fatal(err)
	}
	if got["count"] != float64(want.count) || math.Abs(got["tput"]-want.tput) > 1e-9 || got["p99"] != want.p99 {
		t.Errorf("%s: KPIs %v, want count %d, events/s %v, p99 %v (window %v)", win, got, want.count, want.tput, want.p99, keys[0])
	}
}

// console collects what the page writes to the console.
type console struct {
	mu   sync.Mutex
	msgs []chromedp.ConsoleMessage
}

// TestWindowsJSON: the page learns the configured windows (any of
// AGGREGATION_WINDOWS, not only the defaults) from WindowsPath, without
// credentials.
func TestWindowsJSON(t *testing.T) {
	cfg := apiConfig("postgres://stacklens@127.0.0.1:1/none?sslmode=disable", true)
	cfg.Windows = []window.Window{window.MustParse("1min"), window.MustParse("15min"), window.MustParse("1day")}
	srv, err := api.New(cfg, api.Deps{Mount: dashboard.Mount})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.App().Test(httptest.NewRequest("GET", dashboard.WindowsPath, nil), 5000)
	if err != nil {
		t.Fatal(err)
	}
	var got struct{ Windows []dashboard.Window }
	if err := json.NewDecoder(resp.Body).Decode(&got); resp.StatusCode != 200 || err != nil {
		t.Fatalf("GET %s: %d %v", dashboard.WindowsPath, resp.StatusCode, err)
	}
	if want := "[{1min 60} {15min 900} {1day 86400}]"; fmt.Sprint(got.Windows) != want {
		t.Errorf("windows %v, want %s", got.Windows, want)
	}
	// The page reads it and builds its selector from it.
	js, _ := readAsset("app.js")
	if !strings.Contains(string(js), "'"+dashboard.WindowsPath+"'") {
		t.Errorf("app.js does not read %s", dashboard.WindowsPath)
	}
}

func (c *console) problems(allow func(chromedp.ConsoleMessage) bool) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, m := range c.msgs {
		if m.Type != chromedp.ConsoleError && m.Type != chromedp.ConsoleException && m.Type != chromedp.ConsoleWarning {
			continue
		}
		if allow != nil && allow(m) {
			continue
		}
		out = append(out, fmt.Sprintf("%s (%s:%d, source %q)", m.String(), m.URL, m.Line, m.Source))
	}
	return out
}

func (c *console) reset() {
	c.mu.Lock()
	c.msgs = nil
	c.mu.Unlock()
}

// browser starts headless Chromium for the test, or skips (fails in CI)
// when it is not installed. The browser starts in the background; ready
// waits for it.
func browser(t *testing.T) (ctx context.Context, c *console, ready, stop func()) {
	t.Helper()
	path := chromium
	if p := os.Getenv("STACKLENS_CHROMIUM"); p != "" {
		path = p
	}
	if _, err := exec.LookPath(path); err != nil {
		msg := fmt.Sprintf("headless Chromium not found at %s (apt-get install chromium, or set STACKLENS_CHROMIUM): %v", path, err)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("force-color-profile", "srgb"),
		chromedp.Flag("lang", "en-US"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1440, 900),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	ctx, cancelT := context.WithTimeout(ctx, 90*time.Second)
	stop = func() { cancelT(); cancelB(); cancelA() }
	t.Cleanup(stop)
	c = &console{}
	started := make(chan error, 1)
	go func() {
		msgs := chromedp.Console(ctx) // starts the browser and subscribes
		started <- chromedp.Do(ctx, chromedp.EmulateViewport(1440, 900))
		for m, err := range msgs {
			if err != nil {
				return
			}
			c.mu.Lock()
			c.msgs = append(c.msgs, m)
			c.mu.Unlock()
		}
	}()
	ready = func() {
		t.Helper()
		if err := <-started; err != nil {
			t.Fatalf("starting %s: %v", path, err)
		}
	}
	return ctx, c, ready, stop
}

// artifactDir is where screenshots go: $STACKLENS_ARTIFACTS when set
// (kept), else the test's artifact directory (go test -artifacts keeps it
// under -outputdir; otherwise it is removed after the test).
func artifactDir(t *testing.T) string {
	if d := os.Getenv("STACKLENS_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.ArtifactDir()
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	// from the top: the header is sticky, and a scrolled page would show it
	// in the middle of a full-page capture
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`)); err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	p := filepath.Join(artifactDir(t), name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d KB)", p, len(png)/1024)
}

func poll(t *testing.T, ctx context.Context, what, expr string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(15*time.Second))); err != nil {
		body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText.slice(0, 2000)`))
		t.Fatalf("waiting for %s: %v\npage text:\n%s", what, err, body)
	}
}

func setSelect(t *testing.T, ctx context.Context, id, value string) {
	t.Helper()
	expr := fmt.Sprintf(`(() => { const s = document.getElementById(%q); s.value = %q; s.dispatchEvent(new Event('change', {bubbles: true})); return s.value; })()`, id, value)
	got, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
	if err != nil || got != value {
		t.Fatalf("select #%s = %q: %q %v", id, value, got, err)
	}
}

// TestDashboardInBrowser opens the dashboard in headless Chromium against a
// real API on a seeded PostgreSQL and checks that it shows what the API
// returns: per-service figures (/metrics), the overview KPIs and charts, the
// health grid (/health-status), alerts (/alerts) and pipeline checks
// (/health); that the window selector switches the data; that an API with
// credentials asks for a key and an admin key can acknowledge an alert; and
// that nothing is written to the console.
func TestDashboardInBrowser(t *testing.T) {
	start := time.Now()
	ctx, cons, ready, stopBrowser := browser(t)

	pg := testenv.Postgres(t)
	t.Logf("database (%s) ready after %v", pg.Source, time.Since(start).Round(time.Millisecond))
	dbctx := context.Background()
	db, err := pgx.Connect(dbctx, pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close(context.Background()) })
	if _, err := schema.Up(dbctx, db, schema.Options{Timescale: "off"}, nil); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	seed(t, db, now)
	probe := pipelineProbe(t)
	anon := serveWith(t, apiConfig(pg.DSN, false), api.Deps{Pipeline: probe})
	secured := serve(t, apiConfig(pg.DSN, true))
	// Close the browser (its keep-alive connections) before the servers
	// drain: cleanups run last-registered first.
	t.Cleanup(stopBrowser)
	ready()
	t.Logf("setup took %v", time.Since(start).Round(time.Millisecond))

	t.Run("anonymous loopback", func(t *testing.T) {
		cons.reset()
		if err := chromedp.Do(ctx, chromedp.Navigate(anon+"/")); err != nil {
			t.Fatal(err)
		}
		poll(t, ctx, "the services table", `document.querySelector('#services-body[data-window="1min"][data-rows="4"]')`)
		poll(t, ctx, "the health grid", `document.querySelector('#health-grid[data-count="4"]')`)
		poll(t, ctx, "the alerts", `document.querySelectorAll('[data-testid=alert-row]').length === 3`)
		poll(t, ctx, "the pipeline checks", `document.querySelector('[data-testid=check-pipeline]')`)
		poll(t, ctx, "the dead letters", `document.querySelector('[data-testid=pipeline-dlq][data-total="4"][data-last-minute="1"]')`)

		checkServices(t, ctx, anon, "", "1min")
		checkKPIs(t, ctx, anon, "", "1min")

		// charts: one point per window of the last hour, drawn as a path
		n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelector('#chart-latency path.line').getAttribute('d').split('L').length`))
		if err != nil || n < 55 {
			t.Errorf("latency chart has %d points (%v), want about 60", n, err)
		}
		desc, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('#chart-throughput desc').textContent`))
		if !strings.Contains(desc, "events/s") || strings.Contains(desc, "–") {
			t.Errorf("throughput chart description %q", desc)
		}

		// health grid = /health-status
		var hs struct {
			Services []struct {
				Service          string    `json:"service"`
				Status           string    `json:"status"`
				ErrorRate        float64   `json:"error_rate"`
				LatencyP99Ms     float64   `json:"latency_p99_ms"`
				ThroughputPerSec float64   `json:"throughput_per_sec"`
				LastSeen         time.Time `json:"last_seen"`
			} `json:"services"`
		}
		getJSON(t, anon+"/health-status", "", &hs)
		cards, err := chromedp.Run(ctx, chromedp.Evaluate[[]healthShown](readHealthJS))
		if err != nil {
			t.Fatal(err)
		}
		if len(cards) != len(hs.Services) {
			t.Fatalf("health grid %+v, /health-status %+v", cards, hs.Services)
		}
		statuses := map[string]string{}
		for i, c := range cards {
			w := hs.Services[i]
			ls, _ := time.Parse(time.RFC3339Nano, c.LastSeen)
			if c.Service != w.Service || c.Status != w.Status || c.ErrorRate != w.ErrorRate ||
				c.P99 != w.LatencyP99Ms || c.Throughput != w.ThroughputPerSec || !ls.Equal(w.LastSeen) {
				t.Errorf("health card %+v, /health-status %+v", c, w)
			}
			statuses[c.Service] = c.Status
		}
		if statuses["search"] != "unhealthy" || statuses["inventory"] != "healthy" {
			t.Errorf("seeded statuses not shown: %v", statuses)
		}

		// alerts: active first; no acknowledge button without a key
		al, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('[data-testid=alert-row]')].map(r => r.dataset.status)`))
		if err != nil || strings.Join(al, ",") != "active,acknowledged,resolved" {
			t.Errorf("alert rows %v %v", al, err)
		}
		if n, _ := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('[data-testid=ack-button]').length`)); n != 0 {
			t.Errorf("%d acknowledge buttons for an anonymous reader", n)
		}
		if c, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('[data-testid=alerts-active-count]').textContent`)); c != "1" {
			t.Errorf("active alert count %q", c)
		}
		if s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('[data-testid=pipeline-overall]').textContent`)); s != "healthy" {
			t.Errorf("pipeline status %q, want healthy", s)
		}
		checkPipelinePanel(t, ctx)

		// the services table is keyboard-reachable and scopes the overview
		if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`[data-service="payments"] [data-testid=svc-name]`))); err != nil {
			t.Fatal(err)
		}
		poll(t, ctx, "the payments scope", `document.getElementById('scope-name').textContent === 'payments'`)
		setSelect(t, ctx, "scope", "")

		// the time range selector narrows the charts: 15 minutes of 1-minute windows
		setSelect(t, ctx, "range", "900")
		poll(t, ctx, "a 15-minute range", `(() => { const n = document.querySelector('#chart-latency path.line').getAttribute('d').split('L').length; return n >= 14 && n <= 17; })()`)
		setSelect(t, ctx, "range", "3600")
		poll(t, ctx, "the hour range again", `document.querySelector('#chart-latency path.line').getAttribute('d').split('L').length >= 55`)

		screenshot(t, ctx, "dashboard-1min.png")
		// the dark colour scheme, as a second look
		if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}},
		}); err != nil {
			t.Fatal(err)
		}
		screenshot(t, ctx, "dashboard-1min-dark.png")
		if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{}); err != nil {
			t.Fatal(err)
		}

		// the window selector changes the data shown
		before, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('[data-service=checkout] [data-testid=svc-count]').dataset.value`))
		setSelect(t, ctx, "window", "5min")
		poll(t, ctx, "5-minute windows", `document.querySelector('#services-body[data-window="5min"][data-rows="4"]')`)
		checkServices(t, ctx, anon, "", "5min")
		checkKPIs(t, ctx, anon, "", "5min")
		after, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('[data-service=checkout] [data-testid=svc-count]').dataset.value`))
		if before == after {
			t.Errorf("checkout count %s did not change with the window", after)
		}
		if r, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById('range').value`)); r != "21600" {
			t.Errorf("range for 5-minute windows %q, want 21600 (6 hours)", r)
		}
		if loc, _ := chromedp.Run(ctx, chromedp.Location()); !strings.Contains(loc, "window=5min") {
			t.Errorf("location %q does not keep the window", loc)
		}
		setSelect(t, ctx, "window", "1hour")
		poll(t, ctx, "1-hour windows", `document.querySelector('#services-body[data-window="1hour"][data-rows="4"]')`)
		checkServices(t, ctx, anon, "", "1hour")

		if p := cons.problems(nil); len(p) > 0 {
			t.Errorf("console:\n%s", strings.Join(p, "\n"))
		}
	})

	t.Run("credentials and acknowledge", func(t *testing.T) {
		cons.reset()
		if err := chromedp.Do(ctx, chromedp.Navigate(secured+"/")); err != nil {
			t.Fatal(err)
		}
		poll(t, ctx, "the sign-in form", `!document.getElementById('login').hidden && document.getElementById('main').hidden`)
		// a wrong key is refused
		if err := chromedp.Do(ctx,
			chromedp.SendKeys(chromedp.CSS(`[data-testid=apikey]`), "not-a-key"),
			chromedp.Click(chromedp.CSS(`[data-testid=login-submit]`)),
		); err != nil {
			t.Fatal(err)
		}
		poll(t, ctx, "the refusal", `!document.getElementById('login-error').hidden`)
		screenshot(t, ctx, "dashboard-login.png")
		// the admin key signs in
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[chromedp.Void](`document.getElementById('apikey').value = ''`)); err != nil {
			t.Fatal(err)
		}
		if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.CSS(`[data-testid=apikey]`), adminKey+"\r")); err != nil {
			t.Fatal(err)
		}
		poll(t, ctx, "the dashboard after sign-in", `document.getElementById('login').hidden && !document.getElementById('main').hidden &&
			document.querySelector('#services-body[data-rows="4"]') && document.querySelector('[data-testid=ack-button]')`)
		if k, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`sessionStorage.getItem('stacklens.apiKey')`)); k != adminKey {
			t.Errorf("session storage holds %q", k)
		}
		win, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById('services-body').dataset.window`))
		checkServices(t, ctx, secured, readerKey, win)

		var active struct {
			Alerts []struct {
				ID int64 `json:"id"`
			} `json:"alerts"`
		}
		getJSON(t, secured+"/alerts?status=active", readerKey, &active)
		if len(active.Alerts) != 1 {
			t.Fatalf("active alerts %+v", active)
		}
		id := active.Alerts[0].ID
		if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(fmt.Sprintf(`[data-alert-id="%d"] [data-testid=ack-button]`, id)))); err != nil {
			t.Fatal(err)
		}
		poll(t, ctx, "the acknowledged alert", fmt.Sprintf(`document.querySelector('[data-alert-id="%d"]').dataset.status === 'acknowledged' &&
			!document.querySelector('[data-testid=ack-button]') && document.querySelector('[data-testid=alerts-active-count]').textContent === '0' &&
			document.activeElement.closest('[data-alert-id]')?.dataset.alertId === '%d'`, id, id))
		var ack struct {
			Alerts []struct {
				ID             int64   `json:"id"`
				Status         string  `json:"status"`
				AcknowledgedBy *string `json:"acknowledged_by"`
			} `json:"alerts"`
		}
		getJSON(t, secured+"/alerts?status=acknowledged", readerKey, &ack)
		found := false
		for _, a := range ack.Alerts {
			if a.ID == id {
				found = true
				if a.AcknowledgedBy == nil || !strings.HasPrefix(*a.AcknowledgedBy, "key:") {
					t.Errorf("acknowledged_by %v", a.AcknowledgedBy)
				}
			}
		}
		if !found {
			t.Fatalf("alert %d not acknowledged in the API: %+v", id, ack)
		}
		screenshot(t, ctx, "dashboard-admin.png")

		// The 401s of the sign-in are the browser's network log, nothing else.
		if p := cons.problems(func(m chromedp.ConsoleMessage) bool {
			return m.Source == "network" && strings.Contains(m.Text, "401")
		}); len(p) > 0 {
			t.Errorf("console:\n%s", strings.Join(p, "\n"))
		}
	})
	t.Logf("took %v", time.Since(start).Round(time.Millisecond))
}

// pipelineProbe samples an embedded NATS holding a pipeline's state: two
// shards, shard 0 with 3 events nobody consumes (no processor runs), shard
// 1 empty and not consumed either; 4 dead letters, one of them in the last minute (two samples 30 s
// apart on the probe's clock).
func pipelineProbe(t *testing.T) *api.PipelineProbe {
	t.Helper()
	ctx := context.Background()
	ns := testenv.NATS(t)
	nc, err := nats.Connect(ns.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	if _, err := natsutil.EnsureEventsStream(ctx, js, config.NATS{Shards: 2, Replicas: 1, EventsMaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	pub := func(subj string, n int) {
		for range n {
			if _, err := js.Publish(ctx, subj, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
		}
	}
	pub(natsutil.EventSubject(0, "checkout"), 3)
	pub(natsutil.DLQSubject("bridge", "missing_field"), 2)
	pub(natsutil.DLQSubject("processor", "too_late"), 1)
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	probe, err := api.NewPipelineProbe(nc, api.PipelineProbeOptions{Windows: []string{"1min"}, Now: func() time.Time { return time.Unix(0, clock.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	if err := probe.Sample(ctx); err != nil {
		t.Fatal(err)
	}
	pub(natsutil.DLQSubject("bridge", "missing_field"), 1)
	clock.Add(int64(30 * time.Second))
	if err := probe.Sample(ctx); err != nil {
		t.Fatal(err)
	}
	return probe
}

// checkPipelinePanel: the pipeline panel shows the processor's lag (both
// shards not consumed, shard 0's backlog 30 s old on the probe's clock) and the dead letters by reason
// with their last-minute counts, as /health reports them.
func checkPipelinePanel(t *testing.T, ctx context.Context) {
	t.Helper()
	type shown struct {
		Unconsumed string   `json:"unconsumed"`
		Pending    string   `json:"pending"`
		Behind     []string `json:"behind"`
		Reasons    []string `json:"reasons"`
		DLQText    string   `json:"dlq_text"`
	}
	got, err := chromedp.Run(ctx, chromedp.Evaluate[shown](`(() => {
  const lag = document.querySelector('[data-testid=pipeline-processor-lag]');
  return {
    unconsumed: lag.dataset.unconsumed, pending: lag.dataset.pending,
    behind: [...lag.querySelectorAll('[data-testid=pipeline-shard-behind]')].map(e => e.textContent),
    reasons: [...document.querySelectorAll('[data-testid=dlq-reason]')].map(e => e.dataset.reason + '=' + e.dataset.total + '+' + e.dataset.lastMinute),
    dlq_text: document.querySelector('[data-testid=pipeline-dlq]').textContent,
  };
})()`))
	if err != nil {
		t.Fatal(err)
	}
	if got.Unconsumed != "2" || got.Pending != "0" || len(got.Behind) != 2 || !strings.HasPrefix(got.Behind[0], "shard 0: not consumed, oldest 30") ||
		got.Behind[1] != "shard 1: not consumed, nothing waiting" {
		t.Errorf("processor lag shown %+v", got)
	}
	if strings.Join(got.Reasons, ",") != "bridge.missing_field=3+1,processor.too_late=1+0" ||
		!strings.Contains(got.DLQText, "1 / last 30.0 s") || !strings.Contains(got.DLQText, "4 kept") {
		t.Errorf("dead letters shown %+v", got)
	}
}

// TestWindowSelectorInBrowser: the window selector offers the configured
// windows, whatever they are (before, it offered 1min, 5min and 1hour
// whatever AGGREGATION_WINDOWS said), and picks a range per window.
func TestWindowSelectorInBrowser(t *testing.T) {
	ctx, _, ready, stopBrowser := browser(t)
	t.Cleanup(stopBrowser)
	// No database needed: the page's data calls fail, the selector does not.
	cfg := apiConfig("postgres://stacklens@127.0.0.1:1/none?sslmode=disable", false)
	cfg.Windows = []window.Window{window.MustParse("1min"), window.MustParse("15min"), window.MustParse("1day")}
	base := serve(t, cfg)
	ready()
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/")); err != nil {
		t.Fatal(err)
	}
	// The page starts with the default windows (also three): wait for the
	// configured ones to replace them.
	poll(t, ctx, "the configured windows", `[...document.querySelectorAll('#window option')].map((o) => o.value).join() === '1min,15min,1day'`)
	opts, err := chromedp.Run(ctx, chromedp.Evaluate[string](`[...document.querySelectorAll('#window option')].map((o) => o.value + '=' + o.textContent).join(',')`))
	if want := "1min=1 minute,15min=15 minutes,1day=1 day"; err != nil || opts != want {
		t.Fatalf("window options %q (%v), want %q", opts, err, want)
	}
	for _, c := range []struct{ win, rng string }{{"15min", "86400"}, {"1day", "604800"}, {"1min", "3600"}} {
		setSelect(t, ctx, "window", c.win)
		if r, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById('range').value`)); r != c.rng {
			t.Errorf("range for %s windows %q, want %s", c.win, r, c.rng)
		}
		if loc, _ := chromedp.Run(ctx, chromedp.Location()); !strings.Contains(loc, "window="+c.win) {
			t.Errorf("location %q does not keep window %s", loc, c.win)
		}
	}
	// A link to a configured window opens on it.
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/#window=1day")); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "the 1day window from the address", `document.getElementById('window').value === '1day' && document.querySelectorAll('#window option').length === 3`)
}
