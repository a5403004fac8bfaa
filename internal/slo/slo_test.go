package slo

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stacklens/stacklens/internal/window"
)

func TestParseFormatDuration(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Duration
		out  string
	}{
		{"5m", 5 * time.Minute, "5m"}, {"90m", 90 * time.Minute, "90m"}, {"60m", time.Hour, "1h"},
		{"1h", time.Hour, "1h"}, {"24h", 24 * time.Hour, "1d"}, {"3d", 72 * time.Hour, "3d"},
		{"30d", 720 * time.Hour, "30d"}, {"4w", 28 * 24 * time.Hour, "28d"}, {" 7d ", 7 * 24 * time.Hour, "7d"},
	} {
		got, err := ParseDuration(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
		if s := FormatDuration(got); s != c.out {
			t.Errorf("FormatDuration(%v) = %q, want %q", got, s, c.out)
		}
	}
	for _, bad := range []string{"", "h", "0h", "-1h", "+1h", "1.5h", "30s", "1y", "367d", "1 h", "99999999999999999999m"} {
		if _, err := ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q) accepted", bad)
		}
	}
}

func TestPolicyParseAndValidate(t *testing.T) {
	p, err := ParsePolicy(nil)
	if err != nil || len(p) != 4 || p[0].String() != "page 14.4x over 1h and 5m" || p[3].String() != "ticket 1x over 3d and 6h" {
		t.Fatalf("default policy: %v %v", p, err)
	}
	if p, err := ParsePolicy([]byte("[]")); err != nil || p == nil || len(p) != 0 {
		t.Fatalf("[] = %v, %v; want an empty, non-nil policy", p, err)
	}
	p, err = ParsePolicy([]byte(`[{"severity":"ticket","burn_rate":2,"long":"12h","short":"1h"}]`))
	if err != nil || len(p) != 1 || time.Duration(p[0].Long) != 12*time.Hour {
		t.Fatalf("custom: %v %v", p, err)
	}
	b, _ := json.Marshal(DefaultPolicy())
	if want := `[{"severity":"page","burn_rate":14.4,"long":"1h","short":"5m"},{"severity":"page","burn_rate":6,"long":"6h","short":"30m"},{"severity":"ticket","burn_rate":3,"long":"1d","short":"2h"},{"severity":"ticket","burn_rate":1,"long":"3d","short":"6h"}]`; string(b) != want {
		t.Fatalf("default policy JSON:\n%s\nwant\n%s", b, want)
	}
	for _, c := range []struct{ in, want string }{
		{`[{"severity":"sev1","burn_rate":2,"long":"1h","short":"5m"}]`, "burn_alerts[0].severity"},
		{`[{"severity":"page","burn_rate":0,"long":"1h","short":"5m"}]`, "burn_alerts[0].burn_rate"},
		{`[{"severity":"page","burn_rate":-1,"long":"1h","short":"5m"}]`, "burn_alerts[0].burn_rate"},
		{`[{"severity":"page","burn_rate":2,"long":"1h","short":"1h"}]`, "burn_alerts[0].short"},
		{`[{"severity":"page","burn_rate":2,"long":"1h"}]`, "burn_alerts[0].short"},
		{`[{"severity":"page","burn_rate":2,"long":"30s","short":"5m"}]`, "30s"},
		{`[{"severity":"page","burn_rate":2,"long":"1h","short":"5m","x":1}]`, "unknown field"},
		{`[{"severity":"page","burn_rate":2,"long":"1h","short":"5m"},{"severity":"page","burn_rate":2,"long":"1h","short":"5m"}]`, "burn_alerts[1]: duplicate"},
		{`{}`, "burn_alerts"},
		{`[] []`, "trailing"},
	} {
		if _, err := ParsePolicy([]byte(c.in)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParsePolicy(%s) = %v; want an error naming %q", c.in, err, c.want)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func TestDefinitionValidate(t *testing.T) {
	ok := func() Definition {
		return Definition{Name: "checkout", Service: ptr("checkout"), Objective: Availability, Target: 99.9, Period: 30 * 24 * time.Hour}
	}
	d := ok()
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		edit func(*Definition)
		want string
	}{
		{func(d *Definition) { d.Name = " " }, "name:"},
		{func(d *Definition) { d.Service = ptr("") }, "service:"},
		{func(d *Definition) { d.Objective = "speed" }, "objective:"},
		{func(d *Definition) { d.Objective = Latency }, "latency_threshold_ms:"},
		{func(d *Definition) { d.LatencyThresholdMS = ptr(300.0) }, "latency_threshold_ms:"},
		{func(d *Definition) { d.Objective, d.LatencyThresholdMS = Latency, ptr(-1.0) }, "latency_threshold_ms:"},
		{func(d *Definition) { d.Target = 100 }, "target:"},
		{func(d *Definition) { d.Target = 0 }, "target:"},
		{func(d *Definition) { d.Period = 30 * time.Minute }, "period:"},
		{func(d *Definition) { d.Period = time.Hour + time.Second }, "period:"},
		{func(d *Definition) { d.NotificationChannels = []string{"sms"} }, "notification_channels:"},
		{func(d *Definition) {
			d.BurnAlerts = []BurnAlert{{"page", 2, Duration(time.Hour), Duration(2 * time.Hour)}}
		}, "burn_alerts[0].short"},
		// 99 % allows 1 % bad: a 200x burn needs 200 % bad events.
		{func(d *Definition) {
			d.Target, d.BurnAlerts = 99, []BurnAlert{{"page", 200, Duration(time.Hour), Duration(5 * time.Minute)}}
		}, "can never be reached"},
	} {
		d := ok()
		c.edit(&d)
		if err := d.Validate(); err == nil || !strings.HasPrefix(err.Error(), c.want) && !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate = %v; want %q", err, c.want)
		}
	}
	lat, av := Definition{Objective: Latency, LatencyThresholdMS: ptr(2.5)}, ok()
	if lat.ThresholdKey() != "2.5" || ThresholdKey(300) != "300" || ThresholdKey(1e-5) != "0.00001" || av.ThresholdKey() != "" {
		t.Fatal("threshold keys")
	}
}

func TestTableAndRanges(t *testing.T) {
	ws := window.Defaults()
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{5 * time.Minute, "1min"}, {30 * time.Minute, "5min"}, {time.Hour, "5min"}, {2 * time.Hour, "5min"},
		{6 * time.Hour, "1hour"}, {24 * time.Hour, "1hour"}, {72 * time.Hour, "1hour"}, {720 * time.Hour, "1hour"},
		{3 * time.Minute, "1min"}, {90 * time.Minute, "5min"}, {7 * time.Minute, "1min"},
	} {
		if got := TableFor(c.d, ws); got.Name != c.want {
			t.Errorf("TableFor(%v) = %s, want %s", c.d, got.Name, c.want)
		}
	}
	// A custom 1day window is the coarsest that divides a 30d period.
	if got := TableFor(720*time.Hour, append(window.Defaults(), window.MustParse("1day"))); got.Name != "1day" {
		t.Errorf("30d with 1day configured: %s", got.Name)
	}
	now := time.Date(2026, 12, 1, 10, 37, 20, 0, time.UTC)
	for _, c := range []struct {
		d           time.Duration
		first, last string
		span        time.Duration
	}{
		// 5m: the minutes starting 10:33 .. 10:37, the current one partial.
		{5 * time.Minute, "10:33", "10:37", 4*time.Minute + 20*time.Second},
		// 1h: 12 five-minute buckets, 09:40 .. 10:35.
		{time.Hour, "09:40", "10:35", 57*time.Minute + 20*time.Second},
		// 6h: the hours starting 05:00 .. 10:00.
		{6 * time.Hour, "05:00", "10:00", 5*time.Hour + 37*time.Minute + 20*time.Second},
	} {
		r := RangeAt(c.d, now, ws)
		if r.First.Format("15:04") != c.first || r.Last.Format("15:04") != c.last || r.Span(now) != c.span {
			t.Errorf("RangeAt(%v) = %s..%s span %v; want %s..%s span %v", c.d, r.First.Format("15:04"), r.Last.Format("15:04"), r.Span(now), c.first, c.last, c.span)
		}
	}
	// Before the boundary 10:00: the complete hours 04:00 .. 09:00.
	r := RangeBefore(6*time.Hour, time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), ws)
	if r.First.Format("15:04") != "04:00" || r.Last.Format("15:04") != "09:00" {
		t.Errorf("RangeBefore = %v..%v", r.First, r.Last)
	}
}

// TestStatusArithmetic: synthetic traffic of known ratios gives exactly the
// formulas' figures.
func TestStatusArithmetic(t *testing.T) {
	d := Definition{ID: 7, Name: "checkout", Service: ptr("checkout"), Objective: Availability, Target: 99.9,
		Period: 30 * 24 * time.Hour, Enabled: true}
	now := time.Date(2026, 12, 1, 10, 37, 20, 0, time.UTC)
	ws := window.Defaults()
	// Period: 1,000,000 events, 400 bad: 40 % of the 1000-event budget.
	period := Sum{Counts: Counts{Good: 999_600, Total: 1_000_000}}
	burn := map[time.Duration]Counts{}
	for _, w := range d.BurnWindows() {
		burn[w] = Counts{Good: 9_900, Total: 10_000} // 1 % bad: 10x on 99.9 %
	}
	burn[5*time.Minute] = Counts{} // no events: null
	s := NewStatus(&d, now, ws, period, burn, nil)
	// The decimal figures come out exactly: a 99.9 % target allows 0.1 %.
	budget := 1000.0
	if s.TotalEvents != 1_000_000 || s.GoodEvents != 999_600 || s.BadEvents != 400 {
		t.Fatalf("counts %+v", s)
	}
	good, total := 999_600.0, 1_000_000.0
	if *s.Compliance != 100*good/total {
		t.Errorf("compliance %v", *s.Compliance)
	}
	eb := s.ErrorBudget
	if eb.TotalEvents != budget || eb.ConsumedEvents != 400 || eb.RemainingEvents != budget-400 ||
		*eb.ConsumedRatio != 400/budget || *eb.RemainingRatio != (budget-400)/budget {
		t.Errorf("budget %+v", eb)
	}
	if got := *s.BurnRates["1h"]; got != 10 {
		t.Errorf("1h burn %v", got)
	}
	if s.BurnRates["5m"] != nil {
		t.Errorf("5m burn without events: %v", *s.BurnRates["5m"])
	}
	for _, k := range []string{"5m", "30m", "1h", "2h", "6h", "1d", "3d"} {
		if _, ok := s.BurnRates[k]; !ok {
			t.Errorf("burn_rates lacks %s", k)
		}
	}
	// 100 bad events over the 1h window's span (57m20s: 12 five-minute
	// buckets, the newest partial) → remaining / (100 / 3440 s).
	if want := 20640.0; s.TimeToExhaustionSeconds == nil || *s.TimeToExhaustionSeconds != want {
		t.Errorf("time to exhaustion %v, want %v", s.TimeToExhaustionSeconds, want)
	}
	if s.PeriodStart != time.Date(2026, 11, 1, 11, 0, 0, 0, time.UTC) || s.Period != "30d" || s.CountedFrom != nil {
		t.Errorf("period start %v, period %s, counted_from %v", s.PeriodStart, s.Period, s.CountedFrom)
	}
	if s.FiringAlerts == nil || s.NotificationChannels == nil || len(s.BurnAlerts) != 4 {
		t.Error("nil slices would be JSON null")
	}

	// Exhausted budget: 0 s; nothing burning: null; no events: nulls.
	s = NewStatus(&d, now, ws, Sum{Counts: Counts{Good: 990, Total: 1000}}, burn, nil)
	if *s.TimeToExhaustionSeconds != 0 || *s.ErrorBudget.RemainingRatio >= 0 {
		t.Errorf("exhausted: %v %v", *s.TimeToExhaustionSeconds, *s.ErrorBudget.RemainingRatio)
	}
	s = NewStatus(&d, now, ws, period, map[time.Duration]Counts{}, nil)
	if s.TimeToExhaustionSeconds != nil {
		t.Errorf("not burning: %v", *s.TimeToExhaustionSeconds)
	}
	s = NewStatus(&d, now, ws, Sum{}, nil, nil)
	if s.Compliance != nil || s.ErrorBudget.ConsumedRatio != nil || s.TimeToExhaustionSeconds != nil {
		t.Error("no events: want nulls")
	}
}

func TestBurning(t *testing.T) {
	// 0.1 % bad on 99.9 % is exactly 1x in decimal, a few ulps under in
	// binary floating point.
	r := BurnRate(Counts{Good: 999, Total: 1000}, 99.9)
	if !Burning(r, 1) {
		t.Errorf("1x burn %v not counted as 1x", *r)
	}
	if Burning(BurnRate(Counts{Good: 9991, Total: 10000}, 99.9), 1) {
		t.Error("0.9x counted as 1x")
	}
	if Burning(nil, 1) {
		t.Error("no events burning")
	}
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"5m", "1h", "30d", "4w", "0m", "-1h", "1.5h", "9223372036854775807m"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err != nil {
			return
		}
		if d <= 0 || d%time.Minute != 0 || d > MaxPeriod {
			t.Fatalf("%q parsed to %v", s, d)
		}
		if back, err := ParseDuration(FormatDuration(d)); err != nil || back != d {
			t.Fatalf("%q: %v does not round-trip (%v, %v)", s, d, back, err)
		}
	})
}

func FuzzParsePolicy(f *testing.F) {
	f.Add(`[{"severity":"page","burn_rate":14.4,"long":"1h","short":"5m"}]`)
	f.Add(`null`)
	f.Add(`[{"severity":"ticket","burn_rate":1e308,"long":"366d","short":"1m"}]`)
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePolicy([]byte(s))
		if err != nil {
			return
		}
		if err := ValidatePolicy(p); err != nil {
			t.Fatalf("ParsePolicy accepted an invalid policy: %v", err)
		}
		b, _ := json.Marshal(p)
		q, err := ParsePolicy(b)
		if err != nil || len(q) != len(p) {
			t.Fatalf("policy does not round-trip: %s: %v", b, err)
		}
	})
}

// TestNoBudgetTargetRefused: a target so close to 100 that it leaves no
// budget would make every burn rate infinite (a 500 for GET /slos, an
// outbox row JSON cannot hold); Validate refuses it and the arithmetic
// answers nil rather than Inf or NaN.
func TestNoBudgetTargetRefused(t *testing.T) {
	d := Definition{Name: "n", Objective: Availability, Target: 99.9999999999, Period: 30 * 24 * time.Hour}
	if err := d.Validate(); err == nil || !strings.HasPrefix(err.Error(), "target:") {
		t.Errorf("Validate: %v", err)
	}
	if r := BurnRate(Counts{Good: 9, Total: 10}, 99.9999999999); r != nil {
		t.Errorf("burn rate %v, want nil", *r)
	}
	if b := ErrorBudget(Counts{Good: 9, Total: 10}, 99.9999999999); b.ConsumedRatio != nil || b.RemainingRatio != nil {
		t.Errorf("budget ratios %v %v, want nil", b.ConsumedRatio, b.RemainingRatio)
	}
	big := 2e15
	d = Definition{Name: "n", Objective: Latency, LatencyThresholdMS: &big, Target: 99, Period: 30 * 24 * time.Hour}
	if err := d.Validate(); err == nil || !strings.HasPrefix(err.Error(), "latency_threshold_ms:") {
		t.Errorf("threshold above the latency bound: %v", err)
	}
}

// TestEdges: the corners of the pure helpers.
func TestEdges(t *testing.T) {
	var d Duration
	for _, in := range []string{`5`, `{"d":"1h"}`} {
		if err := json.Unmarshal([]byte(in), &d); err == nil || !strings.Contains(err.Error(), "duration string") {
			t.Errorf("Duration from %s: %v", in, err)
		}
	}
	if err := json.Unmarshal([]byte(`"90s"`), &d); err == nil || !strings.Contains(err.Error(), "90s") {
		t.Errorf(`Duration from "90s": %v`, err)
	}
	if err := json.Unmarshal([]byte(`"2h"`), &d); err != nil || time.Duration(d) != 2*time.Hour {
		t.Errorf(`Duration from "2h": %v, %v`, time.Duration(d), err)
	}
	// Not whole minutes: Go's form rather than a wrong short one.
	for in, want := range map[time.Duration]string{90 * time.Second: "1m30s", 0: "0s", -time.Hour: "-1h0m0s"} {
		if got := FormatDuration(in); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", in, got, want)
		}
	}
	if p, err := ParsePolicy([]byte(" null ")); err != nil || len(p) != 4 {
		t.Errorf("null policy: %v %v", p, err)
	}
	own := []BurnAlert{{Ticket, 2, Duration(12 * time.Hour), Duration(time.Hour)}}
	if p := (&Definition{BurnAlerts: own}).Policy(); len(p) != 1 || p[0] != own[0] {
		t.Errorf("own policy: %v", p)
	}
	if a, b := (Counts{Good: 3, Total: 5}).Add(Counts{Good: -1, Total: 10}), (Counts{Good: 2, Total: 15}); a != b {
		t.Errorf("Add = %+v, want %+v", a, b)
	}
	// No windows: the defaults; windows in any order: the finest is found
	// when none divides the duration into MinBuckets buckets.
	if got := TableFor(30*time.Minute, nil); got.Name != "5min" {
		t.Errorf("TableFor(30m, nil) = %s", got.Name)
	}
	desc := []window.Window{window.MustParse("1hour"), window.MustParse("5min"), window.MustParse("1min")}
	if got := TableFor(3*time.Minute, desc); got.Name != "1min" {
		t.Errorf("TableFor(3m, descending) = %s", got.Name)
	}
	// A latency status reports counted_from; an availability one never does.
	from := time.Date(2026, 12, 1, 6, 0, 0, 0, time.UTC)
	lat := Definition{Name: "l", Objective: Latency, LatencyThresholdMS: ptr(300.0), Target: 99, Period: 6 * time.Hour}
	now := time.Date(2026, 12, 1, 10, 37, 20, 0, time.UTC)
	if s := NewStatus(&lat, now, nil, Sum{Counts: Counts{Good: 1, Total: 1}, CountedFrom: &from}, nil, nil); s.CountedFrom == nil || !s.CountedFrom.Equal(from) {
		t.Errorf("latency counted_from %v", s.CountedFrom)
	}
	av := lat
	av.Objective, av.LatencyThresholdMS = Availability, nil
	if s := NewStatus(&av, now, nil, Sum{Counts: Counts{Good: 1, Total: 1}, CountedFrom: &from}, nil, nil); s.CountedFrom != nil {
		t.Errorf("availability counted_from %v", s.CountedFrom)
	}
}
