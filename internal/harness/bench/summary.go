package bench

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
)

// Summary condenses several runs of the same benchmark into medians, so
// that a figure is reported with its run-to-run spread rather than from a
// single, possibly unlucky, run.
type Summary struct {
	Runs    int             `json:"runs"`
	Figures []SummaryFigure `json:"figures"`
}

// SummaryFigure is one figure across the runs. Values holds one entry per
// run that measured it (a run that did not, e.g. no probe seen, is left
// out, and Measured says how many did).
type SummaryFigure struct {
	Name     string    `json:"name"`
	Unit     string    `json:"unit"`
	Values   []float64 `json:"values"`
	Measured int       `json:"runs_measured"`
	Median   float64   `json:"median"`
	Min      float64   `json:"min"`
	Max      float64   `json:"max"`
}

// figure is one named value of a report.
type figure struct {
	name, unit string
	v          float64
}

// figures lists the headline values of r in a fixed order: the docs/ARCHITECTURE.md §10
// targets, each ceiling, each stage's ratio, the cost per process and of
// the own processes, the cost targets' ratios, the bridge alone and the
// bytes per event of every store.
func (r *Report) figures() []figure {
	var out []figure
	add := func(name, unit string, v float64, ok bool) {
		if ok && !math.IsNaN(v) && !math.IsInf(v, 0) {
			out = append(out, figure{name, unit, v})
		}
	}
	add("max sustainable rate", "ev/s", r.Sustained, true)
	if st := r.Steady; st != nil {
		add("freshness p50", "ms", st.FreshP50ms, st.Seen > 0)
		add("freshness p99", "ms", st.FreshP99ms, st.Seen > 0)
		add("freshness: probes' Kafka write p99", "ms", st.ProduceP99ms, st.Seen > 0)
		add("freshness p99 before the API load", "ms", st.FreshBeforeP99ms, st.BeforeProbes > 0)
		add("freshness p99 with the API load", "ms", st.FreshWithP99ms, st.WithProbes > 0)
		for _, d := range st.Stages {
			add("delay "+d.Stage, "ms", d.MeanMS, d.Batches > 0)
			add("delay p99 "+d.Stage, "ms", d.P99MS, d.Batches > 0)
		}
		for _, h := range st.API {
			add("API p99 "+h.Name, "ms", h.P99ms, h.Requests > h.Errors)
		}
	}
	add("alert latency after final", "ms", r.Alert.LatencyMS, r.Alert.Measured)
	for _, c := range r.Ceilings {
		name := c.Name
		if c.Key == ceilStatic {
			// Its name carries this run's latencies.
			name, _, _ = strings.Cut(name, " (")
		}
		add("ceiling: "+name, c.Unit, c.Rate, c.Error == "")
	}
	for _, s := range r.Stages {
		add("ratio: "+s.Stage+" / "+s.Ceiling, "×", s.Ratio, s.Ratio > 0)
	}
	for _, ro := range r.Roles {
		add("CPU s per M events: "+ro.Role, "s", ro.CPUPerMillion, ro.CPUPerMillion > 0)
		add("peak RSS: "+ro.Role, "MB", ro.PeakRSSMB, ro.PeakRSSMB > 0)
	}
	own, ok := ownCPU(r.Roles)
	add("CPU s per M events: own processes (roles + PostgreSQL)", "s", own, ok)
	for _, ro := range r.SustainedRoles {
		add("CPU s per M events at the sustained rate: "+ro.Role, "s", ro.CPUPerMillion, ro.CPUPerMillion > 0)
	}
	own, ok = ownCPU(r.SustainedRoles)
	add("CPU s per M events at the sustained rate: own processes", "s", own, ok)
	_, _, raw, ok := r.rawPath(r.Roles)
	add("ratio: raw-event path CPU per event / pgx CopyFrom wall per row", "×", raw, ok)
	_, _, raw, ok = r.rawPath(r.SustainedRoles)
	add("ratio at the sustained rate: raw-event path / pgx CopyFrom wall per row", "×", raw, ok)
	rs, _ := r.apiRatios()
	for _, a := range rs {
		add("ratio: API p99 "+a.name+" / static JSON p99", "×", a.ratio, true)
	}
	if a := r.BridgeAlone; a != nil {
		add("bridge alone", "ev/s", a.Rate, a.Error == "" && a.Rate > 0)
		add("CPU s per M events: bridge alone", "s", a.CPUPerMillion, a.Error == "" && a.CPUPerMillion > 0)
	}
	if st := r.Storage; st != nil {
		for _, sb := range st.Stores {
			add("bytes per event: "+sb.Store, "B", sb.PerEvent, sb.Error == "" && sb.PerEvent > 0)
		}
	}
	_, rows, ok := r.rawRows()
	add("× message: analytics_events row + indexes", "×", rows, ok)
	return out
}

// Summarize computes the medians of the runs' figures, in the order of
// their first appearance.
func Summarize(reports []*Report) *Summary {
	s := &Summary{Runs: len(reports)}
	idx := map[string]int{}
	for _, r := range reports {
		for _, f := range r.figures() {
			i, ok := idx[f.name]
			if !ok {
				i = len(s.Figures)
				idx[f.name] = i
				s.Figures = append(s.Figures, SummaryFigure{Name: f.name, Unit: f.unit})
			}
			s.Figures[i].Values = append(s.Figures[i].Values, f.v)
		}
	}
	for i := range s.Figures {
		f := &s.Figures[i]
		f.Measured = len(f.Values)
		sorted := slices.Sorted(slices.Values(f.Values))
		f.Min, f.Max = sorted[0], sorted[len(sorted)-1]
		f.Median = median(sorted)
	}
	return s
}

// median of sorted values: the middle one, or the mean of the two middle
// ones.
func median(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// RenderTable writes the medians with their spread.
func (s *Summary) RenderTable(w io.Writer) {
	fmt.Fprintf(w, "\nMedians of %d runs (min–max across runs):\n", s.Runs)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tmedian\tmin – max\truns")
	for _, f := range s.Figures {
		fmt.Fprintf(tw, "%s\t%s\t%s – %s\t%d/%d\n", f.Name, fmtUnit(f.Median, f.Unit), fmtUnit(f.Min, f.Unit), fmtUnit(f.Max, f.Unit), f.Measured, s.Runs)
	}
	_ = tw.Flush()
}

func fmtUnit(v float64, unit string) string {
	switch unit {
	case "×":
		return ratio(v)
	case "ms", "s", "MB":
		return fmt.Sprintf("%.1f %s", v, unit)
	default:
		return num(v) + " " + unit
	}
}
