package bench

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
)

// HTTPResult is a closed-loop HTTP load of one path.
type HTTPResult struct {
	Name     string  `json:"name"`
	Path     string  `json:"path"`
	Clients  int     `json:"clients"`
	Seconds  float64 `json:"seconds"`
	Requests int     `json:"requests"`
	Errors   int     `json:"errors"`
	RPS      float64 `json:"req_per_s"`
	P50ms    float64 `json:"p50_ms"`
	P99ms    float64 `json:"p99_ms"`
	MaxMS    float64 `json:"max_ms"`
	// ErrorKinds counts the errors by HTTP status ("503") or "transport".
	ErrorKinds map[string]int `json:"error_kinds,omitempty"`
}

func newHTTPClient(conns int) *http.Client {
	tr := &http.Transport{MaxIdleConns: conns * 2, MaxIdleConnsPerHost: conns * 2, MaxConnsPerHost: conns * 2}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// LoadHTTP runs clients concurrent closed-loop clients against url for d
// (after a short warm-up) and returns latency percentiles and throughput.
// A non-200 answer counts as an error.
func LoadHTTP(ctx context.Context, c *http.Client, name, url string, clients int, d time.Duration) HTTPResult {
	get := func() (int, error) {
		req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
		if err != nil {
			return 0, err
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode, nil
	}
	for range clients * 2 { // connections, statement caches
		_, _ = get()
	}
	var (
		mu    sync.Mutex
		all   []time.Duration
		errs  int
		kinds = map[string]int{}
		wg    sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(d)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 1024)
			e := 0
			k := map[string]int{}
			for time.Now().Before(deadline) && ctx.Err() == nil {
				t0 := time.Now()
				code, err := get()
				if err != nil && ctx.Err() != nil {
					break // the hold ended mid-request: not the API's error
				}
				if err != nil || code != 200 {
					e++
					if err != nil {
						k["transport"]++
					} else {
						k[strconv.Itoa(code)]++
					}
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			all = append(all, lat...)
			errs += e
			for kk, n := range k {
				kinds[kk] += n
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	el := time.Since(start)
	slices.Sort(all)
	r := HTTPResult{Name: name, Path: url, Clients: clients, Seconds: el.Seconds(), Requests: len(all), Errors: errs,
		ErrorKinds: kinds, RPS: float64(len(all)) / el.Seconds(), P50ms: ms(sortedPercentile(all, 0.50)), P99ms: ms(sortedPercentile(all, 0.99))}
	if len(all) > 0 {
		r.MaxMS = ms(all[len(all)-1])
	}
	if len(kinds) == 0 {
		r.ErrorKinds = nil
	}
	return r
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
