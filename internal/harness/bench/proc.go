package bench

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// userHZ is the kernel's USER_HZ, the unit of the times in /proc/<pid>/stat
// (100 on every Linux architecture Go supports).
const userHZ = 100

// ProcUsage is what /proc says about one process.
type ProcUsage struct {
	CPU     time.Duration // utime+stime (plus cutime+cstime of reaped children when asked)
	PeakRSS int64         // VmHWM, bytes
	PPID    int
}

// ReadProc reads /proc/<pid>/stat and /proc/<pid>/status. With children,
// CPU also counts the waited-for children (PostgreSQL's postmaster reaps
// its backends, so their CPU lands there when they exit).
func ReadProc(pid int, children bool) (ProcUsage, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ProcUsage{}, err
	}
	st, err := parseStat(b)
	if err != nil {
		return ProcUsage{}, err
	}
	ticks := st.utime + st.stime
	if children {
		ticks += st.cutime + st.cstime
	}
	u := ProcUsage{CPU: time.Duration(ticks) * time.Second / userHZ, PPID: st.ppid}
	if s, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status"); err == nil {
		u.PeakRSS = statusKB(s, "VmHWM:") * 1024
	}
	return u, nil
}

type procStat struct {
	ppid                         int
	utime, stime, cutime, cstime int64
}

// parseStat parses /proc/<pid>/stat; the command name may hold spaces and
// parentheses, so fields are counted after the last ')'.
func parseStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 > len(b) {
		return procStat{}, errors.New("bench: malformed /proc stat")
	}
	f := strings.Fields(string(b[i+2:]))
	// f[0] is field 3 (state): ppid is field 4, utime..cstime fields 14–17.
	if len(f) < 15 {
		return procStat{}, errors.New("bench: short /proc stat")
	}
	var st procStat
	st.ppid, _ = strconv.Atoi(f[1])
	st.utime, _ = strconv.ParseInt(f[11], 10, 64)
	st.stime, _ = strconv.ParseInt(f[12], 10, 64)
	st.cutime, _ = strconv.ParseInt(f[13], 10, 64)
	st.cstime, _ = strconv.ParseInt(f[14], 10, 64)
	return st, nil
}

func statusKB(b []byte, key string) int64 {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, key); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// SelfPeakRSS is VmHWM of this process, bytes.
func SelfPeakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	return statusKB(b, "VmHWM:") * 1024
}

// findProcess returns the pid of the process whose command line contains
// needle (0 if none): the postmaster of a private cluster, found by its
// data directory.
func findProcess(needle string) int {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil || !bytes.Contains(b, []byte(needle)) {
			continue
		}
		if !bytes.Contains(b, []byte("postgres")) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(d))
		if u, err := ReadProc(pid, false); err == nil && u.PPID != 0 {
			if pu, err := os.ReadFile("/proc/" + strconv.Itoa(u.PPID) + "/cmdline"); err == nil && bytes.Contains(pu, []byte(needle)) {
				continue // a child of the postmaster
			}
		}
		return pid
	}
	return 0
}

// treeUsage sums the CPU of pid (with reaped children) and its live
// children, and returns the largest VmHWM among them (PostgreSQL's
// processes share their buffers, so a sum of RSS would count them many
// times).
func treeUsage(pid int) ProcUsage {
	root, err := ReadProc(pid, true)
	if err != nil {
		return ProcUsage{}
	}
	total := root
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		cpid, _ := strconv.Atoi(filepath.Base(d))
		if cpid == pid {
			continue
		}
		u, err := ReadProc(cpid, false)
		if err != nil || u.PPID != pid {
			continue
		}
		total.CPU += u.CPU
		total.PeakRSS = max(total.PeakRSS, u.PeakRSS)
	}
	return total
}
