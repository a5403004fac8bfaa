package api

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stacklens/stacklens/internal/agg"
	"github.com/stacklens/stacklens/internal/slo"
)

// ---- SLO definitions ----

const sloColumns = `id, name, service, objective, latency_threshold_ms, target,
       EXTRACT(EPOCH FROM period)::float8, burn_alerts, notification_channels, enabled, description,
       created_at, updated_at`

func scanSLO(row pgx.Row) (SLODefinition, error) {
	var d SLODefinition
	var periodSec float64
	var burn []byte
	err := row.Scan(&d.ID, &d.Name, &d.Service, &d.Objective, &d.LatencyThresholdMS, &d.Target,
		&periodSec, &burn, &d.NotificationChannels, &d.Enabled, &d.Description, &d.CreatedAt, &d.UpdatedAt)
	if err != nil {
		return d, err
	}
	d.Period = slo.FormatDuration(time.Duration(math.Round(periodSec)) * time.Second)
	if burn != nil {
		var bs []BurnAlertPolicy
		if err := json.Unmarshal(burn, &bs); err != nil {
			return d, err
		}
		d.BurnAlerts = &bs
	}
	if d.NotificationChannels == nil {
		d.NotificationChannels = []string{}
	}
	d.CreatedAt, d.UpdatedAt = d.CreatedAt.UTC(), d.UpdatedAt.UTC()
	return d, nil
}

// sloArgs are $1…$11 of the writes: the period as whole days plus
// seconds, so that 30d is stored as '30 days'.
func sloArgs(in *SLOInput, period time.Duration) []any {
	var burn any
	if in.BurnAlerts != nil {
		b, _ := json.Marshal(*in.BurnAlerts) // plain strings and floats: cannot fail
		burn = string(b)
	}
	day := 24 * time.Hour
	return []any{in.Name, nullable(in.Service), in.Objective, nullable(in.LatencyThresholdMS), *in.Target,
		int64(period / day), (period % day).Seconds(), burn, in.NotificationChannels, *in.Enabled, in.Description}
}

const sloValues = `$1, $2, $3, $4, $5, make_interval(days => $6::int, secs => $7::float8), $8::jsonb, $9, $10, $11`

// thresholdRoom refuses an enabled latency SLO whose threshold would make
// more distinct thresholds than an aggregate counts (agg.MaxThresholds):
// the set could no longer be published, and no new threshold counted. The
// SLO itself (id, or name when seeding) is left out of the count.
func (st *store) thresholdRoom(ctx context.Context, in *SLOInput, id int64) error {
	if in.LatencyThresholdMS == nil || !*in.Enabled {
		return nil
	}
	var n int
	if err := st.w.QueryRow(ctx, `SELECT count(DISTINCT latency_threshold_ms) FROM analytics_slos
WHERE enabled AND latency_threshold_ms IS NOT NULL AND latency_threshold_ms <> $1 AND id <> $2 AND name <> $3`,
		*in.LatencyThresholdMS, id, in.Name).Scan(&n); err != nil {
		return err
	}
	if n+1 > agg.MaxThresholds {
		return badParam("latency_threshold_ms", "the enabled latency SLOs already use %d distinct thresholds, at most %d: reuse one of them", n, agg.MaxThresholds)
	}
	return nil
}

func (st *store) createSLO(ctx context.Context, in *SLOInput, period time.Duration) (SLODefinition, error) {
	ctx, cancel := st.ctx(ctx)
	defer cancel()
	if err := st.thresholdRoom(ctx, in, 0); err != nil {
		return SLODefinition{}, err
	}
	d, err := scanSLO(st.w.QueryRow(ctx, `INSERT INTO analytics_slos
    (name, service, objective, latency_threshold_ms, target, period, burn_alerts,
     notification_channels, enabled, description)
VALUES (`+sloValues+`)
RETURNING `+sloColumns, sloArgs(in, period)...))
	return d, sloConflict(err)
}

// upsertSLO creates or replaces the SLO named in.Name (SLO_FILE seeding).
func (st *store) upsertSLO(ctx context.Context, in *SLOInput, period time.Duration) (SLODefinition, error) {
	ctx, cancel := st.ctx(ctx)
	defer cancel()
	if err := st.thresholdRoom(ctx, in, 0); err != nil {
		return SLODefinition{}, err
	}
	return scanSLO(st.w.QueryRow(ctx, `INSERT INTO analytics_slos
    (name, service, objective, latency_threshold_ms, target, period, burn_alerts,
     notification_channels, enabled, description)
VALUES (`+sloValues+`)
ON CONFLICT (name) DO UPDATE SET
    service = EXCLUDED.service, objective = EXCLUDED.objective,
    latency_threshold_ms = EXCLUDED.latency_threshold_ms, target = EXCLUDED.target,
    period = EXCLUDED.period, burn_alerts = EXCLUDED.burn_alerts,
    notification_channels = EXCLUDED.notification_channels, enabled = EXCLUDED.enabled,
    description = EXCLUDED.description
RETURNING `+sloColumns, sloArgs(in, period)...))
}

func (st *store) updateSLO(ctx context.Context, id int64, in *SLOInput, period time.Duration) (SLODefinition, error) {
	ctx, cancel := st.ctx(ctx)
	defer cancel()
	if err := st.thresholdRoom(ctx, in, id); err != nil {
		return SLODefinition{}, err
	}
	args := append(sloArgs(in, period), id)
	d, err := scanSLO(st.w.QueryRow(ctx, `UPDATE analytics_slos SET
    (name, service, objective, latency_threshold_ms, target, period, burn_alerts,
     notification_channels, enabled, description) = (`+sloValues+`)
WHERE id = $12
RETURNING `+sloColumns, args...))
	if errors.Is(err, pgx.ErrNoRows) {
		return d, notFound("SLO")
	}
	return d, sloConflict(err)
}

func sloConflict(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" {
		return &apiError{Status: 409, Field: "name", Msg: "an SLO with this name already exists"}
	}
	return err
}

func (st *store) deleteSLO(ctx context.Context, id int64) error {
	ctx, cancel := st.ctx(ctx)
	defer cancel()
	tag, err := st.w.Exec(ctx, `DELETE FROM analytics_slos WHERE id = $1`, id)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return notFound("SLO")
	}
	return nil
}

// latencyThresholds returns the distinct thresholds of the enabled latency
// SLOs, ascending: what the processors must count.
func (st *store) latencyThresholds(ctx context.Context) ([]float64, error) {
	ctx, cancel := st.ctx(ctx)
	defer cancel()
	rows, err := st.w.Query(ctx, `SELECT DISTINCT latency_threshold_ms FROM analytics_slos
WHERE enabled AND objective = 'latency' ORDER BY 1`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[float64])
}
