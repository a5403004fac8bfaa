package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"sync"
	"time"
)

// profileHold holds rate for d while taking a CPU profile of every
// process that has one: the roles, the NATS server, the Kafka broker and
// the load generator (each its /debug/pprof/profile) and the bench
// process itself. PostgreSQL has no such profile. It runs after the ramp,
// without probes or API load, so the profiles show the pipeline alone;
// the files go to Options.ProfileDir as <process>.pprof.
func (r *run) profileHold(ctx context.Context, rate float64, d time.Duration) {
	dir := r.o.ProfileDir
	if dir == "" || ctx.Err() != nil {
		return
	}
	if rate <= 0 {
		r.progress("profile: skipped, no rate to hold")
		return
	}
	if r.rep.Sustained == 0 {
		r.progress("profile: no step of the ramp was sustainable; profiling at half the first step")
		r.rep.Notes = append(r.rep.Notes, fmt.Sprintf("no step was sustainable: the CPU profiles are of a hold at %s ev/s, half the first step", num(rate)))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		r.progress("profile: %v", err)
		return
	}
	secs := max(1, int(d.Seconds()))
	label := fmt.Sprintf("profiling at %s ev/s", num(rate))
	r.progress("%s: CPU profiles of every process for %d s (PostgreSQL has none: not a Go process)", label, secs)
	hc := &http.Client{Timeout: time.Duration(secs)*time.Second + 30*time.Second}
	var wg sync.WaitGroup
	profile := func(p *roleProc, name string, secs int) {
		url := p.baseURL() + "/debug/pprof/profile?seconds=" + strconv.Itoa(secs)
		if err := download(ctx, hc, url, filepath.Join(dir, name+".pprof")); err != nil {
			r.progress("profile %s: %v", p.name, err)
		}
	}
	for _, p := range append(r.all(), r.infra()...) {
		wg.Go(func() { profile(p, p.name, secs) })
	}
	// The hold's generator is a process started by the hold: profiled
	// from when it serves, for a second less than it runs, so that the
	// profile is complete before it exits.
	r.lgMu.Lock()
	r.onLoadgen = func(p *roleProc) {
		wg.Go(func() {
			if err := p.waitReady(ctx, r.hc, 10*time.Second); err != nil {
				r.progress("profile loadgen: %v", err)
				return
			}
			profile(p, "loadgen", max(1, secs-1))
		})
	}
	r.lgMu.Unlock()
	defer func() {
		r.lgMu.Lock()
		r.onLoadgen = nil
		r.lgMu.Unlock()
	}()
	f, err := os.Create(filepath.Join(dir, "bench.pprof"))
	profiling := false
	if err == nil {
		if err = pprof.StartCPUProfile(f); err == nil {
			profiling = true
		} else {
			_ = f.Close()
		}
	}
	if err != nil {
		r.progress("profile bench process: %v", err)
	}
	r.hold(ctx, rate, time.Duration(secs)*time.Second, 777, label)
	if profiling {
		pprof.StopCPUProfile()
		_ = f.Close()
	}
	wg.Wait()
	r.progress("CPU profiles in %s (go tool pprof -top %s)", dir, filepath.Join(dir, "<name>.pprof"))
}

func download(ctx context.Context, c *http.Client, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: status %d", url, resp.StatusCode)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
