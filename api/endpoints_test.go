package api

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/harness/testenv"
)

func configCreds(key string) config.Credentials {
	return config.Credentials{Keys: map[string]config.Role{key: config.RoleAdmin}}
}

func natsConnect(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

var update = flag.Bool("update", false, "rewrite testdata/golden/*.json")

// shape reduces a JSON value to its field names and types.
func shape(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range x {
			out[k] = shape(e)
		}
		return out
	case []any:
		if len(x) == 0 {
			return []any{}
		}
		return []any{shape(x[0])}
	case string:
		if _, err := time.Parse(time.RFC3339Nano, x); err == nil {
			return "date-time"
		}
		return "string"
	case float64:
		return "number"
	case bool:
		return "boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

func golden(t *testing.T, name string, got any) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name+".json")
	b, _ := json.MarshalIndent(shape(got), "", "  ")
	b = append(b, '\n')
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if string(want) != string(b) {
		t.Fatalf("shape of %s changed:\n got: %s\nwant: %s", name, b, want)
	}
}

// TestGoldenShapes checks field names and types of every endpoint's
// response on seeded rows against testdata/golden.
func TestGoldenShapes(t *testing.T) {
	f := newFixture(t, withCreds)
	admin := bearer(adminKey)
	for _, c := range []struct{ name, target string }{
		{"metrics", "/metrics?window=1min&limit=3"},
		{"metrics_5min", "/metrics?window=5min&limit=2"},
		{"health_status", "/health-status"},
		{"alerts", "/alerts?status=acknowledged"},
		{"alerts_resolved", "/alerts?status=resolved"},
		{"alert_stats", "/alerts/stats"},
		{"sla", "/sla?service=checkout"},
		{"rules", "/alert-rules"},
		{"rule", "/alert-rules/1"},
		{"silences", "/silences"},
		{"health", "/health"},
		{"ready", "/ready"},
		{"stats", "/stats"},
	} {
		golden(t, c.name, f.getJSON(c.target, admin, 200))
	}
	resp, b := f.request("POST", "/alerts/1/acknowledge", "", admin)
	if resp.StatusCode != 200 {
		t.Fatalf("ack: %d %s", resp.StatusCode, b)
	}
	var ack map[string]any
	_ = json.Unmarshal(b, &ack)
	golden(t, "acknowledge", ack)
	resp, b = f.request("GET", "/metrics?window=2min", "", admin)
	var e map[string]any
	_ = json.Unmarshal(b, &e)
	if resp.StatusCode != 400 {
		t.Fatalf("bad window: %d", resp.StatusCode)
	}
	golden(t, "error", e)

	// The metric row has exactly the docs/ARCHITECTURE.md §2.5 fields.
	m := f.getJSON("/metrics?limit=1", admin, 200)
	row := m["metrics"].([]any)[0].(map[string]any)
	var keys []string
	for k := range row {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	want := []string{"count", "error_count", "error_rate", "final", "latency_avg_ms", "latency_max_ms", "latency_min_ms",
		"latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "risk_score_avg", "risk_score_max", "service",
		"throughput_per_sec", "timestamp", "warning_count", "window"}
	if !slices.Equal(keys, want) {
		t.Fatalf("metric row fields %v, want %v", keys, want)
	}
	hs := f.getJSON("/health-status", admin, 200)["services"].([]any)[0].(map[string]any)
	keys = keys[:0]
	for k := range hs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if !slices.Equal(keys, []string{"error_rate", "last_seen", "latency_p99_ms", "service", "status", "throughput_per_sec"}) {
		t.Fatalf("health-status fields %v", keys)
	}
}

// TestMetricsQueries: ordering, filters, limits, windows, time ranges.
func TestMetricsQueries(t *testing.T) {
	f := newFixture(t, nil)
	decode := func(target string) MetricsResponse {
		t.Helper()
		resp, b := f.request("GET", target, "", nil)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", target, resp.StatusCode, b)
		}
		var m MetricsResponse
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		if m.Count != len(m.Metrics) {
			t.Fatalf("%s: count %d, %d rows", target, m.Count, len(m.Metrics))
		}
		return m
	}
	// Defaults: 1min, limit 100, newest first then service.
	m := decode("/metrics")
	if m.Window != "1min" || m.Count != 60 {
		t.Fatalf("defaults: window %s count %d", m.Window, m.Count)
	}
	for i := 1; i < len(m.Metrics); i++ {
		a, b := m.Metrics[i-1], m.Metrics[i]
		if a.Timestamp.Before(b.Timestamp) || (a.Timestamp.Equal(b.Timestamp) && a.Service > b.Service) {
			t.Fatalf("not newest first at %d: %v %s then %v %s", i, a.Timestamp, a.Service, b.Timestamp, b.Service)
		}
	}
	if !m.Metrics[0].Timestamp.Equal(f.now) || m.Metrics[0].Final || !m.Metrics[len(m.Metrics)-1].Final {
		t.Fatalf("newest row %v final=%v", m.Metrics[0].Timestamp, m.Metrics[0].Final)
	}
	// Limits.
	for _, n := range []int{1, 7, 1000} {
		got := decode(fmt.Sprintf("/metrics?limit=%d", n))
		if got.Count != min(n, 60) {
			t.Fatalf("limit %d: %d rows", n, got.Count)
		}
	}
	f.expectError("GET", "/metrics?limit=1001", "", nil, 400, "limit")
	f.expectError("GET", "/metrics?limit=0", "", nil, 400, "limit")
	// Service filter.
	s := decode("/metrics?service=payments&limit=1000")
	if s.Count != 15 {
		t.Fatalf("service filter: %d", s.Count)
	}
	for _, r := range s.Metrics {
		if r.Service != "payments" {
			t.Fatalf("service filter leaked %s", r.Service)
		}
	}
	if decode("/metrics?service=nope").Count != 0 {
		t.Fatal("unknown service has rows")
	}
	// Time range: [from, to).
	from := f.now.Add(-5 * time.Minute)
	to := f.now.Add(-2 * time.Minute)
	r := decode(fmt.Sprintf("/metrics?service=checkout&from=%s&to=%d", from.Format(time.RFC3339), to.Unix()))
	if r.Count != 3 || !r.Metrics[0].Timestamp.Equal(to.Add(-time.Minute)) || !r.Metrics[2].Timestamp.Equal(from) {
		t.Fatalf("range: %d rows %+v", r.Count, r.Metrics)
	}
	if decode("/metrics?from="+f.now.Add(time.Hour).Format(time.RFC3339)).Count != 0 {
		t.Fatal("future from has rows")
	}
	// Other windows and aliases.
	if w := decode("/metrics?window=5min&service=checkout"); w.Window != "5min" || w.Count != 6 {
		t.Fatalf("5min: %s %d", w.Window, w.Count)
	}
	if w := decode("/metrics?window=60m&service=checkout"); w.Window != "1hour" || w.Count != 3 {
		t.Fatalf("60m alias: %s %d", w.Window, w.Count)
	}
	// Risk null where absent.
	p := decode("/metrics?service=payments&limit=1")
	if p.Metrics[0].RiskScoreAvg != nil {
		t.Fatal("risk should be null for payments")
	}
}

// TestHealthStatusRules: the seeded services get the statuses of the
// default alert thresholds.
func TestHealthStatusRules(t *testing.T) {
	f := newFixture(t, nil)
	var hs HealthStatusResponse
	resp, b := f.request("GET", "/health-status", "", nil)
	if resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	_ = json.Unmarshal(b, &hs)
	got := map[string]string{}
	for _, s := range hs.Services {
		got[s.Service] = s.Status
	}
	want := map[string]string{"checkout": "healthy", "payments": "degraded", "search": "unhealthy", "deployment-test-service": "healthy"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("statuses %v, want %v", got, want)
	}
	// Boundaries: exactly at a threshold is the better status.
	ctx := context.Background()
	for _, c := range []struct {
		svc      string
		rate     float64
		p99      float64
		expected string
	}{
		{"edge-5", 5, 500, "healthy"}, {"edge-20", 20, 100, "degraded"}, {"edge-1000", 0, 1000, "degraded"},
		{"over-20", 20.01, 0, "unhealthy"}, {"over-500", 0, 500.5, "degraded"},
	} {
		if _, err := f.db.Exec(ctx, `INSERT INTO analytics_metrics_1min (service, timestamp, count, error_rate, latency_p99_ms)
			VALUES ($1, $2, 10, $3, $4)`, c.svc, f.now, c.rate, c.p99); err != nil {
			t.Fatal(err)
		}
		defer func(svc, exp string) {
			var st string
			if err := f.db.QueryRow(ctx, `SELECT status FROM v_service_health_current WHERE service = $1`, svc).Scan(&st); err != nil || st != exp {
				t.Errorf("%s: %q (%v), want %q", svc, st, err, exp)
			}
		}(c.svc, c.expected)
	}
	// Rows older than 10 minutes do not count.
	if _, err := f.db.Exec(ctx, `INSERT INTO analytics_metrics_1min (service, timestamp, count) VALUES ('old', now() - interval '11 minutes', 1)`); err != nil {
		t.Fatal(err)
	}
	_ = json.Unmarshal(f.mustGet("/health-status"), &hs)
	for _, s := range hs.Services {
		if s.Service == "old" {
			t.Fatal("stale service listed")
		}
	}
}

func (f *fixture) mustGet(target string) []byte {
	f.t.Helper()
	resp, b := f.request("GET", target, "", nil)
	if resp.StatusCode != 200 {
		f.t.Fatalf("GET %s: %d %s", target, resp.StatusCode, b)
	}
	return b
}

// TestAlertsEndpoints: filters, acknowledgement lifecycle, hooks, stats.
func TestAlertsEndpoints(t *testing.T) {
	var acked []string
	dsn, db, now := newDB(t)
	f := serverOn(t, dsn, db, now, withCreds)
	f.srv.hooks.OnAcknowledge = func(ctx context.Context, tx pgx.Tx, a Alert) error {
		acked = append(acked, a.AlertID)
		if a.AlertID == "a-boom" {
			return fmt.Errorf("outbox full")
		}
		return nil
	}
	rd, ad := bearer(readerKey), bearer(adminKey)
	count := func(target string) int {
		var r AlertsResponse
		_ = json.Unmarshal(f.mustGetAs(target, rd), &r)
		return r.Count
	}
	for target, want := range map[string]int{
		"/alerts": 3, "/alerts?status=all": 3, "/alerts?status=active": 1, "/alerts?status=acknowledged": 1,
		"/alerts?status=resolved": 1, "/alerts?severity=critical": 2, "/alerts?service=search": 1,
		"/alerts?severity=critical&status=resolved&service=checkout": 1, "/alerts?limit=2": 2, "/alerts?severity=info": 0,
	} {
		if got := count(target); got != want {
			t.Errorf("%s: %d alerts, want %d", target, got, want)
		}
	}
	var all AlertsResponse
	_ = json.Unmarshal(f.mustGetAs("/alerts", rd), &all)
	if all.Alerts[0].AlertID != "a-1" || all.Alerts[2].AlertID != "a-3" {
		t.Fatalf("not newest first: %s %s %s", all.Alerts[0].AlertID, all.Alerts[1].AlertID, all.Alerts[2].AlertID)
	}

	// Acknowledge: active → acknowledged (changed), again (unchanged), resolved → 409, missing → 404.
	var ack AckResponse
	resp, b := f.request("POST", "/alerts/1/acknowledge", "", ad)
	_ = json.Unmarshal(b, &ack)
	if resp.StatusCode != 200 || !ack.Changed || ack.Alert.Status != "acknowledged" || ack.Alert.AcknowledgedAt == nil || *ack.Alert.AcknowledgedBy != "key:"+ackName(adminKey) {
		t.Fatalf("ack: %d %s", resp.StatusCode, b)
	}
	resp, b = f.request("POST", "/alerts/1/acknowledge", "", basic("alice", "wonderland"))
	_ = json.Unmarshal(b, &ack)
	if resp.StatusCode != 200 || ack.Changed {
		t.Fatalf("re-ack: %d %s", resp.StatusCode, b)
	}
	f.expectError("POST", "/alerts/3/acknowledge", "", ad, 409, "id")
	f.expectError("POST", "/alerts/999/acknowledge", "", ad, 404, "id")
	f.expectError("POST", "/alerts/abc/acknowledge", "", ad, 400, "id")
	if len(acked) != 1 || acked[0] != "a-1" {
		t.Fatalf("hook calls %v", acked)
	}
	// A failing hook rolls the acknowledgement back.
	if _, err := db.Exec(context.Background(), `INSERT INTO analytics_alerts (alert_id, fingerprint, rule_name, service, severity, metric_name)
		VALUES ('a-boom', 'fp-boom', 'r', 's', 'info', 'count')`); err != nil {
		t.Fatal(err)
	}
	var boomID int64
	_ = db.QueryRow(context.Background(), `SELECT id FROM analytics_alerts WHERE alert_id = 'a-boom'`).Scan(&boomID)
	f.expectError("POST", fmt.Sprintf("/alerts/%d/acknowledge", boomID), "", ad, 503, "")
	var st string
	_ = db.QueryRow(context.Background(), `SELECT status FROM analytics_alerts WHERE alert_id = 'a-boom'`).Scan(&st)
	if st != "active" {
		t.Fatalf("failed hook left status %s", st)
	}

	// Stats: rows per severity plus "all".
	var stats AlertStatsResponse
	_ = json.Unmarshal(f.mustGetAs("/alerts/stats", rd), &stats)
	if stats.Count != 4 || stats.Stats[3].Severity != "all" || stats.Stats[3].TotalAlerts != 4 {
		t.Fatalf("stats: %+v", stats)
	}
	_ = json.Unmarshal(f.mustGetAs(fmt.Sprintf("/alerts/stats?from=%d&to=%d", now.Add(-10*time.Minute).Unix(), now.Unix()), rd), &stats)
	if stats.Stats[3].TotalAlerts != 2 {
		t.Fatalf("stats window: %+v", stats.Stats[3])
	}
	f.expectError("GET", "/alerts/stats?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "", rd, 400, "to")
	f.expectError("GET", "/alerts/stats?from="+itoa(time.Now().Add(time.Hour).Unix()), "", rd, 400, "from") // to defaults to now
}

func ackName(key string) string {
	a := newAuthenticator(configCreds(key), false)
	return strings.TrimPrefix(a.keys[0].name, "key:")
}

func (f *fixture) mustGetAs(target string, hdr map[string]string) []byte {
	f.t.Helper()
	resp, b := f.request("GET", target, "", hdr)
	if resp.StatusCode != 200 {
		f.t.Fatalf("GET %s: %d %s", target, resp.StatusCode, b)
	}
	return b
}

// TestSLA: per service and for all services, custom objectives, errors.
func TestSLA(t *testing.T) {
	f := newFixture(t, nil)
	var r SLAResponse
	_ = json.Unmarshal(f.mustGet("/sla?service=payments"), &r)
	if r.Count != 1 || *r.SLA[0].Service != "payments" || r.SLA[0].TotalEvents < 15*600 {
		t.Fatalf("payments: %+v", r)
	}
	if a := *r.SLA[0].AvailabilityPct; a < 91.9 || a > 92.1 {
		t.Fatalf("availability %v", a)
	}
	_ = json.Unmarshal(f.mustGet("/sla"), &r)
	if r.Count != 4 {
		t.Fatalf("all services: %d", r.Count)
	}
	_ = json.Unmarshal(f.mustGet("/sla?service=ghost"), &r)
	if r.Count != 1 || r.SLA[0].TotalEvents != 0 || r.SLA[0].AvailabilityPct != nil {
		t.Fatalf("ghost: %+v", r.SLA[0])
	}
	_ = json.Unmarshal(f.mustGet("/sla?service=search&latency_slo_ms=2000&error_slo_pct=5"), &r)
	if *r.SLA[0].LatencySLOCompliancePct != 100 || !*r.SLA[0].ErrorSLOMet {
		t.Fatalf("custom SLO: %+v", r.SLA[0])
	}
	f.expectError("GET", "/sla?error_slo_pct=0", "", nil, 400, "error_slo_pct")
	f.expectError("GET", "/sla?latency_slo_ms=-1", "", nil, 400, "latency_slo_ms")
	f.expectError("GET", "/sla?latency_slo_ms=NaN", "", nil, 400, "latency_slo_ms")
}

// TestRulesCRUD: create, read, replace, delete, validation, conflicts, hooks.
func TestRulesCRUD(t *testing.T) {
	dsn, db, now := newDB(t)
	f := serverOn(t, dsn, db, now, withCreds)
	var changes []string
	f.srv.hooks.RulesChanged = func(_ context.Context, id int64, change string) {
		changes = append(changes, fmt.Sprintf("%s:%d", change, id))
	}
	ad := bearer(adminKey)
	var rules RulesResponse
	_ = json.Unmarshal(f.mustGetAs("/alert-rules", ad), &rules)
	if rules.Count != 4 || rules.Rules[0].RuleName != "High Error Rate" || rules.Rules[0].Window != "1min" {
		t.Fatalf("seed rules: %+v", rules)
	}
	resp, b := f.request("POST", "/alert-rules", `{"rule_name":"  Low traffic ","metric_name":"throughput_per_sec","operator":"<","threshold":0.5,
		"resolve_threshold":1,"window":"5m","for_windows":3,"notification_channels":["email","pagerduty"],"enabled":false,"description":"d"}`, ad)
	if resp.StatusCode != 201 {
		t.Fatalf("create: %d %s", resp.StatusCode, b)
	}
	var r Rule
	_ = json.Unmarshal(b, &r)
	if r.RuleName != "Low traffic" || r.Window != "5min" || r.ForWindows != 3 || r.Enabled || *r.ResolveThreshold != 1 ||
		!slices.Equal(r.NotificationChannels, []string{"email", "pagerduty"}) || r.Severity != "warning" {
		t.Fatalf("created: %+v", r)
	}
	if loc := resp.Header.Get("Location"); loc != "/alert-rules/"+itoa(r.ID) {
		t.Fatalf("Location %q", loc)
	}
	f.expectError("POST", "/alert-rules", `{"rule_name":"Low traffic","metric_name":"count","operator":"<","threshold":1}`, ad, 409, "rule_name")
	resp, b = f.request("PUT", "/alert-rules/"+itoa(r.ID), `{"rule_name":"Low traffic","metric_name":"count","operator":"<=","threshold":10}`, ad)
	if resp.StatusCode != 200 {
		t.Fatalf("put: %d %s", resp.StatusCode, b)
	}
	_ = json.Unmarshal(b, &r)
	if r.MetricName != "count" || r.Window != "1min" || r.ForWindows != 1 || !r.Enabled || r.ResolveThreshold != nil || len(r.NotificationChannels) != 0 {
		t.Fatalf("replaced: %+v", r)
	}
	f.expectError("PUT", "/alert-rules/9999", `{"rule_name":"x","metric_name":"count","operator":"<","threshold":1}`, ad, 404, "id")
	f.expectError("PUT", "/alert-rules/1", `{"rule_name":"Low traffic","metric_name":"count","operator":"<","threshold":1}`, ad, 409, "rule_name")
	var got Rule
	_ = json.Unmarshal(f.mustGetAs("/alert-rules/"+itoa(r.ID), ad), &got)
	if got.ID != r.ID || got.Threshold != 10 {
		t.Fatalf("get: %+v", got)
	}
	resp, _ = f.request("DELETE", "/alert-rules/"+itoa(r.ID), "", ad)
	if resp.StatusCode != 204 {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	f.expectError("GET", "/alert-rules/"+itoa(r.ID), "", ad, 404, "id")
	f.expectError("DELETE", "/alert-rules/"+itoa(r.ID), "", ad, 404, "id")
	want := []string{"created:" + itoa(r.ID), "updated:" + itoa(r.ID), "deleted:" + itoa(r.ID)}
	if !slices.Equal(changes, want) {
		t.Fatalf("hooks %v, want %v", changes, want)
	}

	// Validation: each bad body names its field.
	base := map[string]any{"rule_name": "v", "metric_name": "error_rate", "operator": ">", "threshold": 5}
	for _, c := range []struct {
		field string
		value any
	}{
		{"rule_name", ""}, {"rule_name", "   "}, {"rule_name", strings.Repeat("x", 201)}, {"rule_name", "a\x00b"}, {"rule_name", 5},
		{"metric_name", "latency_sum"}, {"metric_name", "error_rate; DROP TABLE analytics_alerts"}, {"metric_name", nil},
		{"operator", "=>"}, {"operator", "="}, {"operator", ""},
		{"threshold", nil}, {"threshold", "5"},
		{"severity", "urgent"}, {"notification_channels", []string{"sms"}}, {"notification_channels", []string{"slack", "slack"}},
		{"notification_channels", "slack"}, {"window", "2min"}, {"window", "1s"}, {"for_windows", 0}, {"for_windows", -1},
		{"for_windows", 1001}, {"for_windows", 1.5}, {"for_windows", 99999999999}, {"resolve_threshold", 6},
		{"description", strings.Repeat("d", 1001)}, {"enabled", "yes"}, {"bogus", 1},
	} {
		body := map[string]any{}
		for k, v := range base {
			body[k] = v
		}
		if c.value == nil {
			delete(body, c.field)
		} else {
			body[c.field] = c.value
		}
		js, _ := json.Marshal(body)
		f.expectError("POST", "/alert-rules", string(js), ad, 400, c.field)
	}
	for _, bad := range []string{`{`, `[]`, `{"rule_name":"a"} {}`, `null`, ` `} {
		resp, b := f.request("POST", "/alert-rules", bad, ad)
		if resp.StatusCode != 400 {
			t.Errorf("body %q: %d %s", bad, resp.StatusCode, b)
		}
	}
	resp, b = f.request("POST", "/alert-rules", "rule_name=x", map[string]string{"Authorization": "Bearer " + adminKey, "Content-Type": "application/x-www-form-urlencoded"})
	if resp.StatusCode != 415 {
		t.Fatalf("form body: %d %s", resp.StatusCode, b)
	}
}

// TestSilences: create (duration / ends_at), list by state, delete, validation.
func TestSilences(t *testing.T) {
	dsn, db, now := newDB(t)
	f := serverOn(t, dsn, db, now, withCreds)
	var changes []string
	f.srv.hooks.SilencesChanged = func(_ context.Context, id int64, change string) {
		changes = append(changes, change)
	}
	ad := basic("alice", "wonderland")
	resp, b := f.request("POST", "/silences", `{"rule_name":"High Error Rate","severity":"warning","duration":"2h","comment":"deploy"}`, ad)
	if resp.StatusCode != 201 {
		t.Fatalf("create: %d %s", resp.StatusCode, b)
	}
	var s Silence
	_ = json.Unmarshal(b, &s)
	if !s.Active || s.CreatedBy != "user:alice" || *s.RuleName != "High Error Rate" || s.Service != nil || s.EndsAt.Sub(s.StartsAt) != 2*time.Hour {
		t.Fatalf("created: %+v", s)
	}
	future := time.Now().Add(time.Hour).UTC()
	resp, b = f.request("POST", "/silences", fmt.Sprintf(`{"service":"checkout","starts_at":"%s","ends_at":%q}`,
		future.Format(time.RFC3339), future.Add(time.Hour).Format(time.RFC3339)), ad)
	if resp.StatusCode != 201 {
		t.Fatalf("pending: %d %s", resp.StatusCode, b)
	}
	var pending Silence
	_ = json.Unmarshal(b, &pending)
	if _, err := db.Exec(context.Background(), `INSERT INTO analytics_alert_silences (service, starts_at, ends_at) VALUES ('old', now() - interval '2 hours', now() - interval '1 hour')`); err != nil {
		t.Fatal(err)
	}
	for state, want := range map[string]int{"": 3, "current": 3, "active": 2, "pending": 1, "expired": 1, "all": 4} {
		target := "/silences"
		if state != "" {
			target += "?state=" + state
		}
		var l SilencesResponse
		_ = json.Unmarshal(f.mustGetAs(target, ad), &l)
		if l.Count != want {
			t.Errorf("%s: %d, want %d", target, l.Count, want)
		}
	}
	resp, _ = f.request("DELETE", "/silences/"+itoa(pending.ID), "", ad)
	if resp.StatusCode != 204 {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	f.expectError("DELETE", "/silences/"+itoa(pending.ID), "", ad, 404, "id")
	f.expectError("DELETE", "/silences/0", "", ad, 400, "id")
	f.expectError("DELETE", "/silences/-1", "", ad, 400, "id")
	if !slices.Equal(changes, []string{"created", "created", "deleted"}) {
		t.Fatalf("hooks %v", changes)
	}
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	for _, c := range []struct{ body, field string }{
		{`{"duration":"1h"}`, "rule_name"},
		{`{"service":"","duration":"1h"}`, "service"},
		{`{"service":"a\u0085b","duration":"1h"}`, "service"}, // C1: the decoder would refuse it too
		{`{"service":" a","duration":"1h"}`, "service"},
		{`{"rule_name":"\u0007","duration":"1h"}`, "rule_name"},
		{`{"severity":"fatal","duration":"1h"}`, "severity"},
		{`{"service":"a"}`, "ends_at"},
		{`{"service":"a","duration":"1h","ends_at":"2099-01-01T00:00:00Z"}`, "duration"},
		{`{"service":"a","duration":"forever"}`, "duration"},
		{`{"service":"a","duration":"-1h"}`, "duration"},
		{`{"service":"a","duration":"2400h"}`, "duration"},
		{`{"service":"a","ends_at":"tomorrow"}`, "ends_at"},
		{`{"service":"a","ends_at":"` + past + `"}`, "ends_at"},
		{`{"service":"a","starts_at":"2099-01-01T00:00:00Z","ends_at":"2098-01-01T00:00:00Z"}`, "ends_at"},
		{`{"service":"a","starts_at":"now","duration":"1h"}`, "starts_at"},
		{`{"service":"a","ends_at":"2099-01-01T00:00:00Z"}`, "ends_at"},
		{`{"service":"a","duration":"1h","comment":"` + strings.Repeat("c", 1001) + `"}`, "comment"},
		{`{"service":"a","duration":"1h","id":5}`, "id"},
	} {
		f.expectError("POST", "/silences", c.body, ad, 400, c.field)
	}
}

// TestSilenceGetAndPatch: GET /silences/{id}, PATCH as a partial update
// (only the given fields change, null removes a matcher), validated like
// POST, 404 for an unknown id, and the engine hook told "updated".
func TestSilenceGetAndPatch(t *testing.T) {
	dsn, db, now := newDB(t)
	f := serverOn(t, dsn, db, now, withCreds)
	var changes []string
	f.srv.hooks.SilencesChanged = func(_ context.Context, id int64, change string) {
		changes = append(changes, change+":"+itoa(id))
	}
	ad := basic("alice", "wonderland")
	resp, b := f.request("POST", "/silences", `{"rule_name":"High Error Rate","service":"checkout","duration":"2h","comment":"deploy"}`, ad)
	if resp.StatusCode != 201 {
		t.Fatalf("create: %d %s", resp.StatusCode, b)
	}
	var created Silence
	_ = json.Unmarshal(b, &created)
	id := itoa(created.ID)

	var got Silence
	_ = json.Unmarshal(f.mustGetAs("/silences/"+id, bearer(readerKey)), &got)
	if got.ID != created.ID || *got.Service != "checkout" || got.Comment != "deploy" || !got.Active {
		t.Fatalf("get: %+v", got)
	}
	f.expectError("GET", "/silences/999999", "", ad, 404, "id")
	f.expectError("GET", "/silences/x", "", ad, 400, "id")

	// Extend it and drop the service matcher; the rest is untouched.
	newEnd := created.StartsAt.Add(5 * time.Hour).UTC()
	resp, b = f.request("PATCH", "/silences/"+id, fmt.Sprintf(`{"ends_at":%q,"service":null,"comment":"longer deploy"}`, newEnd.Format(time.RFC3339Nano)), ad)
	if resp.StatusCode != 200 {
		t.Fatalf("patch: %d %s", resp.StatusCode, b)
	}
	var p Silence
	_ = json.Unmarshal(b, &p)
	if !p.EndsAt.Equal(newEnd) || p.Service != nil || *p.RuleName != "High Error Rate" || p.Comment != "longer deploy" ||
		!p.StartsAt.Equal(created.StartsAt) || p.CreatedBy != created.CreatedBy {
		t.Fatalf("patched: %+v", p)
	}
	var ends time.Time
	if err := db.QueryRow(context.Background(), `SELECT ends_at FROM analytics_alert_silences WHERE id = $1`, created.ID).Scan(&ends); err != nil || !ends.Equal(newEnd) {
		t.Fatalf("stored ends_at %v %v", ends, err)
	}
	// duration counts from starts_at; a comment alone may change.
	resp, b = f.request("PATCH", "/silences/"+id, `{"duration":"1h","severity":"critical"}`, ad)
	_ = json.Unmarshal(b, &p)
	if resp.StatusCode != 200 || p.EndsAt.Sub(p.StartsAt) != time.Hour || *p.Severity != "critical" {
		t.Fatalf("patch duration: %d %s", resp.StatusCode, b)
	}
	if resp, b = f.request("PATCH", "/silences/"+id, `{"comment":"ok"}`, ad); resp.StatusCode != 200 {
		t.Fatalf("patch comment: %d %s", resp.StatusCode, b)
	}

	past := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	for _, c := range []struct{ body, field string }{
		{`{"rule_name":null,"severity":null}`, "rule_name"}, // no matcher left
		{`{"severity":"fatal"}`, "severity"},
		{`{"ends_at":"` + past + `"}`, "ends_at"},
		{`{"ends_at":"2099-01-01T00:00:00Z","duration":"1h"}`, "duration"},
		{`{"duration":"2400h"}`, "duration"},
		{`{"starts_at":"2099-01-01T00:00:00Z"}`, "ends_at"}, // would start after it ends
		{`{"comment":null}`, "comment"},
		{`{"id":7}`, "id"},
		{`{}`, "body"},
	} {
		f.expectError("PATCH", "/silences/"+id, c.body, ad, 400, c.field)
	}
	f.expectError("PATCH", "/silences/999999", `{"comment":"x"}`, ad, 404, "id")
	f.expectError("PATCH", "/silences/"+id, `{"comment":"x"}`, bearer(readerKey), 403, "")
	want := []string{"created:" + id, "updated:" + id, "updated:" + id, "updated:" + id}
	if !slices.Equal(changes, want) {
		t.Fatalf("hooks %v, want %v", changes, want)
	}
}

// TestHealthChecks: NATS connected/disconnected, stale pipeline, no data,
// database down (503 unhealthy), /ready.
func TestHealthChecks(t *testing.T) {
	dsn, db, now := newDB(t)
	ns := testenv.NATS(t)
	nc := natsConnect(t, ns.URL)
	cfg := testConfig(dsn)
	srv, err := New(cfg, Deps{NATS: nc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.closePools)
	f := &fixture{t: t, dsn: dsn, db: db, srv: srv, now: now}
	h := f.getJSON("/health", nil, 200)
	checks := h["checks"].(map[string]any)
	if h["status"] != "healthy" || checks["nats"].(map[string]any)["status"] != "ok" || checks["pipeline"].(map[string]any)["status"] != "ok" || h["version"] != "test" {
		t.Fatalf("healthy: %v", h)
	}
	ns.Shutdown()
	testenv.Eventually(t, 5*time.Second, func() error {
		if nc.IsConnected() {
			return fmt.Errorf("still connected")
		}
		return nil
	})
	h = f.getJSON("/health", nil, 200)
	if h["status"] != "degraded" || h["checks"].(map[string]any)["nats"].(map[string]any)["status"] != "fail" {
		t.Fatalf("nats down: %v", h)
	}
	// Stale pipeline: pretend the clock moved on.
	srv.nats = nil
	srv.now = func() time.Time { return time.Now().Add(time.Hour) }
	h = f.getJSON("/health", nil, 200)
	if h["status"] != "degraded" || h["checks"].(map[string]any)["pipeline"].(map[string]any)["status"] != "stale" {
		t.Fatalf("stale: %v", h)
	}
	srv.now = time.Now
	if _, err := db.Exec(context.Background(), `TRUNCATE analytics_metrics_1min`); err != nil {
		t.Fatal(err)
	}
	h = f.getJSON("/health", nil, 200)
	if h["status"] != "healthy" || h["checks"].(map[string]any)["pipeline"].(map[string]any)["status"] != "no_data" ||
		h["checks"].(map[string]any)["nats"].(map[string]any)["status"] != "disabled" {
		t.Fatalf("no data: %v", h)
	}
	f.getJSON("/ready", nil, 200)

	// Database unreachable: a server pointed at a closed port.
	down := serverOn(t, "postgres://postgres@127.0.0.1:1/none?sslmode=disable&connect_timeout=1", db, now, nil)
	h = down.getJSON("/health", nil, 503)
	if h["status"] != "unhealthy" || h["checks"].(map[string]any)["database"].(map[string]any)["status"] != "fail" {
		t.Fatalf("db down: %v", h)
	}
	r := down.getJSON("/ready", nil, 503)
	if r["status"] != "not_ready" || r["error"] == "" {
		t.Fatalf("ready: %v", r)
	}
	down.expectError("GET", "/metrics", "", nil, 503, "")
}

// TestStatsEndpoint: per-route counts and latency percentiles.
func TestStatsEndpoint(t *testing.T) {
	f := newFixture(t, nil)
	for i := 0; i < 5; i++ {
		f.mustGet("/metrics?limit=1")
	}
	f.expectError("GET", "/metrics?limit=x", "", nil, 400, "limit")
	f.expectError("GET", "/nope", "", nil, 404, "")
	var st StatsResponse
	_ = json.Unmarshal(f.mustGet("/stats"), &st)
	if st.RequestsServed != 8 || st.Version != "test" || st.UptimeSeconds <= 0 {
		t.Fatalf("stats: %+v", st)
	}
	found := 0
	for _, r := range st.Routes {
		switch {
		case r.Route == "/metrics" && r.Method == "GET":
			found++
			if r.Requests != 6 || r.ClientErrors != 1 || r.LatencyP50Ms <= 0 || r.LatencyP99Ms < r.LatencyP50Ms {
				t.Fatalf("/metrics stats: %+v", r)
			}
		case r.Route == "unmatched":
			found++
			if r.Requests != 1 || r.ClientErrors != 1 {
				t.Fatalf("unmatched: %+v", r)
			}
		}
	}
	if found != 2 {
		t.Fatalf("routes: %+v", st.Routes)
	}
	// Prometheus: per-route request counters by code and the latency histogram.
	var buf bytes.Buffer
	metrics.WritePrometheus(&buf, false)
	for _, want := range []string{
		`stacklens_api_requests_total{route="/metrics",method="GET",code="200"}`,
		`stacklens_api_requests_total{route="/metrics",method="GET",code="400"}`,
		`stacklens_api_requests_total{route="unmatched",method="ANY",code="404"}`,
		`stacklens_api_request_duration_seconds_bucket{route="/metrics",le="0.01"}`,
		`stacklens_api_request_duration_seconds_count{route="/metrics"}`,
	} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("Prometheus output lacks %s", want)
		}
	}
}

// TestNoDataRule: a no_data rule needs no operator or threshold (stored as
// ">=" for_windows, the condition it evaluates), refuses a threshold, an
// operator or a resolve threshold that would mean something else, and the
// database accepts the metric (migration 7).
func TestNoDataRule(t *testing.T) {
	dsn, db, now := newDB(t)
	f := serverOn(t, dsn, db, now, withCreds)
	ad := basic("alice", "wonderland")
	resp, b := f.request("POST", "/alert-rules", `{"rule_name":"Quiet","metric_name":"no_data","for_windows":3,"severity":"critical"}`, ad)
	if resp.StatusCode != 201 {
		t.Fatalf("create: %d %s", resp.StatusCode, b)
	}
	var r Rule
	_ = json.Unmarshal(b, &r)
	if r.MetricName != "no_data" || r.Operator != ">=" || r.Threshold != 3 || r.ForWindows != 3 || r.ResolveThreshold != nil {
		t.Fatalf("created %+v", r)
	}
	resp, b = f.request("PUT", "/alert-rules/"+itoa(r.ID), `{"rule_name":"Quiet","metric_name":"no_data","operator":">=","threshold":5,"for_windows":5}`, ad)
	if resp.StatusCode != 200 {
		t.Fatalf("replace: %d %s", resp.StatusCode, b)
	}
	for _, c := range []struct{ body, field string }{
		{`{"rule_name":"Q2","metric_name":"no_data","operator":"<"}`, "operator"},
		{`{"rule_name":"Q2","metric_name":"no_data","for_windows":2,"threshold":7}`, "threshold"},
		{`{"rule_name":"Q2","metric_name":"no_data","resolve_threshold":1}`, "resolve_threshold"},
		{`{"rule_name":"Q2","metric_name":"no_data","for_windows":0}`, "for_windows"},
		{`{"rule_name":"Q2","metric_name":"count"}`, "operator"}, // other metrics still need them
	} {
		f.expectError("POST", "/alert-rules", c.body, ad, 400, c.field)
	}
}
