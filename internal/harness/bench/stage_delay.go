package bench

import (
	"context"
	"fmt"
	"strings"
)

// StageDelay is one stage's share of freshness during the steady hold,
// from the roles' delay histograms: the mean, over the stage's batches,
// of the time from its oldest message entering the stage's input to the
// batch being done (Kafka timestamp → JetStream ack; stream → KV flush;
// KV → PostgreSQL commit).
type StageDelay struct {
	Stage   string  `json:"stage"`
	Metric  string  `json:"metric"`
	MeanMS  float64 `json:"mean_ms"`
	Batches float64 `json:"batches"`
}

// delayMetrics are the stages on a probe's way; minus is a series of the
// same histogram to leave out (the raw-events consumer of the projections
// runs beside the processor, not after it).
var delayMetrics = []struct{ stage, metric, minus string }{
	{"Kafka → JetStream (bridge)", "stacklens_bridge_delay_seconds", ""},
	{"stream → KV (processor)", "stacklens_processor_delay_seconds", ""},
	{"KV → PostgreSQL (projections)", "stacklens_projections_delay_seconds", `{consumer="stacklens_projections_events"}`},
}

// delaySnapshot sums each delay histogram's _sum and _count over the
// roles.
func (r *run) delaySnapshot(ctx context.Context) map[string]float64 {
	var names []string
	for _, d := range delayMetrics {
		names = append(names, d.metric+"_sum", d.metric+"_count")
		if d.minus != "" {
			names = append(names, d.metric+"_sum"+d.minus, d.metric+"_count"+d.minus)
		}
	}
	out := map[string]float64{}
	for _, p := range r.all() {
		m, err := scrape(ctx, r.hc, p.metricsURL(), names...)
		if err != nil {
			continue
		}
		for k, v := range m {
			out[k] += v
		}
	}
	return out
}

// stageDelays turns two snapshots into per-stage means.
func stageDelays(before, after map[string]float64) []StageDelay {
	var out []StageDelay
	diff := func(k string) float64 { return after[k] - before[k] }
	for _, d := range delayMetrics {
		left := func(k string) float64 {
			if d.minus == "" {
				return 0
			}
			return diff(k + d.minus)
		}
		n := diff(d.metric+"_count") - left(d.metric+"_count")
		if n <= 0 {
			continue
		}
		sum := diff(d.metric+"_sum") - left(d.metric+"_sum")
		out = append(out, StageDelay{Stage: d.stage, Metric: d.metric, MeanMS: sum / n * 1000, Batches: n})
	}
	return out
}

func stageDelayText(ds []StageDelay) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = fmt.Sprintf("%s %.0f ms", d.Stage, d.MeanMS)
	}
	return strings.Join(parts, ", ")
}
