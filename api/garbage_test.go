package api

import (
	"encoding/json"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/stacklens/stacklens/internal/event"
)

// injection strings every parameter is tried with.
var injections = []string{
	`' OR 1=1--`,
	`1'; DROP TABLE analytics_metrics_1min; --`,
	`" OR ""="`,
	`1 OR 1=1`,
	`$1`,
	`%' OR '%'='`,
	`ünïcødé`,
	`😀`,
	`<script>alert(1)</script>`,
	`\x00`,
	"\u202e",
}

// garbage per parameter kind; all must be 400 naming the parameter.
var garbageByParam = map[string][]string{
	"window":         {"", "1s", "0min", "-1min", "2min", "99999999999999999999min", "1.5min", "min", "1 fortnight", "1min,5min"},
	"limit":          {"", "-1", "0", "1001", "99999999999999999999999", "1e3", "1.5", "0x10", " 5", "+5", "١٢", "NaN"},
	"from":           {"", "yesterday", "2026-13-01T00:00:00Z", "2026-01-01", "2026-01-01T00:00:00", "99999999999999999999", "-1", "1e9", "0000-01-01T00:00:00Z", "10000-01-01T00:00:00Z", "1700000000000", "١٧٠٠٠٠٠٠٠٠"},
	"to":             {"", "tomorrow", "2026-02-30T00:00:00Z", "T", "12:00", "1700000000.5"},
	"status":         {"", "ACTIVE", "active ", "open", "all,active"},
	"severity":       {"", "CRITICAL", "error", "warning,critical"},
	"state":          {"", "ACTIVE", "now"},
	"latency_slo_ms": {"", "NaN", "Inf", "-1", "1e400", "abc", "3600001"},
	"error_slo_pct":  {"", "NaN", "0", "101", "-5", "1%"},
	"service":        {"", " ", strings.Repeat("s", 129), "a\x00b", "tab\there", "\xff\xfe", "line\nbreak", "a\u0085b", "\u009f", " checkout", "checkout\u00a0", "a\u2028b"},
}

// TestGarbageCorpus sends injection strings and garbage to every query
// parameter of every route, repeated and unknown parameters, and bad path
// ids. Everything but valid-but-odd service names is a 400 naming the
// parameter; service names valid by event.ValidService (the decoder's
// rule) are data and only ever bound, so they return 200 with no rows. Afterwards every
// table has the same row count and the schema the same relations.
func TestGarbageCorpus(t *testing.T) {
	f := newFixture(t, withCreds)
	ad := bearer(adminKey)
	before := rowCounts(t, f.db)
	tried := 0
	for _, spec := range routeTable() {
		if spec.method != "GET" {
			continue
		}
		for _, p := range spec.query {
			values := append(append([]string{}, garbageByParam[p.name]...), injections...)
			if garbageByParam[p.name] == nil {
				t.Fatalf("no garbage for parameter %s", p.name)
			}
			for _, val := range values {
				// A route with a path id gets a valid one (the seed's SLO 1).
				target := strings.Replace(spec.path, ":id", "1", 1) + "?" + p.name + "=" + url.QueryEscape(val)
				resp, b := f.request("GET", target, "", ad)
				tried++
				if p.name == "service" && event.ValidService(val) == nil {
					if resp.StatusCode != 200 {
						t.Errorf("%s: %d %s", target, resp.StatusCode, b)
						continue
					}
					var m map[string]any
					_ = json.Unmarshal(b, &m)
					if c, ok := m["count"].(float64); ok && c != 0 && spec.path != "/sla" {
						t.Errorf("%s: %v rows for a garbage service", target, c)
					}
					if spec.path == "/sla" && m["sla"].([]any)[0].(map[string]any)["total_events"].(float64) != 0 {
						t.Errorf("%s: SLA has events", target)
					}
					continue
				}
				var e errorBody
				_ = json.Unmarshal(b, &e)
				if resp.StatusCode != 400 || e.Field != p.name {
					t.Errorf("%s: %d field %q, want 400 field %q: %s", target, resp.StatusCode, e.Field, p.name, b)
				}
			}
			// Repeated parameter.
			target := spec.path + "?" + p.name + "=a&" + p.name + "=b"
			f.expectError("GET", target, "", ad, 400, p.name)
			tried++
		}
		// Unknown parameters, including SQL and encoded names.
		for _, k := range []string{"x", "window%27", "' OR 1=1--", "limit[]", "LIMIT", "😀"} {
			target := spec.path + "?" + url.QueryEscape(k) + "=1"
			resp, b := f.request("GET", target, "", ad)
			tried++
			var e errorBody
			_ = json.Unmarshal(b, &e)
			if resp.StatusCode != 400 || e.Field == "" || !strings.Contains(e.Error, "unknown query parameter") {
				t.Errorf("%s: %d %s", target, resp.StatusCode, b)
			}
		}
	}
	// Stray separators are harmless; an empty name with a value is not.
	f.getJSON("/metrics?limit=1&&", ad, 200)
	f.expectError("GET", "/metrics?=5", "", ad, 400, "(empty)")
	// Over-long value.
	f.expectError("GET", "/metrics?service="+strings.Repeat("a", 300), "", ad, 400, "service")
	f.expectError("GET", "/metrics?window=%FF", "", ad, 400, "window")
	// Path ids.
	for _, id := range append([]string{"0", "-1", "1.0", "1e3", "99999999999999999999", "0x1", "+1", "%20"}, injections...) {
		esc := url.PathEscape(id)
		for _, c := range []struct{ method, path string }{
			{"GET", "/alert-rules/" + esc}, {"PUT", "/alert-rules/" + esc}, {"DELETE", "/alert-rules/" + esc},
			{"DELETE", "/silences/" + esc}, {"POST", "/alerts/" + esc + "/acknowledge"},
		} {
			resp, b := f.request(c.method, c.path, `{"rule_name":"x","metric_name":"count","operator":"<","threshold":1}`, ad)
			tried++
			var e errorBody
			_ = json.Unmarshal(b, &e)
			if (resp.StatusCode != 400 || e.Field != "id") && resp.StatusCode != 404 {
				t.Errorf("%s %s: %d %s", c.method, c.path, resp.StatusCode, b)
			}
		}
	}
	after := rowCounts(t, f.db)
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("row counts changed:\nbefore %v\nafter  %v", before, after)
	}
	t.Logf("%d garbage requests, row counts and relations unchanged", tried)
}

// TestInjectionAsData: injection strings stored through the write API come
// back verbatim and change nothing else.
func TestInjectionAsData(t *testing.T) {
	f := newFixture(t, withCreds)
	ad := bearer(adminKey)
	before := rowCounts(t, f.db)
	for i, inj := range injections[:8] {
		body, _ := json.Marshal(map[string]any{"rule_name": inj + " " + itoa(int64(i)), "metric_name": "count", "operator": "<", "threshold": 1, "description": inj})
		resp, b := f.request("POST", "/alert-rules", string(body), ad)
		if resp.StatusCode != 201 {
			t.Fatalf("%q: %d %s", inj, resp.StatusCode, b)
		}
		var r Rule
		_ = json.Unmarshal(b, &r)
		if r.Description != inj {
			t.Fatalf("stored %q as %q", inj, r.Description)
		}
		sb, _ := json.Marshal(map[string]any{"service": inj, "duration": "1h", "comment": inj})
		if resp, b := f.request("POST", "/silences", string(sb), ad); resp.StatusCode != 201 {
			t.Fatalf("silence %q: %d %s", inj, resp.StatusCode, b)
		}
	}
	after := rowCounts(t, f.db)
	if after["analytics_alert_rules"] != before["analytics_alert_rules"]+8 || after["analytics_alert_silences"] != before["analytics_alert_silences"]+8 {
		t.Fatalf("rules/silences: %v → %v", before, after)
	}
	delete(before, "analytics_alert_rules")
	delete(before, "analytics_alert_silences")
	delete(after, "analytics_alert_rules")
	delete(after, "analytics_alert_silences")
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("other tables changed: %v → %v", before, after)
	}
}

// TestValidatorDetects keeps the OpenAPI test honest: the validator
// rejects undeclared fields, missing required ones and wrong types.
func TestValidatorDetects(t *testing.T) {
	doc := map[string]any{"components": map[string]any{"schemas": map[string]any{
		"X": map[string]any{"type": "object", "additionalProperties": false, "required": []any{"a"},
			"properties": map[string]any{"a": map[string]any{"type": "integer"}, "t": map[string]any{"type": "string", "format": "date-time"}}},
	}}}
	v := &validator{doc: doc}
	ref := map[string]any{"$ref": "#/components/schemas/X"}
	for _, bad := range []string{`{"a":1,"b":2}`, `{}`, `{"a":1.5}`, `{"a":"1"}`, `{"a":1,"t":"x"}`, `[]`, `null`} {
		var val any
		_ = json.Unmarshal([]byte(bad), &val)
		if v.validate(ref, val, "x") == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	var val any
	_ = json.Unmarshal([]byte(`{"a":1,"t":"2026-01-01T00:00:00Z"}`), &val)
	if err := v.validate(ref, val, "x"); err != nil {
		t.Fatal(err)
	}
}
