package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stacklens/stacklens/internal/window"
)

// store runs the API's queries. Every statement is a constant string with
// bound parameters; the only variable part, the metrics table, is built
// once from the configured windows' canonical names, never request input.
type store struct {
	r, w    *pgxpool.Pool
	timeout time.Duration
	// metricQ holds the query variants of each configured window's table.
	metricQ map[string][8]string
}

func newStore(r, w *pgxpool.Pool, timeout time.Duration, windows []window.Window) *store {
	m := make(map[string][8]string, len(windows))
	for _, win := range windows {
		m[win.Name] = metricsSQL(metricsTable(win))
	}
	return &store{r: r, w: w, timeout: timeout, metricQ: m}
}

// ctx bounds one request's database work: the statement timeout plus a
// little for the round trip.
func (st *store) ctx(parent context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(parent, st.timeout+500*time.Millisecond)
}

func (st *store) ping(ctx context.Context) error {
	var one int
	return st.r.QueryRow(ctx, "SELECT 1").Scan(&one)
}

// databaseSize is pg_database_size of the connected database, as the
// reader: it needs only CONNECT on the database, which the reader has.
func (st *store) databaseSize(ctx context.Context) (int64, error) {
	var n int64
	err := st.r.QueryRow(ctx, "SELECT pg_database_size(current_database())").Scan(&n)
	return n, err
}

// newReaderPool: log in as the reader (DB_READER_PASSWORD set), else use the
// main DSN and SET ROLE to the reader role on every connection.
func newReaderPool(cfg Config) (*pgxpool.Pool, error) {
	dsn, role := cfg.DB.ReaderDSN(), ""
	if dsn == "" {
		dsn, role = cfg.DB.DSN(), cfg.DB.ReaderUser
		if role == "" {
			role = "stacklens_reader"
		}
	}
	pc, err := poolConfig(dsn, cfg.API.QueryTimeout, true, cfg.DB.PoolMax, role)
	if err != nil {
		return nil, err
	}
	return newPool(pc)
}

// newWriterPool: the main DSN (DB_USER, the writer identity) with at most
// two connections; writes are rare.
func newWriterPool(cfg Config) (*pgxpool.Pool, error) {
	pc, err := poolConfig(cfg.DB.DSN(), cfg.API.QueryTimeout, false, 2, "")
	if err != nil {
		return nil, err
	}
	return newPool(pc)
}

// classifyDBError maps database errors to API statuses.
func classifyDBError(err error) (int, string, bool) {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "57014": // query_canceled (statement_timeout)
			return 503, "query timed out", true
		case "22023", "22P02", "22007", "22008", "22003": // invalid parameter / format / datetime / overflow
			return 400, "invalid parameter: " + truncate(pe.Message, 200), true
		case "23505":
			return 409, "already exists", true
		case "23514", "23502":
			return 400, "rejected by a database constraint: " + truncate(pe.ConstraintName, 100), true
		case "42P01":
			return 503, "table missing: run stacklens migrate", true
		case "25006":
			return 503, "database is read-only", true
		}
		if class := pe.Code[:min(2, len(pe.Code))]; class == "08" || class == "53" || class == "57" {
			return 503, "database unavailable", true
		}
		return 0, "", false
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return 503, "query timed out", true
	}
	var ne net.Error
	if errors.As(err, &ne) || pgconn.SafeToRetry(err) || errors.Is(err, pgx.ErrTxClosed) {
		return 503, "database unavailable", true
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return 503, "database unavailable", true
	}
	return 0, "", false
}

// ---- metrics ----

const metricColumns = `service, timestamp, count, error_count, warning_count, error_rate,
       throughput_per_sec, latency_avg_ms, latency_min_ms, latency_max_ms, latency_p50_ms,
       latency_p95_ms, latency_p99_ms, risk_score_avg, risk_score_max, final`

// filtered builds the statement variant for the filters present (bit i of
// mask: conds[i]), numbering parameters in order, with the limit last.
// Every variant is built at start-up from constant fragments, so each is a
// plain prepared statement with a cached generic plan that uses the
// indexes; no SQL text depends on request input.
func filtered(head string, conds []string, tail string, mask int) string {
	var where []string
	n := 0
	for i, c := range conds {
		if mask&(1<<i) != 0 {
			n++
			where = append(where, fmt.Sprintf(c, n))
		}
	}
	sql := head
	if len(where) > 0 {
		sql += "\nWHERE " + strings.Join(where, " AND ")
	}
	return sql + "\n" + fmt.Sprintf(tail, n+1)
}

// filterArgs returns the arguments of the variant for the non-nil values
// and its mask.
func filterArgs(limit int, vals ...any) (int, []any) {
	mask := 0
	args := make([]any, 0, len(vals)+1)
	for i, v := range vals {
		if v != nil {
			mask |= 1 << i
			args = append(args, v)
		}
	}
	return mask, append(args, limit)
}

var metricConds = []string{"service = $%d", "timestamp >= $%d", "timestamp < $%d"}

// metricsSQL returns the newest-first query variants of one metrics table.
// table comes from metricsTable, never from request input.
func metricsSQL(table string) [8]string {
	var out [8]string
	for mask := range out {
		out[mask] = filtered("SELECT "+metricColumns+"\nFROM "+table, metricConds,
			"ORDER BY timestamp DESC, service\nLIMIT $%d", mask)
	}
	return out
}

// metricsTable is the table of a window's aggregates (docs/SCHEMA.md):
// `stacklens migrate` creates one for every configured window. Window names
// are canonical (window.Parse: digits and min, hour or day), so the name is
// a plain identifier.
func metricsTable(w window.Window) string { return "analytics_metrics_" + w.Name }

func nullable[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func (st *store) metrics(ctx context.Context, win, service string, from, to *time.Time, limit int) ([]MetricRow, error) {
	variants, ok := st.metricQ[win]
	if !ok { // unreachable: windowParam only returns configured windows
		return nil, badParam("window", "window %s is not configured", win)
	}
	mask, args := filterArgs(limit, nullString(service), nullable(from), nullable(to))
	ctx, cancel := st.ctx(ctx)
	defer cancel()
	rows, err := st.r.Query(ctx, variants[mask], args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make([]MetricRow, 0, min(limit, 128))
	for rows.Next() {
		var m MetricRow
		if err := rows.Scan(&m.Service, &m.Timestamp, &m.Count, &m.ErrorCount, &m.WarningCount,
			&m.ErrorRate, &m.ThroughputPerSec, &m.LatencyAvgMs, &m.LatencyMinMs, &m.LatencyMaxMs,
			&m.LatencyP50Ms, &m.LatencyP95Ms, &m.LatencyP99Ms, &m.RiskScoreAvg, &m.RiskScoreMax, &m.Final); err != nil {
			return nil, err
		}
		m.Window = win
		m.Timestamp = m.Timestamp.UTC()
		out = append(out, m)
	}
	return out, rows.Err()
}

// ---- health ----

// healthStatusTable is the table v_service_health_current reads.
const healthStatusTable = "analytics_metrics_1min"

const healthStatusSQL = `SELECT service, status, error_rate, latency_p99_ms, throughput_per_sec, last_seen
FROM v_service_health_current ORDER BY service`

func (st *store) serviceHealth(ctx context.Context) ([]ServiceHealth, error) {
	ctx, cancel := st.ctx(ctx)
	defer cancel()
	rows, err := st.r.Query(ctx, healthStatusSQL)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []ServiceHealth{}
	for rows.Next() {
		var h ServiceHealth
		if err := rows.Scan(&h.Service, &h.Status, &h.ErrorRate, &h.LatencyP99Ms, &h.ThroughputPerSec, &h.LastSeen); err != nil {
			return nil, err
		}
		h.LastSeen = h.LastSeen.UTC()
		out = append(out, h)
	}
	return out, rows.Err()
}

// newestMetric returns the start and last update of the newest row of a
// metrics table (ok=false when it is empty).
func (st *store) newestMetric(ctx context.Context, win window.Window) (ts, updated time.Time, ok bool, err error) {
	err = st.r.QueryRow(ctx, `SELECT timestamp, updated_at FROM `+metricsTable(win)+` ORDER BY timestamp DESC LIMIT 1`).Scan(&ts, &updated)
	if errors.Is(err, pgx.ErrNoRows) {
		return ts, updated, false, nil
	}
	if err != nil {
		return ts, updated, false, err
	}
	return ts.UTC(), updated.UTC(), true, nil
}

// ---- alerts ----

const alertColumns = `id, alert_id, fingerprint, rule_id, rule_name, service, severity, status,
       metric_name, value, threshold, "window", window_start, message, fired_at,
       acknowledged_at, acknowledged_by, resolved_at, updated_at`

const alertsTable = "analytics_alerts"

// alertsSQL are the /alerts variants by filters (status, severity, service).
var alertsSQL = func() [8]string {
	var out [8]string
	for mask := range out {
		out[mask] = filtered("SELECT "+alertColumns+"\nFROM analytics_alerts",
			[]string{"status = $%d", "severity = $%d", "service = $%d"},
			"ORDER BY fired_at DESC, id DESC\nLIMIT $%d", mask)
	}
	return out
}()

func scanAlert(row pgx.Row) (Alert, error) {
	var a Alert
	err := row.Scan(&a.ID, &a.AlertID, &a.Fingerprint, &a.RuleID, &a.RuleName, &a.Service, &a.Severity,
		&a.Status, &a.MetricName, &a.Value, &a.Threshold, &a.Window, &a.WindowStart, &a.Message,
		&a.FiredAt, &a.AcknowledgedAt, &a.AcknowledgedBy, &a.ResolvedAt, &a.UpdatedAt)
	a.FiredAt = a.FiredAt.UTC()
	a.UpdatedAt = a.UpdatedAt.UTC()
	utcPtr(a.WindowStart)
	utcPtr(a.AcknowledgedAt)
	utcPtr(a.ResolvedAt)
	return a, err
}

func utcPtr(t *time.Time) {
	if t != nil {
		*t = t.UTC()
	}
}

func (st *store) alerts(ctx context.Context, status, severity, service string, limit int) ([]Alert, error) {
	ctx, cancel := st.ctx(ctx)
	defer cancel()
	mask, args := filterArgs(limit, nullString(status), nullString(severity), nullString(service))
	rows, err := st.r.Query(ctx, alertsSQL[mask], args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Alert{}
	for rows.Next() {
		a, err := scanAlert(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// acknowledge moves an active alert to acknowledged. An already
// acknowledged alert is returned unchanged (idempotent); a resolved one is a
// conflict. hook runs in the same transaction.
func (st *store) acknowledge(ctx context.Context, id int64, by string, hook func(context.Context, pgx.Tx, Alert) error) (Alert, bool, error) {
	ctx, cancel := st.ctx(ctx)
	defer cancel()
	var out Alert
	changed := false
	err := pgx.BeginFunc(ctx, st.w, func(tx pgx.Tx) error {
		a, err := scanAlert(tx.QueryRow(ctx, `SELECT `+alertColumns+` FROM analytics_alerts WHERE id = $1 FOR UPDATE`, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound("alert")
		}
		if err != nil {
			return err
		}
		switch a.Status {
		case "acknowledged":
			out = a
			return nil
		case "resolved":
			return &apiError{Status: 409, Field: "id", Msg: "alert is already resolved"}
		}
		a, err = scanAlert(tx.QueryRow(ctx, `UPDATE analytics_alerts
SET status = 'acknowledged', acknowledged_at = now(), acknowledged_by = $2
WHERE id = $1 RETURNING `+alertColumns, id, by))
		if err != nil {
			return err
		}
		if hook != nil {
			if err := hook(ctx, tx, a); err != nil {
				return &apiError{Status: 503, Msg: "acknowledgement hook failed: " + truncate(err.Error(), 200)}
			}
		}
		out, changed = a, true
		return nil
	})
	return out, changed, err
}

func (st *store) alertStats(ctx context.Context, from, to time.Time) ([]AlertStatsRow, error) {
	ctx, cancel := st.ctx(ctx)
	defer cancel()
	rows, err := st.r.Query(ctx, `SELECT severity, total_alerts, active_alerts, acknowledged_alerts, resolved_alerts,
       services_affected, mean_time_to_acknowledge_seconds, mean_time_to_resolve_seconds
FROM analytics_get_alert_stats($1, $2)`, from, to)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []AlertStatsRow{}
	for rows.Next() {
		var r AlertStatsRow
		if err := rows.Scan(&r.Severity, &r.TotalAlerts, &r.ActiveAlerts, &r.AcknowledgedAlerts, &r.ResolvedAlerts,
			&r.ServicesAffected, &r.MeanTimeToAcknowledgeSeconds, &r.MeanTimeToResolveSeconds); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// ---- SLA ----

func (st *store) sla(ctx context.Context, service string, from, to time.Time, latencySLO, errorSLO float64) ([]SLARow, error) {
	ctx, cancel := st.ctx(ctx)
	defer cancel()
	rows, err := st.r.Query(ctx, `SELECT service, period_start, period_end, total_events, error_events, warning_events,
       availability_pct, error_rate_pct, latency_avg_ms, latency_p99_max_ms, windows_total,
       windows_within_latency_slo, latency_slo_compliance_pct, latency_slo_ms, error_slo_pct,
       allowed_error_events, error_budget_remaining_pct, error_slo_met
FROM analytics_calculate_sla($1, $2, $3, $4, $5)`, nullString(service), from, to, latencySLO, errorSLO)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []SLARow{}
	for rows.Next() {
		var r SLARow
		if err := rows.Scan(&r.Service, &r.PeriodStart, &r.PeriodEnd, &r.TotalEvents, &r.ErrorEvents, &r.WarningEvents,
			&r.AvailabilityPct, &r.ErrorRatePct, &r.LatencyAvgMs, &r.LatencyP99MaxMs, &r.WindowsTotal,
			&r.WindowsWithinLatencySLO, &r.LatencySLOCompliancePct, &r.LatencySLOMs, &r.ErrorSLOPct,
			&r.AllowedErrorEvents, &r.ErrorBudgetRemainingPct, &r.ErrorSLOMet); err != nil {
			return nil, err
		}
		r.PeriodStart, r.PeriodEnd = r.PeriodStart.UTC(), r.PeriodEnd.UTC()
		out = append(out, r)
	}
	return out, rows.Err()
}

// ---- rules ----

const ruleColumns = `id, rule_name, metric_name, operator, threshold, severity, notification_channels,
       enabled, "window", for_windows, resolve_threshold, description, created_at, updated_at`

func scanRule(row pgx.Row) (Rule, error) {
	var r Rule
	err := row.Scan(&r.ID, &r.RuleName, &r.MetricName, &r.Operator, &r.Threshold, &r.Severity,
		&r.NotificationChannels, &r.Enabled, &r.Window, &r.ForWindows, &r.ResolveThreshold,
		&r.Description, &r.CreatedAt, &r.UpdatedAt)
	if r.NotificationChannels == nil {
		r.NotificationChannels = []string{}
	}
	r.CreatedAt, r.UpdatedAt = r.CreatedAt.UTC(), r.UpdatedAt.UTC()
	return r, err
}

func (st *store) rules(ctx context.Context) ([]Rule, error) {
	ctx, cancel := st.ctx(ctx)
	defer cancel()
	rows, err := st.r.Query(ctx, `SELECT `+ruleColumns+` FROM analytics_alert_rules ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Rule{}
	for rows.Next() {
		r, err := scanRule(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

func (st *store) rule(ctx context.Context, id int64) (Rule, error) {
	ctx, cancel := st.ctx(ctx)
	defer cancel()
	r, err := scanRule(st.r.QueryRow(ctx, `SELECT `+ruleColumns+` FROM analytics_alert_rules WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return r, notFound("alert rule")
	}
	return r, err
}

func ruleArgs(in *RuleInput) []any {
	return []any{in.RuleName, in.MetricName, in.Operator, *in.Threshold, in.Severity, in.NotificationChannels,
		*in.Enabled, in.Window, *in.ForWindows, in.ResolveThreshold, in.Description}
}

func (st *store) createRule(ctx context.Context, in *RuleInput) (Rule, error) {
	ctx, cancel := st.ctx(ctx)
	defer cancel()
	r, err := scanRule(st.w.QueryRow(ctx, `INSERT INTO analytics_alert_rules
    (rule_name, metric_name, operator, threshold, severity, notification_channels, enabled, "window",
     for_windows, resolve_threshold, description)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
RETURNING `+ruleColumns, ruleArgs(in)...))
	return r, ruleConflict(err)
}

func (st *store) updateRule(ctx context.Context, id int64, in *RuleInput) (Rule, error) {
	ctx, cancel := st.ctx(ctx)
	defer cancel()
	args := append(ruleArgs(in), id)
	r, err := scanRule(st.w.QueryRow(ctx, `UPDATE analytics_alert_rules SET
    rule_name = $1, metric_name = $2, operator = $3, threshold = $4, severity = $5,
    notification_channels = $6, enabled = $7, "window" = $8, for_windows = $9,
    resolve_threshold = $10, description = $11
WHERE id = $12
RETURNING `+ruleColumns, args...))
	if errors.Is(err, pgx.ErrNoRows) {
		return r, notFound("alert rule")
	}
	return r, ruleConflict(err)
}

func ruleConflict(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" {
		return &apiError{Status: 409, Field: "rule_name", Msg: "a rule with this name already exists"}
	}
	return err
}

func (st *store) deleteRule(ctx context.Context, id int64) error {
	ctx, cancel := st.ctx(ctx)
	defer cancel()
	tag, err := st.w.Exec(ctx, `DELETE FROM analytics_alert_rules WHERE id = $1`, id)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return notFound("alert rule")
	}
	return nil
}

// ---- silences ----

const silenceColumns = `id, rule_name, service, severity, starts_at, ends_at, created_by, comment, created_at,
       (now() >= starts_at AND now() < ends_at) AS active`

func scanSilence(row pgx.Row) (Silence, error) {
	var s Silence
	err := row.Scan(&s.ID, &s.RuleName, &s.Service, &s.Severity, &s.StartsAt, &s.EndsAt, &s.CreatedBy,
		&s.Comment, &s.CreatedAt, &s.Active)
	s.StartsAt, s.EndsAt, s.CreatedAt = s.StartsAt.UTC(), s.EndsAt.UTC(), s.CreatedAt.UTC()
	return s, err
}

func (st *store) silences(ctx context.Context, state string, limit int) ([]Silence, error) {
	ctx, cancel := st.ctx(ctx)
	defer cancel()
	rows, err := st.r.Query(ctx, `SELECT `+silenceColumns+`
FROM analytics_alert_silences
WHERE ($1 = 'all'
    OR ($1 = 'active' AND now() >= starts_at AND now() < ends_at)
    OR ($1 = 'pending' AND now() < starts_at)
    OR ($1 = 'expired' AND now() >= ends_at)
    OR ($1 = 'current' AND now() < ends_at))
ORDER BY ends_at DESC, id DESC
LIMIT $2`, state, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Silence{}
	for rows.Next() {
		s, err := scanSilence(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

func (st *store) createSilence(ctx context.Context, in *SilenceInput, startsAt, endsAt time.Time, by string) (Silence, error) {
	ctx, cancel := st.ctx(ctx)
	defer cancel()
	return scanSilence(st.w.QueryRow(ctx, `INSERT INTO analytics_alert_silences
    (rule_name, service, severity, starts_at, ends_at, created_by, comment)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING `+silenceColumns,
		nullable(in.RuleName), nullable(in.Service), nullable(in.Severity), startsAt, endsAt, by, in.Comment))
}

func (st *store) silence(ctx context.Context, id int64) (Silence, error) {
	ctx, cancel := st.ctx(ctx)
	defer cancel()
	s, err := scanSilence(st.r.QueryRow(ctx, `SELECT `+silenceColumns+` FROM analytics_alert_silences WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return s, notFound("silence")
	}
	return s, err
}

// updateSilence reads the silence under a row lock, lets merge build and
// validate the new version, and writes it in the same transaction, so two
// concurrent PATCHes of different fields both survive.
func (st *store) updateSilence(ctx context.Context, id int64,
	merge func(cur Silence) (*SilenceInput, time.Time, time.Time, error)) (Silence, error) {
	ctx, cancel := st.ctx(ctx)
	defer cancel()
	var out Silence
	err := pgx.BeginFunc(ctx, st.w, func(tx pgx.Tx) error {
		cur, err := scanSilence(tx.QueryRow(ctx, `SELECT `+silenceColumns+` FROM analytics_alert_silences WHERE id = $1 FOR UPDATE`, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return notFound("silence")
		}
		if err != nil {
			return err
		}
		in, start, end, err := merge(cur)
		if err != nil {
			return err
		}
		out, err = scanSilence(tx.QueryRow(ctx, `UPDATE analytics_alert_silences SET
    rule_name = $1, service = $2, severity = $3, starts_at = $4, ends_at = $5, comment = $6
WHERE id = $7
RETURNING `+silenceColumns,
			nullable(in.RuleName), nullable(in.Service), nullable(in.Severity), start, end, in.Comment, id))
		return err
	})
	return out, err
}

func (st *store) deleteSilence(ctx context.Context, id int64) error {
	ctx, cancel := st.ctx(ctx)
	defer cancel()
	tag, err := st.w.Exec(ctx, `DELETE FROM analytics_alert_silences WHERE id = $1`, id)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return notFound("silence")
	}
	return nil
}
