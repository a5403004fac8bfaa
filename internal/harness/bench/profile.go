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

// profileHold holds rate for d while taking a CPU profile of every role
// (its /debug/pprof/profile) and of the bench process itself, which runs
// the embedded NATS server, the Kafka broker and the load generator. It
// runs after the ramp, without probes or API load, so the profiles show
// the pipeline alone; the files go to Options.ProfileDir.
func (r *run) profileHold(ctx context.Context, rate float64, d time.Duration) {
	dir := r.o.ProfileDir
	if dir == "" || ctx.Err() != nil {
		return
	}
	if rate <= 0 {
		r.progress("profile: skipped, no step of the ramp was sustainable")
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		r.progress("profile: %v", err)
		return
	}
	secs := max(1, int(d.Seconds()))
	label := fmt.Sprintf("profiling at %s ev/s", num(rate))
	r.progress("%s: CPU profiles of every role and of the bench process for %d s", label, secs)
	hc := &http.Client{Timeout: time.Duration(secs)*time.Second + 30*time.Second}
	var wg sync.WaitGroup
	for _, p := range r.all() {
		wg.Go(func() {
			url := p.baseURL() + "/debug/pprof/profile?seconds=" + strconv.Itoa(secs)
			if err := download(ctx, hc, url, filepath.Join(dir, p.name+".pprof")); err != nil {
				r.progress("profile %s: %v", p.name, err)
			}
		})
	}
	f, err := os.Create(filepath.Join(dir, "bench-process.pprof"))
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
