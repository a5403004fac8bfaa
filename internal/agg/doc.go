// Package agg is the aggregation kernel of StackLens (the seed's
// TimeSeriesAggregator): it folds validated events into per-(service,
// window, bucket) aggregates, merges aggregates, computes the API/PostgreSQL
// metric row (docs/ARCHITECTURE.md §2.5), and encodes the aggregate as the JSON value
// stored in the JetStream KV buckets stacklens_agg_<window> (docs/ARCHITECTURE.md §2.2).
//
// It is pure: no I/O, no clock, no goroutines, no locks. The processor owns
// an [Aggregator] per worker, folds events into it, and periodically drains
// the deltas and merges them into the stored aggregates with compare-and-set.
//
// # Exactness
//
// Counts, minima, maxima, first/last event times and the sketch bins are
// exact and their merge is associative and commutative, so any grouping of
// deltas gives bit-identical results. The float sums (LatencySum,
// LatencySqSum, RiskSum) are plain left folds in arrival order — Add gives
// exactly what `for _, x := range xs { s += x }` gives, and LatencySqSum is
// Σ float64(x*x) with the product rounded before the addition (the explicit
// conversion forbids a fused multiply-add). Merge adds two partial sums,
// which is commutative but not associative in floating point, so the sum
// after merging deltas may differ from the one-pass sum in the last few
// units in the last place. An invariant checker (docs/ARCHITECTURE.md §8, I1) must
// therefore compare float sums with a relative tolerance of about
// n·2⁻⁵³·Σ|x| (we suggest |got−want| ≤ 1e-9·max(1, Σ|x|)), or generate
// values whose partial sums are all exactly representable (integers or
// multiples of 1/1024 well below 2⁵³), in which case equality is exact.
//
// # Percentiles
//
// Latency percentiles come from a DDSketch (github.com/DataDog/sketches-go)
// with 1 % relative accuracy and a logarithmic index mapping. [Aggregate.Quantile] uses
// the nearest-rank definition: the value of rank ⌈q·n⌉ (1-based) in the
// sorted sample, q = 0 giving the minimum. The sketch returns a value within
// 1 % of that order statistic, and we clamp it into [LatencyMin,
// LatencyMax], which can only move it closer (so one value, or a constant
// stream, is reported exactly).
//
// The store is a collapsing-lowest dense store bounded to [SketchMaxBins]
// bins (16 KiB per sketch at most). Dense stores make Add a constant-time
// array increment without allocation; the bound keeps memory fixed even when
// a client sends latencies spanning the float range (an unbounded dense
// store would need ~70 000 bins for 1e-300…1e300). 2048 bins at 1 % cover a
// ratio of e^(2048·ln 1.0202) ≈ 6·10¹⁷ between the smallest and largest
// latency — 1 ns to 19 years in milliseconds — so real data never
// collapses; if it does, it is the lowest bins that merge, which costs
// accuracy only at low quantiles, never at p50/p95/p99 that alerts use.
//
// # Input guard
//
// Events are validated upstream (docs/ARCHITECTURE.md §2.1), but the kernel keeps every
// aggregate encodable whatever it is given: a latency that is NaN or
// negative counts as 0, one above [MaxLatencyMS] counts as MaxLatencyMS
// (so Σx² stays finite), and a risk outside [0, 1] is clamped (NaN risk is
// ignored). Valid events are never altered: MaxLatencyMS is the decoder's
// own bound (event.MaxLatencyMS), above which latency_ms is out_of_range.
package agg
