package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/stacklens/stacklens/internal/embedded"
)

// roleProc is one role running as a subprocess of the stacklens binary.
type roleProc struct {
	role        string
	name        string // role, or processor-<i>
	cmd         *exec.Cmd
	metricsPort int
	logPath     string
	done        chan struct{}
	final       ProcUsage // after it exited: from its rusage
}

// baseURL is the role's metrics server (/metrics, /ready, /debug/pprof).
func (r *roleProc) baseURL() string { return "http://127.0.0.1:" + strconv.Itoa(r.metricsPort) }

func (r *roleProc) metricsURL() string { return r.baseURL() + "/metrics" }

// startRole runs `exe <role>` with the base environment plus extra, its
// output in dir/<name>.log. It is in its own process group (a terminal's
// Ctrl-C reaches it only through stop) and gets SIGTERM if the bench dies.
func startRole(exe, dir, role, name string, extra map[string]string, args ...string) (*roleProc, error) {
	port, err := embedded.FreePort()
	if err != nil {
		return nil, err
	}
	extra["METRICS_PORT"] = strconv.Itoa(port)
	extra["METRICS_HOST"] = "127.0.0.1"
	extra["ENABLE_METRICS"] = "true"
	env := make([]string, 0, len(os.Environ())+len(extra))
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, override := extra[k]; override {
			continue
		}
		if _, override := extra[strings.TrimSuffix(k, "_FILE")]; override && strings.HasSuffix(k, "_FILE") {
			continue
		}
		env = append(env, kv)
	}
	for k, v := range extra {
		env = append(env, k+"="+v)
	}
	logPath := filepath.Join(dir, name+".log")
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	cmd := exec.Command(exe, append([]string{role}, args...)...)
	cmd.Dir = dir // no .env of the working directory: the bench sets everything
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	r := &roleProc{role: role, name: name, cmd: cmd, metricsPort: port, logPath: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		// A short-lived process (a load generator of one step) is measured
		// after it exited, from what wait4 returned.
		if ps := cmd.ProcessState; ps != nil {
			r.final.CPU = ps.UserTime() + ps.SystemTime()
			if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
				r.final.PeakRSS = ru.Maxrss * 1024 // kilobytes on Linux
			}
		}
		close(r.done)
	}()
	return r, nil
}

// waitReady waits for the role's /ready on its metrics port.
func (r *roleProc) waitReady(ctx context.Context, c *http.Client, timeout time.Duration) error {
	url := r.baseURL() + "/ready"
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-r.done:
			return fmt.Errorf("%s exited during start-up:\n%s", r.name, r.logTail(1500))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		if resp, err := c.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v:\n%s", r.name, timeout, r.logTail(1500))
		}
	}
}

func (r *roleProc) alive() bool {
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

func (r *roleProc) logTail(n int) string {
	b, _ := os.ReadFile(r.logPath)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func (r *roleProc) usage() ProcUsage {
	if !r.alive() {
		return r.final
	}
	u, err := ReadProc(r.cmd.Process.Pid, false)
	if err != nil && !r.alive() { // exited between the two checks
		return r.final
	}
	return u
}

// stop interrupts the role and waits up to 30 s, then kills it.
func (r *roleProc) stop() error {
	if !r.alive() {
		return nil
	}
	_ = r.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-r.done:
		return nil
	case <-time.After(30 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
		return errors.New(r.name + " did not stop within 30s; killed")
	}
}
