package bench

import (
	"bufio"
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/stacklens/stacklens/internal/telemetry"
)

// StageDelay is one stage's share of freshness during the steady hold,
// from the roles' delay histograms: the mean and the 99th percentile,
// over the stage's batches, of the time from its oldest message entering
// the stage's input to the batch being done (Kafka timestamp → JetStream
// ack; stream → KV flush; KV → PostgreSQL commit). The percentile is
// interpolated within the histogram's buckets (telemetry.DelayBuckets:
// …, 250 ms, 500 ms, 1 s, …), as Prometheus' histogram_quantile does: it
// tells which stage the slowest probes waited in, not to the millisecond.
type StageDelay struct {
	Stage   string  `json:"stage"`
	Metric  string  `json:"metric"`
	MeanMS  float64 `json:"mean_ms"`
	P99MS   float64 `json:"p99_ms"`
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

// delaySnapshot sums each delay histogram's _sum, _count and buckets
// over the roles.
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
		text, err := scrapeText(ctx, r.hc, p.metricsURL())
		if err != nil {
			continue
		}
		m, err := parseProm(strings.NewReader(text), names...)
		if err != nil {
			continue
		}
		for k, v := range m {
			out[k] += v
		}
		for _, d := range delayMetrics {
			addBuckets(out, text, d.metric, strings.Trim(d.minus, "{}"))
		}
	}
	return out
}

// bucketKey names the cumulative count of metric's bucket le in a
// snapshot.
func bucketKey(metric string, le float64) string {
	return metric + `_bucket{le="` + strconv.FormatFloat(le, 'g', -1, 64) + `"}`
}

// addBuckets adds to out the cumulative bucket counts of metric's
// histogram in a Prometheus exposition, summed over its series by bound,
// leaving out the series whose labels include skip (`label="value"`).
func addBuckets(out map[string]float64, text, metric, skip string) {
	prefix := metric + "_bucket{"
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		labels, value, ok := strings.Cut(line[len(prefix):], "} ")
		if !ok || (skip != "" && strings.Contains(labels, skip)) {
			continue
		}
		_, le, ok := strings.Cut(labels, `le="`)
		if !ok {
			continue
		}
		le, _, _ = strings.Cut(le, `"`)
		bound, err1 := strconv.ParseFloat(le, 64)
		v, err2 := strconv.ParseFloat(value, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		out[bucketKey(metric, bound)] += v
	}
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
		bounds := telemetry.DelayBuckets
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
