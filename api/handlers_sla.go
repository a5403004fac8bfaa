package api

import (
	"time"

	"github.com/gofiber/fiber/v2"
)

// SLARow is one service's SLA report (analytics_calculate_sla).
type SLARow struct {
	Service                 *string   `json:"service"`
	PeriodStart             time.Time `json:"period_start"`
	PeriodEnd               time.Time `json:"period_end"`
	TotalEvents             int64     `json:"total_events"`
	ErrorEvents             int64     `json:"error_events"`
	WarningEvents           int64     `json:"warning_events"`
	AvailabilityPct         *float64  `json:"availability_pct" doc:"100 x non-error events / events; null without events"`
	ErrorRatePct            *float64  `json:"error_rate_pct"`
	LatencyAvgMs            *float64  `json:"latency_avg_ms"`
	LatencyP99MaxMs         *float64  `json:"latency_p99_max_ms"`
	WindowsTotal            int64     `json:"windows_total" doc:"window minutes with data"`
	WindowsWithinLatencySLO int64     `json:"windows_within_latency_slo"`
	LatencySLOCompliancePct *float64  `json:"latency_slo_compliance_pct"`
	LatencySLOMs            float64   `json:"latency_slo_ms"`
	ErrorSLOPct             float64   `json:"error_slo_pct"`
	AllowedErrorEvents      float64   `json:"allowed_error_events"`
	ErrorBudgetRemainingPct *float64  `json:"error_budget_remaining_pct" doc:"negative when overspent"`
	ErrorSLOMet             *bool     `json:"error_slo_met"`
}

// SLAResponse is GET /sla.
type SLAResponse struct {
	From  time.Time `json:"from"`
	To    time.Time `json:"to"`
	Count int       `json:"count"`
	SLA   []SLARow  `json:"sla" doc:"one row for ?service=, else one per service with data"`
}

func (s *Server) handleSLA(c *fiber.Ctx) error {
	q := query{c}
	service, err := q.service()
	if err != nil {
		return err
	}
	from, to, err := s.defaultRange(q, 24*time.Hour)
	if err != nil {
		return err
	}
	latSLO, err := q.float("latency_slo_ms", 500, 0, 3.6e6)
	if err != nil {
		return err
	}
	errSLO, err := q.float("error_slo_pct", 1, 0.0001, 100)
	if err != nil {
		return err
	}
	rows, err := s.st.sla(c.UserContext(), service, from, to, latSLO, errSLO)
	if err != nil {
		return err
	}
	return c.JSON(SLAResponse{From: from, To: to, Count: len(rows), SLA: rows})
}
