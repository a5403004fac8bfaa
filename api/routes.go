package api

import (
	"github.com/gofiber/fiber/v2"

	"github.com/stacklens/stacklens/internal/slo"
)

// routeSpec describes one route once: the server registers it from this
// table and the OpenAPI document is generated from the same table, so every
// route is documented and every documented route exists.
type routeSpec struct {
	method, path string
	access       Access
	operationID  string
	summary      string
	description  string
	tag          string
	query        []paramSpec
	pathID       string // description of the {id} path parameter, "" when none
	body         any    // zero value of the request body type
	resp         any    // zero value of the success body type; nil: no body
	status       int    // success status
	errors       []int  // error statuses besides 401/403/429 (added for non-public routes)
	handler      func(s *Server) fiber.Handler
}

// paramSpec is one query parameter.
type paramSpec struct {
	name   string
	desc   string
	schema map[string]any
}

func (r *routeSpec) queryNames() []string {
	out := make([]string, len(r.query))
	for i, p := range r.query {
		out[i] = p.name
	}
	return out
}

func enumSchema(def string, values ...string) map[string]any {
	m := map[string]any{"type": "string", "enum": values}
	if def != "" {
		m["default"] = def
	}
	return m
}

var (
	pService = paramSpec{"service", "exact service name, valid by the event contract's rule: 1-128 bytes of UTF-8, no control characters (C0, DEL, C1) or line separators, no whitespace at either end",
		map[string]any{"type": "string", "minLength": 1, "maxLength": maxServiceBytes}}
	pFrom = paramSpec{"from", "inclusive start: RFC 3339 with zone (2026-11-29T01:00:00Z) or whole epoch seconds",
		map[string]any{"type": "string"}}
	pTo = paramSpec{"to", "exclusive end: RFC 3339 with zone or whole epoch seconds; must be after from",
		map[string]any{"type": "string"}}
	pLimit = paramSpec{"limit", "most rows returned (1-1000, default 100)",
		map[string]any{"type": "integer", "minimum": 1, "maximum": maxLimit, "default": defaultLimit}}
)

func routeTable() []*routeSpec {
	return []*routeSpec{
		{
			method: "GET", path: "/health", access: AccessPublic, operationID: "getHealth", tag: "operations",
			summary:     "Deep health check",
			description: "Database ping, NATS connectivity and pipeline freshness (age of the newest metric row). 200 healthy or degraded, 503 unhealthy (database unreachable). No credentials needed.",
			resp:        HealthResponse{}, status: 200, errors: []int{400, 503},
			handler: func(s *Server) fiber.Handler { return s.handleHealth },
		},
		{
			method: "GET", path: "/ready", access: AccessPublic, operationID: "getReady", tag: "operations",
			summary:     "Readiness for orchestrators",
			description: "200 when the database answers, else 503. No credentials needed.",
			resp:        ReadyResponse{}, status: 200, errors: []int{400, 503},
			handler: func(s *Server) fiber.Handler { return s.handleReady },
		},
		{
			method: "GET", path: "/metrics", access: AccessReader, operationID: "getMetrics", tag: "metrics",
			summary:     "Per-service window aggregates, newest first",
			description: "Rows of analytics_metrics_<window>, ordered by window start descending, then service.",
			query: []paramSpec{
				{"window", "aggregation window (a configured one; default the smallest, 1min)", enumSchema("1min", "1min", "5min", "1hour")},
				pService, pFrom, pTo, pLimit,
			},
			resp: MetricsResponse{}, status: 200, errors: []int{400, 503},
			handler: func(s *Server) fiber.Handler { return s.handleMetrics },
		},
		{
			method: "GET", path: "/health-status", access: AccessReader, operationID: "getHealthStatus", tag: "metrics",
			summary:     "Health of every service seen in the last 10 minutes",
			description: "From each service's newest 1-minute window (v_service_health_current): unhealthy when error_rate > 20 or latency_p99_ms > 1000; degraded when error_rate > 5 or latency_p99_ms > 500; healthy otherwise — the thresholds of the default alert rules.",
			resp:        HealthStatusResponse{}, status: 200, errors: []int{400, 503},
			handler: func(s *Server) fiber.Handler { return s.handleHealthStatus },
		},
		{
			method: "GET", path: "/alerts", access: AccessReader, operationID: "listAlerts", tag: "alerts",
			summary: "Alerts, newest first",
			query: []paramSpec{
				{"status", "alert status (default all)", enumSchema("all", alertStatuses...)},
				{"severity", "alert severity", enumSchema("", severities...)},
				pService, pLimit,
			},
			resp: AlertsResponse{}, status: 200, errors: []int{400, 503},
			handler: func(s *Server) fiber.Handler { return s.handleAlerts },
		},
		{
			method: "GET", path: "/alerts/stats", access: AccessReader, operationID: "getAlertStats", tag: "alerts",
			summary:     "Alert statistics per severity",
			description: "analytics_get_alert_stats over alerts fired in [from, to) (default: the 24 hours before to; to defaults to now).",
			query:       []paramSpec{pFrom, pTo},
			resp:        AlertStatsResponse{}, status: 200, errors: []int{400, 503},
			handler: func(s *Server) fiber.Handler { return s.handleAlertStats },
		},
		{
			method: "POST", path: "/alerts/:id/acknowledge", access: AccessAdmin, operationID: "acknowledgeAlert", tag: "alerts",
			summary:     "Acknowledge an active alert",
			description: "Idempotent: acknowledging an acknowledged alert returns it with changed=false. A resolved alert is a 409. acknowledged_by is the caller (user:<name> or key:<digest>). No body.",
			pathID:      "numeric alert id (the id field, not alert_id)",
			resp:        AckResponse{}, status: 200, errors: []int{400, 404, 409, 503},
			handler: func(s *Server) fiber.Handler { return s.handleAcknowledge },
		},
		{
			method: "GET", path: "/sla", access: AccessReader, operationID: "getSLA", tag: "metrics",
			summary:     "SLA report",
			description: "analytics_calculate_sla over windows starting in [from, to) (default: the 24 hours before to; to defaults to now), for one service or every service.",
			query: []paramSpec{
				pService, pFrom, pTo,
				{"latency_slo_ms", "latency objective for p99, ms (default 500)", map[string]any{"type": "number", "minimum": 0, "maximum": 3.6e6, "default": 500}},
				{"error_slo_pct", "allowed error rate, percent (default 1)", map[string]any{"type": "number", "minimum": 0.0001, "maximum": 100, "default": 1}},
			},
			resp: SLAResponse{}, status: 200, errors: []int{400, 503},
			handler: func(s *Server) fiber.Handler { return s.handleSLA },
		},
		{
			method: "GET", path: "/slos", access: AccessReader, operationID: "listSLOs", tag: "slos",
			summary:     "Service-level objectives with their status",
			description: "Every SLO with its compliance, error budget, burn rates, time to exhaustion and firing burn-rate alerts, computed from the pre-aggregated metrics tables at the time of the request (docs/slo.md).",
			resp:        SLOsResponse{}, status: 200, errors: []int{400, 503},
			handler: func(s *Server) fiber.Handler { return s.handleSLOs },
		},
		{
			method: "GET", path: "/slos/:id", access: AccessReader, operationID: "getSLO", tag: "slos",
			summary: "One SLO with its status", pathID: "SLO id",
			resp: slo.Status{}, status: 200, errors: []int{400, 404, 503},
			handler: func(s *Server) fiber.Handler { return s.handleSLO },
		},
		{
			method: "GET", path: "/slos/:id/history", access: AccessReader, operationID: "getSLOHistory", tag: "slos",
			summary:     "An SLO's burn-down",
			description: "Good and total events, compliance and remaining budget of the rolling period ending at each step boundary (hourly) in [from, to]; default: the last period before now. At most 366 days.",
			pathID:      "SLO id",
			query: []paramSpec{
				{"from", "inclusive start: RFC 3339 with zone or whole epoch seconds (default: to minus the period)", map[string]any{"type": "string"}},
				{"to", "inclusive end: RFC 3339 with zone or whole epoch seconds (default: now)", map[string]any{"type": "string"}},
			},
			resp: SLOHistoryResponse{}, status: 200, errors: []int{400, 404, 503},
			handler: func(s *Server) fiber.Handler { return s.handleSLOHistory },
		},
		{
			method: "GET", path: "/alert-rules", access: AccessReader, operationID: "listAlertRules", tag: "rules",
			summary: "Alert rules",
			resp:    RulesResponse{}, status: 200, errors: []int{400, 503},
			handler: func(s *Server) fiber.Handler { return s.handleRules },
		},
		{
			method: "POST", path: "/alert-rules", access: AccessAdmin, operationID: "createAlertRule", tag: "rules",
			summary:     "Create an alert rule",
			description: "metric_name must be a metrics column, operator one of > >= < <= == !=, window a configured window, for_windows >= 1, channels from slack, email, pagerduty. 409 when the name is taken.",
			body:        RuleInput{}, resp: Rule{}, status: 201, errors: []int{400, 409, 413, 415, 503},
			handler: func(s *Server) fiber.Handler { return s.handleCreateRule },
		},
		{
			method: "GET", path: "/alert-rules/:id", access: AccessReader, operationID: "getAlertRule", tag: "rules",
			summary: "One alert rule", pathID: "rule id",
			resp: Rule{}, status: 200, errors: []int{400, 404, 503},
			handler: func(s *Server) fiber.Handler { return s.handleRule },
		},
		{
			method: "PUT", path: "/alert-rules/:id", access: AccessAdmin, operationID: "replaceAlertRule", tag: "rules",
			summary: "Replace an alert rule", pathID: "rule id",
			description: "Same body and validation as POST; omitted optional fields take their defaults.",
			body:        RuleInput{}, resp: Rule{}, status: 200, errors: []int{400, 404, 409, 413, 415, 503},
			handler: func(s *Server) fiber.Handler { return s.handleUpdateRule },
		},
		{
			method: "DELETE", path: "/alert-rules/:id", access: AccessAdmin, operationID: "deleteAlertRule", tag: "rules",
			summary: "Delete an alert rule", pathID: "rule id",
			description: "Alerts it fired are kept (their rule_id becomes null).",
			status:      204, errors: []int{400, 404, 503},
			handler: func(s *Server) fiber.Handler { return s.handleDeleteRule },
		},
		{
			method: "POST", path: "/slos", access: AccessAdmin, operationID: "createSLO", tag: "slos",
			summary:     "Create an SLO",
			description: "objective availability (good = events not at level error, critical or fatal) or latency (good = events with latency_ms <= latency_threshold_ms, required iff latency); target percent strictly between 0 and 100; period whole days (30d, the default) or a Go duration from 1h to 366d; burn_alerts entries {severity page|ticket, burn_rate > 0, long, short < long} (omitted: the default policy); channels from slack, email, pagerduty. The processors count a latency threshold exactly from the first window they open after it was defined (docs/processor.md). 409 when the name is taken.",
			body:        SLOInput{}, resp: SLODefinition{}, status: 201, errors: []int{400, 409, 413, 415, 503},
			handler: func(s *Server) fiber.Handler { return s.handleCreateSLO },
		},
		{
			method: "PUT", path: "/slos/:id", access: AccessAdmin, operationID: "replaceSLO", tag: "slos",
			summary: "Replace an SLO", pathID: "SLO id",
			description: "Same body and validation as POST; omitted optional fields take their defaults.",
			body:        SLOInput{}, resp: SLODefinition{}, status: 200, errors: []int{400, 404, 409, 413, 415, 503},
			handler: func(s *Server) fiber.Handler { return s.handleUpdateSLO },
		},
		{
			method: "DELETE", path: "/slos/:id", access: AccessAdmin, operationID: "deleteSLO", tag: "slos",
			summary: "Delete an SLO", pathID: "SLO id",
			status: 204, errors: []int{400, 404, 503},
			handler: func(s *Server) fiber.Handler { return s.handleDeleteSLO },
		},
		{
			method: "GET", path: "/silences", access: AccessReader, operationID: "listSilences", tag: "silences",
			summary: "Silences",
			query: []paramSpec{
				{"state", "current (not yet ended; default), active (in effect now), pending (starts later), expired, all", enumSchema("current", silenceStates...)},
				pLimit,
			},
			resp: SilencesResponse{}, status: 200, errors: []int{400, 503},
			handler: func(s *Server) fiber.Handler { return s.handleSilences },
		},
		{
			method: "POST", path: "/silences", access: AccessAdmin, operationID: "createSilence", tag: "silences",
			summary:     "Create a silence",
			description: "Alerts matching every given matcher are recorded but not notified while the silence is in effect. At most 90 days.",
			body:        SilenceInput{}, resp: Silence{}, status: 201, errors: []int{400, 413, 415, 503},
			handler: func(s *Server) fiber.Handler { return s.handleCreateSilence },
		},
		{
			method: "GET", path: "/silences/:id", access: AccessReader, operationID: "getSilence", tag: "silences",
			summary: "One silence", pathID: "silence id",
			resp: Silence{}, status: 200, errors: []int{400, 404, 503},
			handler: func(s *Server) fiber.Handler { return s.handleSilence },
		},
		{
			method: "PATCH", path: "/silences/:id", access: AccessAdmin, operationID: "updateSilence", tag: "silences",
			summary:     "Change a silence",
			pathID:      "silence id",
			description: "Partial update: only the fields given change; a matcher given as null is removed. The result is validated like POST (at least one matcher, ends_at after starts_at, at most 90 days; a new ends_at or duration must end in the future). The alert engine applies the change at once.",
			body:        SilencePatch{}, resp: Silence{}, status: 200, errors: []int{400, 404, 413, 415, 503},
			handler: func(s *Server) fiber.Handler { return s.handlePatchSilence },
		},
		{
			method: "DELETE", path: "/silences/:id", access: AccessAdmin, operationID: "deleteSilence", tag: "silences",
			summary: "Delete a silence", pathID: "silence id",
			status: 204, errors: []int{400, 404, 503},
			handler: func(s *Server) fiber.Handler { return s.handleDeleteSilence },
		},
		{
			method: "GET", path: "/stats", access: AccessReader, operationID: "getStats", tag: "operations",
			summary:     "Request statistics of this API process",
			description: "requests_served counts every request since start, including this one; per route: counts, 4xx/5xx and latency p50/p99 over the last 2048 requests.",
			resp:        StatsResponse{}, status: 200, errors: []int{400},
			handler: func(s *Server) fiber.Handler { return s.handleStats },
		},
		{
			method: "GET", path: "/openapi.json", access: AccessReader, operationID: "getOpenAPI", tag: "operations",
			summary: "This document (OpenAPI 3.0)",
			resp:    map[string]any{}, status: 200, errors: []int{400},
			handler: func(s *Server) fiber.Handler { return s.handleOpenAPI },
		},
	}
}

func (s *Server) handleOpenAPI(c *fiber.Ctx) error {
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSONCharsetUTF8)
	return c.Send(s.openapi)
}
