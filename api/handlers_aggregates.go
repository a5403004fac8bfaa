package api

import (
	"time"

	"github.com/gofiber/fiber/v2"
)

// MetricRow is one window aggregate of one service (docs/ARCHITECTURE.md §2.5).
type MetricRow struct {
	Service          string    `json:"service"`
	Window           string    `json:"window"`
	Timestamp        time.Time `json:"timestamp" doc:"window start (UTC)"`
	Count            int64     `json:"count"`
	ErrorCount       int64     `json:"error_count"`
	WarningCount     int64     `json:"warning_count"`
	ErrorRate        float64   `json:"error_rate" doc:"errors as a percentage of count (0-100)"`
	ThroughputPerSec float64   `json:"throughput_per_sec"`
	LatencyAvgMs     float64   `json:"latency_avg_ms"`
	LatencyMinMs     float64   `json:"latency_min_ms"`
	LatencyMaxMs     float64   `json:"latency_max_ms"`
	LatencyP50Ms     float64   `json:"latency_p50_ms"`
	LatencyP95Ms     float64   `json:"latency_p95_ms"`
	LatencyP99Ms     float64   `json:"latency_p99_ms"`
	RiskScoreAvg     *float64  `json:"risk_score_avg" doc:"null when no event of the window carried a risk_score"`
	RiskScoreMax     *float64  `json:"risk_score_max"`
	Final            bool      `json:"final" doc:"true once the window is closed; corrections may still follow"`
}

// MetricsResponse is GET /metrics.
type MetricsResponse struct {
	Count   int         `json:"count"`
	Window  string      `json:"window"`
	Metrics []MetricRow `json:"metrics" doc:"newest window first, then by service"`
}

func (s *Server) handleMetrics(c *fiber.Ctx) error {
	q := query{c}
	w, err := s.windowParam(q)
	if err != nil {
		return err
	}
	service, err := q.service()
	if err != nil {
		return err
	}
	from, to, err := q.timeRange()
	if err != nil {
		return err
	}
	limit, err := q.limit(defaultLimit)
	if err != nil {
		return err
	}
	ctx := c.UserContext()
	return s.sendFollowing(c, metricsTable(w), func() ([]byte, error) {
		rows, err := s.st.metrics(ctx, w.Name, service, from, to, limit)
		if err != nil {
			return nil, err
		}
		r := MetricsResponse{Count: len(rows), Window: w.Name, Metrics: rows}
		return appendMetricsResponse(make([]byte, 0, 64+len(rows)*420), &r), nil
	})
}
