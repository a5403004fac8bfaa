package api

import (
	"testing"
)

// TestSeedChecks runs the seed checklist's API checks as written: no
// credentials, on a loopback listener without configured credentials.
func TestSeedChecks(t *testing.T) {
	f := newFixture(t, nil)
	m := f.getJSON("/metrics?window=1min&limit=1", nil, 200)
	if m["count"].(float64) != 1 {
		t.Fatalf("count = %v", m["count"])
	}
	hs := f.getJSON("/health-status", nil, 200)
	if hs["count"].(float64) != 4 {
		t.Fatalf("health-status count = %v: %v", hs["count"], hs)
	}
	al := f.getJSON("/alerts?status=active", nil, 200)
	if al["count"].(float64) != 1 {
		t.Fatalf("active alerts = %v", al["count"])
	}
	st := f.getJSON("/stats", nil, 200)
	if st["requests_served"].(float64) < 4 {
		t.Fatalf("requests_served = %v", st["requests_served"])
	}
	h := f.getJSON("/health", nil, 200)
	if h["status"] != "healthy" {
		t.Fatalf("health = %v", h)
	}
	d := f.getJSON("/metrics?service=deployment-test-service&limit=1", nil, 200)
	rows := d["metrics"].([]any)
	if len(rows) != 1 || rows[0].(map[string]any)["service"] != "deployment-test-service" {
		t.Fatalf("metrics[0] = %v", d)
	}
}
