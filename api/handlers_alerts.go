package api

import (
	"time"

	"github.com/gofiber/fiber/v2"
)

// Alert is one row of analytics_alerts.
type Alert struct {
	ID             int64      `json:"id"`
	AlertID        string     `json:"alert_id" doc:"stable id, the de-duplication key of Kafka consumers"`
	Fingerprint    string     `json:"fingerprint" doc:"rule + service"`
	RuleID         *int64     `json:"rule_id" doc:"null once the rule was deleted"`
	RuleName       string     `json:"rule_name"`
	Service        string     `json:"service"`
	Severity       string     `json:"severity" enum:"info,warning,critical"`
	Status         string     `json:"status" enum:"active,acknowledged,resolved"`
	MetricName     string     `json:"metric_name"`
	Value          *float64   `json:"value"`
	Threshold      *float64   `json:"threshold"`
	Window         string     `json:"window"`
	WindowStart    *time.Time `json:"window_start"`
	Message        string     `json:"message"`
	FiredAt        time.Time  `json:"fired_at"`
	AcknowledgedAt *time.Time `json:"acknowledged_at"`
	AcknowledgedBy *string    `json:"acknowledged_by"`
	ResolvedAt     *time.Time `json:"resolved_at"`
	UpdatedAt      time.Time  `json:"updated_at"`
}

// AlertsResponse is GET /alerts.
type AlertsResponse struct {
	Count  int     `json:"count"`
	Alerts []Alert `json:"alerts" doc:"newest fired first"`
}

var (
	alertStatuses = []string{"active", "acknowledged", "resolved", "all"}
	severities    = []string{"info", "warning", "critical"}
)

func (s *Server) handleAlerts(c *fiber.Ctx) error {
	q := query{c}
	status, err := q.enum("status", "all", alertStatuses...)
	if err != nil {
		return err
	}
	if status == "all" {
		status = ""
	}
	severity, err := q.optEnum("severity", severities...)
	if err != nil {
		return err
	}
	service, err := q.service()
	if err != nil {
		return err
	}
	limit, err := q.limit(defaultLimit)
	if err != nil {
		return err
	}
	ctx := c.UserContext()
	return s.sendFollowing(c, alertsTable, func() ([]byte, error) {
		rows, err := s.st.alerts(ctx, status, severity, service, limit)
		if err != nil {
			return nil, err
		}
		return marshalJSON(AlertsResponse{Count: len(rows), Alerts: rows})
	})
}

// AckResponse is POST /alerts/{id}/acknowledge.
type AckResponse struct {
	Changed bool  `json:"changed" doc:"false when the alert was already acknowledged"`
	Alert   Alert `json:"alert"`
}

func (s *Server) handleAcknowledge(c *fiber.Ctx) error {
	id, err := idParam(c)
	if err != nil {
		return err
	}
	a, changed, err := s.st.acknowledge(c.UserContext(), id, caller(c), s.hooks.OnAcknowledge)
	if err != nil {
		return err
	}
	if changed {
		// Read-your-writes on this replica without waiting for the
		// commit's notification (other replicas follow it).
		s.readCache.drop()
	}
	return c.JSON(AckResponse{Changed: changed, Alert: a})
}

// AlertStatsRow is one severity's statistics (analytics_get_alert_stats).
type AlertStatsRow struct {
	Severity                     string   `json:"severity" enum:"critical,warning,info,all"`
	TotalAlerts                  int64    `json:"total_alerts"`
	ActiveAlerts                 int64    `json:"active_alerts"`
	AcknowledgedAlerts           int64    `json:"acknowledged_alerts"`
	ResolvedAlerts               int64    `json:"resolved_alerts"`
	ServicesAffected             int64    `json:"services_affected"`
	MeanTimeToAcknowledgeSeconds *float64 `json:"mean_time_to_acknowledge_seconds"`
	MeanTimeToResolveSeconds     *float64 `json:"mean_time_to_resolve_seconds"`
}

// AlertStatsResponse is GET /alerts/stats.
type AlertStatsResponse struct {
	From  time.Time       `json:"from"`
	To    time.Time       `json:"to"`
	Count int             `json:"count"`
	Stats []AlertStatsRow `json:"stats" doc:"critical, warning, info, then the total row \"all\""`
}

// defaultRange resolves from/to with a default span ending now.
func (s *Server) defaultRange(q query, span time.Duration) (time.Time, time.Time, error) {
	from, to, err := q.timeRange()
	if err != nil {
		return time.Time{}, time.Time{}, err
	}
	var f, t time.Time
	switch {
	case to != nil:
		t = *to
	default:
		t = s.now().UTC()
	}
	switch {
	case from != nil:
		f = *from
	default:
		f = t.Add(-span)
	}
	if !t.After(f) {
		return f, t, badParam("from", "must be before to (default to: now)")
	}
	return f, t, nil
}

func (s *Server) handleAlertStats(c *fiber.Ctx) error {
	from, to, err := s.defaultRange(query{c}, 24*time.Hour)
	if err != nil {
		return err
	}
	rows, err := s.st.alertStats(c.UserContext(), from, to)
	if err != nil {
		return err
	}
	return c.JSON(AlertStatsResponse{From: from, To: to, Count: len(rows), Stats: rows})
}
