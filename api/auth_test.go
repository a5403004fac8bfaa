package api

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stacklens/stacklens/internal/config"
)

const validRule = `{"rule_name":"matrix rule %s","metric_name":"error_rate","operator":">","threshold":50,"severity":"critical","notification_channels":["slack"],"window":"1min","for_windows":2}`

type matrixCase struct {
	method, path, body string
	ok                 int // status for an authorized caller
}

// matrixCases covers every route of the table (checked below); admin
// cases run after the reader ones so deletes find their targets.
const validSLO = `{"name":"matrix slo %s","service":"checkout","objective":"latency","latency_threshold_ms":300,"target":99.5,"period":"7d","notification_channels":["slack"]}`

func matrixCases(ruleID, silenceID, keptSilenceID, sloID string) []matrixCase {
	return []matrixCase{
		{"GET", "/", "", 200},
		{"GET", "/health", "", 200},
		{"GET", "/ready", "", 200},
		{"GET", "/metrics", "", 200},
		{"GET", "/health-status", "", 200},
		{"GET", "/alerts", "", 200},
		{"GET", "/alerts/stats", "", 200},
		{"POST", "/alerts/1/acknowledge", "", 200},
		{"GET", "/sla", "", 200},
		{"GET", "/alert-rules", "", 200},
		{"POST", "/alert-rules", validRule, 201},
		{"GET", "/alert-rules/1", "", 200},
		{"PUT", "/alert-rules/1", `{"rule_name":"High Error Rate","metric_name":"error_rate","operator":">","threshold":6}`, 200},
		{"DELETE", "/alert-rules/" + ruleID, "", 204},
		{"GET", "/slos", "", 200},
		{"GET", "/slos/1", "", 200},
		{"GET", "/slos/1/history", "", 200},
		{"GET", "/silences", "", 200},
		{"POST", "/silences", `{"service":"checkout","duration":"1h","comment":"matrix"}`, 201},
		{"GET", "/silences/" + keptSilenceID, "", 200},
		{"PATCH", "/silences/" + silenceID, `{"comment":"matrix"}`, 200},
		{"DELETE", "/silences/" + silenceID, "", 204},
		{"POST", "/slos", validSLO, 201},
		{"PUT", "/slos/" + sloID, `{"name":"matrix slo put %s","objective":"availability","target":99.9}`, 200},
		{"DELETE", "/slos/" + sloID, "", 204},
		{"GET", "/stats", "", 200},
		{"GET", "/openapi.json", "", 200},
	}
}

// TestAuthMatrix: every route × {no credentials, bad key, bad basic
// password, reader key, reader user, admin key, admin user}.
func TestAuthMatrix(t *testing.T) {
	f := newFixture(t, withCreds)
	ctx := context.Background()
	// Targets for the admin deletes: one extra rule and silence per admin identity.
	var ruleIDs, silenceIDs, sloIDs []string
	for i := 0; i < 2; i++ {
		var rid, sid, oid int64
		if err := f.db.QueryRow(ctx, `INSERT INTO analytics_alert_rules (rule_name, metric_name, operator, threshold)
			VALUES ('to delete ' || $1, 'count', '<', 1) RETURNING id`, itoa(int64(i))).Scan(&rid); err != nil {
			t.Fatal(err)
		}
		if err := f.db.QueryRow(ctx, `INSERT INTO analytics_alert_silences (service, ends_at) VALUES ('x', now() + interval '1 hour') RETURNING id`).Scan(&sid); err != nil {
			t.Fatal(err)
		}
		if err := f.db.QueryRow(ctx, `INSERT INTO analytics_slos (name, objective, target)
			VALUES ('to delete ' || $1, 'availability', 99) RETURNING id`, itoa(int64(i))).Scan(&oid); err != nil {
			t.Fatal(err)
		}
		sloIDs = append(sloIDs, itoa(oid))
		ruleIDs = append(ruleIDs, itoa(rid))
		silenceIDs = append(silenceIDs, itoa(sid))
	}

	var kept int64
	if err := f.db.QueryRow(ctx, `INSERT INTO analytics_alert_silences (service, ends_at) VALUES ('kept', now() + interval '1 hour') RETURNING id`).Scan(&kept); err != nil {
		t.Fatal(err)
	}

	// Every registered route is in the matrix.
	covered := map[string]bool{}
	for _, c := range matrixCases("9", "9", "9", "9") {
		covered[c.method+" "+normalizeID(c.path)] = true
	}
	for _, r := range f.srv.routes {
		if !covered[r.method+" "+r.path] {
			t.Fatalf("route %s %s is not in the auth matrix", r.method, r.path)
		}
	}

	type caller struct {
		name  string
		hdr   map[string]string
		role  config.Role // 0: not authenticated
		valid bool
	}
	callers := []caller{
		{"none", nil, 0, false},
		{"bad-key", bearer("not-a-key-0123456789"), 0, false},
		{"bad-basic", basic("alice", "wrong"), 0, false},
		{"unknown-user", basic("mallory", "wonderland"), 0, false},
		{"garbage-scheme", map[string]string{"Authorization": "Token abc"}, 0, false},
		{"reader-key", bearer(readerKey), config.RoleReader, true},
		{"reader-user", basic("bob", "builder"), config.RoleReader, true},
		{"admin-key", bearer(adminKey), config.RoleAdmin, true},
		{"admin-user", basic("alice", "wonderland"), config.RoleAdmin, true},
	}
	adminRun := 0
	for _, cl := range callers {
		rid, sid, oid := "999999", "999999", "999999"
		if cl.role == config.RoleAdmin {
			rid, sid, oid = ruleIDs[adminRun], silenceIDs[adminRun], sloIDs[adminRun]
			adminRun++
		}
		for _, c := range matrixCases(rid, sid, itoa(kept), oid) {
			body := strings.Replace(c.body, "%s", cl.name, 1)
			public := c.path == "/health" || c.path == "/ready"
			write := c.method != "GET"
			want := c.ok
			switch {
			case public:
			case !cl.valid:
				want = 401
			case write && cl.role != config.RoleAdmin:
				want = 403
			}
			resp, b := f.request(c.method, c.path, body, cl.hdr)
			if resp.StatusCode != want {
				t.Errorf("%s %s as %s: status %d, want %d: %s", c.method, c.path, cl.name, resp.StatusCode, want, b)
			}
			if want == 401 && resp.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s %s as %s: 401 without WWW-Authenticate", c.method, c.path, cl.name)
			}
		}
	}
	// The acknowledgement names its caller, never the key.
	var by string
	if err := f.db.QueryRow(ctx, `SELECT acknowledged_by FROM analytics_alerts WHERE id = 1`).Scan(&by); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(by, "key:") || strings.Contains(by, adminKey) {
		t.Fatalf("acknowledged_by = %q", by)
	}
}

func normalizeID(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		if s != "" && strings.Trim(s, "0123456789") == "" {
			parts[i] = ":id"
		}
	}
	return strings.Join(parts, "/")
}

// TestAnonymousLoopback: without credentials on loopback, callers are
// readers; writes are refused with 403 naming the variables to set.
func TestAnonymousLoopback(t *testing.T) {
	f := newFixture(t, nil)
	for _, c := range matrixCases("1", "1", "1", "1") {
		resp, b := f.request(c.method, c.path, c.body, nil)
		want := c.ok
		if c.method != "GET" {
			want = 403
		}
		if resp.StatusCode != want {
			t.Errorf("%s %s: %d, want %d: %s", c.method, c.path, resp.StatusCode, want, b)
		}
		if want == 403 && !strings.Contains(string(b), "API_ADMIN_KEYS") {
			t.Errorf("%s %s: 403 body does not say what to configure: %s", c.method, c.path, b)
		}
	}
	// A key sent anyway is still checked.
	resp, _ := f.request("GET", "/metrics", "", bearer("whatever-key-0123456789"))
	if resp.StatusCode != 401 {
		t.Fatalf("bad key in anonymous mode: %d", resp.StatusCode)
	}
}

// TestRefuseNonLoopbackWithoutCredentials: New fails on a non-loopback
// address without credentials, naming the variables; with credentials or
// on loopback it starts.
func TestRefuseNonLoopbackWithoutCredentials(t *testing.T) {
	for _, host := range []string{"0.0.0.0", "", "::", "192.168.1.10", "example.com"} {
		cfg := testConfig("postgres://x@127.0.0.1:1/x")
		cfg.API.Host = host
		_, err := New(cfg, Deps{})
		if err == nil {
			t.Fatalf("host %q: started without credentials", host)
		}
		for _, v := range []string{"API_READER_KEYS", "API_ADMIN_KEYS", "API_USERS"} {
			if !strings.Contains(err.Error(), v) {
				t.Fatalf("host %q: error does not name %s: %v", host, v, err)
			}
		}
	}
	for _, host := range []string{"127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"} {
		cfg := testConfig("postgres://x@127.0.0.1:1/x")
		cfg.API.Host = host
		s, err := New(cfg, Deps{})
		if err != nil {
			t.Fatalf("loopback %q refused: %v", host, err)
		}
		s.closePools()
	}
	cfg := testConfig("postgres://x@127.0.0.1:1/x")
	cfg.API.Host = "0.0.0.0"
	withCreds(&cfg)
	s, err := New(cfg, Deps{})
	if err != nil {
		t.Fatalf("with credentials: %v", err)
	}
	s.closePools()
	cfg = testConfig("postgres://x@127.0.0.1:1/x")
	cfg.API.Host = "0.0.0.0"
	cfg.AllowAnonymous = true
	if s, err = New(cfg, Deps{}); err != nil {
		t.Fatalf("explicit AllowAnonymous: %v", err)
	}
	s.closePools()
	// Bad credentials configuration is reported.
	cfg = testConfig("postgres://x@127.0.0.1:1/x")
	cfg.API.AdminKeys = []string{"short"}
	if _, err := New(cfg, Deps{}); err == nil || !strings.Contains(err.Error(), "API_ADMIN_KEYS") {
		t.Fatalf("short key: %v", err)
	}
}

// TestAuthenticatorUnit covers header parsing corners.
func TestAuthenticatorUnit(t *testing.T) {
	cr := config.Credentials{Keys: map[string]config.Role{readerKey: config.RoleReader},
		Users: map[string]config.BasicCredential{"u": {Password: "p", Role: config.RoleAdmin}}}
	a := newAuthenticator(cr, false)
	for _, h := range []string{"Bearer", "Basic !!!", "Basic " + "dXNlcg==", "Bearer " + readerKey + "x", "bearer"} {
		if p, ok := a.authenticate(h); ok || p != nil {
			t.Errorf("%q accepted", h)
		}
	}
	if p, ok := a.authenticate("bearer " + readerKey); !ok || p.Role != config.RoleReader {
		t.Errorf("lower-case scheme refused")
	}
	if p, ok := a.authenticate(basic("u", "p")["Authorization"]); !ok || p.Role != config.RoleAdmin || p.Name != "user:u" {
		t.Errorf("basic: %v %v", p, ok)
	}
	b, _ := json.Marshal(a.keys[0].name)
	if strings.Contains(string(b), readerKey) {
		t.Fatal("key name contains the key")
	}
}
