package chaos

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// floodRequests is the mix of the API flood: dashboard reads, hostile
// parameters, writes without credentials, an oversized body and unknown
// routes.
var floodRequests = []struct{ method, path, body string }{
	{"GET", "/metrics?window=1min&limit=100", ""},
	{"GET", "/metrics?window=5min&service=svc-3&limit=1000", ""},
	{"GET", "/health-status", ""},
	{"GET", "/alerts?status=active", ""},
	{"GET", "/sla?window=1hour", ""},
	{"GET", "/stats", ""},
	{"GET", "/health", ""},
	{"GET", "/metrics?window=2min", ""},
	{"GET", "/metrics?limit=99999999999999999999", ""},
	{"GET", "/metrics?service=%ff%fe", ""},
	{"GET", "/metrics?from=yesterday", ""},
	{"POST", "/alert-rules", `{"name":"x"}`},
	{"POST", "/alert-rules", strings.Repeat("x", 200<<10)},
	{"GET", "/../../etc/passwd", ""},
	{"DELETE", "/alert-rules/1", ""},
}

// apiFlood runs 48 clients against the API for the whole workload: the
// API must keep answering — only 2xx and 4xx (429 once over the rate
// limit), never a 5xx or a dropped connection — while the pipeline's
// invariants are checked as in every row.
func apiFlood(r *Run) {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	if err := waitAPI(client, r.APIURL, 30*time.Second); err != nil {
		r.T.Errorf("api: %v", err)
		return
	}
	var (
		mu      sync.Mutex
		status  = map[int]int{}
		errs    []string
		cut     int
		stopped atomic.Bool
		wg      sync.WaitGroup
	)
	r.Note("API flood: 48 clients for %v", r.Duration)
	for i := range 48 {
		wg.Go(func() {
			for n := i; !stopped.Load(); n++ {
				q := floodRequests[n%len(floodRequests)]
				req, _ := http.NewRequestWithContext(r.Ctx, q.method, r.APIURL+q.path, strings.NewReader(q.body))
				resp, err := client.Do(req)
				mu.Lock()
				switch {
				case err != nil && len(q.body) > 64<<10:
					// The server answers 413 and closes the connection
					// while the client is still sending: a broken pipe
					// is the expected outcome of an oversized body.
					cut++
				case err != nil:
					if r.Ctx.Err() == nil && len(errs) < 10 {
						errs = append(errs, fmt.Sprintf("%s %s: %v", q.method, q.path, err))
					}
				default:
					status[resp.StatusCode]++
				}
				mu.Unlock()
				if resp != nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					_ = resp.Body.Close()
				}
			}
		})
	}
	r.Sleep(r.Duration)
	stopped.Store(true)
	wg.Wait()
	r.Note("API flood done: status counts %v, %d oversized uploads cut off", status, cut)
	total, limited := 0, status[http.StatusTooManyRequests]
	for code, n := range status {
		total += n
		if code >= 500 {
			r.T.Errorf("API flood: %d responses with status %d", n, code)
		}
	}
	if len(errs) > 0 {
		r.T.Errorf("API flood: transport errors (the API dropped connections): %s", strings.Join(errs, "; "))
	}
	if limited == 0 || limited == total {
		r.T.Errorf("API flood: %d of %d requests rate limited: the flood did not exceed the limit, or nothing else got through", limited, total)
	}
	// Right after the flood the API is healthy and answers at once.
	start := time.Now()
	if err := waitAPI(client, r.APIURL, 5*time.Second); err != nil {
		r.T.Errorf("API after the flood: %v", err)
	}
	r.Note("API flood: %d requests, %d rate limited; /health 200 %v after", total, limited, time.Since(start).Round(time.Millisecond))
}

func waitAPI(c *http.Client, base string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		resp, err := c.Get(base + "/health")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("/health: status %d", resp.StatusCode)
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// apiServesTruth checks, once the invariants hold, that the API serves
// exactly the produced counts: per service, the 1min rows' counts sum to
// its valid events.
func apiServesTruth(r *Run, truth *Truth) {
	want := map[string]int{}
	var from time.Time
	for _, p := range truth.Messages {
		if p.Valid {
			want[p.Service]++
			if from.IsZero() || p.Time.Before(from) {
				from = p.Time
			}
		}
	}
	from = from.Truncate(time.Minute)
	client := &http.Client{Timeout: 10 * time.Second}
	for svc, n := range want {
		u := r.APIURL + "/metrics?" + url.Values{"window": {"1min"}, "service": {svc}, "limit": {"1000"},
			"from": {from.Format(time.RFC3339)}}.Encode()
		var body struct {
			Metrics []struct {
				Count int `json:"count"`
			} `json:"metrics"`
		}
		if err := getJSON(client, u, &body); err != nil {
			r.T.Errorf("api %s: %v", svc, err)
			return
		}
		got := 0
		for _, m := range body.Metrics {
			got += m.Count
		}
		if got != n {
			r.T.Errorf("api: service %s: /metrics counts sum to %d, produced %d valid events", svc, got, n)
		}
	}
	r.Note("API serves the produced counts of %d services", len(want))
}

// getJSON GETs u, waiting out the rate limit's Retry-After.
func getJSON(c *http.Client, u string, v any) error {
	for range 20 {
		resp, err := c.Get(u)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode == http.StatusTooManyRequests {
			s, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
			time.Sleep(time.Duration(max(s, 1)) * time.Second)
			continue
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d: %s", resp.StatusCode, b)
		}
		return json.Unmarshal(b, v)
	}
	return fmt.Errorf("still rate limited")
}
