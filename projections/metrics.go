package projections

import (
	"fmt"

	"github.com/VictoriaMetrics/metrics"

	"github.com/stacklens/stacklens/internal/telemetry"
)

// Prometheus metrics of the projections (served by the process's metrics
// server). Names are documented in docs/projections.md.
var (
	eventsInserted   = metrics.NewCounter("stacklens_projections_events_inserted_total")
	eventsSkipped    = metrics.NewCounter("stacklens_projections_events_skipped_total")
	dbErrors         = metrics.NewCounter("stacklens_projections_db_errors_total")
	badMessages      = metrics.NewCounter("stacklens_projections_bad_messages_total")
	retentionDeleted = metrics.NewCounter("stacklens_projections_retention_rows_deleted_total")
)

var batchBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

func rowsUpserted(window string) *metrics.Counter {
	return metrics.GetOrCreateCounter(fmt.Sprintf(`stacklens_projections_rows_upserted_total{window=%q}`, window))
}

func batchSeconds(kind string) *metrics.PrometheusHistogram {
	return metrics.GetOrCreatePrometheusHistogramExt(
		fmt.Sprintf(`stacklens_projections_batch_seconds{kind=%q}`, kind), batchBuckets)
}

// delaySeconds: stream timestamp of a batch's oldest message → the batch
// committed to PostgreSQL (the projections' share of freshness).
func delaySeconds(consumer string) *metrics.PrometheusHistogram {
	return metrics.GetOrCreatePrometheusHistogramExt(
		fmt.Sprintf(`stacklens_projections_delay_seconds{consumer=%q}`, consumer),
		telemetry.DelayBuckets)
}

func lagGauge(consumer string) *metrics.Gauge {
	return metrics.GetOrCreateGauge(fmt.Sprintf(`stacklens_projections_lag{consumer=%q}`, consumer), nil)
}
