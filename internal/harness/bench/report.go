package bench

import (
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is the result of one run; it is printed as tables and written as
// JSON.
type Report struct {
	Mode       string    `json:"mode"` // "quick" or "full"
	StartedAt  time.Time `json:"started_at"`
	Seconds    float64   `json:"seconds"`
	Machine    Machine   `json:"machine"`
	Settings   Settings  `json:"settings"`
	Ceilings   []Ceiling `json:"ceilings"`
	Steps      []Step    `json:"steps"`
	Sustained  float64   `json:"max_sustainable_events_per_s"` // 0: no step was sustainable
	StopReason string    `json:"ramp_stop_reason"`
	Steady     *Steady   `json:"steady,omitempty"`
	Alert      Alert     `json:"alert"`
	Roles      []Role    `json:"roles"`
	// SustainedRoles: the same over the ramp step of the sustained rate
	// alone (its hold and drain: no probes, no API load).
	SustainedRoles []Role `json:"roles_at_sustained_rate,omitempty"`
	// BridgeAlone: the bridge alone draining a backlog (before the
	// pipeline starts).
	BridgeAlone *BridgeAlone `json:"bridge_alone,omitempty"`
	Stages      []Stage      `json:"stages"`
	Storage     *Storage     `json:"storage,omitempty"`
	Targets     []Target     `json:"targets"`
	// CostTargets: the cost targets of docs/PERFORMANCE.md.
	CostTargets []Target `json:"cost_targets"`
	Notes       []string `json:"notes"`
}

// Settings of the run.
type Settings struct {
	Processors      int       `json:"processors"`
	Shards          int       `json:"shards"`
	Partitions      int       `json:"kafka_partitions"`
	Services        int       `json:"services"`
	Rates           []float64 `json:"rates"`
	HoldSeconds     float64   `json:"hold_seconds"`
	CeilingMessages int       `json:"ceiling_messages"`
	Clients         int       `json:"http_clients"`
}

// Ceiling is one bare-client measurement.
type Ceiling struct {
	Key     string  `json:"key"`
	Name    string  `json:"name"`
	N       int     `json:"n"`
	Seconds float64 `json:"seconds"`
	Rate    float64 `json:"rate"`
	Unit    string  `json:"unit"`
	Note    string  `json:"note,omitempty"`
	Error   string  `json:"error,omitempty"`
}

// Step is one fixed-rate hold of the ramp.
type Step struct {
	Target           float64     `json:"target_events_per_s"`
	Achieved         float64     `json:"offered_events_per_s"` // what the generator produced
	Seconds          float64     `json:"seconds"`
	Produced         float64     `json:"produced"`
	BridgeRate       float64     `json:"bridge_events_per_s"`
	ProcessorRate    float64     `json:"processor_events_per_s"`
	ProjectionRows   float64     `json:"projection_rows_per_s"` // raw events inserted + metric rows upserted
	Lag              LagVerdict  `json:"lag"`
	DrainSeconds     float64     `json:"drain_seconds"` // after the hold, until the lag was back to ~0 (-1: not within the limit)
	GeneratorLimited bool        `json:"generator_limited"`
	Sustainable      bool        `json:"sustainable"`
	Samples          []LagSample `json:"samples"`
}

// Steady is the hold at the highest sustainable rate during which
// freshness and API latency are measured.
type Steady struct {
	Rate       float64    `json:"events_per_s"`
	Seconds    float64    `json:"seconds"`
	Lag        LagVerdict `json:"lag"`
	Probes     int        `json:"probes"`
	Seen       int        `json:"probes_seen"`
	PollMS     float64    `json:"poll_interval_ms"`
	FreshP50ms float64    `json:"freshness_p50_ms"`
	FreshP99ms float64    `json:"freshness_p99_ms"`
	FreshMaxMS float64    `json:"freshness_max_ms"`
	// The same probes split at the start of the 32-client API load, which
	// takes cores from the pipeline: those seen before it (the pipeline's
	// own freshness at this rate) and the rest (with the load, or behind
	// the backlog it left).
	BeforeProbes     int     `json:"probes_before_api_load"`
	FreshBeforeP50ms float64 `json:"freshness_before_api_load_p50_ms"`
	FreshBeforeP99ms float64 `json:"freshness_before_api_load_p99_ms"`
	WithProbes       int     `json:"probes_with_api_load"`
	FreshWithP99ms   float64 `json:"freshness_with_api_load_p99_ms"`
	// The probes' own Kafka writes (acks=all), part of their freshness:
	// the produce path's share, before the pipeline sees the event.
	ProduceP50ms float64      `json:"probe_produce_p50_ms"`
	ProduceP99ms float64      `json:"probe_produce_p99_ms"`
	API          []HTTPResult `json:"api"`
	Stages       []StageDelay `json:"stage_delays"`
}

// Alert is the alert-latency measurement.
type Alert struct {
	Measured        bool    `json:"measured"`
	LatencyMS       float64 `json:"latency_ms,omitempty"`        // alert on Kafka − window marked final in KV
	SinceDeadlineMS float64 `json:"since_deadline_ms,omitempty"` // alert on Kafka − (window end + ALLOWED_LATENESS)
	Note            string  `json:"note"`
}

// Role is the resource use of one role's processes during the ramp and
// the steady hold.
type Role struct {
	Role          string  `json:"role"`
	Processes     int     `json:"processes"`
	CPUSeconds    float64 `json:"cpu_seconds"`
	Events        float64 `json:"events"`
	CPUPerMillion float64 `json:"cpu_seconds_per_million_events"`
	PeakRSSMB     float64 `json:"peak_rss_mb"`
	Note          string  `json:"note,omitempty"`
}

// Stage is one stage's best observed rate against its ceiling.
type Stage struct {
	Stage       string  `json:"stage"`
	Rate        float64 `json:"rate"`
	Ceiling     string  `json:"ceiling"`
	CeilingRate float64 `json:"ceiling_rate"`
	Ratio       float64 `json:"ratio"`
	// Saturated: the stage fell behind its input in some step, so its
	// best rate is its capacity under this load; else a lower bound.
	Saturated bool   `json:"saturated"`
	Note      string `json:"note,omitempty"`
}

// Target is one line of docs/ARCHITECTURE.md §10 or of the cost targets.
type Target struct {
	Target   string `json:"target"`
	Goal     string `json:"goal"`
	Measured string `json:"measured"`
	Met      string `json:"met"` // yes, no, n/a
}

// RenderTable writes r as plain-text tables.
func (r *Report) RenderTable(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "StackLens benchmark (%s mode), %s, %.0f s\n", r.Mode, r.StartedAt.UTC().Format(time.RFC3339), r.Seconds)
	fmt.Fprintf(w, "machine: %d CPUs (%s), %d MB, Linux %s, %s, load average %s at start, %s at end\n",
		m.CPUs, m.CPUModel, m.MemoryMB, m.Kernel, m.GoVersion, m.LoadAtStart, m.LoadAtEnd)
	s := r.Settings
	fmt.Fprintf(w, "settings: %d processor(s), %d shards, %d Kafka partitions, %d services, hold %.0f s per step, ceilings on %d messages, %d HTTP clients\n\n",
		s.Processors, s.Shards, s.Partitions, s.Services, s.HoldSeconds, s.CeilingMessages, s.Clients)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "Ceilings (bare clients, same run, same infrastructure):")
	fmt.Fprintln(tw, "ceiling\tn\tseconds\trate\t")
	for _, c := range r.Ceilings {
		rate := fmt.Sprintf("%s %s", num(c.Rate), c.Unit)
		if c.Error != "" {
			rate = "failed: " + c.Error
		}
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%s\t\n", c.Name, c.N, c.Seconds, rate)
	}
	_ = tw.Flush()

	fmt.Fprintln(w, "\nRamp (open-loop load, end-to-end lag = produced − counted by the processors):")
	fmt.Fprintln(tw, "target ev/s\toffered\tbridge\tprocessor\tproj rows/s\tlag slope/s\tmax lag\tdrain s\tverdict\t")
	for _, st := range r.Steps {
		verdict := "sustainable"
		switch {
		case st.GeneratorLimited:
			verdict = "generator-limited"
		case !st.Sustainable:
			verdict = "NOT sustainable (" + st.Lag.Reason + ")"
		}
		drain := fmt.Sprintf("%.1f", st.DrainSeconds)
		if st.DrainSeconds < 0 {
			drain = "—"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", num(st.Target), num(st.Achieved), num(st.BridgeRate), num(st.ProcessorRate),
			num(st.ProjectionRows), num(st.Lag.Slope), num(st.Lag.MaxLag), drain, verdict)
	}
	_ = tw.Flush()
	if r.Sustained > 0 {
		fmt.Fprintf(w, "maximum sustainable rate: %s events/s (%s)\n", num(r.Sustained), r.StopReason)
	} else {
		fmt.Fprintf(w, "maximum sustainable rate: none of the steps (%s)\n", r.StopReason)
	}

	if st := r.Steady; st != nil {
		fmt.Fprintf(w, "\nWhile ingesting %s events/s for %.0f s (lag %s):\n", num(st.Rate), st.Seconds, boundedWord(st.Lag))
		fmt.Fprintf(w, "freshness (probe produced → visible at /metrics?service=<probe>): p50 %.0f ms, p99 %.0f ms, max %.0f ms (%d of %d probes seen, poll every %.0f ms)\n",
			st.FreshP50ms, st.FreshP99ms, st.FreshMaxMS, st.Seen, st.Probes, st.PollMS)
		fmt.Fprintf(w, "of which the probes' Kafka write (acks=all): p50 %.0f ms, p99 %.0f ms\n", st.ProduceP50ms, st.ProduceP99ms)
		fmt.Fprintf(w, "probes seen before the API load: p50 %.0f ms, p99 %.0f ms (%d probes); with it or after it: p99 %.0f ms (%d probes)\n",
			st.FreshBeforeP50ms, st.FreshBeforeP99ms, st.BeforeProbes, st.FreshWithP99ms, st.WithProbes)
		if len(st.Stages) > 0 {
			fmt.Fprintf(w, "freshness by stage (mean and p99 per batch of its oldest message's wait): %s\n", stageDelayText(st.Stages))
		}
		fmt.Fprintln(tw, "API endpoint\tclients\trequests\treq/s\tp50 ms\tp99 ms\tmax ms\terrors\t")
		for _, h := range st.API {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%.2f\t%.2f\t%.1f\t%d\t\n", h.Name, h.Clients, h.Requests, num(h.RPS), h.P50ms, h.P99ms, h.MaxMS, h.Errors)
		}
		_ = tw.Flush()
		for _, h := range st.API {
			if h.Errors > 0 {
				fmt.Fprintf(w, "  %s: %d errors %v (errors are left out of the latencies)\n", h.Name, h.Errors, h.ErrorKinds)
			}
		}
	}
	if r.Alert.Measured {
		fmt.Fprintf(w, "\nalert latency: %.0f ms after the window was marked final (%.0f ms after window end + allowed lateness)\n", r.Alert.LatencyMS, r.Alert.SinceDeadlineMS)
	} else {
		fmt.Fprintf(w, "\nalert latency: not measured (%s)\n", r.Alert.Note)
	}

	fmt.Fprintln(w, "\nResources per process (ramp + steady hold; CPU from /proc/<pid>/stat, of exited load generators from their rusage; peak RSS = VmHWM):")
	fmt.Fprintln(tw, "role\tprocesses\tCPU s\tevents\tCPU s / M events\tpeak RSS MB\t")
	for _, ro := range r.Roles {
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%s\t%.1f\t%.0f\t\n", ro.Role, ro.Processes, ro.CPUSeconds, num(ro.Events), ro.CPUPerMillion, ro.PeakRSSMB)
	}
	_ = tw.Flush()
	for _, ro := range r.Roles {
		if ro.Note != "" {
			fmt.Fprintf(w, "  %s: %s\n", ro.Role, ro.Note)
		}
	}

	if len(r.SustainedRoles) > 0 {
		fmt.Fprintf(w, "\nResources per process at the sustained rate (its ramp step alone, %s ev/s: hold and drain, no probes, no API load):\n", num(r.Sustained))
		fmt.Fprintln(tw, "role\tprocesses\tCPU s\tevents\tCPU s / M events\t")
		for _, ro := range r.SustainedRoles {
			fmt.Fprintf(tw, "%s\t%d\t%.1f\t%s\t%.1f\t\n", ro.Role, ro.Processes, ro.CPUSeconds, num(ro.Events), ro.CPUPerMillion)
		}
		_ = tw.Flush()
	}

	fmt.Fprintln(w, "\nStages against their ceilings:")
	fmt.Fprintln(tw, "stage\tbest rate\tceiling\tceiling rate\tratio\t")
	for _, sg := range r.Stages {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", sg.Stage, num(sg.Rate), sg.Ceiling, num(sg.CeilingRate), ratio(sg.Ratio))
	}
	_ = tw.Flush()
	for _, sg := range r.Stages {
		if sg.Note != "" {
			fmt.Fprintf(w, "  %s: %s\n", sg.Stage, sg.Note)
		}
	}

	if a := r.BridgeAlone; a != nil {
		if a.Error != "" {
			fmt.Fprintf(w, "\nbridge alone: not measured (%s)\n", a.Error)
		} else {
			fmt.Fprintf(w, "\nbridge alone (nothing else of the pipeline running): a backlog of %d messages in %.2f s after %.2f s of start-up = %s events/s; CPU-s per million events: bridge %.1f, nats-server %.1f, kafka-broker %.1f\n",
				a.Messages, a.Seconds, a.StartupSeconds, num(a.Rate), a.CPUPerMillion, a.NATSCPUPerMillion, a.KafkaCPUPerMillion)
		}
	}
	if st := r.Storage; st != nil && st.Events > 0 {
		fmt.Fprintf(w, "\nBytes per event (%d events of the run; average original message %.1f B over %d sampled):\n", st.Events, st.MessageBytes, st.Sampled)
		fmt.Fprintln(tw, "store\tbytes\tB/event\t× message\tlogical B/event\t")
		for _, sb := range st.Stores {
			if sb.Error != "" {
				fmt.Fprintf(tw, "%s\tfailed: %s\t\t\t\t\n", sb.Store, sb.Error)
				continue
			}
			logical := "—"
			if sb.Logical > 0 {
				logical = fmt.Sprintf("%.1f", sb.LogicalPerEvent)
			}
			fmt.Fprintf(tw, "%s\t%s\t%.1f\t%s\t%s\t\n", sb.Store, num(float64(sb.Bytes)), sb.PerEvent, ratio(sb.Ratio), logical)
		}
		_ = tw.Flush()
	}

	renderTargets(w, "docs/ARCHITECTURE.md §10 targets:", r.Targets)
	if len(r.CostTargets) > 0 {
		renderTargets(w, "Cost targets (docs/PERFORMANCE.md), each against a figure of this run:", r.CostTargets)
	}
	if len(r.Notes) > 0 {
		fmt.Fprintln(w, "\nNotes:")
		for _, n := range r.Notes {
			fmt.Fprintf(w, "- %s\n", n)
		}
	}
}

func renderTargets(w io.Writer, title string, ts []Target) {
	fmt.Fprintln(w, "\n"+title)
	tl := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tl, "target\tgoal\tmeasured\tmet")
	for _, t := range ts {
		fmt.Fprintf(tl, "%s\t%s\t%s\t%s\n", t.Target, t.Goal, t.Measured, t.Met)
	}
	_ = tl.Flush()
}

func boundedWord(v LagVerdict) string {
	if v.Bounded {
		return "bounded"
	}
	return "NOT bounded: " + v.Reason
}

// num formats a rate or count compactly: 123, 12.3k, 1.23M.
func num(v float64) string {
	a := math.Abs(v)
	switch {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "—"
	case a >= 1e6:
		return trimZero(fmt.Sprintf("%.2f", v/1e6)) + "M"
	case a >= 1e4:
		return trimZero(fmt.Sprintf("%.1f", v/1e3)) + "k"
	case a >= 1e3:
		return trimZero(fmt.Sprintf("%.2f", v/1e3)) + "k"
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

func trimZero(s string) string {
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

func ratio(v float64) string {
	if v <= 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return "—"
	}
	return fmt.Sprintf("%.2f", v)
}
