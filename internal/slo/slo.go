// Package slo is the arithmetic of service-level objectives (docs/slo.md):
// their definitions and validation, burn-rate alert policies, error
// budgets, compliance, burn rates and time to exhaustion from exact
// good/total event counts, and which pre-aggregated metrics table and
// bucket range answer a rolling window. The API's status endpoints and the
// alert engine's burn-rate alerts both compute through it, so they agree.
//
// Everything but read.go is pure (no clock, no I/O); read.go sums the
// counts from the metrics tables of PostgreSQL.
package slo

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/stacklens/stacklens/internal/agg"
)

// Objectives.
const (
	Availability = "availability"
	Latency      = "latency"
)

// Severities of a burn-rate alert: a page wakes someone, a ticket waits
// for working hours. The alert engine records them as critical and warning.
const (
	Page   = "page"
	Ticket = "ticket"
)

// Channels an SLO may notify besides Kafka, which always receives alerts.
var Channels = []string{"slack", "email", "pagerduty"}

// MinPeriod and MaxPeriod bound an SLO's period (the schema's CHECK).
const (
	MinPeriod = time.Hour
	MaxPeriod = 366 * 24 * time.Hour
)

// Duration is a whole number of minutes written as "5m", "30m", "1h",
// "6h", "1d", "3d", "30d" in JSON (ParseDuration, FormatDuration).
type Duration time.Duration

// MarshalJSON writes the duration's short form ("1h").
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(strconv.Quote(FormatDuration(time.Duration(d)))), nil
}

// UnmarshalJSON reads a duration string ("1h").
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return errors.New("want a duration string such as \"1h\"")
	}
	v, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

var durationUnits = []struct {
	suffix string
	size   time.Duration
}{{"w", 7 * 24 * time.Hour}, {"d", 24 * time.Hour}, {"h", time.Hour}, {"m", time.Minute}}

// ParseDuration parses a positive whole number of minutes, hours, days or
// weeks: "5m", "90m", "1h", "1d", "4w". Seconds are refused: the finest
// metrics table has one-minute buckets.
func ParseDuration(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	for _, u := range durationUnits {
		num, ok := strings.CutSuffix(t, u.suffix)
		if !ok || num == "" {
			continue
		}
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil || n <= 0 || num[0] == '+' {
			break
		}
		if n > int64(MaxPeriod/u.size) {
			return 0, fmt.Errorf("duration %q: longer than 366d", s)
		}
		return time.Duration(n) * u.size, nil
	}
	return 0, fmt.Errorf("duration %q: want a positive whole number of m, h, d or w, e.g. 5m, 1h, 30d", s)
}

// FormatDuration writes d with the largest of d, h and m that divides it
// ("30d", "6h", "90m"); d must be a positive whole number of minutes.
func FormatDuration(d time.Duration) string {
	for _, u := range durationUnits[1:] {
		if d%u.size == 0 && d > 0 {
			return strconv.FormatInt(int64(d/u.size), 10) + u.suffix
		}
	}
	return d.String()
}

// BurnAlert is one entry of a multiwindow burn-rate alert policy: it fires
// while the burn rate over Long and the burn rate over Short are both at
// least BurnRate, and resolves when that stops holding.
type BurnAlert struct {
	Severity string   `json:"severity" doc:"page or ticket"`
	BurnRate float64  `json:"burn_rate" doc:"multiple of the sustainable error rate, e.g. 14.4"`
	Long     Duration `json:"long" doc:"long window, e.g. 1h"`
	Short    Duration `json:"short" doc:"short window, e.g. 5m; shorter than long"`
}

func (a BurnAlert) String() string {
	return fmt.Sprintf("%s %gx over %s and %s", a.Severity, a.BurnRate,
		FormatDuration(time.Duration(a.Long)), FormatDuration(time.Duration(a.Short)))
}

// DefaultPolicy is the SRE workbook's multiwindow, multi-burn-rate policy
// for a 30-day period: page when 2 % of the budget burns in 1 h (14.4x)
// or 5 % in 6 h (6x), ticket when 10 % burns in 1 d (3x) or in 3 d (1x);
// each short window (1/12 of the long one) makes the alert resolve soon
// after the burn stops.
func DefaultPolicy() []BurnAlert {
	return []BurnAlert{
		{Page, 14.4, Duration(time.Hour), Duration(5 * time.Minute)},
		{Page, 6, Duration(6 * time.Hour), Duration(30 * time.Minute)},
		{Ticket, 3, Duration(24 * time.Hour), Duration(2 * time.Hour)},
		{Ticket, 1, Duration(72 * time.Hour), Duration(6 * time.Hour)},
	}
}

// ParsePolicy reads the burn_alerts column or body field: absent or null
// is the default policy, [] no burn-rate alerts, else a validated list.
func ParsePolicy(raw []byte) ([]BurnAlert, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return DefaultPolicy(), nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var p []BurnAlert
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("burn_alerts: %w", err)
	}
	if dec.More() {
		return nil, errors.New("burn_alerts: trailing data after the array")
	}
	if err := ValidatePolicy(p); err != nil {
		return nil, err
	}
	return p, nil
}

// ValidatePolicy reports the first entry that cannot be evaluated: an
// unknown severity, a burn rate that is not a positive finite number, a
// window that is not a positive whole number of minutes up to 366 days, a
// short window not shorter than the long one, or a duplicate entry (two
// entries with one fingerprint).
func ValidatePolicy(p []BurnAlert) error {
	for i, a := range p {
		field := fmt.Sprintf("burn_alerts[%d]", i)
		switch {
		case a.Severity != Page && a.Severity != Ticket:
			return fmt.Errorf("%s.severity: %q is not page or ticket", field, a.Severity)
		case math.IsNaN(a.BurnRate) || math.IsInf(a.BurnRate, 0) || a.BurnRate <= 0:
			return fmt.Errorf("%s.burn_rate: must be a positive number", field)
		}
		for _, w := range []struct {
			name string
			d    time.Duration
		}{{"long", time.Duration(a.Long)}, {"short", time.Duration(a.Short)}} {
			if w.d <= 0 || w.d%time.Minute != 0 || w.d > MaxPeriod {
				return fmt.Errorf("%s.%s: must be a whole number of minutes from 1m to 366d", field, w.name)
			}
		}
		if a.Short >= a.Long {
			return fmt.Errorf("%s.short: must be shorter than long", field)
		}
		if slices.Contains(p[:i], a) {
			return fmt.Errorf("%s: duplicate entry", field)
		}
	}
	return nil
}

// Definition is one SLO, a row of analytics_slos.
type Definition struct {
	ID int64
	// Name is unique.
	Name string
	// Service nil: every service together.
	Service   *string
	Objective string
	// LatencyThresholdMS is set exactly for latency objectives.
	LatencyThresholdMS *float64
	// Target in percent of good events, 0 < Target < 100.
	Target float64
	Period time.Duration
	// BurnAlerts nil: DefaultPolicy.
	BurnAlerts           []BurnAlert
	NotificationChannels []string
	Enabled              bool
	Description          string
}

// Validate reports what makes d unusable (nil: nothing); the field name
// leads the message. It checks what the schema checks and the policy.
func (d *Definition) Validate() error {
	switch {
	case strings.TrimSpace(d.Name) == "":
		return errors.New("name: must not be empty")
	case d.Service != nil && strings.TrimSpace(*d.Service) == "":
		return errors.New("service: must not be empty (omit it for every service)")
	case d.Objective != Availability && d.Objective != Latency:
		return fmt.Errorf("objective: %q is not availability or latency", d.Objective)
	case d.Objective == Latency && d.LatencyThresholdMS == nil:
		return errors.New("latency_threshold_ms: required for a latency objective")
	case d.Objective == Availability && d.LatencyThresholdMS != nil:
		return errors.New("latency_threshold_ms: only for a latency objective")
	case d.LatencyThresholdMS != nil && !(*d.LatencyThresholdMS >= 0 && *d.LatencyThresholdMS <= agg.MaxLatencyMS):
		return fmt.Errorf("latency_threshold_ms: must be a number of milliseconds from 0 to %v", agg.MaxLatencyMS)
	case math.IsNaN(d.Target) || d.Target <= 0 || d.Target >= 100:
		return errors.New("target: must be a percentage strictly between 0 and 100")
	case BudgetFraction(d.Target) <= 0:
		// 99.9999999999 rounds to no budget at all: every burn rate would
		// be infinite.
		return errors.New("target: leaves no error budget (at most 9 decimals below 100)")
	case d.Period < MinPeriod || d.Period > MaxPeriod || d.Period%time.Minute != 0:
		return errors.New("period: must be a whole number of minutes from 1h to 366d")
	}
	for _, c := range d.NotificationChannels {
		if !slices.Contains(Channels, c) {
			return fmt.Errorf("notification_channels: unknown channel %q (want slack, email or pagerduty)", c)
		}
	}
	if err := ValidatePolicy(d.BurnAlerts); err != nil {
		return err
	}
	// A burn rate above 1/(1 - target) needs more than every event bad.
	for i, a := range d.BurnAlerts {
		if a.BurnRate*BudgetFraction(d.Target) > 1+1e-9 {
			return fmt.Errorf("burn_alerts[%d].burn_rate: %g can never be reached with target %g (at most %g)",
				i, a.BurnRate, d.Target, 1/BudgetFraction(d.Target))
		}
	}
	return nil
}

// Policy is the effective burn-rate policy: BurnAlerts, or the default.
func (d *Definition) Policy() []BurnAlert {
	if d.BurnAlerts == nil {
		return DefaultPolicy()
	}
	return d.BurnAlerts
}

// ThresholdKey is the key of latency_good that counts d's good events
// (the threshold's shortest decimal form, "300", "2.5"); "" for an
// availability objective.
func (d *Definition) ThresholdKey() string {
	if d.Objective != Latency || d.LatencyThresholdMS == nil {
		return ""
	}
	return ThresholdKey(*d.LatencyThresholdMS)
}

// ThresholdKey is the latency_good key of a threshold in milliseconds.
func ThresholdKey(ms float64) string { return agg.ThresholdKey(ms) }
