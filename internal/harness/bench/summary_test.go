package bench

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

func TestSummarizeMedians(t *testing.T) {
	a, b, c := sampleReport(), sampleReport(), sampleReport()
	a.Sustained, b.Sustained, c.Sustained = 5000, 10_000, 7000
	a.Steady.FreshP99ms, b.Steady.FreshP99ms = 800, 1200
	c.Steady.Seen = 0 // no probe seen: freshness not measured in run c
	c.Alert = Alert{Measured: true, LatencyMS: 300}
	for i, r := range []*Report{a, b, c} { // the static ceiling's name carries the run's latencies
		r.Ceilings = append(r.Ceilings, Ceiling{Key: ceilStatic, Name: fmt.Sprintf("Fiber static JSON, 32 clients (p99 %d ms)", i), Rate: float64(1000 * (i + 1)), Unit: "req/s"})
	}
	for _, r := range []*Report{a, b, c} {
		r.Steady.API[1].Errors = r.Steady.API[1].Requests // every /alerts request failed
	}
	s := Summarize([]*Report{a, b, c})
	if s.Runs != 3 {
		t.Fatalf("runs %d", s.Runs)
	}
	got := map[string]SummaryFigure{}
	for _, f := range s.Figures {
		got[f.Name] = f
	}
	for _, tc := range []struct {
		name             string
		median, min, max float64
		measured         int
	}{
		{"max sustainable rate", 7000, 5000, 10_000, 3},
		{"freshness p99", 1000, 800, 1200, 2}, // even count: mean of the middle two
		{"alert latency after final", 300, 300, 300, 1},
		{"ceiling: kafka-go fetch drain", 100_000, 100_000, 100_000, 3},
		{"ratio: bridge / kafka", 0.03, 0.03, 0.03, 3},
		{"CPU s per M events: bridge", 2, 2, 2, 3},
		{"ceiling: Fiber static JSON, 32 clients", 2000, 1000, 3000, 3},
	} {
		f, ok := got[tc.name]
		if !ok {
			t.Errorf("%s: missing from %v", tc.name, s.Figures)
			continue
		}
		if f.Median != tc.median || f.Min != tc.min || f.Max != tc.max || f.Measured != tc.measured {
			t.Errorf("%s: median %v min %v max %v measured %d, want %v %v %v %d", tc.name, f.Median, f.Min, f.Max, f.Measured, tc.median, tc.min, tc.max, tc.measured)
		}
	}
	// A failed ceiling and an API route without requests are not figures.
	for _, name := range []string{"ceiling: pgx CopyFrom", "API p99 /alerts"} {
		if _, ok := got[name]; ok {
			t.Errorf("%s should be left out", name)
		}
	}
	if s.Figures[0].Name != "max sustainable rate" {
		t.Errorf("order: first figure %q", s.Figures[0].Name)
	}
	var buf bytes.Buffer
	s.RenderTable(&buf)
	out := strings.Join(strings.Fields(buf.String()), " ")
	for _, want := range []string{"Medians of 3 runs", "max sustainable rate 7k ev/s 5k ev/s – 10k ev/s 3/3",
		"freshness p99 1000.0 ms 800.0 ms – 1200.0 ms 2/3", "ratio: bridge / kafka 0.03 0.03 – 0.03 3/3"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary table lacks %q:\n%s", want, buf.String())
		}
	}
}
