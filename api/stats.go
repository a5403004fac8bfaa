package api

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/gofiber/fiber/v2"

	"github.com/stacklens/stacklens/internal/telemetry"
)

// latencyBuckets are the upper bounds (seconds) of
// stacklens_api_request_duration_seconds: fine below 10 ms, where the
// dashboard target (p99 ≤ 10 ms) lives.
var latencyBuckets = []float64{0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

// sampleRing is how many recent latencies per route /stats computes its
// percentiles from.
const sampleRing = 2048

// statsRegistry holds the per-route counters behind /stats and the
// Prometheus metrics.
type statsRegistry struct {
	mu      sync.Mutex
	routes  []*routeStat
	total   atomic.Uint64
	limited atomic.Uint64
}

// routeStat is one route's counters. The hot path takes no global lock:
// counters are atomics, Prometheus counters per status code are cached in
// a sync.Map, latencies go to a small ring under the route's own mutex.
type routeStat struct {
	route, method string
	requests      atomic.Uint64
	clientErrors  atomic.Uint64
	serverErrors  atomic.Uint64
	hist          *metrics.PrometheusHistogram
	codes         sync.Map // int → *metrics.Counter

	mu   sync.Mutex
	ring [sampleRing]float32 // milliseconds
	n    uint64
}

func newStatsRegistry() *statsRegistry { return &statsRegistry{} }

func (r *statsRegistry) route(route, method string) *routeStat {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range r.routes {
		if rs.route == route && rs.method == method {
			return rs
		}
	}
	rs := &routeStat{
		route:  route,
		method: method,
		hist:   metrics.GetOrCreatePrometheusHistogramExt(fmt.Sprintf(`stacklens_api_request_duration_seconds{route=%q}`, route), latencyBuckets),
	}
	r.routes = append(r.routes, rs)
	return rs
}

func (rs *routeStat) counter(code int) *metrics.Counter {
	if v, ok := rs.codes.Load(code); ok {
		return v.(*metrics.Counter)
	}
	c := metrics.GetOrCreateCounter(fmt.Sprintf(`stacklens_api_requests_total{route=%q,method=%q,code="%d"}`, rs.route, rs.method, code))
	rs.codes.Store(code, c)
	return c
}

func (rs *routeStat) observe(code int, d time.Duration) {
	rs.requests.Add(1)
	switch {
	case code >= 500:
		rs.serverErrors.Add(1)
	case code >= 400:
		rs.clientErrors.Add(1)
	}
	rs.counter(code).Inc()
	rs.hist.Update(d.Seconds())
	ms := float32(float64(d) / float64(time.Millisecond))
	rs.mu.Lock()
	rs.ring[rs.n%sampleRing] = ms
	rs.n++
	rs.mu.Unlock()
}

// percentiles returns p50 and p99 (ms) of the recent samples.
func (rs *routeStat) percentiles() (p50, p99 float64, samples int) {
	rs.mu.Lock()
	n := int(min(rs.n, sampleRing))
	buf := make([]float32, n)
	copy(buf, rs.ring[:n])
	rs.mu.Unlock()
	if n == 0 {
		return 0, 0, 0
	}
	slices.Sort(buf)
	q := func(p float64) float64 {
		i := int(p*float64(n)+0.5) - 1
		i = max(0, min(n-1, i))
		return math.Round(float64(buf[i])*1000) / 1000 // µs resolution
	}
	return q(0.50), q(0.99), n
}

// instrument is the outermost handler of every route: it recovers panics,
// applies the rate limit (limited routes), runs the chain, turns errors
// into responses, and records metrics, /stats counters and the access log.
func (s *Server) instrument(rs *routeStat, limited bool, next fiber.Handler) fiber.Handler {
	return func(c *fiber.Ctx) (ret error) {
		start := time.Now()
		s.stats.total.Add(1)
		defer func() {
			if r := recover(); r != nil {
				s.log.Error("panic in handler", "route", rs.route, "panic", fmt.Sprint(r))
				ret = s.errorHandler(c, &apiError{Status: fiber.StatusInternalServerError, Msg: "internal error"})
			}
			code := c.Response().StatusCode()
			d := time.Since(start)
			rs.observe(code, d)
			s.accessLog(c, rs, code, d)
		}()
		var err error
		if limited {
			err = s.rateLimit(c)
		}
		if err == nil {
			err = next(c)
		}
		if err != nil {
			return s.errorHandler(c, err)
		}
		return nil
	}
}

// accessLog writes one line per request: at debug level for successes
// and client errors (the hot path stays free of log I/O at the default
// INFO level; turn on LOG_LEVEL=DEBUG to see them), at warn for 5xx.
// Credentials are never logged; the caller is named by user or key digest.
func (s *Server) accessLog(c *fiber.Ctx, rs *routeStat, code int, d time.Duration) {
	level := slog.LevelDebug
	if code >= 500 {
		level = slog.LevelWarn
	}
	ctx := context.Background()
	if !s.log.Enabled(ctx, level) {
		return
	}
	s.log.LogAttrs(ctx, level, "request",
		slog.String("method", c.Method()),
		slog.String("route", rs.route),
		slog.String("path", truncate(c.Path(), 200)),
		slog.Int("status", code),
		slog.Float64("duration_ms", float64(d.Microseconds())/1000),
		slog.String("client", c.IP()),
		slog.String("caller", caller(c)),
		slog.Int("bytes", len(c.Response().Body())),
	)
}

// StatsResponse is /stats.
type StatsResponse struct {
	RequestsServed uint64       `json:"requests_served" doc:"requests received since start, including this one"`
	RateLimited    uint64       `json:"rate_limited" doc:"requests refused with 429"`
	UptimeSeconds  float64      `json:"uptime_seconds"`
	StartedAt      time.Time    `json:"started_at"`
	Version        string       `json:"version"`
	Routes         []RouteStats `json:"routes" doc:"per route, in registration order; unmatched requests under route \"unmatched\""`
}

// RouteStats is one route's counters in /stats.
type RouteStats struct {
	Route        string  `json:"route"`
	Method       string  `json:"method"`
	Requests     uint64  `json:"requests"`
	ClientErrors uint64  `json:"client_errors" doc:"4xx responses"`
	ServerErrors uint64  `json:"server_errors" doc:"5xx responses"`
	LatencyP50Ms float64 `json:"latency_p50_ms" doc:"median of the last 2048 requests"`
	LatencyP99Ms float64 `json:"latency_p99_ms" doc:"99th percentile of the last 2048 requests"`
}

func (s *Server) handleStats(c *fiber.Ctx) error {
	s.stats.mu.Lock()
	routes := slices.Clone(s.stats.routes)
	s.stats.mu.Unlock()
	out := StatsResponse{
		RequestsServed: s.stats.total.Load(),
		RateLimited:    s.stats.limited.Load(),
		UptimeSeconds:  s.now().Sub(s.started).Seconds(),
		StartedAt:      s.started.UTC(),
		Version:        s.cfg.Version,
		Routes:         make([]RouteStats, 0, len(routes)),
	}
	for _, rs := range routes {
		p50, p99, _ := rs.percentiles()
		out.Routes = append(out.Routes, RouteStats{
			Route: rs.route, Method: rs.method,
			Requests:     rs.requests.Load(),
			ClientErrors: rs.clientErrors.Load(),
			ServerErrors: rs.serverErrors.Load(),
			LatencyP50Ms: p50, LatencyP99Ms: p99,
		})
	}
	return c.JSON(out)
}

// ProgressFigures are the HTTP side of the api's STATS_INTERVAL_SEC
// progress line: in = requests served, server_errors (5xx), rate_limited.
func (s *Server) ProgressFigures() []telemetry.Figure {
	r := s.stats
	var errs uint64
	r.mu.Lock()
	for _, rs := range r.routes {
		errs += rs.serverErrors.Load()
	}
	r.mu.Unlock()
	return []telemetry.Figure{
		{Name: "in", Value: float64(r.total.Load()), Total: true},
		{Name: "server_errors", Value: float64(errs)},
		{Name: "rate_limited", Value: float64(r.limited.Load())},
	}
}
