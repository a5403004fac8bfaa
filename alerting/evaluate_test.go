package alerting

import (
	"strings"
	"testing"
	"time"
)

// fakeClock hands out window starts; the state machine itself takes no
// clock, only window starts.
type fakeClock struct{ t time.Time }

func (c *fakeClock) window(i int) time.Time { return c.t.Add(time.Duration(i) * time.Minute) }

func TestEvaluateStateMachine(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 11, 29, 1, 0, 0, 0, time.UTC)}
	type in struct {
		w int
		v float64
	}
	cases := []struct {
		name  string
		rule  Rule
		steps []in
		want  string // transitions per step: . none, F fire, R resolve, s stale
	}{
		{"fires at once with for=1", Rule{Operator: ">", Threshold: 5, ForWindows: 1}, []in{{0, 1}, {1, 6}, {2, 7}, {3, 2}}, ".F.R"},
		{"for=2 needs two consecutive windows", Rule{Operator: ">", Threshold: 5, ForWindows: 2}, []in{{0, 6}, {1, 1}, {2, 6}, {3, 6}, {4, 6}}, "...F."},
		{"a gap restarts the run", Rule{Operator: ">", Threshold: 5, ForWindows: 2}, []in{{0, 6}, {2, 6}, {3, 6}}, "..F"},
		{"hysteresis holds between thresholds", Rule{Operator: ">", Threshold: 20, ResolveThreshold: ptr(10.0), ForWindows: 1},
			[]in{{0, 25}, {1, 15}, {2, 10.5}, {3, 10}, {4, 15}, {5, 21}}, "F..R.F"},
		{"resolve threshold on the wrong side is ignored", Rule{Operator: ">", Threshold: 20, ResolveThreshold: ptr(30.0), ForWindows: 1},
			[]in{{0, 25}, {1, 20}}, "FR"},
		{"below with hysteresis", Rule{Operator: "<", Threshold: 10, ResolveThreshold: ptr(50.0), ForWindows: 1},
			[]in{{0, 5}, {1, 40}, {2, 50}}, "F.R"},
		{"<= and >=", Rule{Operator: "<=", Threshold: 10, ResolveThreshold: ptr(20.0), ForWindows: 1},
			[]in{{0, 10}, {1, 20}, {2, 21}}, "F.R"},
		{">= strict resolve", Rule{Operator: ">=", Threshold: 10, ResolveThreshold: ptr(5.0), ForWindows: 1},
			[]in{{0, 10}, {1, 5}, {2, 4.9}}, "F.R"},
		{"== ignores resolve threshold", Rule{Operator: "==", Threshold: 0, ResolveThreshold: ptr(3.0), ForWindows: 1},
			[]in{{0, 0}, {1, 1}}, "FR"},
		{"!=", Rule{Operator: "!=", Threshold: 0, ForWindows: 1}, []in{{0, 0}, {1, 1}, {2, 0}}, ".FR"},
		{"old and repeated windows are stale", Rule{Operator: ">", Threshold: 5, ForWindows: 2},
			[]in{{1, 6}, {1, 6}, {0, 6}, {2, 6}, {2, 1}, {1, 1}}, ".ssFss"},
		{"for=3", Rule{Operator: ">", Threshold: 5, ForWindows: 3}, []in{{0, 6}, {1, 6}, {2, 6}, {3, 6}, {4, 0}, {5, 6}}, "..F.R."},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.rule.ID, c.rule.Name = 7, "r"
			fp := Fingerprint(7, "svc")
			var st State
			var got strings.Builder
			var firstRun time.Time
			for _, s := range c.steps {
				step := Evaluate(&c.rule, fp, time.Minute, st, clk.window(s.w), s.v)
				switch {
				case step.Stale:
					got.WriteByte('s')
					if step.Changed || step.Next != st {
						t.Errorf("stale step changed the state")
					}
				case step.Transition == Fire:
					got.WriteByte('F')
					if !step.Next.Firing || step.AlertID == "" || step.Next.AlertID != step.AlertID {
						t.Errorf("fire step %+v", step)
					}
					firstRun = clk.window(s.w).Add(-time.Duration(c.rule.ForWindows-1) * time.Minute)
					if step.AlertID != AlertID(fp, firstRun) {
						t.Errorf("alert id not derived from the first breaching window")
					}
				case step.Transition == Resolve:
					got.WriteByte('R')
					if step.Next.Firing || step.AlertID != st.AlertID || step.Next.AlertID != "" {
						t.Errorf("resolve step %+v", step)
					}
				default:
					got.WriteByte('.')
				}
				st = step.Next
			}
			if got.String() != c.want {
				t.Errorf("transitions %q, want %q", got.String(), c.want)
			}
		})
	}
}

func TestEvaluateIsDeterministic(t *testing.T) {
	r := &Rule{ID: 1, Operator: ">", Threshold: 1, ForWindows: 2}
	fp := Fingerprint(1, "a")
	w0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	run := func() string {
		var st State
		st = Evaluate(r, fp, time.Minute, st, w0, 2).Next
		return Evaluate(r, fp, time.Minute, st, w0.Add(time.Minute), 2).AlertID
	}
	if a, b := run(), run(); a == "" || a != b {
		t.Fatalf("ids %q %q", a, b)
	}
	if Fingerprint(1, "a") == Fingerprint(2, "a") || Fingerprint(1, "a") == Fingerprint(1, "b") ||
		Fingerprint(1, "a.b") == Fingerprint(1, "a_b") {
		t.Fatal("fingerprint collision")
	}
	if None.String() != "none" || Fire.String() != "firing" || Resolve.String() != "resolved" {
		t.Fatal("transition names")
	}
}

func TestSilenceMatching(t *testing.T) {
	now := time.Date(2026, 11, 29, 1, 0, 0, 0, time.UTC)
	r := &Rule{Name: "High Error Rate", Severity: "warning"}
	s := func(rule, svc, sev *string, from, to int) Silence {
		return Silence{RuleName: rule, Service: svc, Severity: sev,
			StartsAt: now.Add(time.Duration(from) * time.Minute), EndsAt: now.Add(time.Duration(to) * time.Minute)}
	}
	cases := []struct {
		s    Silence
		want bool
	}{
		{s(nil, nil, nil, -1, 1), true},
		{s(ptr("High Error Rate"), ptr("api"), ptr("warning"), -1, 1), true},
		{s(ptr("Other"), nil, nil, -1, 1), false},
		{s(nil, ptr("web"), nil, -1, 1), false},
		{s(nil, nil, ptr("critical"), -1, 1), false},
		{s(nil, nil, nil, 1, 2), false},  // not started
		{s(nil, nil, nil, -2, 0), false}, // ended (end exclusive)
		{s(nil, nil, nil, 0, 1), true},   // start inclusive
	}
	for i, c := range cases {
		if got := c.s.Matches(r, "api", now); got != c.want {
			t.Errorf("case %d: %v, want %v", i, got, c.want)
		}
	}
	if silenced(nil, r, "api", now) || !silenced([]Silence{cases[2].s, cases[0].s}, r, "api", now) {
		t.Error("silenced()")
	}
}

func TestRuleValidate(t *testing.T) {
	good := Rule{Name: "r", Metric: "error_rate", Operator: ">", Severity: "warning", Window: "1min", ForWindows: 1,
		Channels: []string{"slack"}}
	if err := good.Validate([]string{"1min"}); err != nil {
		t.Fatal(err)
	}
	bad := []func(r *Rule){
		func(r *Rule) { r.Metric = "nope" },
		func(r *Rule) { r.Operator = "=~" },
		func(r *Rule) { r.Severity = "page" },
		func(r *Rule) { r.Window = "7min" },
		func(r *Rule) { r.ForWindows = 0 },
		func(r *Rule) { r.Threshold = posInf() },
		func(r *Rule) { r.Channels = []string{"sms"} },
	}
	for i, mut := range bad {
		r := good
		mut(&r)
		if err := r.Validate([]string{"1min"}); err == nil {
			t.Errorf("case %d accepted", i)
		}
	}
	if compare(1, "?", 1) {
		t.Error("unknown operator compares true")
	}
	if !good.wantsChannel("kafka") || !good.wantsChannel("slack") || good.wantsChannel("email") {
		t.Error("wantsChannel")
	}
}

func posInf() float64 { var z float64; return 1 / z }

func TestMetricRowValue(t *testing.T) {
	var r metricRow
	v := 3.5
	r.vals[3] = &v
	if got, ok := r.value("error_rate"); !ok || got != 3.5 {
		t.Fatal(got, ok)
	}
	if _, ok := r.value("risk_score_avg"); ok {
		t.Fatal("NULL metric has a value")
	}
	if _, ok := r.value("nope"); ok {
		t.Fatal("unknown metric has a value")
	}
}
