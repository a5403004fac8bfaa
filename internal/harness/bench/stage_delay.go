package bench

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/stacklens/stacklens/bridge"
	"github.com/stacklens/stacklens/internal/telemetry"
)

// StageDelay is one stage's share of freshness during the steady hold,
// from the roles' delay histograms: the mean and the 99th percentile,
// over the stage's batches, of the time from its oldest message entering
// the stage's input to the batch being done (Kafka timestamp → JetStream
// ack; stream → KV flush; KV → PostgreSQL commit). The percentile is
// interpolated within the histogram's buckets (telemetry.DelayBuckets:
// …, 250 ms, 500 ms, 1 s, …; the bridge's publish has finer ones), as
// Prometheus' histogram_quantile does: it tells which stage the slowest
// probes waited in, not to the millisecond.
type StageDelay struct {
	Stage   string  `json:"stage"`
	Metric  string  `json:"metric"`
	MeanMS  float64 `json:"mean_ms"`
	P99MS   float64 `json:"p99_ms"`
	Batches float64 `json:"batches"`
}

// delayMetrics are the stages on a probe's way, with their histograms'
// bounds; the series whose labels include skip are left out (the
// raw-events consumer of the projections runs beside the processor, not
// after it). The bridge's publish is part of the bridge's stage: its
// batches waiting for, and in, their atomic commit.
var delayMetrics = []struct {
	stage, metric, skip string
	bounds              []float64
}{
	{"Kafka → JetStream (bridge)", "stacklens_bridge_delay_seconds", "", telemetry.DelayBuckets},
	{"of which the commit (bridge publish)", "stacklens_bridge_publish_seconds", "", bridge.PublishBuckets},
	{"stream → KV (processor)", "stacklens_processor_delay_seconds", "", telemetry.DelayBuckets},
	{"KV → PostgreSQL (projections)", "stacklens_projections_delay_seconds", `consumer="stacklens_projections_events"`, telemetry.DelayBuckets},
}

// delaySnapshot sums each delay histogram's _sum, _count and buckets
// over the roles.
func (r *run) delaySnapshot(ctx context.Context) map[string]float64 {
	out := map[string]float64{}
	for _, p := range r.all() {
		if text, err := scrapeText(ctx, r.hc, p.metricsURL()); err == nil {
			_ = addDelays(out, strings.NewReader(text))
		}
	}
	return out
}

// bucketKey names the cumulative count of metric's bucket le in a
// snapshot.
func bucketKey(metric string, le float64) string {
	return metric + `_bucket{le="` + strconv.FormatFloat(le, 'g', -1, 64) + `"}`
}

// addDelays adds to out, in one pass over a Prometheus exposition, each
// delay histogram's _sum, _count and cumulative bucket counts (keyed by
// bucketKey), summed over its series but those delayMetrics leave out.
func addDelays(out map[string]float64, r io.Reader) error {
	return eachSample(r, func(name, series string, v float64) {
		for _, d := range delayMetrics {
			part, ok := strings.CutPrefix(name, d.metric+"_")
			if !ok || (d.skip != "" && strings.Contains(series, d.skip)) {
				continue
			}
			switch part {
			case "sum", "count":
				out[name] += v
			case "bucket":
				_, le, _ := strings.Cut(series, `le="`)
				le, _, _ = strings.Cut(le, `"`)
				if bound, err := strconv.ParseFloat(le, 64); err == nil {
					out[bucketKey(d.metric, bound)] += v
				}
			}
		}
	})
}

// bucketQuantile is the q-quantile of n observations whose cumulative
// counts per bound are cum (bounds ascending; observations above the last
// bound count only in n), interpolated linearly within the bucket; above
// the last bound it is that bound.
func bucketQuantile(q float64, bounds, cum []float64, n float64) float64 {
	rank := q * n
	lo, below := 0.0, 0.0
	for i, b := range bounds {
		if cum[i] >= rank {
			if cum[i] == below {
				return b
			}
			return lo + (b-lo)*(rank-below)/(cum[i]-below)
		}
		lo, below = b, cum[i]
	}
	return bounds[len(bounds)-1]
}

// stageDelays turns two snapshots into per-stage means and p99s.
func stageDelays(before, after map[string]float64) []StageDelay {
	var out []StageDelay
	diff := func(k string) float64 { return after[k] - before[k] }
	for _, d := range delayMetrics {
		n := diff(d.metric + "_count")
		if n <= 0 {
			continue
		}
		sum := diff(d.metric + "_sum")
		bounds := d.bounds
		cum := make([]float64, len(bounds))
		for i, le := range bounds {
			cum[i] = diff(bucketKey(d.metric, le))
			if i > 0 { // cumulative: a bucket missing from the exposition holds the one below
				cum[i] = max(cum[i], cum[i-1])
			}
		}
		out = append(out, StageDelay{Stage: d.stage, Metric: d.metric, MeanMS: sum / n * 1000,
			P99MS: bucketQuantile(0.99, bounds, cum, n) * 1000, Batches: n})
	}
	return out
}

func stageDelayText(ds []StageDelay) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = fmt.Sprintf("%s %.0f ms (p99 %.0f)", d.Stage, d.MeanMS, d.P99MS)
	}
	return strings.Join(parts, ", ")
}
