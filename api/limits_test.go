package api

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stacklens/stacklens/internal/telemetry"
)

// TestRateLimit: a client over its rate gets 429 with Retry-After; probes
// are not limited; the token bucket refills with time.
func TestRateLimit(t *testing.T) {
	dsn, db, now := newDB(t)
	clock := time.Now()
	cfg := testConfig(dsn)
	cfg.API.RateLimit = 5
	srv, err := New(cfg, Deps{Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.closePools)
	f := &fixture{t: t, dsn: dsn, db: db, srv: srv, now: now}
	for i := 0; i < 5; i++ {
		f.mustGet("/metrics?limit=1")
	}
	resp, b := f.request("GET", "/metrics?limit=1", "", nil)
	if resp.StatusCode != 429 {
		t.Fatalf("6th request: %d %s", resp.StatusCode, b)
	}
	ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || ra < 1 {
		t.Fatalf("Retry-After %q", resp.Header.Get("Retry-After"))
	}
	if !strings.Contains(string(b), `"error"`) {
		t.Fatalf("429 body %s", b)
	}
	// Unknown routes are limited too, probes are not.
	if resp, _ := f.request("GET", "/nope", "", nil); resp.StatusCode != 429 {
		t.Fatalf("unmatched: %d", resp.StatusCode)
	}
	for i := 0; i < 20; i++ {
		if resp, _ := f.request("GET", "/ready", "", nil); resp.StatusCode != 200 {
			t.Fatalf("/ready limited: %d", resp.StatusCode)
		}
	}
	clock = clock.Add(time.Second)
	f.mustGet("/metrics?limit=1")
	var st StatsResponse
	clock = clock.Add(time.Second)
	if err := jsonDecode(f.mustGet("/stats"), &st); err != nil || st.RateLimited != 2 {
		t.Fatalf("rate_limited %d (%v)", st.RateLimited, err)
	}
}

// TestLimiterSweep: idle buckets are dropped once a shard is large.
func TestLimiterSweep(t *testing.T) {
	now := time.Now()
	l := newLimiter(1, func() time.Time { return now })
	// Fill until every shard is at the sweep size (shards are hashed).
	full := func() bool {
		for i := range l.shards {
			if len(l.shards[i].m) < limiterSweepSize {
				return false
			}
		}
		return true
	}
	for i := 0; !full(); i++ {
		l.allow(fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255))
	}
	count := func() int {
		total := 0
		for i := range l.shards {
			total += len(l.shards[i].m)
		}
		return total
	}
	before := count()
	now = now.Add(limiterIdle + time.Second)
	l.allow("fresh")
	if after := count(); after > before-limiterSweepSize+1 {
		t.Fatalf("%d buckets before, %d after the sweep", before, after)
	}
	if ok, _ := l.allow("fresh"); ok {
		t.Fatal("second request within a second allowed at 1/s")
	}
	if newLimiter(0, time.Now) != nil {
		t.Fatal("0 should disable")
	}
}

// TestCORS: only configured origins get CORS headers; preflights from
// others are refused; no configuration sends no CORS headers.
func TestCORS(t *testing.T) {
	dsn, db, now := newDB(t)
	f := serverOn(t, dsn, db, now, func(c *Config) {
		c.API.CORSOrigins = []string{"https://dash.example.com", "http://localhost:3000/"}
	})
	for _, c := range []struct {
		origin string
		allow  bool
	}{{"https://dash.example.com", true}, {"http://localhost:3000", true}, {"https://evil.example.com", false}, {"null", false}, {"https://dash.example.com.evil.com", false}} {
		resp, _ := f.request("GET", "/metrics?limit=1", "", map[string]string{"Origin": c.origin})
		got := resp.Header.Get("Access-Control-Allow-Origin")
		if resp.StatusCode != 200 || (c.allow && got != c.origin) || (!c.allow && got != "") {
			t.Errorf("GET from %s: %d ACAO %q", c.origin, resp.StatusCode, got)
		}
		resp, _ = f.request("OPTIONS", "/alert-rules", "", map[string]string{"Origin": c.origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "Authorization"})
		if c.allow && (resp.StatusCode != 204 || !strings.Contains(resp.Header.Get("Access-Control-Allow-Methods"), "POST") || resp.Header.Get("Access-Control-Allow-Credentials") != "") {
			t.Errorf("preflight from %s: %d %v", c.origin, resp.StatusCode, resp.Header)
		}
		if !c.allow && (resp.StatusCode != 403 || resp.Header.Get("Access-Control-Allow-Origin") != "") {
			t.Errorf("preflight from %s: %d", c.origin, resp.StatusCode)
		}
	}
	plain := serverOn(t, dsn, db, now, nil)
	resp, _ := plain.request("GET", "/metrics?limit=1", "", map[string]string{"Origin": "https://dash.example.com"})
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("CORS header without configuration")
	}
	for _, bad := range [][]string{{"*"}, {"ftp://x"}, {"https://x/path"}, {"dash.example.com"}} {
		cfg := testConfig(dsn)
		cfg.API.CORSOrigins = bad
		if _, err := New(cfg, Deps{}); err == nil || !strings.Contains(err.Error(), "API_CORS_ORIGINS") {
			t.Errorf("origins %v: %v", bad, err)
		}
	}
	if p, err := newCORS([]string{" ", ""}); p != nil || err != nil {
		t.Fatal("blank origins")
	}
}

// TestBodyLimit: bodies over API_MAX_BODY_BYTES are refused with 413 JSON.
func TestBodyLimit(t *testing.T) {
	dsn, db, now := newDB(t)
	f := serverOn(t, dsn, db, now, func(c *Config) { withCreds(c); c.API.MaxBodyBytes = 1024 })
	// fasthttp enforces the limit while reading the request, so this needs
	// a real connection (App().Test reports it as a transport error).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()
	body := `{"rule_name":"big","metric_name":"count","operator":"<","threshold":1,"description":"` + strings.Repeat("x", 2000) + `"}`
	req, _ := http.NewRequest("POST", "http://"+ln.Addr().String()+"/alert-rules", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+adminKey)
	req.Header.Set("Content-Type", "application/json")
	hr, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(hr.Body)
	_ = hr.Body.Close()
	if hr.StatusCode != 413 || !strings.Contains(string(b), `"error"`) || !strings.Contains(string(b), "1024") {
		t.Fatalf("big body: %d %s", hr.StatusCode, b)
	}
	resp, b := f.request("POST", "/alert-rules", `{"rule_name":"small","metric_name":"count","operator":"<","threshold":1}`, bearer(adminKey))
	if resp.StatusCode != 201 {
		t.Fatalf("small body: %d %s", resp.StatusCode, b)
	}
}

// TestServeAndShutdown: a real listener, a request over TCP, readiness in
// the process health registry, graceful shutdown on cancel, and a listen
// error for a busy port.
func TestServeAndShutdown(t *testing.T) {
	dsn, db, _ := newDB(t)
	health := telemetry.NewHealth()
	srv, err := New(testConfig(dsn), Deps{Health: health})
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
	url := "http://" + ln.Addr().String()
	var body []byte
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get(url + "/health")
		if err == nil {
			body, _ = io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not serving: %v %s", err, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(string(body), `"healthy"`) {
		t.Fatalf("health: %s", body)
	}
	if _, ok := health.Snapshot(context.Background()); !ok {
		t.Fatal("api not ready in the health registry")
	}
	if len(backends(t, db, "stacklens-api")) == 0 {
		t.Fatal("no API backend while serving")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return")
	}
	if _, err := http.Get(url + "/health"); err == nil {
		t.Fatal("still serving after shutdown")
	}
	// Shutdown closed the pools: no backend left, queries refused.
	waitBackends(t, db, "stacklens-api", 0)
	if err := srv.st.ping(context.Background()); err == nil {
		t.Fatal("reader pool open after shutdown")
	}

	// Run on a busy port fails with the address in the error.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := testConfig(dsn)
	cfg.API.Port = busy.Addr().(*net.TCPAddr).Port
	srv2, err := New(cfg, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv2.Run(context.Background()); err == nil || !strings.Contains(err.Error(), srv2.Addr()) {
		t.Fatalf("busy port: %v", err)
	}
}

// TestConcurrentRequests: many clients at once over TCP (run with -race):
// every response is correct and the counters add up.
func TestConcurrentRequests(t *testing.T) {
	dsn, db, now := newDB(t)
	f := serverOn(t, dsn, db, now, func(c *Config) { c.DB.PoolMax = 4 })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()
	base := "http://" + ln.Addr().String()
	paths := []string{"/metrics?limit=5", "/metrics?service=checkout&limit=3", "/health-status", "/alerts?status=active", "/stats", "/metrics?limit=5"}
	const clients, per = 16, 30
	errs := make(chan error, clients)
	for i := 0; i < clients; i++ {
		go func(i int) {
			for j := 0; j < per; j++ {
				p := paths[(i+j)%len(paths)]
				resp, err := http.Get(base + p)
				if err != nil {
					errs <- err
					return
				}
				b, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != 200 || !strings.HasPrefix(string(b), "{") {
					errs <- fmt.Errorf("%s: %d %s", p, resp.StatusCode, b)
					return
				}
			}
			errs <- nil
		}(i)
	}
	for i := 0; i < clients; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := f.srv.stats.total.Load(); got != clients*per {
		t.Fatalf("requests_served %d, want %d", got, clients*per)
	}
}

// TestZeroConfigRefused: a zero API_QUERY_TIMEOUT or API_MAX_BODY_BYTES is
// a caller that skipped internal/config, refused by name rather than
// silently replaced by a second default.
func TestZeroConfigRefused(t *testing.T) {
	for name, mut := range map[string]func(c *Config){
		"API_QUERY_TIMEOUT":  func(c *Config) { c.API.QueryTimeout = 0 },
		"API_MAX_BODY_BYTES": func(c *Config) { c.API.MaxBodyBytes = 0 },
		"DB_POOL_MAX":        func(c *Config) { c.DB.PoolMax = 0 },
	} {
		cfg := testConfig("postgres://stacklens@127.0.0.1:1/none?sslmode=disable")
		mut(&cfg)
		if _, err := New(cfg, Deps{}); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s = 0: %v", name, err)
		}
	}
}
