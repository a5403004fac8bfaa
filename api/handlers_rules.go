package api

import (
	"math"
	"slices"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
)

// Rule is one alert rule (analytics_alert_rules).
type Rule struct {
	ID                   int64     `json:"id"`
	RuleName             string    `json:"rule_name"`
	MetricName           string    `json:"metric_name" doc:"a metrics column, or no_data"`
	Operator             string    `json:"operator" enum:">,>=,<,<=,==,!="`
	Threshold            float64   `json:"threshold"`
	Severity             string    `json:"severity" enum:"info,warning,critical"`
	NotificationChannels []string  `json:"notification_channels"`
	Enabled              bool      `json:"enabled"`
	Window               string    `json:"window"`
	ForWindows           int32     `json:"for_windows" doc:"consecutive windows the condition must hold before firing"`
	ResolveThreshold     *float64  `json:"resolve_threshold" doc:"hysteresis; null: resolve when the condition no longer holds"`
	Description          string    `json:"description"`
	CreatedAt            time.Time `json:"created_at"`
	UpdatedAt            time.Time `json:"updated_at"`
}

// RuleInput is the body of POST /alert-rules and PUT /alert-rules/{id}
// (PUT replaces the whole rule; omitted optional fields take their defaults).
type RuleInput struct {
	RuleName             string   `json:"rule_name" required:"true" doc:"unique, 1-200 characters"`
	MetricName           string   `json:"metric_name" required:"true" enum:"count,error_count,warning_count,error_rate,throughput_per_sec,latency_avg_ms,latency_min_ms,latency_max_ms,latency_p50_ms,latency_p95_ms,latency_p99_ms,risk_score_avg,risk_score_max,no_data" doc:"no_data: fire when a service seen before sends nothing for for_windows windows (docs/alerting.md)"`
	Operator             string   `json:"operator,omitempty" enum:">,>=,<,<=,==,!=" doc:"required, except for no_data (stored as >=)"`
	Threshold            *float64 `json:"threshold,omitempty" doc:"required, except for no_data (stored as for_windows)"`
	Severity             string   `json:"severity,omitempty" enum:"info,warning,critical" doc:"default warning"`
	NotificationChannels []string `json:"notification_channels,omitempty" doc:"subset of slack, email, pagerduty; default none"`
	Enabled              *bool    `json:"enabled,omitempty" doc:"default true"`
	Window               string   `json:"window,omitempty" doc:"a configured window; default the smallest"`
	ForWindows           *int32   `json:"for_windows,omitempty" doc:"1-1000, default 1"`
	ResolveThreshold     *float64 `json:"resolve_threshold,omitempty" doc:"must be on the non-firing side of threshold"`
	Description          string   `json:"description,omitempty" doc:"at most 1000 characters"`
}

// RulesResponse is GET /alert-rules.
type RulesResponse struct {
	Count int    `json:"count"`
	Rules []Rule `json:"rules" doc:"by id"`
}

var (
	ruleMetrics = []string{"count", "error_count", "warning_count", "error_rate", "throughput_per_sec",
		"latency_avg_ms", "latency_min_ms", "latency_max_ms", "latency_p50_ms", "latency_p95_ms",
		"latency_p99_ms", "risk_score_avg", "risk_score_max", metricNoData}
	ruleOperators = []string{">", ">=", "<", "<=", "==", "!="}
	ruleChannels  = []string{"slack", "email", "pagerduty"}
)

// metricNoData is the metric of a rule that fires when a service stops
// sending (alerting.MetricNoData; docs/alerting.md, "No data").
const metricNoData = "no_data"

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// validateRule checks a rule body and fills in defaults.
func (s *Server) validateRule(in *RuleInput) error {
	in.RuleName = strings.TrimSpace(in.RuleName)
	if err := validName(in.RuleName, 200); err != nil {
		return badParam("rule_name", "%s", err)
	}
	if !slices.Contains(ruleMetrics, in.MetricName) {
		return badParam("metric_name", "want one of %s", strings.Join(ruleMetrics, ", "))
	}
	noData := in.MetricName == metricNoData
	if noData {
		// The condition is "missing windows >= for_windows"; operator and
		// threshold are stored that way so the rule reads as what it does.
		if in.Operator != "" && in.Operator != ">=" {
			return badParam("operator", "a no_data rule takes no operator (or >=)")
		}
		if in.ResolveThreshold != nil {
			return badParam("resolve_threshold", "a no_data rule resolves when data returns; it takes no resolve_threshold")
		}
		in.Operator = ">="
		if in.Threshold == nil {
			zero := 0.0
			in.Threshold = &zero
		}
	}
	if !slices.Contains(ruleOperators, in.Operator) {
		return badParam("operator", "want one of %s", strings.Join(ruleOperators, " "))
	}
	if in.Threshold == nil || !finite(*in.Threshold) {
		return badParam("threshold", "a number is required")
	}
	if in.Severity == "" {
		in.Severity = "warning"
	}
	if !slices.Contains(severities, in.Severity) {
		return badParam("severity", "want one of %s", strings.Join(severities, ", "))
	}
	if in.NotificationChannels == nil {
		in.NotificationChannels = []string{}
	}
	seen := map[string]bool{}
	for _, ch := range in.NotificationChannels {
		if !slices.Contains(ruleChannels, ch) {
			return badParam("notification_channels", "%q: want slack, email or pagerduty", truncate(ch, 64))
		}
		if seen[ch] {
			return badParam("notification_channels", "%q listed twice", ch)
		}
		seen[ch] = true
	}
	if in.Enabled == nil {
		t := true
		in.Enabled = &t
	}
	if in.Window == "" {
		in.Window = s.cfg.Windows[0].Name
	} else {
		w, err := s.lookupWindow("window", in.Window)
		if err != nil {
			return err
		}
		in.Window = w.Name
	}
	if in.ForWindows == nil {
		one := int32(1)
		in.ForWindows = &one
	}
	if *in.ForWindows < 1 || *in.ForWindows > 1000 {
		return badParam("for_windows", "want 1 to 1000")
	}
	if noData {
		if *in.Threshold != 0 && *in.Threshold != float64(*in.ForWindows) {
			return badParam("threshold", "a no_data rule takes no threshold: for_windows is the number of missing windows")
		}
		t := float64(*in.ForWindows)
		in.Threshold = &t
	}
	if rt := in.ResolveThreshold; rt != nil {
		if !finite(*rt) {
			return badParam("resolve_threshold", "must be a finite number")
		}
		switch in.Operator {
		case ">", ">=":
			if *rt > *in.Threshold {
				return badParam("resolve_threshold", "must not exceed threshold for operator %s", in.Operator)
			}
		case "<", "<=":
			if *rt < *in.Threshold {
				return badParam("resolve_threshold", "must not be below threshold for operator %s", in.Operator)
			}
		}
	}
	if len(in.Description) > 1000 {
		return badParam("description", "longer than 1000 bytes")
	}
	return nil
}

func (s *Server) handleRules(c *fiber.Ctx) error {
	rules, err := s.st.rules(c.UserContext())
	if err != nil {
		return err
	}
	return c.JSON(RulesResponse{Count: len(rules), Rules: rules})
}

func (s *Server) handleRule(c *fiber.Ctx) error {
	id, err := idParam(c)
	if err != nil {
		return err
	}
	r, err := s.st.rule(c.UserContext(), id)
	if err != nil {
		return err
	}
	return c.JSON(r)
}

func (s *Server) handleCreateRule(c *fiber.Ctx) error {
	var in RuleInput
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	if err := s.validateRule(&in); err != nil {
		return err
	}
	r, err := s.st.createRule(c.UserContext(), &in)
	if err != nil {
		return err
	}
	if s.hooks.RulesChanged != nil {
		s.hooks.RulesChanged(c.UserContext(), r.ID, "created")
	}
	c.Location("/alert-rules/" + itoa(r.ID))
	return c.Status(fiber.StatusCreated).JSON(r)
}

func (s *Server) handleUpdateRule(c *fiber.Ctx) error {
	id, err := idParam(c)
	if err != nil {
		return err
	}
	var in RuleInput
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	if err := s.validateRule(&in); err != nil {
		return err
	}
	r, err := s.st.updateRule(c.UserContext(), id, &in)
	if err != nil {
		return err
	}
	if s.hooks.RulesChanged != nil {
		s.hooks.RulesChanged(c.UserContext(), r.ID, "updated")
	}
	return c.JSON(r)
}

func (s *Server) handleDeleteRule(c *fiber.Ctx) error {
	id, err := idParam(c)
	if err != nil {
		return err
	}
	if err := s.st.deleteRule(c.UserContext(), id); err != nil {
		return err
	}
	if s.hooks.RulesChanged != nil {
		s.hooks.RulesChanged(c.UserContext(), id, "deleted")
	}
	return c.SendStatus(fiber.StatusNoContent)
}
