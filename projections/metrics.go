package projections

import (
	"fmt"
	"sync"

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
	c := metrics.GetOrCreateCounter(fmt.Sprintf(`stacklens_projections_rows_upserted_total{window=%q}`, window))
	progressMu.Lock()
	rowCounters[window] = c
	progressMu.Unlock()
	return c
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
	g := metrics.GetOrCreateGauge(fmt.Sprintf(`stacklens_projections_lag{consumer=%q}`, consumer), nil)
	progressMu.Lock()
	lagGauges[consumer] = g
	progressMu.Unlock()
	return g
}

var (
	progressMu  sync.Mutex
	rowCounters = map[string]*metrics.Counter{}
	lagGauges   = map[string]*metrics.Gauge{}
)

// ProgressFigures are the projections' figures for their
// STATS_INTERVAL_SEC progress line: in = raw events received (inserted or
// already present), out = rows written (events inserted and aggregate rows
// upserted), dead_letters = messages that could not be decoded, lag =
// messages pending on the durable consumers, db_errors.
func ProgressFigures() []telemetry.Figure {
	rows, lag := 0.0, 0.0
	progressMu.Lock()
	for _, c := range rowCounters {
		rows += float64(c.Get())
	}
	for _, g := range lagGauges {
		lag += g.Get()
	}
	progressMu.Unlock()
	inserted := float64(eventsInserted.Get())
	return []telemetry.Figure{
		{Name: "in", Value: inserted + float64(eventsSkipped.Get()), Total: true},
		{Name: "out", Value: inserted + rows, Total: true},
		{Name: "dead_letters", Value: float64(badMessages.Get()), Total: true},
		{Name: "lag", Value: lag},
		{Name: "db_errors", Value: float64(dbErrors.Get())},
	}
}
