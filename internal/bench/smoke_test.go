package bench

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestQuickBenchEndToEnd (STACKLENS_BENCH=1) builds the stacklens binary
// and runs `stacklens bench --quick --json` end to end: embedded
// infrastructure, ceilings, roles as subprocesses, ramp, steady hold.
func TestQuickBenchEndToEnd(t *testing.T) {
	if os.Getenv("STACKLENS_BENCH") != "1" {
		t.Skip("set STACKLENS_BENCH=1 to run stacklens bench --quick (about 2 minutes)")
	}
	dir, err := os.MkdirTemp("", "stacklens-bench-smoke-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	exe := filepath.Join(dir, "stacklens")
	build := exec.CommandContext(ctx, "go", "build", "-o", exe, "github.com/stacklens/stacklens/cmd/stacklens")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
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
	if len(r.Roles) < 5 {
		t.Errorf("roles %+v", r.Roles)
	}
	for _, ro := range r.Roles {
		if ro.CPUSeconds <= 0 || ro.PeakRSSMB <= 0 {
			t.Errorf("role %+v", ro)
		}
	}
}
