package bridge

import (
	"strconv"
	"sync"

	"github.com/VictoriaMetrics/metrics"

	"github.com/stacklens/stacklens/internal/telemetry"

	"github.com/stacklens/stacklens/internal/event"
)

// Package-level Prometheus metrics of the bridge (served by the process's
// metrics server through metrics.WritePrometheus).
var (
	consumedTotal  = metrics.NewCounter("stacklens_bridge_consumed_total")
	forwardedTotal = metrics.NewCounter("stacklens_bridge_forwarded_total")
	fencedTotal    = metrics.NewCounter("stacklens_bridge_fenced_total")
	publishRetries = metrics.NewCounter("stacklens_bridge_publish_retries_total")
	batchSizeHist  = metrics.NewPrometheusHistogramExt("stacklens_bridge_batch_size",
		[]float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000})
	// delaySeconds: Kafka timestamp of a batch's oldest message → the
	// batch acknowledged by JetStream (the bridge's share of freshness;
	// the timestamp is the producer's clock unless the topic uses
	// LogAppendTime).
	delaySeconds = metrics.NewPrometheusHistogramExt("stacklens_bridge_delay_seconds",
		telemetry.DelayBuckets)
	// groupSizeHist: partitions' batches per group commit (only groups
	// of two or more are recorded).
	groupSizeHist = metrics.NewPrometheusHistogramExt("stacklens_bridge_group_batches",
		[]float64{2, 3, 4, 6, 8, 12, 16, 24, 32, 64})
	// atomicBatches: atomic batches committed (one per group commit);
	// each costs the server a fixed amount (docs/bridge.md, "Batching").
	atomicBatches = metrics.NewCounter("stacklens_bridge_atomic_batches_total")
	// publishSeconds: a partition's batch handed to the group publisher →
	// its group commit acknowledged (the wait for a commit slot and the
	// atomic commit itself).
	publishSeconds = metrics.NewPrometheusHistogramExt("stacklens_bridge_publish_seconds", PublishBuckets)

	deadLetteredMu sync.Mutex
	deadLettered   = map[event.Reason]*metrics.Counter{}
)

// PublishBuckets are the buckets of stacklens_bridge_publish_seconds.
var PublishBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

func init() {
	for _, r := range event.AllReasons() {
		deadLetteredCounter(r)
	}
}

// deadLetteredCounter returns stacklens_bridge_dead_lettered_total{reason}.
func deadLetteredCounter(r event.Reason) *metrics.Counter {
	deadLetteredMu.Lock()
	defer deadLetteredMu.Unlock()
	c, ok := deadLettered[r]
	if !ok {
		c = metrics.GetOrCreateCounter(`stacklens_bridge_dead_lettered_total{reason="` + string(r) + `"}`)
		deadLettered[r] = c
	}
	return c
}

// partitionGauges are the per-partition gauges of one input partition.
type partitionGauges struct {
	lag       *metrics.Gauge
	committed *metrics.Gauge
	gaps      *metrics.Counter // offset gaps met (compaction, retention, transaction markers)
}

func gaugesFor(partition int) partitionGauges {
	p := strconv.Itoa(partition)
	g := partitionGauges{
		lag:       metrics.GetOrCreateGauge(`stacklens_bridge_kafka_lag{partition="`+p+`"}`, nil),
		committed: metrics.GetOrCreateGauge(`stacklens_bridge_committed_offset{partition="`+p+`"}`, nil),
		gaps:      metrics.GetOrCreateCounter(`stacklens_bridge_offset_gaps_total{partition="` + p + `"}`),
	}
	lagMu.Lock()
	lagGauges[partition] = g.lag
	lagMu.Unlock()
	return g
}

var (
	lagMu     sync.Mutex
	lagGauges = map[int]*metrics.Gauge{}
)

// ProgressFigures are the bridge's figures for its STATS_INTERVAL_SEC
// progress line: in = Kafka messages consumed, out = events published to
// JetStream, dead_letters, lag = Kafka messages behind (sum over the
// partitions this process has read), retries = batch publish retries.
func ProgressFigures() []telemetry.Figure {
	dead := 0.0
	deadLetteredMu.Lock()
	for _, c := range deadLettered {
		dead += float64(c.Get())
	}
	deadLetteredMu.Unlock()
	lag := 0.0
	lagMu.Lock()
	for _, g := range lagGauges {
		lag += g.Get()
	}
	lagMu.Unlock()
	return []telemetry.Figure{
		{Name: "in", Value: float64(consumedTotal.Get()), Total: true},
		{Name: "out", Value: float64(forwardedTotal.Get()), Total: true},
		{Name: "dead_letters", Value: dead, Total: true},
		{Name: "lag", Value: lag},
		{Name: "retries", Value: float64(publishRetries.Get())},
	}
}
