package procstat

import (
	"strings"
	"testing"
)

func TestProcessCPUGrowsWithWork(t *testing.T) {
	before := ProcessCPU()
	x := 0
	for i := range 50_000_000 {
		x += i % 7
	}
	if after := ProcessCPU(); after <= before || x == 0 {
		t.Fatalf("CPU time %v → %v after a busy loop", before, after)
	}
}

func TestLoadAvg(t *testing.T) {
	if f := strings.Fields(LoadAvg()); len(f) != 3 {
		t.Fatalf("LoadAvg() = %q, want three figures", LoadAvg())
	}
}
