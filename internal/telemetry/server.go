package telemetry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// Server serves /metrics (Prometheus text, with Go and process metrics),
// /health, /ready and /debug/pprof/ for one process.
type Server struct {
	ln      net.Listener
	srv     *http.Server
	health  *Health
	version string
	started time.Time
}

// Listen binds addr (host:port; port 0 picks a free one).
func Listen(addr string, health *Health, version string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics server: listen %s: %w", addr, err)
	}
	s := &Server{ln: ln, health: health, version: version, started: time.Now()}
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		metrics.WritePrometheus(w, true)
	})
	mux.HandleFunc("/health", s.serveHealth)
	mux.HandleFunc("/ready", s.serveHealth)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	checks, ok := s.health.Snapshot(r.Context())
	status, code := "healthy", http.StatusOK
	if !ok {
		status, code = "unhealthy", http.StatusServiceUnavailable
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"status":         status,
		"checks":         checks,
		"version":        s.version,
		"uptime_seconds": time.Since(s.started).Seconds(),
	})
}

// Run serves until ctx is cancelled, then shuts down gracefully.
func (s *Server) Run(ctx context.Context, log *slog.Logger) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	log.Info("metrics server listening", "addr", "http://"+s.Addr())
	select {
	case err := <-errc:
		return fmt.Errorf("metrics server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	log.Info("metrics server stopped")
	return err
}

// DelayBuckets are the buckets of the stages' delay histograms
// (stacklens_<role>_delay_seconds): from a message entering a stage's
// input to the stage's output written, 5 ms to a minute.
var DelayBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
