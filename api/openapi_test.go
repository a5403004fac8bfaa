package api

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
)

// validator checks JSON values against the subset of OpenAPI 3.0 schema
// the document uses: $ref, allOf, type, nullable, enum, properties,
// required, additionalProperties, items, format date-time.
type validator struct {
	doc map[string]any
}

func (v *validator) resolve(s map[string]any) map[string]any {
	for {
		ref, ok := s["$ref"].(string)
		if !ok {
			return s
		}
		name := strings.TrimPrefix(ref, "#/components/schemas/")
		s, ok = v.doc["components"].(map[string]any)["schemas"].(map[string]any)[name].(map[string]any)
		if !ok {
			panic("unresolved $ref " + ref)
		}
	}
}

func (v *validator) validate(s map[string]any, val any, path string) error {
	if all, ok := s["allOf"].([]any); ok {
		if val == nil && s["nullable"] == true {
			return nil
		}
		for _, sub := range all {
			if err := v.validate(sub.(map[string]any), val, path); err != nil {
				return err
			}
		}
		return nil
	}
	s = v.resolve(s)
	if val == nil {
		if s["nullable"] == true {
			return nil
		}
		return fmt.Errorf("%s: null but not nullable", path)
	}
	if enum, ok := s["enum"].([]any); ok {
		if !slices.Contains(enum, val) {
			return fmt.Errorf("%s: %v not in enum %v", path, val, enum)
		}
	}
	switch s["type"] {
	case "object":
		m, ok := val.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: want object, got %T", path, val)
		}
		props, _ := s["properties"].(map[string]any)
		if req, ok := s["required"].([]any); ok {
			for _, r := range req {
				if _, ok := m[r.(string)]; !ok {
					return fmt.Errorf("%s: required field %s missing", path, r)
				}
			}
		}
		for k, e := range m {
			ps, ok := props[k].(map[string]any)
			if !ok {
				if s["additionalProperties"] == false {
					return fmt.Errorf("%s: undeclared field %s", path, k)
				}
				continue
			}
			if err := v.validate(ps, e, path+"."+k); err != nil {
				return err
			}
		}
	case "array":
		a, ok := val.([]any)
		if !ok {
			return fmt.Errorf("%s: want array, got %T", path, val)
		}
		for i, e := range a {
			if err := v.validate(s["items"].(map[string]any), e, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case "string":
		str, ok := val.(string)
		if !ok {
			return fmt.Errorf("%s: want string, got %T", path, val)
		}
		if s["format"] == "date-time" {
			if _, err := time.Parse(time.RFC3339Nano, str); err != nil {
				return fmt.Errorf("%s: not date-time: %q", path, str)
			}
		}
	case "integer":
		f, ok := val.(float64)
		if !ok || f != math.Trunc(f) {
			return fmt.Errorf("%s: want integer, got %v", path, val)
		}
	case "number":
		if _, ok := val.(float64); !ok {
			return fmt.Errorf("%s: want number, got %T", path, val)
		}
	case "boolean":
		if _, ok := val.(bool); !ok {
			return fmt.Errorf("%s: want boolean, got %T", path, val)
		}
	}
	return nil
}

// responseSchema is the schema of status for method+path in the document.
func (v *validator) responseSchema(method, path string, status int) map[string]any {
	op := v.doc["paths"].(map[string]any)[openAPIPath(path)].(map[string]any)[strings.ToLower(method)].(map[string]any)
	r, ok := op["responses"].(map[string]any)[fmt.Sprint(status)].(map[string]any)
	if !ok {
		return nil
	}
	c, ok := r["content"].(map[string]any)["application/json"].(map[string]any)
	if !ok {
		return nil
	}
	return c["schema"].(map[string]any)
}

func TestOpenAPIDocument(t *testing.T) {
	f := newFixture(t, withCreds)
	ad := bearer(adminKey)
	resp, b := f.request("GET", "/openapi.json", "", ad)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("openapi: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	if doc["openapi"] != "3.0.3" || doc["info"].(map[string]any)["title"] == "" {
		t.Fatalf("header: %v %v", doc["openapi"], doc["info"])
	}
	v := &validator{doc: doc}

	// Structure: every $ref resolves, operationIds are unique, every path
	// template parameter is declared, every operation has responses.
	refRe := regexp.MustCompile(`"\$ref":"#/components/schemas/([A-Za-z]+)"`)
	schemas := doc["components"].(map[string]any)["schemas"].(map[string]any)
	for _, m := range refRe.FindAllStringSubmatch(string(b), -1) {
		if _, ok := schemas[m[1]]; !ok {
			t.Errorf("unresolved $ref %s", m[1])
		}
	}
	documented := map[string]bool{}
	opIDs := map[string]bool{}
	paramRe := regexp.MustCompile(`\{([a-z_]+)\}`)
	for p, item := range doc["paths"].(map[string]any) {
		for method, op := range item.(map[string]any) {
			o := op.(map[string]any)
			documented[strings.ToUpper(method)+" "+p] = true
			id := o["operationId"].(string)
			if opIDs[id] {
				t.Errorf("duplicate operationId %s", id)
			}
			opIDs[id] = true
			if len(o["responses"].(map[string]any)) == 0 {
				t.Errorf("%s %s: no responses", method, p)
			}
			declared := map[string]bool{}
			if ps, ok := o["parameters"].([]any); ok {
				for _, pp := range ps {
					pm := pp.(map[string]any)
					if pm["in"] == "path" {
						declared[pm["name"].(string)] = true
					}
				}
			}
			for _, m := range paramRe.FindAllStringSubmatch(p, -1) {
				if !declared[m[1]] {
					t.Errorf("%s %s: path parameter %s not declared", method, p, m[1])
				}
			}
		}
	}

	// Every Fiber route is documented and every documented operation is a route.
	registered := map[string]bool{}
	for _, r := range f.srv.App().GetRoutes(true) {
		if r.Method == "HEAD" {
			continue
		}
		registered[r.Method+" "+openAPIPath(r.Path)] = true
	}
	var missing, extra []string
	for k := range registered {
		if !documented[k] {
			missing = append(missing, k)
		}
	}
	for k := range documented {
		if !registered[k] {
			extra = append(extra, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 || len(extra) > 0 {
		t.Fatalf("routes not documented: %v; documented but not routes: %v", missing, extra)
	}
	if len(registered) != 27 {
		t.Fatalf("%d routes registered: %v", len(registered), registered)
	}

	// Real responses match the declared schemas.
	check := func(method, path, target, body string, hdr map[string]string) {
		t.Helper()
		resp, b := f.request(method, target, body, hdr)
		s := v.responseSchema(method, path, resp.StatusCode)
		if s == nil {
			t.Fatalf("%s %s: status %d not documented: %s", method, target, resp.StatusCode, b)
		}
		var val any
		if err := json.Unmarshal(b, &val); err != nil {
			t.Fatalf("%s %s: %v", method, target, err)
		}
		if err := v.validate(s, val, method+" "+target); err != nil {
			t.Errorf("%v\nbody: %s", err, b)
		}
	}
	for _, c := range []struct{ path, target string }{
		{"/health", "/health"}, {"/ready", "/ready"},
		{"/metrics", "/metrics"}, {"/metrics", "/metrics?window=1hour&service=checkout"}, {"/metrics", "/metrics?service=payments&limit=2"},
		{"/health-status", "/health-status"}, {"/alerts", "/alerts"}, {"/alerts/stats", "/alerts/stats"},
		{"/sla", "/sla"}, {"/sla", "/sla?service=ghost"}, {"/alert-rules", "/alert-rules"}, {"/alert-rules/:id", "/alert-rules/2"},
		{"/silences", "/silences?state=all"}, {"/silences/:id", "/silences/1"}, {"/silences/:id", "/silences/777"}, {"/stats", "/stats"}, {"/openapi.json", "/openapi.json"},
		{"/slos", "/slos"}, {"/slos/:id", "/slos/1"}, {"/slos/:id/history", "/slos/1/history"},
		{"/slos/:id", "/slos/777"}, {"/slos/:id/history", "/slos/1/history?from=2020-01-01T00:00:00Z"},
		// documented errors
		{"/metrics", "/metrics?window=7min"}, {"/alert-rules/:id", "/alert-rules/777"}, {"/metrics", "/metrics?x=1"},
	} {
		check("GET", c.path, c.target, "", ad)
	}
	check("GET", "/metrics", "/metrics", "", nil)                        // 401
	check("POST", "/alert-rules", "/alert-rules", "", bearer(readerKey)) // 403
	check("POST", "/alerts/:id/acknowledge", "/alerts/1/acknowledge", "", ad)
	check("POST", "/alerts/:id/acknowledge", "/alerts/3/acknowledge", "", ad) // 409
	check("POST", "/alert-rules", "/alert-rules", `{"rule_name":"doc","metric_name":"count","operator":"<","threshold":1,"resolve_threshold":2}`, ad)
	check("PUT", "/alert-rules/:id", "/alert-rules/1", `{"rule_name":"High Error Rate","metric_name":"error_rate","operator":">","threshold":5}`, ad)
	check("POST", "/silences", "/silences", `{"service":"x","duration":"1h"}`, ad)
	check("POST", "/silences", "/silences", `{"service":"x"}`, ad) // 400
	check("PATCH", "/silences/:id", "/silences/1", `{"comment":"doc","duration":"3h"}`, ad)
	check("PATCH", "/silences/:id", "/silences/1", `{"severity":"fatal"}`, ad) // 400
	check("POST", "/slos", "/slos", `{"name":"doc latency","service":"checkout","objective":"latency","latency_threshold_ms":250,"target":99.5,"period":"7d","burn_alerts":[{"severity":"page","burn_rate":14.4,"long":"1h","short":"5m"}],"notification_channels":["email"]}`, ad)
	check("POST", "/slos", "/slos", `{"name":"doc availability","objective":"availability","target":99.9}`, ad)
	check("POST", "/slos", "/slos", `{"name":"doc availability","objective":"availability","target":99.9}`, ad) // 409
	check("POST", "/slos", "/slos", `{"name":"doc bad","objective":"latency","target":99.9}`, ad)               // 400
	check("PUT", "/slos/:id", "/slos/1", `{"name":"doc latency","objective":"latency","latency_threshold_ms":300,"target":99}`, ad)
	check("PUT", "/slos/:id", "/slos/777", `{"name":"x","objective":"availability","target":99}`, ad) // 404
	check("DELETE", "/slos/:id", "/slos/777", "", ad)                                                 // 404
}

// TestOpenAPIExtensionRoutes: routes added through Deps.Mount replace the
// placeholder and are documented as extensions.
func TestOpenAPIExtensionRoutes(t *testing.T) {
	dsn, db, now := newDB(t)
	cfg := testConfig(dsn)
	srv, err := New(cfg, Deps{Mount: func(s *Server) error {
		s.Route("GET", "/", AccessPublic, func(c *fiber.Ctx) error { return c.SendString("dashboard") })
		s.Route("GET", "/assets/app.js", AccessPublic, func(c *fiber.Ctx) error { return c.SendString("js") })
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.closePools)
	f := &fixture{t: t, dsn: dsn, db: db, srv: srv, now: now}
	resp, b := f.request("GET", "/", "", nil)
	if resp.StatusCode != 200 || string(b) != "dashboard" {
		t.Fatalf("mounted root: %d %s", resp.StatusCode, b)
	}
	var doc map[string]any
	_ = json.Unmarshal(srv.openapi, &doc)
	if _, ok := doc["paths"].(map[string]any)["/assets/app.js"]; !ok {
		t.Fatal("extension route not documented")
	}
	if _, err := New(cfg, Deps{Mount: func(*Server) error { return fmt.Errorf("boom") }}); err == nil {
		t.Fatal("mount error ignored")
	}
}
