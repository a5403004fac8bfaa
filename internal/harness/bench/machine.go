package bench

import (
	"bufio"
	"github.com/stacklens/stacklens/internal/harness/procstat"
	"os"
	"runtime"
	"strings"
)

// Machine describes where a run happened.
type Machine struct {
	CPUs        int    `json:"cpus"`
	CPUModel    string `json:"cpu_model"`
	MemoryMB    int64  `json:"memory_mb"`
	Kernel      string `json:"kernel"`
	GoVersion   string `json:"go_version"`
	GOMAXPROCS  int    `json:"gomaxprocs"`
	LoadAtStart string `json:"load_avg_at_start"`
	LoadAtEnd   string `json:"load_avg_at_end"`
}

// DescribeMachine reads /proc for the CPU model, memory and load.
func DescribeMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), GOMAXPROCS: runtime.GOMAXPROCS(0), LoadAtStart: procstat.LoadAvg()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		_ = f.Close()
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		m.MemoryMB = statusKB(b, "MemTotal:") / 1024
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if m.CPUModel == "" {
		m.CPUModel = "unknown"
	}
	return m
}
