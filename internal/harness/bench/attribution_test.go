package bench

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stacklens/stacklens/internal/harness/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestParseLoadgen(t *testing.T) {
	out := "time=… level=WARN msg=\"slow broker\"\nproduced 49990 events in 10.002s (4998/s), 10 failed\n"
	st, err := parseLoadgen(out)
	if err != nil {
		t.Fatal(err)
	}
	if st.Produced != 49990 || st.Failed != 10 || st.Elapsed != 10002*time.Millisecond {
		t.Errorf("%+v", st)
	}
	if _, err := parseLoadgen("panic: boom\n"); err == nil {
		t.Error("no result line: want an error")
	}
}

// TestExitedProcessKeepsItsUsage: a load generator of one step has exited
// by the time the harness takes its snapshot; its CPU and peak RSS come
// from its rusage, not from a /proc entry that is gone.
func TestExitedProcessKeepsItsUsage(t *testing.T) {
	sh := "/bin/sh"
	if _, err := os.Stat(sh); err != nil {
		t.Skip("no /bin/sh")
	}
	// Busy for a few hundred milliseconds of CPU, then exit.
	p, err := startRole(sh, t.TempDir(), "-c", "busy", map[string]string{},
		`i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done`)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		_ = p.stop()
		t.Fatal("the busy loop did not end within 60 s")
	}
	u := p.usage()
	if u.CPU < 10*time.Millisecond || u.PeakRSS <= 0 {
		t.Errorf("usage after exit %+v: want its CPU and peak RSS", u)
	}
}

// TestResourcesAttributeEveryProcess: the per-process table has a row for
// the NATS server, the Kafka broker, the load generators (summed over
// their processes) and the harness, each with its own CPU.
func TestResourcesAttributeEveryProcess(t *testing.T) {
	mk := func(name string) *roleProc { return &roleProc{role: name, name: name} }
	r := &run{rep: &Report{}, bridge: mk("bridge"), processors: []*roleProc{mk("processor-0")}, projections: mk("projections"), api: mk("api"),
		natsProc: mk("nats-server"), kafkaProc: mk("kafka-broker")}
	procs := func(cpu time.Duration) map[string]ProcUsage {
		m := map[string]ProcUsage{}
		for _, n := range []string{"bridge", "processor-0", "projections", "api", "nats-server", "kafka-broker"} {
			m[n] = ProcUsage{CPU: cpu, PeakRSS: 1 << 20}
		}
		m["nats-server"] = ProcUsage{CPU: 3 * cpu, PeakRSS: 1 << 20}
		return m
	}
	a := snap{procs: procs(time.Second), lg: ProcUsage{CPU: time.Second}, lgN: 1, self: time.Second, c: counters{produced: 1e6}}
	b := snap{procs: procs(2 * time.Second), lg: ProcUsage{CPU: 5 * time.Second, PeakRSS: 30 << 20}, lgN: 4, self: 1500 * time.Millisecond, c: counters{produced: 2e6}}
	r.resources(a, b)
	got := map[string]Role{}
	for _, ro := range r.rep.Roles {
		got[ro.Role] = ro
	}
	for name, want := range map[string]float64{"bridge": 1, "nats-server": 3, "kafka-broker": 1, "loadgen": 4, "bench": 0.5} {
		ro, ok := got[name]
		if !ok {
			t.Errorf("no row %q in %+v", name, r.rep.Roles)
			continue
		}
		if ro.CPUPerMillion < want-1e-9 || ro.CPUPerMillion > want+1e-9 {
			t.Errorf("%s: %v CPU-s per million events, want %v", name, ro.CPUPerMillion, want)
		}
	}
	if lg := got["loadgen"]; lg.Processes != 3 || lg.PeakRSSMB != 30 {
		t.Errorf("loadgen row %+v: want 3 processes (started between the snapshots), peak 30 MB", lg)
	}
	if _, ok := got["bench process"]; ok {
		t.Error("the old catch-all row is still there")
	}
}

// TestBridgeAloneStage: the isolated bridge phase is a stage against the
// atomic-batch ceiling of the same run, and is rendered.
func TestBridgeAloneStage(t *testing.T) {
	r := &run{rep: &Report{Ceilings: []Ceiling{{Key: ceilBatch, Name: "JetStream atomic batch publish", Rate: 50_000}}},
		alone: &BridgeAlone{Messages: 50_000, Rate: 20_000, Seconds: 2.5, CPUPerMillion: 12}}
	r.stages()
	var st *Stage
	for i := range r.rep.Stages {
		if r.rep.Stages[i].Stage == "bridge alone (backlog drain)" {
			st = &r.rep.Stages[i]
		}
	}
	if st == nil || st.Ratio != 0.4 || st.CeilingRate != 50_000 || !st.Saturated {
		t.Fatalf("stages %+v", r.rep.Stages)
	}
	r.rep.BridgeAlone = r.alone
	var b bytes.Buffer
	r.rep.RenderTable(&b)
	if !strings.Contains(b.String(), "bridge alone (nothing else of the pipeline running): a backlog of 50000 messages in 2.50 s") ||
		!strings.Contains(b.String(), "bridge alone (backlog drain)") {
		t.Errorf("table:\n%s", b.String())
	}
	// A failed phase is said so, and makes no stage.
	r = &run{rep: &Report{Ceilings: r.rep.Ceilings}, alone: &BridgeAlone{Error: "the bridge exited"}}
	if r.stages(); len(r.rep.Stages) != 0 {
		t.Errorf("stage of a failed phase: %+v", r.rep.Stages)
	}
}

// TestPGSizes measures a plain (unpartitioned) analytics_events table,
// its indexes, the metrics tables and the WAL written after a position.
func TestPGSizes(t *testing.T) {
	pg := testenv.Postgres(t)
	ctx := testenv.Context(t)
	c, err := pgx.Connect(ctx, pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	for _, q := range []string{
		"CREATE TABLE analytics_events (ts timestamptz, seq bigint, payload jsonb, PRIMARY KEY (ts, seq))",
		"CREATE TABLE analytics_metrics_1min (ts timestamptz PRIMARY KEY, n bigint)",
	} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	start := walLSN(ctx, pg.DSN)
	if start == "" {
		t.Fatal("no WAL position")
	}
	for _, q := range []string{
		`INSERT INTO analytics_events SELECT now(), g, '{"service":"checkout"}' FROM generate_series(1, 5000) g`,
		`INSERT INTO analytics_metrics_1min SELECT now() + g * interval '1 minute', g FROM generate_series(1, 500) g`,
	} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]StoreBytes{}
	for _, s := range pgSizes(ctx, pg.DSN, start) {
		got[s.Store] = s
		if s.Error != "" {
			t.Errorf("%s: %s", s.Store, s.Error)
		}
	}
	for _, name := range []string{"PostgreSQL analytics_events table", "PostgreSQL analytics_events indexes", "PostgreSQL metrics tables", "PostgreSQL WAL generated"} {
		if got[name].Bytes <= 0 {
			t.Errorf("%s: %d bytes (all: %+v)", name, got[name].Bytes, got)
		}
	}
	if got["PostgreSQL WAL generated"].Bytes < 5000*50 {
		t.Errorf("WAL %d bytes for 5000 rows", got["PostgreSQL WAL generated"].Bytes)
	}
}

// TestSteadyRate: the profile and steady holds use the highest sustainable
// rate, else half the first step, so that a machine that sustains no step
// still gets its profiles.
func TestSteadyRate(t *testing.T) {
	r := &run{rep: &Report{Sustained: 10_000, Settings: Settings{Rates: []float64{2000, 5000}}}}
	if got := r.steadyRate(); got != 10_000 {
		t.Errorf("sustained: %v", got)
	}
	r.rep.Sustained = 0
	if got := r.steadyRate(); got != 1000 {
		t.Errorf("nothing sustained: %v, want half the first step", got)
	}
	r.rep.Settings.Rates = nil
	if got := r.steadyRate(); got != 0 {
		t.Errorf("no steps: %v", got)
	}
}
