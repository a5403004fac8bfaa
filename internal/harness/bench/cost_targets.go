package bench

import (
	"fmt"
	"strings"
)

// The cost targets of docs/PERFORMANCE.md ("Cost targets"): what an event
// may cost on the 2-core development machine, each set against a figure
// of the same run.
const (
	goalOwnCPU      = 35.0   // CPU-seconds per million events, roles + PostgreSQL
	goalRawPath     = 2.0    // × the pgx CopyFrom ceiling's wall time per row
	goalSustained   = 20_000 // events/s, bounded lag
	goalCPUBound    = 0.9    // sustained ÷ the machine's CPU bound
	goalBridgeAlone = 0.8    // × the atomic-batch ceiling
	goalFreshP99MS  = 500.0
	goalAPIRatio    = 1.25 // endpoint p99 ÷ static JSON p99
	goalStream      = 2.0  // stream bytes per event ÷ message
	goalRawRows     = 1.5  // analytics_events heap + indexes per event ÷ message
)

// ownRoles are the pipeline's own processes: what a deployment runs
// besides its brokers and its load.
var ownRoles = []string{"bridge", "processor", "projections", "api", "postgresql"}

// staticName begins the name of the static-JSON route's result in the
// steady hold's API load.
const staticName = "static JSON"

// Names of the stages the targets read.
const (
	stageEndToEnd    = "end to end (sustained)"
	stageBridgeAlone = "bridge alone (backlog drain)"
)

func roleCPU(roles []Role, name string) (float64, bool) {
	for _, ro := range roles {
		if ro.Role == name && ro.CPUPerMillion > 0 {
			return ro.CPUPerMillion, true
		}
	}
	return 0, false
}

// ownCPU is the CPU-seconds per million events of ownRoles in roles (the
// run's or the sustained step's); false unless every one was measured.
func ownCPU(roles []Role) (float64, bool) {
	sum := 0.0
	for _, name := range ownRoles {
		v, ok := roleCPU(roles, name)
		if !ok {
			return 0, false
		}
		sum += v
	}
	return sum, true
}

// rawPath is the CPU per event of projections + PostgreSQL in roles (µs)
// and its ratio to the pgx CopyFrom ceiling's wall time per row (µs).
func (r *Report) rawPath(roles []Role) (perEvent, perRow, ratio float64, ok bool) {
	p, ok1 := roleCPU(roles, "projections")
	pg, ok2 := roleCPU(roles, "postgresql")
	c, ok3 := r.ceiling(ceilCopy)
	if !ok1 || !ok2 || !ok3 {
		return 0, 0, 0, false
	}
	perRow = 1e6 / c.Rate
	return p + pg, perRow, (p + pg) / perRow, true
}

// apiRatio is one dashboard endpoint's p99 against the static route's,
// measured in the same hold.
type apiRatio struct {
	name  string
	p99   float64
	ratio float64
}

// apiRatios returns every endpoint's ratio and the static p99 (0 when the
// static route was not measured).
func (r *Report) apiRatios() ([]apiRatio, float64) {
	st := r.Steady
	if st == nil {
		return nil, 0
	}
	_, sr := worstAPI(st)
	if sr.Requests <= sr.Errors || sr.P99ms <= 0 {
		return nil, 0
	}
	var out []apiRatio
	for _, h := range st.API {
		if isStatic(h) || h.Requests <= h.Errors {
			continue
		}
		out = append(out, apiRatio{h.Name, h.P99ms, h.P99ms / sr.P99ms})
	}
	return out, sr.P99ms
}

func (r *Report) store(name string) (StoreBytes, bool) {
	if r.Storage == nil {
		return StoreBytes{}, false
	}
	for _, sb := range r.Storage.Stores {
		if sb.Store == name && sb.Error == "" && sb.PerEvent > 0 {
			return sb, true
		}
	}
	return StoreBytes{}, false
}

// rawRows is analytics_events' heap and indexes per event and their
// ratio to the original message.
func (r *Report) rawRows() (perEvent, ratio float64, ok bool) {
	t, ok1 := r.store("PostgreSQL analytics_events table")
	i, ok2 := r.store("PostgreSQL analytics_events indexes")
	if !ok1 || !ok2 || r.Storage.MessageBytes <= 0 {
		return 0, 0, false
	}
	return t.PerEvent + i.PerEvent, (t.PerEvent + i.PerEvent) / r.Storage.MessageBytes, true
}

// costTargets compares the run with the cost targets; a figure the run
// did not measure is "n/a", never met.
func costTargets(r *Report) []Target {
	yes := func(b bool) string { return pick(b, "yes", "no") }
	na := func(t, goal string) Target { return Target{t, goal, "not measured", "n/a"} }
	var out []Target

	// The run's figures decide; the sustained step's, when measured, must
	// meet the goal too and are shown after them.
	t, goal := "own processes (bridge + processor + projections + api + PostgreSQL)", fmt.Sprintf("≤ %.0f CPU-s per M events", goalOwnCPU)
	if v, ok := ownCPU(r.Roles); ok {
		var parts []string
		for _, name := range ownRoles {
			c, _ := roleCPU(r.Roles, name)
			parts = append(parts, fmt.Sprintf("%s %.1f", name, c))
		}
		m, met := fmt.Sprintf("%.1f (%s)", v, strings.Join(parts, ", ")), v <= goalOwnCPU
		if sv, ok := ownCPU(r.SustainedRoles); ok {
			m += fmt.Sprintf("; %.1f at the sustained rate's step", sv)
			met = met && sv <= goalOwnCPU
		}
		out = append(out, Target{t, goal, m, yes(met)})
	} else {
		out = append(out, na(t, goal))
	}

	t, goal = "raw-event path (projections + PostgreSQL CPU per event)", fmt.Sprintf("≤ %.0f × pgx CopyFrom wall per row", goalRawPath)
	if ev, row, x, ok := r.rawPath(r.Roles); ok {
		m, met := fmt.Sprintf("%.1f µs ÷ %.1f µs = %.2f ×", ev, row, x), x <= goalRawPath
		if _, _, sx, ok := r.rawPath(r.SustainedRoles); ok {
			m += fmt.Sprintf("; %.2f × at the sustained rate's step", sx)
			met = met && sx <= goalRawPath
		}
		out = append(out, Target{t, goal, m, yes(met)})
	} else {
		out = append(out, na(t, goal))
	}

	t, goal = "sustained end to end, bounded lag", fmt.Sprintf("≥ %s ev/s and ≥ %.1f of the CPU bound", num(goalSustained), goalCPUBound)
	if s, ok := r.stage(stageEndToEnd); ok && r.Sustained > 0 && s.Ratio > 0 {
		// The ramp judges a step without the API load; the steady hold
		// repeats the sustained rate with it, and must keep the lag bounded
		// too for the product's whole load to count as sustained.
		held, heldOK := "", true
		if st := r.Steady; st != nil && st.Rate == r.Sustained {
			held, heldOK = "; held with the API load: lag "+boundedWord(st.Lag), st.Lag.Bounded
		}
		out = append(out, Target{t, goal, fmt.Sprintf("%s ev/s, %.2f of the CPU bound%s", num(r.Sustained), s.Ratio, held),
			yes(r.Sustained >= goalSustained && s.Ratio >= goalCPUBound && heldOK)})
	} else {
		out = append(out, Target{t, goal, "no step sustained", "no"})
	}

	t, goal = stageBridgeAlone, fmt.Sprintf("≥ %.1f × the atomic-batch ceiling", goalBridgeAlone)
	if s, ok := r.stage(stageBridgeAlone); ok && s.Ratio > 0 {
		out = append(out, Target{t, goal, fmt.Sprintf("%s ev/s = %.2f × %s", num(s.Rate), s.Ratio, num(s.CeilingRate)), yes(s.Ratio >= goalBridgeAlone)})
	} else {
		out = append(out, na(t, goal))
	}

	t, goal = "freshness p99 at the sustained rate", fmt.Sprintf("≤ %.0f ms", goalFreshP99MS)
	if st := r.Steady; st != nil && st.Seen > 0 {
		m := fmt.Sprintf("%.0f ms at %s ev/s", st.FreshP99ms, num(st.Rate))
		if st.BeforeProbes > 0 && st.WithProbes > 0 {
			// The verdict stays on every probe; the split says how much
			// of the tail is the API load's.
			m += fmt.Sprintf(" (before the API load %.0f ms, %d probes; with it %.0f ms, %d)", st.FreshBeforeP99ms, st.BeforeProbes, st.FreshWithP99ms, st.WithProbes)
		}
		out = append(out, Target{t, goal, m, yes(st.FreshP99ms <= goalFreshP99MS)})
	} else {
		out = append(out, na(t, goal))
	}

	t, goal = "dashboard endpoints' p99 ÷ static JSON p99", fmt.Sprintf("≤ %.2f × each", goalAPIRatio)
	if rs, static := r.apiRatios(); len(rs) > 0 {
		met := true
		var parts []string
		for _, a := range rs {
			name, _, _ := strings.Cut(a.name, " (")
			parts = append(parts, fmt.Sprintf("%s %.2f", name, a.ratio))
			met = met && a.ratio <= goalAPIRatio
		}
		out = append(out, Target{t, goal, fmt.Sprintf("%s (static %.1f ms)", strings.Join(parts, ", "), static), yes(met)})
	} else {
		out = append(out, na(t, goal))
	}

	t, goal = "stream bytes per event ÷ message", fmt.Sprintf("≤ %.1f ×", goalStream)
	if sb, ok := r.store("JetStream stream STACKLENS_EVENTS"); ok && sb.Ratio > 0 {
		out = append(out, Target{t, goal, fmt.Sprintf("%.0f B = %.2f ×", sb.PerEvent, sb.Ratio), yes(sb.Ratio <= goalStream)})
	} else {
		out = append(out, na(t, goal))
	}

	t, goal = "analytics_events row + indexes ÷ message", fmt.Sprintf("≤ %.1f ×", goalRawRows)
	if b, x, ok := r.rawRows(); ok {
		out = append(out, Target{t, goal, fmt.Sprintf("%.0f B = %.2f ×", b, x), yes(x <= goalRawRows)})
	} else {
		out = append(out, na(t, goal))
	}
	return out
}
