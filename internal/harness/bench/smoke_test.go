package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// buildBinary builds the stacklens binary into a fresh directory.
func buildBinary(ctx context.Context, t *testing.T) (dir, exe string) {
	dir, err := os.MkdirTemp("", "stacklens-bench-smoke-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	_ = os.Chmod(dir, 0o755)
	exe = filepath.Join(dir, "stacklens")
	build := exec.CommandContext(ctx, "go", "build", "-o", exe, "github.com/stacklens/stacklens/cmd/stacklens")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return dir, exe
}

// TestBenchRunsAndProfiles runs a small `stacklens bench` twice with
// --runs 2 --profile: two reports and their medians in the JSON, the NATS
// server, the Kafka broker and the load generator as processes of their
// own with their CPU in the table, the bridge alone on a 5000-message
// backlog, the bytes per event of every store, and a CPU profile of every
// process per run.
func TestBenchRunsAndProfiles(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the benchmark end to end (about a minute)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	dir, exe := buildBinary(ctx, t)
	out, pdir := filepath.Join(dir, "bench.json"), filepath.Join(dir, "profiles")
	cmd := exec.CommandContext(ctx, exe, "bench", "--quick", "--rates", "1000", "--hold", "8s", "--runs", "2", "--no-alert", "--ceiling-messages", "5000",
		"--profile", pdir, "--json", out)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	table, err := cmd.Output()
	if err != nil {
		t.Fatalf("stacklens bench: %v\n%s\n%s", err, table, stderr.String())
	}
	if !bytes.Contains(table, []byte("Medians of 2 runs")) {
		t.Errorf("no summary table:\n%s", table)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Summary Summary   `json:"summary"`
		Runs    []*Report `json:"runs"`
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Runs) != 2 || res.Summary.Runs != 2 || len(res.Summary.Figures) == 0 {
		t.Fatalf("runs %d, summary %+v", len(res.Runs), res.Summary)
	}
	f := res.Summary.Figures[0]
	if f.Name != "max sustainable rate" || f.Measured != 2 || f.Median != 1000 {
		t.Errorf("first figure %+v (both runs sustain 1000 ev/s on any machine this suite runs on)", f)
	}
	for i, r := range res.Runs {
		if r.Steady == nil || len(r.Steady.Stages) != 4 {
			t.Errorf("run %d: want the three stages' delays and the bridge's commit in the steady hold: %+v", i+1, r.Steady)
			continue
		}
		for _, d := range r.Steady.Stages {
			if d.MeanMS <= 0 || d.Batches <= 0 || d.P99MS <= 0 || d.P99MS > 60_000 {
				t.Errorf("run %d: stage delay %+v", i+1, d)
			}
		}
		// The commit is part of the bridge's share, batch by batch (a
		// scrape may fall between a batch's two updates: one per partition).
		if br, co := r.Steady.Stages[0], r.Steady.Stages[1]; co.Metric != "stacklens_bridge_publish_seconds" || co.MeanMS >= br.MeanMS ||
			math.Abs(co.Batches-br.Batches) > float64(r.Settings.Partitions) {
			t.Errorf("run %d: bridge %+v, its commit %+v", i+1, br, co)
		}
		if st := r.Steady; st.BeforeProbes == 0 || st.WithProbes == 0 || st.BeforeProbes+st.WithProbes != st.Seen ||
			st.FreshBeforeP99ms <= 0 || st.FreshBeforeP99ms > st.FreshMaxMS || st.FreshWithP99ms <= 0 || st.FreshWithP99ms > st.FreshMaxMS {
			t.Errorf("run %d: probes before the API load %d (p99 %v ms), with it %d (p99 %v ms), seen %d, max %v ms",
				i+1, st.BeforeProbes, st.FreshBeforeP99ms, st.WithProbes, st.FreshWithP99ms, st.Seen, st.FreshMaxMS)
		}
		if st := r.Steady; st.ProduceP50ms <= 0 || st.ProduceP99ms < st.ProduceP50ms || st.ProduceP99ms > st.FreshP99ms {
			t.Errorf("run %d: probes' Kafka write p50 %v p99 %v ms, freshness p99 %v ms", i+1, st.ProduceP50ms, st.ProduceP99ms, st.FreshP99ms)
		}
		roles := map[string]Role{}
		for _, ro := range r.Roles {
			roles[ro.Role] = ro
		}
		for _, name := range []string{"bridge", "processor", "projections", "api", "postgresql", "nats-server", "kafka-broker", "loadgen", "bench"} {
			if ro := roles[name]; ro.CPUSeconds <= 0 || ro.CPUPerMillion <= 0 || ro.PeakRSSMB <= 0 {
				t.Errorf("run %d: process %q: %+v", i+1, name, ro)
			}
		}
		// The sustained step (1000 ev/s for 8 s) has a table of its own,
		// its events those of that step alone.
		if own, ok := ownCPU(r.SustainedRoles); !ok || own <= 0 || len(r.SustainedRoles) != len(r.Roles) ||
			r.SustainedRoles[0].Events <= 0 || r.SustainedRoles[0].Events >= r.Roles[0].Events {
			t.Errorf("run %d: roles at the sustained rate %+v (run's %+v)", i+1, r.SustainedRoles, r.Roles)
		}
		if !slices.ContainsFunc(r.CostTargets, func(tg Target) bool { return strings.HasPrefix(tg.Target, "own processes") && tg.Met != "n/a" }) {
			t.Errorf("run %d: cost targets %+v", i+1, r.CostTargets)
		}
		if a := r.BridgeAlone; a == nil || a.Error != "" || a.Messages != 5000 || a.Rate <= 0 || a.CPUPerMillion <= 0 {
			t.Errorf("run %d: bridge alone %+v", i+1, a)
		}
		if st := r.Storage; st == nil || st.Events <= 0 || st.MessageBytes < 100 {
			t.Errorf("run %d: storage %+v", i+1, st)
		} else {
			stores := map[string]StoreBytes{}
			for _, sb := range st.Stores {
				stores[sb.Store] = sb
				if sb.Error != "" {
					t.Errorf("run %d: store %s: %s", i+1, sb.Store, sb.Error)
				}
			}
			for _, name := range []string{"JetStream stream STACKLENS_EVENTS", "JetStream KV stacklens_agg_1min", "PostgreSQL analytics_events table",
				"PostgreSQL analytics_events indexes", "PostgreSQL metrics tables", "PostgreSQL WAL generated", "Kafka broker log of stacklens-analytics"} {
				if sb := stores[name]; sb.PerEvent <= 0 || sb.Ratio <= 0 {
					t.Errorf("run %d: store %q: %+v", i+1, name, sb)
				}
			}
		}
		// /slos answers over the SLOs the bench defines without errors (it
		// is loaded last, so an overloaded machine may end the hold first).
		for _, h := range r.Steady.API {
			if strings.HasPrefix(h.Name, "/slos") && h.Errors != 0 {
				t.Errorf("run %d: %s: %d requests, %d errors %v", i+1, h.Name, h.Requests, h.Errors, h.ErrorKinds)
			}
		}
	}
	for run := 1; run <= 2; run++ {
		for _, name := range []string{"bridge", "processor-0", "projections", "api", "nats-server", "kafka-broker", "loadgen", "bench"} {
			p := filepath.Join(pdir, fmt.Sprintf("run-%d", run), name+".pprof")
			data, err := os.ReadFile(p)
			if err != nil || len(data) < 100 || data[0] != 0x1f || data[1] != 0x8b {
				t.Errorf("%s: %d bytes, err %v: want a gzipped pprof profile", p, len(data), err)
			}
		}
	}
}

// TestQuickBenchEndToEnd (STACKLENS_BENCH=1) builds the stacklens binary
// and runs `stacklens bench --quick --json` end to end: embedded
// infrastructure, ceilings, roles as subprocesses, ramp, steady hold.
func TestQuickBenchEndToEnd(t *testing.T) {
	if os.Getenv("STACKLENS_BENCH") != "1" {
		t.Skip("set STACKLENS_BENCH=1 to run stacklens bench --quick (about 2 minutes)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	dir, exe := buildBinary(ctx, t)
	out := filepath.Join(dir, "bench.json")
	cmd := exec.CommandContext(ctx, exe, "bench", "--quick", "--json", out)
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	table, err := cmd.Output()
	t.Logf("\n%s", table)
	if err != nil {
		t.Fatalf("stacklens bench --quick: %v", err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if r.Mode != "quick" || r.Seconds > 240 {
		t.Errorf("mode %q, %.0f s", r.Mode, r.Seconds)
	}
	if len(r.Ceilings) != 6 {
		t.Errorf("%d ceilings", len(r.Ceilings))
	}
	for _, c := range r.Ceilings {
		if c.Error != "" || c.Rate <= 0 {
			t.Errorf("ceiling %s: rate %v, error %q", c.Name, c.Rate, c.Error)
		}
	}
	if len(r.Steps) == 0 || r.Steps[0].Achieved <= 0 || r.Steps[0].ProcessorRate <= 0 {
		t.Errorf("steps %+v", r.Steps)
	}
	if r.Steady == nil || r.Steady.Seen == 0 || len(r.Steady.API) < 4 {
		t.Errorf("steady %+v", r.Steady)
	}
	if len(r.Roles) < 9 {
		t.Errorf("roles %+v", r.Roles)
	}
	for _, ro := range r.Roles {
		if ro.CPUSeconds <= 0 || ro.PeakRSSMB <= 0 {
			t.Errorf("role %+v", ro)
		}
	}
}
