package api

import (
	"context"
	"time"

	"github.com/gofiber/fiber/v2"
)

// Overall /health statuses.
const (
	statusHealthy   = "healthy"
	statusDegraded  = "degraded"
	statusUnhealthy = "unhealthy"
)

// HealthResponse is GET /health.
type HealthResponse struct {
	Status        string          `json:"status" enum:"healthy,degraded,unhealthy" doc:"unhealthy (HTTP 503) when the database is unreachable; degraded when NATS is disconnected or the pipeline is stale"`
	Checks        HealthChecks    `json:"checks"`
	Pipeline      *PipelineStatus `json:"pipeline" doc:"consumer lag per stage and dead letters, sampled from JetStream every few seconds; informational (does not change status)"`
	Version       string          `json:"version"`
	Environment   string          `json:"environment,omitempty"`
	UptimeSeconds float64         `json:"uptime_seconds"`
	Time          time.Time       `json:"time"`
}

// HealthChecks are the individual checks of /health.
type HealthChecks struct {
	Database Check `json:"database"`
	NATS     Check `json:"nats"`
	Pipeline Check `json:"pipeline"`
}

// Check is one dependency check.
type Check struct {
	Status       string     `json:"status" enum:"ok,fail,disabled,no_data,stale,unknown"`
	Error        string     `json:"error,omitempty"`
	LatencyMs    *float64   `json:"latency_ms,omitempty" doc:"database round trip"`
	Window       string     `json:"window,omitempty" doc:"pipeline: the window table inspected (the smallest configured)"`
	NewestWindow *time.Time `json:"newest_window,omitempty" doc:"pipeline: start of the newest metric row"`
	UpdatedAt    *time.Time `json:"updated_at,omitempty" doc:"pipeline: when that row was last written"`
	AgeSeconds   *float64   `json:"age_seconds,omitempty" doc:"pipeline: seconds since that row was last written"`
}

// ReadyResponse is GET /ready.
type ReadyResponse struct {
	Status string `json:"status" enum:"ready,not_ready"`
	Error  string `json:"error,omitempty"`
}

// health runs the checks: database ping, NATS connectivity, and pipeline
// freshness (age of the newest row of the smallest window's table).
func (s *Server) checkHealth(ctx context.Context) HealthResponse {
	now := s.now()
	out := HealthResponse{
		Status:        statusHealthy,
		Version:       s.cfg.Version,
		Environment:   s.cfg.Environment,
		UptimeSeconds: now.Sub(s.started).Seconds(),
		Time:          now.UTC(),
	}
	ctx, cancel := s.st.ctx(ctx)
	defer cancel()

	t0 := time.Now()
	if err := s.st.ping(ctx); err != nil {
		out.Checks.Database = Check{Status: "fail", Error: dbErrorText(err)}
		out.Checks.Pipeline = Check{Status: "unknown", Error: "database unreachable"}
		out.Status = statusUnhealthy
	} else {
		ms := float64(time.Since(t0).Microseconds()) / 1000
		out.Checks.Database = Check{Status: "ok", LatencyMs: &ms}
		win := s.cfg.Windows[0].Name
		ts, upd, ok, err := s.st.newestMetric(ctx, s.cfg.Windows[0])
		switch {
		case err != nil:
			out.Checks.Pipeline = Check{Status: "unknown", Window: win, Error: dbErrorText(err)}
			out.Status = statusDegraded
		case !ok:
			out.Checks.Pipeline = Check{Status: "no_data", Window: win}
		default:
			age := now.Sub(upd).Seconds()
			if age < 0 {
				age = 0
			}
			c := Check{Status: "ok", Window: win, NewestWindow: &ts, UpdatedAt: &upd, AgeSeconds: &age}
			if now.Sub(upd) > s.cfg.StaleAfter {
				c.Status = "stale"
				c.Error = "no metric row written for longer than " + s.cfg.StaleAfter.String()
				out.Status = statusDegraded
			}
			out.Checks.Pipeline = c
		}
	}

	switch {
	case s.pipeline == nil:
		out.Pipeline = &PipelineStatus{Status: "disabled"}
	default:
		if out.Pipeline = s.pipeline.PipelineStatus(); out.Pipeline == nil {
			out.Pipeline = &PipelineStatus{Status: "unavailable", Error: "not sampled yet"}
		}
	}

	switch {
	case s.nats == nil:
		out.Checks.NATS = Check{Status: "disabled"}
	case s.nats.IsConnected():
		out.Checks.NATS = Check{Status: "ok"}
	default:
		out.Checks.NATS = Check{Status: "fail", Error: "not connected"}
		if out.Status == statusHealthy {
			out.Status = statusDegraded
		}
	}
	return out
}

func dbErrorText(err error) string {
	if _, msg, ok := classifyDBError(err); ok {
		return msg
	}
	return truncate(err.Error(), 200)
}

func (s *Server) handleHealth(c *fiber.Ctx) error {
	h := s.checkHealth(c.UserContext())
	if h.Status == statusUnhealthy {
		c.Status(fiber.StatusServiceUnavailable)
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(h)
}

func (s *Server) handleReady(c *fiber.Ctx) error {
	ctx, cancel := s.st.ctx(c.UserContext())
	defer cancel()
	c.Set(fiber.HeaderCacheControl, "no-store")
	if err := s.st.ping(ctx); err != nil {
		c.Status(fiber.StatusServiceUnavailable)
		return c.JSON(ReadyResponse{Status: "not_ready", Error: "database: " + dbErrorText(err)})
	}
	return c.JSON(ReadyResponse{Status: "ready"})
}

// ServiceHealth is one service in /health-status.
type ServiceHealth struct {
	Service          string    `json:"service"`
	Status           string    `json:"status" enum:"healthy,degraded,unhealthy"`
	ErrorRate        float64   `json:"error_rate"`
	LatencyP99Ms     float64   `json:"latency_p99_ms"`
	ThroughputPerSec float64   `json:"throughput_per_sec"`
	LastSeen         time.Time `json:"last_seen"`
}

// HealthStatusResponse is GET /health-status.
type HealthStatusResponse struct {
	Count    int             `json:"count"`
	Services []ServiceHealth `json:"services" doc:"by service name"`
}

func (s *Server) handleHealthStatus(c *fiber.Ctx) error {
	ctx := c.UserContext()
	return s.sendFollowing(c, healthStatusTable, func() ([]byte, error) {
		rows, err := s.st.serviceHealth(ctx)
		if err != nil {
			return nil, err
		}
		return marshalJSON(HealthStatusResponse{Count: len(rows), Services: rows})
	})
}
