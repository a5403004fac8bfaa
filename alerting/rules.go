package alerting

import (
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/jackc/pgx/v5"
)

// Operators a rule may use.
var operators = []string{">", ">=", "<", "<=", "==", "!="}

// Metrics are the columns of analytics_metrics_<window> a rule may watch,
// in the order evaluate reads them (see metricColumns).
var Metrics = []string{
	"count", "error_count", "warning_count", "error_rate", "throughput_per_sec",
	"latency_avg_ms", "latency_min_ms", "latency_max_ms", "latency_p50_ms",
	"latency_p95_ms", "latency_p99_ms", "risk_score_avg", "risk_score_max",
}

var severities = []string{"info", "warning", "critical"}

// Channels a rule may notify besides Kafka, which always receives alerts.
var Channels = []string{"slack", "email", "pagerduty"}

// Rule is one row of analytics_alert_rules.
type Rule struct {
	ID               int64
	Name             string
	Metric           string
	Operator         string
	Threshold        float64
	Severity         string
	Channels         []string
	Enabled          bool
	Window           string
	ForWindows       int
	ResolveThreshold *float64
	Description      string
}

// Validate reports why the rule cannot be evaluated (nil: it can).
// windows are the configured window names.
func (r *Rule) Validate(windows []string) error {
	switch {
	case !slices.Contains(Metrics, r.Metric) && r.Metric != MetricNoData:
		return fmt.Errorf("rule %q: unknown metric %q", r.Name, r.Metric)
	case !slices.Contains(operators, r.Operator):
		return fmt.Errorf("rule %q: unknown operator %q", r.Name, r.Operator)
	case !slices.Contains(severities, r.Severity):
		return fmt.Errorf("rule %q: unknown severity %q", r.Name, r.Severity)
	case !slices.Contains(windows, r.Window):
		return fmt.Errorf("rule %q: window %q is not one of AGGREGATION_WINDOWS %v", r.Name, r.Window, windows)
	case r.ForWindows < 1:
		return fmt.Errorf("rule %q: for_windows %d < 1", r.Name, r.ForWindows)
	case math.IsNaN(r.Threshold) || math.IsInf(r.Threshold, 0):
		return fmt.Errorf("rule %q: threshold is not finite", r.Name)
	}
	for _, c := range r.Channels {
		if !slices.Contains(Channels, c) {
			return fmt.Errorf("rule %q: unknown channel %q", r.Name, c)
		}
	}
	return nil
}

// Breaches reports whether value satisfies the rule's firing condition.
func (r *Rule) Breaches(value float64) bool { return compare(value, r.Operator, r.Threshold) }

// Cleared reports whether value lets a firing alert resolve: the firing
// condition evaluated against the resolve threshold no longer holds. With
// no resolve threshold (or one on the wrong side of the threshold, or an
// equality operator) that is simply "no longer breaching".
func (r *Rule) Cleared(value float64) bool {
	return !compare(value, r.Operator, r.EffectiveResolveThreshold())
}

// EffectiveResolveThreshold is the resolve threshold hysteresis uses: the
// rule's resolve_threshold when it lies on the "good" side of threshold
// (≤ for > and >=, ≥ for < and <=), else threshold.
func (r *Rule) EffectiveResolveThreshold() float64 {
	if r.ResolveThreshold == nil {
		return r.Threshold
	}
	rt := *r.ResolveThreshold
	switch r.Operator {
	case ">", ">=":
		if rt <= r.Threshold {
			return rt
		}
	case "<", "<=":
		if rt >= r.Threshold {
			return rt
		}
	}
	return r.Threshold
}

func compare(v float64, op string, t float64) bool {
	switch op {
	case ">":
		return v > t
	case ">=":
		return v >= t
	case "<":
		return v < t
	case "<=":
		return v <= t
	case "==":
		return v == t
	case "!=":
		return v != t
	}
	return false
}

// wantsChannel reports whether the rule lists channel (kafka: always).
func (r *Rule) wantsChannel(channel string) bool {
	return channel == "kafka" || slices.Contains(r.Channels, channel)
}

const rulesSQL = `SELECT id, rule_name, metric_name, operator, threshold, severity,
	notification_channels, enabled, "window", for_windows, resolve_threshold, description
FROM analytics_alert_rules WHERE enabled ORDER BY id`

// querier is what the engine needs from a pool or transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// loadRules reads the enabled rules.
func loadRules(ctx context.Context, q querier) ([]Rule, error) {
	rows, err := q.Query(ctx, rulesSQL)
	if err != nil {
		return nil, fmt.Errorf("load rules: %w", err)
	}
	rules, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Rule, error) {
		var r Rule
		err := row.Scan(&r.ID, &r.Name, &r.Metric, &r.Operator, &r.Threshold, &r.Severity,
			&r.Channels, &r.Enabled, &r.Window, &r.ForWindows, &r.ResolveThreshold, &r.Description)
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("load rules: %w", err)
	}
	return rules, nil
}
