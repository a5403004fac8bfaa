package bench

import (
	"bytes"
	"strings"
	"testing"
)

// costReport is a run with every figure the cost targets read.
func costReport() *Report {
	r := sampleReport()
	r.Sustained = 20_000
	r.Ceilings = append(r.Ceilings[:1], Ceiling{Key: ceilCopy, Name: "pgx CopyFrom", Rate: 200_000, Unit: "rows/s"}) // 5 µs per row
	r.Roles = []Role{
		{Role: "bridge", CPUPerMillion: 9}, {Role: "processor", CPUPerMillion: 7},
		{Role: "projections", CPUPerMillion: 13}, {Role: "api", CPUPerMillion: 2},
		{Role: "postgresql", CPUPerMillion: 7}, {Role: "nats-server", CPUPerMillion: 40},
	}
	r.SustainedRoles = []Role{
		{Role: "bridge", CPUPerMillion: 8}, {Role: "processor", CPUPerMillion: 6},
		{Role: "projections", CPUPerMillion: 6}, {Role: "api", CPUPerMillion: 6},
		{Role: "postgresql", CPUPerMillion: 4}, {Role: "nats-server", CPUPerMillion: 35},
	}
	r.Stages = []Stage{
		{Stage: "bridge alone (backlog drain)", Rate: 66_000, CeilingRate: 60_000, Ratio: 1.1},
		{Stage: "end to end (sustained)", Rate: 20_000, CeilingRate: 20_500, Ratio: 0.98},
	}
	r.Steady = &Steady{Rate: 20_000, Seen: 40, FreshP99ms: 1100, Lag: LagVerdict{Bounded: true},
		BeforeProbes: 16, FreshBeforeP99ms: 450, WithProbes: 24, FreshWithP99ms: 1100, API: []HTTPResult{
			{Name: "static JSON (own process, ingesting)", Requests: 1000, P99ms: 20},
			{Name: "/metrics (1min, 100 rows)", Requests: 1000, P99ms: 30},
			{Name: "/health-status", Requests: 1000, P99ms: 22},
			{Name: "/alerts", Requests: 10, Errors: 10}, // every request failed: no figure
		}}
	r.Storage = &Storage{Events: 1000, MessageBytes: 200, Stores: []StoreBytes{
		{Store: "JetStream stream STACKLENS_EVENTS", PerEvent: 76, Ratio: 0.38},
		{Store: "PostgreSQL analytics_events table", PerEvent: 240, Ratio: 1.2},
		{Store: "PostgreSQL analytics_events indexes", PerEvent: 52, Ratio: 0.26},
	}}
	return r
}

func TestCostTargets(t *testing.T) {
	got := map[string]Target{}
	for _, tg := range costTargets(costReport()) {
		got[tg.Target] = tg
	}
	for _, tc := range []struct{ target, measured, met string }{
		{"own processes", "38.0 (bridge 9.0, processor 7.0, projections 13.0, api 2.0, postgresql 7.0); 30.0 at the sustained rate's step", "no"},
		{"raw-event path", "20.0 µs ÷ 5.0 µs = 4.00 ×; 2.00 × at the sustained rate's step", "no"},
		{"sustained end to end", "20k ev/s, 0.98 of the CPU bound; held with the API load: lag bounded", "yes"},
		{"bridge alone", "66k ev/s = 1.10 × 60k", "yes"},
		// Judged on every probe, even when those outside the API load meet it.
		{"freshness p99", "1100 ms at 20k ev/s (before the API load 450 ms, 16 probes; with it 1100 ms, 24)", "no"},
		{"dashboard endpoints", "/metrics 1.50, /health-status 1.10 (static 20.0 ms)", "no"},
		{"stream bytes", "76 B = 0.38 ×", "yes"},
		{"analytics_events row + indexes", "292 B = 1.46 ×", "yes"},
	} {
		var found *Target
		for name, tg := range got {
			if strings.HasPrefix(name, tc.target) {
				found = &tg
			}
		}
		if found == nil {
			t.Errorf("%s: missing from %v", tc.target, got)
			continue
		}
		if found.Measured != tc.measured || found.Met != tc.met {
			t.Errorf("%s: %q %s, want %q %s", tc.target, found.Measured, found.Met, tc.measured, tc.met)
		}
	}
	if len(got) != 8 {
		t.Errorf("%d targets, want 8", len(got))
	}

	// A steady hold whose lag grew under the API load does not count as
	// sustained, however the ramp judged the rate.
	r := costReport()
	r.Steady.Lag = LagVerdict{Reason: "lag growing"}
	for _, tg := range costTargets(r) {
		if strings.HasPrefix(tg.Target, "sustained end to end") &&
			(tg.Met != "no" || !strings.HasSuffix(tg.Measured, "held with the API load: lag NOT bounded: lag growing")) {
			t.Errorf("sustained with a growing steady hold: %+v", tg)
		}
	}

	// Both the run's figure and the sustained step's must meet a cost goal.
	for _, tc := range []struct {
		run, step float64
		met       string
	}{{30, 38, "no"}, {30, 34, "yes"}, {38, 30, "no"}} {
		r := costReport()
		r.Roles[0].CPUPerMillion += tc.run - 38
		r.SustainedRoles[0].CPUPerMillion += tc.step - 30
		if got := costTargets(r)[0]; got.Met != tc.met {
			t.Errorf("run %v, step %v: %+v, want met %s", tc.run, tc.step, got, tc.met)
		}
	}

	// A run that did not measure a figure says so; nothing is met by default.
	bare := &Report{Roles: []Role{{Role: "bridge", CPUPerMillion: 9}}}
	for _, tg := range costTargets(bare) {
		if tg.Met == "yes" {
			t.Errorf("%s met without figures: %q", tg.Target, tg.Measured)
		}
		if strings.HasPrefix(tg.Target, "own processes") && tg.Met != "n/a" {
			t.Errorf("own processes with only the bridge measured: %+v", tg)
		}
	}
}

func TestCostTargetsInReportAndSummary(t *testing.T) {
	r := costReport()
	r.CostTargets = costTargets(r)
	var buf bytes.Buffer
	r.RenderTable(&buf)
	out := strings.Join(strings.Fields(buf.String()), " ")
	for _, want := range []string{"Cost targets (docs/PERFORMANCE.md)", "Resources per process at the sustained rate (its ramp step alone, 20k ev/s",
		"projections 0 0.0 0 6.0", "≤ 35 CPU-s per M events 38.0 (bridge 9.0",
		"≤ 1.25 × each /metrics 1.50, /health-status 1.10 (static 20.0 ms) no"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, buf.String())
		}
	}
	figs := map[string]float64{}
	for _, f := range r.figures() {
		figs[f.name] = f.v
	}
	for name, want := range map[string]float64{
		"CPU s per M events: own processes (roles + PostgreSQL)":                  38,
		"ratio: raw-event path CPU per event / pgx CopyFrom wall per row":         4,
		"ratio: API p99 /metrics (1min, 100 rows) / static JSON p99":              1.5,
		"ratio: API p99 /health-status / static JSON p99":                         1.1,
		"CPU s per M events at the sustained rate: own processes":                 30,
		"CPU s per M events at the sustained rate: projections":                   6,
		"ratio at the sustained rate: raw-event path / pgx CopyFrom wall per row": 2,
		"× message: analytics_events row + indexes":                               1.46,
	} {
		if got, ok := figs[name]; !ok || got < want-1e-9 || got > want+1e-9 {
			t.Errorf("figure %q = %v (present %v), want %v", name, got, ok, want)
		}
	}
	if _, ok := figs["ratio: API p99 /alerts / static JSON p99"]; ok {
		t.Error("an endpoint whose every request failed has no ratio")
	}
}
