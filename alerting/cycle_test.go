package alerting

import (
	"slices"
	"testing"
	"time"
)

// row builds a final metric row with the given metrics set.
func row(svc string, start time.Time, vals map[string]float64) metricRow {
	r := metricRow{Service: svc, Start: start, UpdatedAt: start.Add(time.Minute)}
	for m, v := range vals {
		r.vals[slices.Index(Metrics, m)] = ptr(v)
	}
	return r
}

func TestSortRules(t *testing.T) {
	rules := []Rule{
		{ID: 1, Name: "a", Metric: "error_rate", Operator: ">", Severity: "warning", Window: "1min", ForWindows: 1, Enabled: true},
		{ID: 2, Name: "b", Metric: MetricNoData, Operator: ">=", Threshold: 3, Severity: "critical", Window: "5min", ForWindows: 3, Enabled: true},
		{ID: 3, Name: "c", Metric: "latency_p99_ms", Operator: ">", Severity: "warning", Window: "15min", ForWindows: 1, Enabled: true}, // window not configured
		{ID: 4, Name: "d", Metric: "nonsense", Operator: ">", Severity: "warning", Window: "1min", ForWindows: 1, Enabled: true},
		{ID: 5, Name: "e", Metric: "count", Operator: "<", Severity: "info", Window: "1min", ForWindows: 2, Enabled: true},
	}
	got := sortRules(rules, []string{"1min", "5min"})
	ids := func(rs []*Rule) (out []int64) {
		for _, r := range rs {
			out = append(out, r.ID)
		}
		return out
	}
	if w := ids(got.byWindow["1min"]); !slices.Equal(w, []int64{1, 5}) {
		t.Errorf("1min threshold rules %v, want [1 5]", w)
	}
	if w := ids(got.noData["5min"]); !slices.Equal(w, []int64{2}) || len(got.byWindow["5min"]) != 0 {
		t.Errorf("5min no-data rules %v, threshold rules %v", w, ids(got.byWindow["5min"]))
	}
	if got.invalid != 2 || len(got.ids) != 3 || got.ids[3] || got.ids[4] {
		t.Errorf("invalid %d, ids %v; want 2 invalid and ids 1, 2, 5", got.invalid, got.ids)
	}
}

// TestEvaluateRows: rows arrive in any order; each service's windows are
// evaluated in time order, per rule, with the transitions in that order;
// rows without the rule's metric and stale rows move nothing.
func TestEvaluateRows(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 1, 0, 0, 0, time.UTC)
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Minute) }
	errRate := &Rule{ID: 1, Name: "errors", Metric: "error_rate", Operator: ">", Threshold: 5, ForWindows: 2}
	risk := &Rule{ID: 2, Name: "risk", Metric: "risk_score_max", Operator: ">", Threshold: 0.8, ForWindows: 1}
	rows := []metricRow{
		row("b", at(1), map[string]float64{"error_rate": 9}),
		row("a", at(2), map[string]float64{"error_rate": 1}), // a resolves here
		row("a", at(0), map[string]float64{"error_rate": 9, "risk_score_max": 0.9}),
		row("a", at(1), map[string]float64{"error_rate": 9}), // a fires here (for=2)
		row("b", at(0), map[string]float64{"error_rate": 9}), // b fires at 1
	}
	pend := map[string]*fpState{}
	get := func(fp string, r *Rule, svc string) *fpState {
		if pend[fp] == nil {
			pend[fp] = &fpState{ruleID: r.ID, service: svc}
		}
		return pend[fp]
	}
	var fresh []string
	changes := evaluateRows([]*Rule{errRate, risk}, time.Minute, rows, get, func(r *metricRow) {
		fresh = append(fresh, r.Service+r.Start.Format("04"))
	})
	var got []string
	for _, c := range changes {
		got = append(got, c.rule.Name+"/"+c.service+"/"+c.start.Format("04")+"/"+c.step.Transition.String())
	}
	// a at 01 has no risk score: the risk rule does not move there.
	want := []string{"risk/a/00/firing", "errors/a/01/firing", "errors/b/01/firing", "errors/a/02/resolved"}
	if !slices.Equal(got, want) {
		t.Errorf("transitions\n got %v\nwant %v", got, want)
	}
	if !slices.Equal(fresh, []string{"a00", "b00", "a01", "b01", "a02"}) {
		t.Errorf("fresh rows %v", fresh)
	}
	for fp, s := range pend {
		if !s.dirty {
			t.Errorf("state %s moved but is not dirty", fp)
		}
	}
	// The same rows again are stale: no transition, no fresh row.
	fresh = nil
	if again := evaluateRows([]*Rule{errRate, risk}, time.Minute, rows, get, func(r *metricRow) { fresh = append(fresh, r.Service) }); len(again) != 0 || len(fresh) != 0 {
		t.Errorf("replayed rows gave %d transitions, %d fresh rows", len(again), len(fresh))
	}
}

func TestForgotten(t *testing.T) {
	states := map[string]*fpState{
		"x": {ruleID: 1, persisted: true},
		"y": {ruleID: 2, persisted: true},
		"z": {ruleID: 2},
		"w": {ruleID: 3, persisted: true},
	}
	drop, deletes := forgotten(states, map[int64]bool{1: true, 3: true})
	if !slices.Equal(drop, []string{"y", "z"}) || !slices.Equal(deletes, []string{"y"}) {
		t.Errorf("drop %v deletes %v; want [y z] [y]", drop, deletes)
	}
}
