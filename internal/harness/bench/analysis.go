package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/stacklens/stacklens/internal/harness/procstat"
)

// snap is the resource use and counters at one moment.
type snap struct {
	t     time.Time
	procs map[string]ProcUsage // by role process name
	pg    ProcUsage
	lg    ProcUsage // every load generator process so far
	lgN   int
	self  time.Duration
	c     counters
}

func (r *run) snapshot() snap {
	s := snap{t: time.Now(), procs: map[string]ProcUsage{}, self: procstat.ProcessCPU()}
	for _, p := range append(r.all(), r.infra()...) {
		s.procs[p.name] = p.usage()
	}
	s.lg, s.lgN = r.loadgenUsage()
	if r.pgPID == 0 {
		r.pgPID = findProcess(filepath.Join(r.dir, "postgres"))
	}
	if r.pgPID != 0 {
		s.pg = treeUsage(r.pgPID)
	}
	s.c = r.sampleOK(context.Background())
	return s
}

// resources fills the per-role tables: over the ramp and the steady hold
// (a: after the warm-up, b: after the steady hold), and over the ramp step
// of the sustained rate when there is one.
func (r *run) resources(a, b snap) {
	r.rep.Roles = r.roleTable(a, b)
	if folded, pcpu := b.c.folded-a.c.folded, r.processorCPU(a, b); pcpu > 0 {
		r.procPerCore = folded / pcpu.Seconds()
	}
	if s := r.sustainedStep; s != nil {
		r.rep.SustainedRoles = r.roleTable(s[0], s[1])
	}
}

func (r *run) processorCPU(a, b snap) time.Duration {
	var cpu time.Duration
	for _, p := range r.processors {
		cpu += b.procs[p.name].CPU - a.procs[p.name].CPU
	}
	return cpu
}

// roleTable is every process's CPU between two snapshots, per million
// events produced between them.
func (r *run) roleTable(a, b snap) []Role {
	var out []Role
	events := b.c.produced - a.c.produced
	role := func(name string, n int, cpu time.Duration, rss int64, note string) Role {
		ro := Role{Role: name, Processes: n, CPUSeconds: cpu.Seconds(), Events: events, PeakRSSMB: float64(rss) / (1 << 20), Note: note}
		if events > 0 {
			ro.CPUPerMillion = ro.CPUSeconds / events * 1e6
		}
		return ro
	}
	one := func(p *roleProc) (time.Duration, int64) {
		return b.procs[p.name].CPU - a.procs[p.name].CPU, b.procs[p.name].PeakRSS
	}
	cpu, rss := one(r.bridge)
	out = append(out, role("bridge", 1, cpu, rss, ""))
	var prss int64
	for _, p := range r.processors {
		prss += b.procs[p.name].PeakRSS
	}
	note := ""
	if len(r.processors) > 1 {
		note = "peak RSS summed over the processor processes"
	}
	out = append(out, role("processor", len(r.processors), r.processorCPU(a, b), prss, note))
	cpu, rss = one(r.projections)
	out = append(out, role("projections", 1, cpu, rss, ""))
	cpu, rss = one(r.api)
	out = append(out, role("api", 1, cpu, rss, "includes serving the 32-client API load and the probe polls of the steady hold, and the alert engine"))
	if r.pgPID != 0 {
		out = append(out, role("postgresql", 1, b.pg.CPU-a.pg.CPU, b.pg.PeakRSS,
			"postmaster, live backends and reaped children; peak RSS is the largest single process (they share buffers)"))
	}
	for _, p := range r.infra() {
		cpu, rss = one(p)
		out = append(out, role(p.name, 1, cpu, rss, ""))
	}
	out = append(out, role("loadgen", b.lgN-a.lgN, b.lg.CPU-a.lg.CPU, b.lg.PeakRSS,
		"one `stacklens loadgen` process per hold; peak RSS is the largest of them"))
	out = append(out, role("bench", 1, b.self-a.self, SelfPeakRSS(),
		"the harness itself: probes, the 32-client API load, scrapes and offset queries every second; peak RSS includes the ceiling phase"))
	return out
}

// ceiling is the measured ceiling of key (false when it failed).
func (r *Report) ceiling(key string) (Ceiling, bool) {
	for _, c := range r.Ceilings {
		if c.Key == key && c.Error == "" && c.Rate > 0 {
			return c, true
		}
	}
	return Ceiling{}, false
}

// stage is the stage named name, if the run has it.
func (r *Report) stage(name string) (Stage, bool) {
	for _, s := range r.Stages {
		if s.Stage == name {
			return s, true
		}
	}
	return Stage{}, false
}

// stages compares each stage's best observed rate with its ceiling. Under
// open-loop load a stage's rate is what it was offered unless it fell
// behind, so a stage that kept up at every step gives a lower bound of its
// capacity, not the capacity.
func (r *run) stages() {
	steps := append([]Step(nil), r.rep.Steps...)
	if r.rep.Steady != nil {
		steps = append(steps, r.steadyStep)
	}
	best := func(rate func(Step) float64, upstream func(Step) float64) (float64, bool) {
		var b float64
		saturated := false
		for _, s := range steps {
			b = max(b, rate(s))
			if up := upstream(s); up > 0 && rate(s) < 0.9*up {
				saturated = true
			}
		}
		return b, saturated
	}
	lower := "kept up with its input at every step: a lower bound of its capacity"
	sat := "fell behind its input in at least one step: its best rate is its capacity under this load"

	bridge, bsat := best(func(s Step) float64 { return s.BridgeRate }, func(s Step) float64 { return s.Achieved })
	kf, ok1 := r.rep.ceiling(ceilKafka)
	jb, ok2 := r.rep.ceiling(ceilBatch)
	if ok1 && ok2 {
		c, name := kf.Rate, "kafka-go fetch drain"
		if jb.Rate < c {
			c, name = jb.Rate, "JetStream atomic batch publish"
		}
		r.rep.Stages = append(r.rep.Stages, Stage{Stage: "bridge", Rate: bridge, Ceiling: "min(kafka fetch, JetStream batch) = " + name,
			CeilingRate: c, Ratio: bridge / c, Saturated: bsat, Note: pick(bsat, sat, lower)})
	}
	if a := r.alone; a != nil && a.Error == "" && a.Rate > 0 {
		if jb, ok := r.rep.ceiling(ceilBatch); ok {
			r.rep.Stages = append(r.rep.Stages, Stage{Stage: stageBridgeAlone, Rate: a.Rate, Ceiling: "JetStream atomic batch publish",
				CeilingRate: jb.Rate, Ratio: a.Rate / jb.Rate, Saturated: true,
				Note: fmt.Sprintf("the bridge alone drained %d messages from Kafka into the stream, nothing else of the pipeline running: its capacity; %.1f CPU-s per million events", a.Messages, a.CPUPerMillion)})
		}
	}
	proc, psat := best(func(s Step) float64 { return s.ProcessorRate }, func(s Step) float64 { return s.BridgeRate })
	if ca, ok := r.rep.ceiling(ceilConsume); ok {
		r.rep.Stages = append(r.rep.Stages, Stage{Stage: "processor", Rate: proc, Ceiling: "bare consume-and-ack", CeilingRate: ca.Rate,
			Ratio: proc / ca.Rate, Saturated: psat, Note: pick(psat, sat, lower)})
	}
	rows, _ := best(func(s Step) float64 { return s.ProjectionRows }, func(Step) float64 { return 0 })
	if cf, ok := r.rep.ceiling(ceilCopy); ok {
		r.rep.Stages = append(r.rep.Stages, Stage{Stage: "projections (rows/s)", Rate: rows, Ceiling: "pgx CopyFrom", CeilingRate: cf.Rate,
			Ratio: rows / cf.Rate, Note: "raw events inserted + metric rows upserted per second, as offered by the load: a lower bound of its capacity"})
	}
	if st := r.rep.Steady; st != nil {
		worst, static := worstAPI(st)
		if worst > 0 && static.Requests > 0 {
			r.rep.Stages = append(r.rep.Stages, Stage{Stage: "api p99 ms (worst endpoint)", Rate: worst, Ceiling: "static JSON p99 ms, ingesting", CeilingRate: static.P99ms,
				Ratio: static.P99ms / worst, Note: "latency: ratio = static p99 ÷ API p99 (1 = as fast as static JSON); both measured with 32 clients during the steady hold, the static route served by the " + r.staticWhere})
		}
	}
}

// cpuBound adds the machine's own bound on the end-to-end rate: every
// process of the run — roles, PostgreSQL, and the bench process with the
// brokers and the load generator — shares the same cores, so they carry
// at most CPUs ÷ (CPU-seconds per event of all of them) events per second
// of this mix.
func (r *run) cpuBound() {
	var perM float64
	for _, ro := range r.rep.Roles {
		perM += ro.CPUPerMillion
	}
	cpus := r.rep.Machine.CPUs
	if perM <= 0 || cpus <= 0 || r.rep.Sustained <= 0 {
		return
	}
	bound := float64(cpus) * 1e6 / perM
	r.rep.Stages = append(r.rep.Stages, Stage{Stage: stageEndToEnd, Rate: r.rep.Sustained,
		Ceiling: "CPUs ÷ CPU-seconds per event of every process", CeilingRate: bound, Ratio: r.rep.Sustained / bound,
		Note: fmt.Sprintf("%.0f CPU-seconds per million events over all processes (the brokers, the load generator, the harness and the API load of the steady hold included): %d CPUs carry at most %s ev/s of this mix; the ramp's steps are coarse, so the sustained rate is a step below it at best",
			perM, cpus, num(bound))})
}

// isStatic reports whether h is the static route's result.
func isStatic(h HTTPResult) bool { return strings.HasPrefix(h.Name, staticName) }

// worstAPI returns the highest p99 of the API endpoints and the static
// route's result, of the steady hold.
func worstAPI(st *Steady) (float64, HTTPResult) {
	worst := 0.0
	var static HTTPResult
	for _, h := range st.API {
		if isStatic(h) {
			static = h
			continue
		}
		worst = max(worst, h.P99ms)
	}
	return worst, static
}

func pick[T any](c bool, a, b T) T {
	if c {
		return a
	}
	return b
}

// targets compares with docs/ARCHITECTURE.md §10.
func (r *run) targets() {
	yes := func(b bool) string { return pick(b, "yes", "no") }
	quick := pick(r.o.Quick, " (quick: 10 s holds)", "")
	sus := "none"
	if r.rep.Sustained > 0 {
		sus = num(r.rep.Sustained) + " ev/s" + quick
		if s, ok := r.rep.stage(stageEndToEnd); ok {
			sus += fmt.Sprintf("; this machine's CPU bound for the whole stack: %s ev/s", num(s.CeilingRate))
		}
	}
	r.rep.Targets = append(r.rep.Targets, Target{"sustained end-to-end, bounded lag", "≥ 100k ev/s", sus, yes(r.rep.Sustained >= 100_000)})
	if st := r.rep.Steady; st != nil && st.Seen > 0 {
		r.rep.Targets = append(r.rep.Targets, Target{"freshness p99 (produced → API)", "≤ 1 s",
			fmt.Sprintf("%.0f ms at %s ev/s (%d probes)", st.FreshP99ms, num(st.Rate), st.Seen), yes(st.FreshP99ms <= 1000)})
	} else {
		r.rep.Targets = append(r.rep.Targets, Target{"freshness p99 (produced → API)", "≤ 1 s", "not measured (no probe seen)", "n/a"})
	}
	if st := r.rep.Steady; st != nil {
		worst, _ := worstAPI(st)
		r.rep.Targets = append(r.rep.Targets, Target{"dashboard query p99, 32 clients, ingesting", "≤ 10 ms",
			fmt.Sprintf("%.1f ms (worst of /metrics, /health-status, /alerts, /slos at %s ev/s)", worst, num(st.Rate)), yes(worst > 0 && worst <= 10)})
	}
	if r.procPerCore > 0 {
		r.rep.Targets = append(r.rep.Targets, Target{"processor per core", "≥ 150k ev/s per core",
			fmt.Sprintf("%s events per CPU-second of the processor processes", num(r.procPerCore)), yes(r.procPerCore >= 150_000)})
	}
	r.rep.Targets = append(r.rep.Targets, Target{"aggregation kernel per core", "≥ 1M ev/s per core",
		"not measured by the harness (go test -bench . ./internal/agg)", "n/a"})
	if s, ok := r.rep.stage("bridge"); ok {
		met := yes(s.Ratio >= 0.8)
		m := fmt.Sprintf("%.2f × %s", s.Ratio, num(s.CeilingRate))
		if !s.Saturated && s.Ratio < 0.8 { // kept up: only a lower bound
			met = "unknown (not saturated)"
			m = "≥ " + m + " (lower bound)"
		}
		r.rep.Targets = append(r.rep.Targets, Target{"bridge vs ceiling", "≥ 0.8 × min(fetch, publish)", m, met})
	}
	if r.rep.Alert.Measured {
		r.rep.Targets = append(r.rep.Targets, Target{"alert on Kafka after window final", "≤ 1 s",
			fmt.Sprintf("%.0f ms (one alert)", r.rep.Alert.LatencyMS), yes(r.rep.Alert.LatencyMS <= 1000)})
	} else {
		r.rep.Targets = append(r.rep.Targets, Target{"alert on Kafka after window final", "≤ 1 s", "not measured: " + r.rep.Alert.Note, "n/a"})
	}
	r.rep.Notes = append(r.rep.Notes,
		"ceilings and pipeline share the machine; the NATS server, the Kafka broker, the load generator and the roles are subprocesses, PostgreSQL a child cluster",
		"lag = events produced − events folded by the processors (their Prometheus counters; events dead-lettered as too late count as handled), sampled every second",
		fmt.Sprintf("a step is sustainable when, over its second half, the lag stays within %.0f s of events or grows by at most %.0f%% of the rate, and it drains after the hold", LagAllowance, MaxGrowthFraction*100))
}
