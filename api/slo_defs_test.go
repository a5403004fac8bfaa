package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/agg"
	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/natsutil"
)

func TestSLOCreateReplaceDelete(t *testing.T) {
	f := newFixture(t, withCreds)
	ad := bearer(adminKey)
	ctx := context.Background()
	resp, b := f.request("POST", "/slos", `{"name":"  checkout latency ","service":"checkout","objective":"latency",
		"latency_threshold_ms":300,"target":99.5,"period":"7d","notification_channels":["slack","email"],
		"burn_alerts":[{"severity":"page","burn_rate":14.4,"long":"60m","short":"5m"}],"description":"p"}`, ad)
	if resp.StatusCode != 201 {
		t.Fatalf("create: %d %s", resp.StatusCode, b)
	}
	var d SLODefinition
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	if d.Name != "checkout latency" || d.Service == nil || *d.Service != "checkout" || d.Objective != "latency" ||
		d.LatencyThresholdMS == nil || *d.LatencyThresholdMS != 300 || d.Target != 99.5 || d.Period != "7d" ||
		!d.Enabled || d.Description != "p" || !slices.Equal(d.NotificationChannels, []string{"slack", "email"}) ||
		d.BurnAlerts == nil || len(*d.BurnAlerts) != 1 || (*d.BurnAlerts)[0] != (BurnAlertPolicy{"page", 14.4, "1h", "5m"}) {
		t.Fatalf("created %s", b)
	}
	if loc := resp.Header.Get("Location"); loc != "/slos/"+itoa(d.ID) {
		t.Fatalf("Location %q", loc)
	}
	var period string
	var burn string
	if err := f.db.QueryRow(ctx, `SELECT period::text, burn_alerts::text FROM analytics_slos WHERE id = $1`, d.ID).Scan(&period, &burn); err != nil {
		t.Fatal(err)
	}
	if period != "7 days" || !strings.Contains(burn, `"long": "1h"`) {
		t.Fatalf("stored period %q, burn_alerts %s", period, burn)
	}
	f.expectError("POST", "/slos", `{"name":"checkout latency","objective":"availability","target":99}`, ad, 409, "name")

	// PUT replaces everything: omitted fields take their defaults.
	resp, b = f.request("PUT", "/slos/"+itoa(d.ID), `{"name":"all availability","objective":"availability","target":99.9,"period":"36h"}`, ad)
	if resp.StatusCode != 200 {
		t.Fatalf("replace: %d %s", resp.StatusCode, b)
	}
	var r SLODefinition
	_ = json.Unmarshal(b, &r)
	if r.ID != d.ID || r.Service != nil || r.LatencyThresholdMS != nil || r.Period != "36h" || r.BurnAlerts != nil ||
		len(r.NotificationChannels) != 0 || !r.Enabled || r.Description != "" || !r.UpdatedAt.After(d.UpdatedAt) && !r.UpdatedAt.Equal(d.UpdatedAt) {
		t.Fatalf("replaced %s", b)
	}
	if !strings.Contains(string(b), `"burn_alerts":null`) || !strings.Contains(string(b), `"service":null`) {
		t.Fatalf("defaults not null: %s", b)
	}
	// An explicit empty policy: no burn-rate alerts.
	resp, b = f.request("PUT", "/slos/"+itoa(d.ID), `{"name":"all availability","objective":"availability","target":99.9,"burn_alerts":[],"enabled":false}`, ad)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"burn_alerts":[]`) || !strings.Contains(string(b), `"enabled":false`) || !strings.Contains(string(b), `"period":"30d"`) {
		t.Fatalf("empty policy: %d %s", resp.StatusCode, b)
	}
	resp, b = f.request("POST", "/slos", `{"name":"other","objective":"availability","target":90}`, ad)
	if resp.StatusCode != 201 {
		t.Fatalf("second: %d %s", resp.StatusCode, b)
	}
	f.expectError("PUT", "/slos/"+itoa(d.ID), `{"name":"other","objective":"availability","target":99}`, ad, 409, "name")
	f.expectError("PUT", "/slos/9999", `{"name":"x","objective":"availability","target":99}`, ad, 404, "id")
	f.expectError("PUT", "/slos/abc", `{"name":"x","objective":"availability","target":99}`, ad, 400, "id")
	resp, _ = f.request("DELETE", "/slos/"+itoa(d.ID), "", ad)
	if resp.StatusCode != 204 {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	f.expectError("DELETE", "/slos/"+itoa(d.ID), "", ad, 404, "id")
	f.expectError("DELETE", "/slos/0", "", ad, 400, "id")
	// Readers may not write.
	f.expectError("POST", "/slos", `{"name":"r","objective":"availability","target":99}`, bearer(readerKey), 403, "")
}

func TestSLOValidation(t *testing.T) {
	f := newFixture(t, withCreds)
	ad := bearer(adminKey)
	base := map[string]any{"name": "v", "objective": "latency", "latency_threshold_ms": 300.0, "target": 99.0}
	long := strings.Repeat("x", 1001)
	cases := []struct {
		field string
		set   map[string]any
		drop  []string
	}{
		{"name", map[string]any{"name": "  "}, nil},
		{"name", nil, []string{"name"}},
		{"name", map[string]any{"name": strings.Repeat("n", 201)}, nil},
		{"service", map[string]any{"service": " padded "}, nil},
		{"service", map[string]any{"service": ""}, nil},
		{"objective", map[string]any{"objective": "throughput"}, nil},
		{"objective", nil, []string{"objective"}},
		{"latency_threshold_ms", nil, []string{"latency_threshold_ms"}},
		{"latency_threshold_ms", map[string]any{"objective": "availability"}, nil},
		{"latency_threshold_ms", map[string]any{"latency_threshold_ms": -1}, nil},
		{"latency_threshold_ms", map[string]any{"latency_threshold_ms": 1e16}, nil},
		{"latency_threshold_ms", map[string]any{"latency_threshold_ms": "300"}, nil},
		{"target", nil, []string{"target"}},
		{"target", map[string]any{"target": 0}, nil},
		{"target", map[string]any{"target": 100}, nil},
		{"target", map[string]any{"target": -5}, nil},
		{"period", map[string]any{"period": "59m"}, nil},
		{"period", map[string]any{"period": "367d"}, nil},
		{"period", map[string]any{"period": "0d"}, nil},
		{"period", map[string]any{"period": "a month"}, nil},
		{"burn_alerts", map[string]any{"burn_alerts": "fast"}, nil},
		{"burn_alerts", map[string]any{"burn_alerts": make([]map[string]any, 17)}, nil},
		{"burn_alerts[0].severity", map[string]any{"burn_alerts": []map[string]any{{"severity": "critical", "burn_rate": 2, "long": "1h", "short": "5m"}}}, nil},
		{"burn_alerts[0].burn_rate", map[string]any{"burn_alerts": []map[string]any{{"severity": "page", "burn_rate": 0, "long": "1h", "short": "5m"}}}, nil},
		{"burn_alerts[1].long", map[string]any{"burn_alerts": []map[string]any{{"severity": "page", "burn_rate": 1, "long": "1h", "short": "5m"}, {"severity": "ticket", "burn_rate": 1, "long": "soon", "short": "5m"}}}, nil},
		{"burn_alerts[0].short", map[string]any{"burn_alerts": []map[string]any{{"severity": "page", "burn_rate": 1, "long": "1h", "short": "-5m"}}}, nil},
		{"burn_alerts[0].short", map[string]any{"burn_alerts": []map[string]any{{"severity": "page", "burn_rate": 1, "long": "1h", "short": "1h"}}}, nil},
		{"burn_alerts[0].long", map[string]any{"burn_alerts": []map[string]any{{"severity": "page", "burn_rate": 1, "long": "400d", "short": "1h"}}}, nil},
		{"unknown", map[string]any{"burn_alerts": []map[string]any{{"severity": "page", "burn_rate": 1, "long": "1h", "short": "5m", "unknown": 1}}}, nil},
		{"notification_channels", map[string]any{"notification_channels": []string{"sms"}}, nil},
		{"notification_channels", map[string]any{"notification_channels": []string{"slack", "slack"}}, nil},
		{"description", map[string]any{"description": long}, nil},
		{"unknown_field", map[string]any{"unknown_field": 1}, nil},
	}
	for _, c := range cases {
		body := map[string]any{}
		for k, v := range base {
			body[k] = v
		}
		for k, v := range c.set {
			body[k] = v
		}
		for _, k := range c.drop {
			delete(body, k)
		}
		js, _ := json.Marshal(body)
		f.expectError("POST", "/slos", string(js), ad, 400, c.field)
		f.expectError("PUT", "/slos/1", string(js), ad, 400, c.field)
	}
	f.expectError("POST", "/slos", "", ad, 400, "body")
	f.expectError("POST", "/slos", `{"name":"x"} trailing`, ad, 400, "body")
	// Boundary values that are valid.
	for i, ok := range []string{
		`{"name":"b1","objective":"latency","latency_threshold_ms":0,"target":0.001,"period":"1h"}`,
		`{"name":"b2","objective":"latency","latency_threshold_ms":1e15,"target":99.999,"period":"366d"}`,
		`{"name":"b3","objective":"availability","target":50,"period":"8760h","burn_alerts":[{"severity":"ticket","burn_rate":0.5,"long":"3d","short":"6h"}]}`,
	} {
		if resp, b := f.request("POST", "/slos", ok, ad); resp.StatusCode != 201 {
			t.Errorf("valid %d: %d %s", i, resp.StatusCode, b)
		}
	}
}

// writeSLOFile writes an SLO_FILE and returns its path.
func writeSLOFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "slos.json")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// serve runs the server on a loopback port until the test ends.
func serve(t *testing.T, srv *Server) {
	t.Helper()
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
			t.Error(err)
		}
	})
}

// TestSLOFileFailsFast: a bad SLO_FILE stops New with one line naming
// the variable.
func TestSLOFileFailsFast(t *testing.T) {
	for name, content := range map[string]string{
		"not json":       `{`,
		"object":         `{"name":"x"}`,
		"unknown field":  `[{"name":"x","objective":"availability","target":99,"bogus":1}]`,
		"invalid target": `[{"name":"x","objective":"availability","target":100}]`,
		"duplicate":      `[{"name":"x","objective":"availability","target":99},{"name":"x","objective":"availability","target":98}]`,
	} {
		cfg := testConfig("postgres://x@127.0.0.1:1/x")
		cfg.API.SLOFile = writeSLOFile(t, content)
		_, err := New(cfg, Deps{})
		var ce *config.Error
		if !errors.As(err, &ce) || ce.Var != "SLO_FILE" || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v", name, err)
		}
	}
	cfg := testConfig("postgres://x@127.0.0.1:1/x")
	cfg.API.SLOFile = filepath.Join(t.TempDir(), "missing.json")
	if _, err := New(cfg, Deps{}); err == nil || !strings.Contains(err.Error(), "SLO_FILE") {
		t.Errorf("missing file: %v", err)
	}
}

// TestSLOFileSeeded: the SLOs of SLO_FILE are upserted by name when the
// server starts: new ones created, an existing one of the same name
// replaced, others left alone; a status list cached before the seeding
// is dropped by it.
func TestSLOFileSeeded(t *testing.T) {
	dsn, db, now := newDB(t)
	ctx := context.Background()
	if _, err := db.Exec(ctx, `INSERT INTO analytics_slos (name, objective, target) VALUES
		('checkout availability', 'availability', 90), ('kept', 'availability', 95)
		ON CONFLICT (name) DO UPDATE SET target = EXCLUDED.target, service = NULL`); err != nil {
		t.Fatal(err)
	}
	path := writeSLOFile(t, `[
		{"name":"checkout availability","service":"checkout","objective":"availability","target":99.9,"period":"28d"},
		{"name":"search latency","service":"search","objective":"latency","latency_threshold_ms":250,"target":99}
	]`)
	f := serverOn(t, dsn, db, now, func(c *Config) { c.API.SLOFile = path; c.API.SLOCacheTTL = time.Hour })
	listed := func() int {
		var r SLOsResponse
		if err := json.Unmarshal(f.mustGet("/slos"), &r); err != nil {
			t.Fatal(err)
		}
		return len(r.SLOs)
	}
	if n := listed(); n != 2 {
		t.Fatalf("%d SLOs before the seeding, want 2", n)
	}
	serve(t, f.srv)
	testenv.Eventually(t, 10*time.Second, func() error {
		var n int
		var target float64
		var period string
		if err := db.QueryRow(ctx, `SELECT count(*), max(target) FILTER (WHERE name = 'checkout availability'),
			max(period::text) FILTER (WHERE name = 'checkout availability') FROM analytics_slos`).Scan(&n, &target, &period); err != nil {
			return err
		}
		if n != 3 || target != 99.9 || period != "28 days" {
			return fmt.Errorf("%d SLOs, checkout target %v period %s", n, target, period)
		}
		return nil
	})
	var th float64
	if err := db.QueryRow(ctx, `SELECT latency_threshold_ms FROM analytics_slos WHERE name = 'search latency'`).Scan(&th); err != nil || th != 250 {
		t.Fatalf("search latency: %v %v", th, err)
	}
	// The cache is dropped right after the seeds' commits (its TTL is an
	// hour: only the drop lets the list change).
	testenv.Eventually(t, 5*time.Second, func() error {
		if n := listed(); n != 3 {
			return fmt.Errorf("%d SLOs listed after the seeding, want 3", n)
		}
		return nil
	})
}

// thresholdsIn reads the thresholds key (nil, false when absent).
func thresholdsIn(ctx context.Context, kv jetstream.KeyValue) ([]float64, bool, error) {
	e, err := kv.Get(ctx, natsutil.SLOThresholdsKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	ts, err := agg.DecodeThresholds(e.Value())
	return ts, true, err
}

// TestSLOThresholdsPublished: every committed change writes the enabled
// latency thresholds to the stacklens_config bucket before the response;
// the periodic reconciliation repairs a lost or damaged value.
func TestSLOThresholdsPublished(t *testing.T) {
	dsn, db, now := newDB(t)
	ns := testenv.NATS(t)
	js := ns.JetStream(t)
	cfg := testConfig(dsn)
	withCreds(&cfg)
	cfg.SLOSyncInterval = 100 * time.Millisecond
	srv, err := New(cfg, Deps{JetStream: js})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.closePools)
	f := &fixture{t: t, dsn: dsn, db: db, srv: srv, now: now}
	ctx := testenv.Context(t)
	ad := bearer(adminKey)
	post := func(body string) int64 {
		t.Helper()
		resp, b := f.request("POST", "/slos", body, ad)
		if resp.StatusCode != 201 {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
		var d SLODefinition
		_ = json.Unmarshal(b, &d)
		return d.ID
	}
	expect := func(want ...float64) {
		t.Helper()
		kv, err := js.KeyValue(ctx, natsutil.ConfigBucket)
		if err != nil {
			t.Fatal(err)
		}
		got, ok, err := thresholdsIn(ctx, kv)
		if err != nil || !ok || !slices.Equal(got, want) || len(got) != len(want) {
			t.Fatalf("thresholds %v (present %v, %v), want %v", got, ok, err, want)
		}
	}
	// Without the server running (no reconciliation): the request itself
	// publishes.
	a := post(`{"name":"a","objective":"latency","latency_threshold_ms":300,"target":99}`)
	expect(300)
	post(`{"name":"b","service":"x","objective":"latency","latency_threshold_ms":2.5,"target":99}`)
	post(`{"name":"c","objective":"latency","latency_threshold_ms":300,"target":95}`)
	post(`{"name":"d","objective":"availability","target":99}`)
	post(`{"name":"e","objective":"latency","latency_threshold_ms":7,"target":99,"enabled":false}`)
	expect(2.5, 300)
	if resp, b := f.request("PUT", "/slos/"+itoa(a), `{"name":"a","objective":"latency","latency_threshold_ms":1000,"target":99}`, ad); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	expect(2.5, 300, 1000)
	if resp, _ := f.request("DELETE", "/slos/"+itoa(a), "", ad); resp.StatusCode != 204 {
		t.Fatal(resp.StatusCode)
	}
	expect(2.5, 300)

	// A lost write (key deleted, value damaged, change made behind the
	// API's back) is repaired by the reconciliation.
	serve(t, srv)
	kv, err := js.KeyValue(ctx, natsutil.ConfigBucket)
	if err != nil {
		t.Fatal(err)
	}
	for _, damage := range []func() error{
		func() error { return kv.Delete(ctx, natsutil.SLOThresholdsKey) },
		func() error { _, err := kv.Put(ctx, natsutil.SLOThresholdsKey, []byte("[1]")); return err },
		func() error {
			_, err := db.Exec(ctx, `UPDATE analytics_slos SET enabled = true WHERE name = 'e'`)
			return err
		},
	} {
		if err := damage(); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		got, ok, err := thresholdsIn(ctx, kv)
		if err != nil || !ok || !slices.Equal(got, []float64{2.5, 7, 300}) {
			return fmt.Errorf("thresholds %v (present %v, %v)", got, ok, err)
		}
		return nil
	})
	// The bucket removed altogether: provisioned again.
	if err := js.DeleteKeyValue(ctx, natsutil.ConfigBucket); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		kv, err := js.KeyValue(ctx, natsutil.ConfigBucket)
		if err != nil {
			return err
		}
		got, ok, err := thresholdsIn(ctx, kv)
		if err != nil || !ok || !slices.Equal(got, []float64{2.5, 7, 300}) {
			return fmt.Errorf("thresholds %v (present %v, %v)", got, ok, err)
		}
		return nil
	})
}

// TestSLOUnavailableDependencies: with NATS down a change still commits
// (the reconciliation publishes later); with PostgreSQL down the seeding
// and the reconciliation retry until stopped, and writes answer 503.
func TestSLOUnavailableDependencies(t *testing.T) {
	dsn, db, now := newDB(t)
	ns := testenv.NATS(t)
	js := ns.JetStream(t)
	cfg := testConfig(dsn)
	withCreds(&cfg)
	srv, err := New(cfg, Deps{JetStream: js})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.closePools)
	f := &fixture{t: t, dsn: dsn, db: db, srv: srv, now: now}
	ns.Shutdown()
	start := time.Now()
	resp, b := f.request("POST", "/slos", `{"name":"n","objective":"latency","latency_threshold_ms":5,"target":99}`, bearer(adminKey))
	if resp.StatusCode != 201 {
		t.Fatalf("POST with NATS down: %d %s", resp.StatusCode, b)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("POST with NATS down took %v", d)
	}

	path := writeSLOFile(t, `[{"name":"s","objective":"availability","target":99}]`)
	down := serverOn(t, "postgres://stacklens_user@127.0.0.1:1/x", db, now, func(c *Config) {
		withCreds(c)
		c.API.SLOFile = path
		c.SLOSyncInterval = 50 * time.Millisecond
	})
	down.srv.slos.js = js
	serve(t, down.srv) // seeding retries until the server stops
	ctx := testenv.Context(t)
	if err := down.srv.slos.publish(ctx); err == nil {
		t.Fatal("publish without a database succeeded")
	}
	down.srv.slos.seeds = nil
	rctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	down.srv.slos.run(rctx) // reconciliation retries until its context ends
	cancel()
	resp, _ = down.request("DELETE", "/slos/1", "", bearer(adminKey))
	if resp.StatusCode != 503 {
		t.Fatalf("DELETE without a database: %d", resp.StatusCode)
	}
	resp, _ = down.request("POST", "/slos", `{"name":"x","objective":"availability","target":99}`, bearer(adminKey))
	if resp.StatusCode != 503 {
		t.Fatalf("POST without a database: %d", resp.StatusCode)
	}
}

// TestSLOThresholdRoom: with 256 distinct thresholds in use, a latency SLO
// with a new one is refused (the set could no longer be published to the
// processors); one reusing a threshold, or disabled, is accepted.
func TestSLOThresholdRoom(t *testing.T) {
	f := newFixture(t, withCreds)
	ad := bearer(adminKey)
	if _, err := f.db.Exec(context.Background(), `INSERT INTO analytics_slos (name, objective, latency_threshold_ms, target)
		SELECT 'fast ' || i, 'latency', i, 99 FROM generate_series(1, 256) i`); err != nil {
		t.Fatal(err)
	}
	f.expectError("POST", "/slos", `{"name":"one more","objective":"latency","latency_threshold_ms":1000,"target":99}`, ad, 400, "latency_threshold_ms")
	for i, ok := range []string{
		`{"name":"reuse","objective":"latency","latency_threshold_ms":7,"target":99.9}`,
		`{"name":"off","objective":"latency","latency_threshold_ms":1000,"target":99,"enabled":false}`,
		`{"name":"fast 3","objective":"latency","latency_threshold_ms":1000,"target":99}`, // replaces its own
	} {
		method, path := "POST", "/slos"
		if i == 2 {
			var id int64
			if err := f.db.QueryRow(context.Background(), `SELECT id FROM analytics_slos WHERE name = 'fast 3'`).Scan(&id); err != nil {
				t.Fatal(err)
			}
			method, path = "PUT", fmt.Sprintf("/slos/%d", id)
		}
		if resp, b := f.request(method, path, ok, ad); resp.StatusCode/100 != 2 {
			t.Errorf("%s %s %s: %d %s", method, path, ok, resp.StatusCode, b)
		}
	}
}
