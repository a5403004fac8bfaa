package processor

import (
	"slices"
	"strconv"
	"sync"

	"github.com/VictoriaMetrics/metrics"

	"github.com/stacklens/stacklens/internal/telemetry"
)

// Package-level Prometheus metrics of the processor (served by the
// process's metrics server through metrics.WritePrometheus).
var (
	flushesTotal   = metrics.NewCounter("stacklens_processor_flushes_total")
	casConflicts   = metrics.NewCounter("stacklens_processor_cas_conflicts_total")
	lateEvents     = metrics.NewCounter("stacklens_processor_late_events_total")
	tooLateEvents  = metrics.NewCounter("stacklens_processor_too_late_total")
	overflowEvents = metrics.NewCounter("stacklens_processor_overflow_events_total")
	skippedFolds   = metrics.NewCounter("stacklens_processor_redelivered_skipped_total")
	// unparsableMeta: stream messages skipped because their JetStream
	// metadata (the ack reply: stream sequence, timestamp) does not parse.
	unparsableMeta = metrics.NewCounter("stacklens_processor_unparsable_metadata_total")
	ownedShards    = metrics.NewGauge("stacklens_processor_owned_shards", nil)
	flushSeconds   = metrics.NewPrometheusHistogramExt("stacklens_processor_flush_seconds",
		[]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10})
	// delaySeconds: stream timestamp of the oldest event of a flush → the
	// flush's aggregates and checkpoint written (the processor's share of
	// freshness, FLUSH_INTERVAL included).
	delaySeconds = metrics.NewPrometheusHistogramExt("stacklens_processor_delay_seconds",
		telemetry.DelayBuckets)
	_ = metrics.NewGauge("stacklens_processor_watermark_delay_seconds", maxWatermarkDelay)
	// unreadable aggregates: KV values that do not decode; their shard
	// is stalled until an operator repairs them (docs/RUNBOOK.md).
	_ = metrics.NewGauge("stacklens_processor_unreadable_aggregates", func() float64 {
		unreadableMu.Lock()
		defer unreadableMu.Unlock()
		n := 0
		for u := range unreadableSets {
			n += len(u.keys())
		}
		return float64(n)
	})
	unreadableMu   sync.Mutex
	unreadableSets = map[*unreadableSet]bool{} // of the running processors

	shardMu      sync.Mutex
	shardMetrics = map[int]*shardMetricSet{}
	delays       = map[int]float64{}
)

// shardMetricSet is the per-shard series.
type shardMetricSet struct {
	folded *metrics.Counter
	lag    *metrics.Gauge
}

func shardCounters(shard int) *shardMetricSet {
	shardMu.Lock()
	defer shardMu.Unlock()
	m := shardMetrics[shard]
	if m == nil {
		s := strconv.Itoa(shard)
		m = &shardMetricSet{
			folded: metrics.GetOrCreateCounter(`stacklens_processor_events_folded_total{shard="` + s + `"}`),
			lag:    metrics.GetOrCreateGauge(`stacklens_processor_lag_events{shard="`+s+`"}`, nil),
		}
		shardMetrics[shard] = m
	}
	return m
}

func setWatermarkDelay(shard int, d float64) {
	shardMu.Lock()
	delays[shard] = d
	shardMu.Unlock()
}

// shardGaugesDrop forgets a shard this process no longer owns.
func shardGaugesDrop(shard int) {
	shardMu.Lock()
	delete(delays, shard)
	shardMu.Unlock()
	shardCounters(shard).lag.Set(0)
}

// maxWatermarkDelay is how far the slowest owned shard's finality
// watermark is behind the clock.
func maxWatermarkDelay() float64 {
	shardMu.Lock()
	defer shardMu.Unlock()
	m := 0.0
	for _, d := range delays {
		m = max(m, d)
	}
	return m
}

// ProgressFigures are the processor's figures for its STATS_INTERVAL_SEC
// progress line: in = events folded, out = flushes to KV, dead_letters =
// events dead-lettered too_late, lag = events pending on the owned shards,
// owned_shards.
func ProgressFigures() []telemetry.Figure {
	folded, lag := 0.0, 0.0
	shardMu.Lock()
	for _, m := range shardMetrics {
		folded += float64(m.folded.Get())
		lag += m.lag.Get()
	}
	shardMu.Unlock()
	return []telemetry.Figure{
		{Name: "in", Value: folded, Total: true},
		{Name: "out", Value: float64(flushesTotal.Get()), Total: true},
		{Name: "dead_letters", Value: float64(tooLateEvents.Get()), Total: true},
		{Name: "lag", Value: lag},
		{Name: "owned_shards", Value: ownedShards.Get()},
	}
}

// unreadableSet is the stored aggregates ("bucket key") one processor
// currently fails to decode, with the shard that tried.
type unreadableSet struct {
	mu sync.Mutex
	m  map[string]int
}

// set records (err != nil) or clears the decode failure of one stored
// aggregate.
func (u *unreadableSet) set(shard int, bucket, key string, err error) {
	k := bucket + " " + key
	u.mu.Lock()
	defer u.mu.Unlock()
	if err != nil {
		if u.m == nil {
			u.m = map[string]int{}
		}
		u.m[k] = shard
	} else {
		delete(u.m, k)
	}
}

// dropShard forgets the failures of a shard this process no longer
// consumes (its new owner reports them if they persist).
func (u *unreadableSet) dropShard(shard int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for k, s := range u.m {
		if s == shard {
			delete(u.m, k)
		}
	}
}

// keys lists the unreadable aggregates, sorted.
func (u *unreadableSet) keys() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	ks := make([]string, 0, len(u.m))
	for k := range u.m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// exportUnreadable adds u to the gauge until the returned func is called.
func exportUnreadable(u *unreadableSet) func() {
	unreadableMu.Lock()
	unreadableSets[u] = true
	unreadableMu.Unlock()
	return func() {
		unreadableMu.Lock()
		delete(unreadableSets, u)
		unreadableMu.Unlock()
	}
}
