package alerting

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stacklens/stacklens/internal/slo"
)

// Event is one alert state change: the JSON value of the Kafka message on
// analytics-alerts and the payload of every outbox row (the other channels
// format their messages from it).
type Event struct {
	AlertID          string     `json:"alert_id"`
	Fingerprint      string     `json:"fingerprint"`
	State            string     `json:"state"` // firing, resolved or acknowledged
	RuleID           *int64     `json:"rule_id"`
	Rule             string     `json:"rule"`
	Service          string     `json:"service"`
	Severity         string     `json:"severity"`
	Metric           string     `json:"metric"`
	Operator         string     `json:"operator,omitempty"`
	Value            *float64   `json:"value"`
	Threshold        *float64   `json:"threshold"`
	ResolveThreshold *float64   `json:"resolve_threshold,omitempty"`
	Window           string     `json:"window"`
	WindowStart      *time.Time `json:"window_start"`
	FiredAt          time.Time  `json:"fired_at"`
	ResolvedAt       *time.Time `json:"resolved_at,omitempty"`
	AcknowledgedAt   *time.Time `json:"acknowledged_at,omitempty"`
	AcknowledgedBy   *string    `json:"acknowledged_by,omitempty"`
	Message          string     `json:"message"`
	Description      string     `json:"description,omitempty"`
	EmittedAt        time.Time  `json:"emitted_at"`
	// SLOID and SLOBurnAlert are set on burn-rate alerts of an SLO
	// (RuleID is null then; docs/slo.md): the SLO (null once deleted) and
	// the policy entry that fired.
	SLOID        *int64         `json:"slo_id,omitempty"`
	SLOBurnAlert *slo.BurnAlert `json:"slo_burn_alert,omitempty"`
}

// Outbox transitions (analytics_alert_outbox.transition).
const (
	stateFiring       = "firing"
	stateResolved     = "resolved"
	stateAcknowledged = "acknowledged"
)

func fmtValue(v float64) string { return fmt.Sprintf("%.4g", v) }

func fireMessage(r *Rule, service string, value float64, win string, start time.Time) string {
	return fmt.Sprintf("%s: %s %s %s %s for service %s (%s window starting %s)",
		r.Name, r.Metric, fmtValue(value), r.Operator, fmtValue(r.Threshold), service, win,
		start.UTC().Format(time.RFC3339))
}

// insertOutbox enqueues ev on each channel (idempotent per alert, channel
// and transition).
func insertOutbox(ctx context.Context, tx pgx.Tx, ev *Event, channels []string) (int, error) {
	payload, err := json.Marshal(ev)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, ch := range channels {
		tag, err := tx.Exec(ctx, `INSERT INTO analytics_alert_outbox (alert_id, channel, transition, payload)
VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`, ev.AlertID, ch, ev.State, payload)
		if err != nil {
			return n, fmt.Errorf("outbox insert: %w", err)
		}
		n += int(tag.RowsAffected())
	}
	return n, nil
}

// fire records a firing alert and its outbox rows. When another open
// alert of the fingerprint exists (state lost and rebuilt), fire adopts
// it and enqueues nothing. It returns the alert's id, whether the alert
// row is new and how many outbox rows were enqueued.
func fire(ctx context.Context, tx pgx.Tx, ev *Event, channels []string) (string, bool, int, error) {
	entry, err := burnAlertJSON(ev)
	if err != nil {
		return "", false, 0, fmt.Errorf("insert alert: %w", err)
	}
	tag, err := tx.Exec(ctx, `INSERT INTO analytics_alerts (alert_id, fingerprint, rule_id, rule_name, service,
	severity, status, metric_name, value, threshold, "window", window_start, message, fired_at, slo_id, slo_burn_alert)
VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, $8, $9, $10, $11, $12, $13, $14, $15)
ON CONFLICT DO NOTHING`, ev.AlertID, ev.Fingerprint, ev.RuleID, ev.Rule, ev.Service, ev.Severity,
		ev.Metric, ev.Value, ev.Threshold, ev.Window, ev.WindowStart, ev.Message, ev.FiredAt, ev.SLOID, entry)
	if err != nil {
		return "", false, 0, fmt.Errorf("insert alert: %w", err)
	}
	if tag.RowsAffected() == 0 {
		var open string
		err := tx.QueryRow(ctx, `SELECT alert_id FROM analytics_alerts
WHERE fingerprint = $1 AND status IN ('active', 'acknowledged')`, ev.Fingerprint).Scan(&open)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return ev.AlertID, false, 0, nil // this episode exists already (re-evaluation)
		case err != nil:
			return "", false, 0, fmt.Errorf("find open alert: %w", err)
		}
		return open, false, 0, nil
	}
	n, err := insertOutbox(ctx, tx, ev, channels)
	return ev.AlertID, true, n, err
}

// resolve marks the alert resolved and enqueues a resolved event on every
// channel that was sent (or is to be sent) the firing event; a silenced
// firing therefore resolves silently too. It returns the event, or nil when
// the alert was not open.
func resolve(ctx context.Context, tx pgx.Tx, r *Rule, alertID string, value *float64, windowStart *time.Time,
	now time.Time, reason string) (*Event, int, error) {
	ev := &Event{AlertID: alertID, State: stateResolved, Value: value, ResolvedAt: &now, EmittedAt: now}
	if r != nil {
		ev.Operator, ev.ResolveThreshold, ev.Description = r.Operator, r.ResolveThreshold, r.Description
	}
	var firingWindow *time.Time
	var msg string
	var entry []byte
	err := tx.QueryRow(ctx, `UPDATE analytics_alerts SET status = 'resolved', resolved_at = $2
WHERE alert_id = $1 AND status IN ('active', 'acknowledged')
RETURNING fingerprint, rule_id, rule_name, service, severity, metric_name, threshold, "window",
	window_start, fired_at, acknowledged_at, acknowledged_by, message, slo_id, slo_burn_alert`, alertID, now).Scan(
		&ev.Fingerprint, &ev.RuleID, &ev.Rule, &ev.Service, &ev.Severity, &ev.Metric, &ev.Threshold,
		&ev.Window, &firingWindow, &ev.FiredAt, &ev.AcknowledgedAt, &ev.AcknowledgedBy, &msg, &ev.SLOID, &entry)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("resolve alert: %w", err)
	}
	if ev.SLOBurnAlert, err = parseBurnAlert(entry); err != nil {
		return nil, 0, fmt.Errorf("resolve alert: %w", err)
	}
	ev.WindowStart = windowStart
	if ev.WindowStart == nil {
		ev.WindowStart = firingWindow
	}
	ev.Message = "resolved: " + reason
	channels, err := firedChannels(ctx, tx, alertID)
	if err != nil {
		return nil, 0, err
	}
	n, err := insertOutbox(ctx, tx, ev, channels)
	return ev, n, err
}

// firedChannels lists the channels the alert's firing event went to.
func firedChannels(ctx context.Context, tx pgx.Tx, alertID string) ([]string, error) {
	rows, err := tx.Query(ctx, `SELECT channel FROM analytics_alert_outbox
WHERE alert_id = $1 AND transition = 'firing' ORDER BY id`, alertID)
	if err != nil {
		return nil, fmt.Errorf("fired channels: %w", err)
	}
	chs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("fired channels: %w", err)
	}
	return chs, nil
}

// EnqueueAcknowledged enqueues the acknowledgement of alertID — on Kafka,
// and as a PagerDuty "acknowledge" when PagerDuty got the firing event —
// inside tx, the transaction in which the API acknowledges the alert (the
// api.Hooks.OnAcknowledge hook). Nothing is enqueued for an alert whose
// firing was silenced.
func EnqueueAcknowledged(ctx context.Context, tx pgx.Tx, alertID string) error {
	ev := &Event{AlertID: alertID, State: stateAcknowledged}
	var firingWindow *time.Time
	var ackAt *time.Time
	var entry []byte
	err := tx.QueryRow(ctx, `SELECT fingerprint, rule_id, rule_name, service, severity, metric_name, value,
	threshold, "window", window_start, fired_at, acknowledged_at, acknowledged_by, message, slo_id, slo_burn_alert
FROM analytics_alerts WHERE alert_id = $1`, alertID).Scan(
		&ev.Fingerprint, &ev.RuleID, &ev.Rule, &ev.Service, &ev.Severity, &ev.Metric, &ev.Value,
		&ev.Threshold, &ev.Window, &firingWindow, &ev.FiredAt, &ackAt, &ev.AcknowledgedBy, &ev.Message, &ev.SLOID, &entry)
	if err != nil {
		return fmt.Errorf("acknowledge %s: %w", alertID, err)
	}
	if ev.SLOBurnAlert, err = parseBurnAlert(entry); err != nil {
		return fmt.Errorf("acknowledge %s: %w", alertID, err)
	}
	now := time.Now().UTC()
	if ackAt == nil {
		ackAt = &now
	}
	ev.WindowStart, ev.AcknowledgedAt, ev.EmittedAt = firingWindow, ackAt, now
	fired, err := firedChannels(ctx, tx, alertID)
	if err != nil {
		return err
	}
	var channels []string
	for _, c := range fired {
		if c == "kafka" || c == "pagerduty" {
			channels = append(channels, c)
		}
	}
	_, err = insertOutbox(ctx, tx, ev, channels)
	return err
}

// parseBurnAlert reads the slo_burn_alert column (nil: a rule alert).
func parseBurnAlert(b []byte) (*slo.BurnAlert, error) {
	if b == nil {
		return nil, nil
	}
	var a slo.BurnAlert
	if err := json.Unmarshal(b, &a); err != nil {
		return nil, fmt.Errorf("slo_burn_alert: %w", err)
	}
	return &a, nil
}
