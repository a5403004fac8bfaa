package projections

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stacklens/stacklens/internal/telemetry"
)

// Removed is what one retention run deleted from one table.
type Removed struct {
	Table string
	Rows  int64
}

// ArchiveOldData runs analytics_archive_old_data() once: it enforces
// RETENTION_HOT/WARM/COLD (stored in analytics_settings by the migrator) and
// reports the rows it removed per table.
func ArchiveOldData(ctx context.Context, pool *pgxpool.Pool) ([]Removed, error) {
	rows, err := pool.Query(ctx, `SELECT table_name, rows_deleted FROM analytics_archive_old_data()`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Removed, error) {
		var x Removed
		err := r.Scan(&x.Table, &x.Rows)
		return x, err
	})
}

// runRetention runs ArchiveOldData at start and then every interval,
// retrying failed runs with backoff. Several replicas running it at once is
// harmless (the deletes are idempotent).
func runRetention(ctx context.Context, pool *pgxpool.Pool, o Options, log *slog.Logger) {
	log = log.With("task", "retention")
	quiet := newStatus(telemetry.NewHealth())
	for {
		var removed []Removed
		// A failing retention run does not make the projections unready:
		// it is retried, and logged, on its own.
		err := retryDB(ctx, "retention", quiet, log, max(o.MaxBackoff, 30*time.Second), func(ctx context.Context) error {
			var err error
			removed, err = ArchiveOldData(ctx, pool)
			return err
		})
		if err != nil {
			return
		}
		var total int64
		attrs := []any{}
		for _, r := range removed {
			total += r.Rows
			attrs = append(attrs, r.Table, r.Rows)
		}
		retentionDeleted.Add(int(total))
		log.Info("retention run", append([]any{"rows_deleted", total}, attrs...)...)
		t := time.NewTimer(o.RetentionInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
