// Package procstat reads what the measurements report about the machine
// and this process: CPU time used and the load average.
package procstat

import (
	"os"
	"strings"
	"syscall"
	"time"
)

// ProcessCPU is the user+system CPU time of this process so far.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// LoadAvg is the 1, 5 and 15 minute load average ("unknown" off Linux).
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
