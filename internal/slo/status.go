package slo

import (
	"slices"
	"time"

	"github.com/stacklens/stacklens/internal/window"
)

// StandardWindows are the burn-rate windows every status reports, the
// windows of the default policy.
var StandardWindows = []time.Duration{
	5 * time.Minute, 30 * time.Minute, time.Hour, 2 * time.Hour, 6 * time.Hour, 24 * time.Hour, 72 * time.Hour,
}

// exhaustionWindow is the window whose bad-event rate predicts when the
// budget runs out.
const exhaustionWindow = time.Hour

// Sum is what the metrics tables hold for an objective over a range.
type Sum struct {
	Counts
	// CountedFrom is the start of the oldest bucket that counted the
	// objective (nil: none did); see Status.CountedFrom.
	CountedFrom *time.Time
}

// FiringAlert is an open burn-rate alert of an SLO.
type FiringAlert struct {
	ID        int64     `json:"id" doc:"the alert's numeric id (GET /alerts)"`
	Severity  string    `json:"severity" doc:"page or ticket"`
	BurnRate  float64   `json:"burn_rate"`
	Long      Duration  `json:"long"`
	Short     Duration  `json:"short"`
	StartedAt time.Time `json:"started_at"`
}

// Status is an SLO's definition with its figures at EvaluatedAt
// (GET /slos, docs/slo.md).
type Status struct {
	ID                   int64       `json:"id"`
	Name                 string      `json:"name"`
	Service              *string     `json:"service" doc:"null: every service"`
	Objective            string      `json:"objective" doc:"availability or latency"`
	LatencyThresholdMS   *float64    `json:"latency_threshold_ms" doc:"latency objectives: good events have latency_ms <= this"`
	Target               float64     `json:"target" doc:"percent of good events"`
	Period               string      `json:"period" doc:"rolling period, e.g. 30d"`
	Enabled              bool        `json:"enabled"`
	Description          string      `json:"description"`
	NotificationChannels []string    `json:"notification_channels"`
	BurnAlerts           []BurnAlert `json:"burn_alerts" doc:"the effective burn-rate alert policy"`
	Invalid              string      `json:"invalid,omitempty" doc:"why the stored definition cannot be evaluated for alerts (set only then)"`

	EvaluatedAt time.Time  `json:"evaluated_at"`
	PeriodStart time.Time  `json:"period_start" doc:"start of the oldest metrics bucket of the period"`
	CountedFrom *time.Time `json:"counted_from" doc:"latency objectives: start of the oldest bucket in the period that counted the threshold; null when none did or for availability"`
	TotalEvents int64      `json:"total_events"`
	GoodEvents  int64      `json:"good_events"`
	BadEvents   int64      `json:"bad_events"`
	Compliance  *float64   `json:"compliance" doc:"percent of good events over the period; null without events"`
	ErrorBudget Budget     `json:"error_budget"`
	// BurnRates are keyed by window ("5m", "1h", ...): the standard
	// windows and those of the policy.
	BurnRates               map[string]*float64 `json:"burn_rates" doc:"(bad/total over the window) / (1 - target/100) per window; null without events in it"`
	TimeToExhaustionSeconds *float64            `json:"time_to_exhaustion_seconds" doc:"remaining budget / bad-event rate of the last hour; 0 when spent, null when not burning"`
	FiringAlerts            []FiringAlert       `json:"firing_alerts"`
}

// BurnWindows are the windows a status of d reports burn rates for: the
// standard ones and the policy's, shortest first.
func (d *Definition) BurnWindows() []time.Duration {
	out := slices.Clone(StandardWindows)
	for _, a := range d.Policy() {
		out = append(out, time.Duration(a.Long), time.Duration(a.Short))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// NewStatus assembles d's status at now from the sums of its period and
// of its burn windows (keyed by duration; see BurnWindows).
func NewStatus(d *Definition, now time.Time, windows []window.Window, period Sum, burn map[time.Duration]Counts, firing []FiringAlert) Status {
	s := Status{
		ID: d.ID, Name: d.Name, Service: d.Service, Objective: d.Objective,
		LatencyThresholdMS: d.LatencyThresholdMS, Target: d.Target, Period: FormatDuration(d.Period),
		Enabled: d.Enabled, Description: d.Description, NotificationChannels: d.NotificationChannels,
		BurnAlerts: d.Policy(), EvaluatedAt: now.UTC(),
		PeriodStart: RangeAt(d.Period, now, windows).First.UTC(),
		TotalEvents: period.Total, GoodEvents: period.Good, BadEvents: period.Bad(),
		Compliance:   Compliance(period.Counts),
		ErrorBudget:  ErrorBudget(period.Counts, d.Target),
		BurnRates:    map[string]*float64{},
		FiringAlerts: firing,
	}
	if d.Objective == Latency {
		s.CountedFrom = period.CountedFrom
	}
	if s.NotificationChannels == nil {
		s.NotificationChannels = []string{}
	}
	if s.FiringAlerts == nil {
		s.FiringAlerts = []FiringAlert{}
	}
	for _, w := range d.BurnWindows() {
		s.BurnRates[FormatDuration(w)] = BurnRate(burn[w], d.Target)
	}
	s.TimeToExhaustionSeconds = TimeToExhaustion(s.ErrorBudget, period.Total,
		burn[exhaustionWindow].Bad(), RangeAt(exhaustionWindow, now, windows).Span(now))
	return s
}
