package agg

import (
	"math"
	"slices"
	"time"

	"github.com/DataDog/sketches-go/ddsketch"

	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/window"
)

// Aggregate holds the statistics of the events of one service in one window
// bucket. It is either a delta (what one flush interval added) or the stored
// total; both have the same shape so that total = Merge(total, delta).
//
// The zero value is an empty aggregate ready to use (the sketch is created
// on first use); NewAggregate preallocates it.
type Aggregate struct {
	// Identity, set by whoever creates the aggregate (Add and Merge leave
	// them alone): the service name and the bucket start in Unix seconds.
	Service string
	Start   int64

	Count        uint64
	ErrorCount   uint64 // events whose level is error, critical or fatal
	WarningCount uint64 // events whose level is warning

	LatencySum   float64 // Σ latency_ms, in arrival order
	LatencySqSum float64 // Σ float64(latency_ms²), in arrival order
	LatencyMin   float64 // 0 when Count == 0
	LatencyMax   float64

	RiskSum   float64 // Σ risk_score over events that have one
	RiskMax   float64
	RiskCount uint64 // events that carried a risk_score

	// Event-time range of the events, Unix nanoseconds; 0 when Count == 0.
	FirstEvent int64
	LastEvent  int64

	// LatencyGood holds, per latency threshold this aggregate counts
	// (ascending, distinct), the exact number of its events with latency
	// ≤ the threshold. Thresholds are fixed when the aggregate is created
	// (SetThresholds) and only shrink by Merge (docs/processor.md).
	LatencyGood []Good

	// Sketch holds the latency distribution (see the package doc). It is
	// nil only in a zero-value Aggregate that has not been used yet.
	Sketch *ddsketch.DDSketch

	// Bookkeeping for exactly-once flushing (docs/ARCHITECTURE.md §3): LastSeq is the
	// highest stream sequence folded in (Merge keeps the maximum); Version
	// and Final belong to the stored aggregate and are not merged.
	LastSeq uint64
	Version uint64
	Final   bool
}

// NewAggregate returns an empty aggregate for service and bucket start.
func NewAggregate(service string, start int64) *Aggregate {
	return &Aggregate{Service: service, Start: start, Sketch: NewSketch()}
}

func (a *Aggregate) sketch() *ddsketch.DDSketch {
	if a.Sketch == nil {
		a.Sketch = NewSketch()
	}
	return a.Sketch
}

// sample is an event reduced to what aggregation needs, with the input
// guard applied; the Aggregator computes it once for all windows.
type sample struct {
	ns      int64
	latency float64
	risk    float64
	hasRisk bool
	isErr   bool
	isWarn  bool
}

func makeSample(e event.Event) sample {
	lat := e.LatencyMS
	switch {
	case !(lat > 0): // zero (also -0, so the min is never -0), negative or NaN
		lat = 0
	case lat > MaxLatencyMS:
		lat = MaxLatencyMS
	}
	risk, hasRisk := e.Risk, e.HasRisk && !math.IsNaN(e.Risk)
	if hasRisk {
		risk = min(max(risk, 0), 1)
	}
	return sample{
		ns:      e.Time.UnixNano(),
		latency: lat,
		risk:    risk,
		hasRisk: hasRisk,
		isErr:   e.Level.IsError(),
		isWarn:  e.Level.IsWarning(),
	}
}

// Add folds one event into the aggregate. It does not allocate once the
// sketch has grown to the range of the data.
func (a *Aggregate) Add(e event.Event) { a.add(makeSample(e)) }

func (a *Aggregate) add(s sample) {
	if a.Count == 0 {
		a.LatencyMin, a.LatencyMax = s.latency, s.latency
		a.FirstEvent, a.LastEvent = s.ns, s.ns
	} else {
		a.LatencyMin = min(a.LatencyMin, s.latency)
		a.LatencyMax = max(a.LatencyMax, s.latency)
		a.FirstEvent = min(a.FirstEvent, s.ns)
		a.LastEvent = max(a.LastEvent, s.ns)
	}
	a.Count++
	if s.isErr {
		a.ErrorCount++
	}
	if s.isWarn {
		a.WarningCount++
	}
	a.LatencySum += s.latency
	a.LatencySqSum += float64(s.latency * s.latency)
	if len(a.LatencyGood) > 0 {
		a.countGood(s.latency)
	}
	if s.hasRisk {
		a.RiskSum += s.risk
		a.RiskMax = max(a.RiskMax, s.risk)
		a.RiskCount++
	}
	// The guard above keeps the latency finite, non-negative and in range,
	// so the sketch cannot refuse it.
	_ = a.sketch().Add(s.latency)
}

// Merge adds the statistics of o to a: counts and sums add, minima and
// maxima combine, the sketches merge, LastSeq becomes the larger one.
// LatencyGood keeps the thresholds both count (an a without events takes
// o's), so every count stays exact.
// Identity (Service, Start), Version and Final are left as they are.
// Merge is commutative and associative except for the last bits of the float
// sums (see the package documentation).
func (a *Aggregate) Merge(o *Aggregate) {
	if o == nil {
		return
	}
	a.LastSeq = max(a.LastSeq, o.LastSeq)
	if o.Count == 0 {
		return
	}
	a.mergeGood(o)
	if a.Count == 0 {
		a.LatencyMin, a.LatencyMax = o.LatencyMin, o.LatencyMax
		a.FirstEvent, a.LastEvent = o.FirstEvent, o.LastEvent
	} else {
		a.LatencyMin = min(a.LatencyMin, o.LatencyMin)
		a.LatencyMax = max(a.LatencyMax, o.LatencyMax)
		a.FirstEvent = min(a.FirstEvent, o.FirstEvent)
		a.LastEvent = max(a.LastEvent, o.LastEvent)
	}
	a.Count += o.Count
	a.ErrorCount += o.ErrorCount
	a.WarningCount += o.WarningCount
	a.LatencySum += o.LatencySum
	a.LatencySqSum += o.LatencySqSum
	a.RiskSum += o.RiskSum
	a.RiskMax = max(a.RiskMax, o.RiskMax)
	a.RiskCount += o.RiskCount
	if o.Sketch != nil {
		sk := a.sketch()
		if sk.MergeWith(o.Sketch) != nil {
			// A sketch built elsewhere with another mapping: re-add its
			// bins so no count is ever lost (at the cost of one more
			// rounding of those values).
			o.Sketch.ForEach(func(v, c float64) bool {
				_ = sk.AddWithCount(v, c)
				return false
			})
		}
	}
}

// Quantile returns the nearest-rank q-quantile of the latencies (see the
// package documentation), within 1 % of the exact value. q is clamped to
// [0, 1]; an empty aggregate gives 0.
func (a *Aggregate) Quantile(q float64) float64 {
	if a.Count == 0 || a.Sketch == nil || a.Sketch.IsEmpty() {
		return 0
	}
	if !(q > 0) {
		return a.LatencyMin
	}
	if q >= 1 {
		return a.LatencyMax
	}
	return min(max(sketchQuantile(a.Sketch, q), a.LatencyMin), a.LatencyMax)
}

// Reset empties the aggregate, identity, thresholds and bookkeeping
// included, keeping the memory of the sketch and of LatencyGood for reuse.
func (a *Aggregate) Reset() {
	sk := a.Sketch
	if sk != nil {
		sk.Clear()
	}
	*a = Aggregate{Sketch: sk, LatencyGood: a.LatencyGood[:0]}
}

// Clone returns a deep copy.
func (a *Aggregate) Clone() *Aggregate {
	c := *a
	c.LatencyGood = slices.Clone(a.LatencyGood)
	if a.Sketch != nil {
		c.Sketch = a.Sketch.Copy()
	}
	return &c
}

// Row is one metric row as the API returns it and PostgreSQL stores it
// (docs/ARCHITECTURE.md §2.5). Counts are int64 because that is what PostgreSQL bigint
// and JSON readers hold.
type Row struct {
	Service          string    `json:"service"`
	Window           string    `json:"window"`
	Timestamp        time.Time `json:"timestamp"` // window start, UTC
	Count            int64     `json:"count"`
	ErrorCount       int64     `json:"error_count"`
	WarningCount     int64     `json:"warning_count"`
	ErrorRate        float64   `json:"error_rate"` // percent, 0–100
	ThroughputPerSec float64   `json:"throughput_per_sec"`
	LatencyAvgMS     float64   `json:"latency_avg_ms"`
	LatencyMinMS     float64   `json:"latency_min_ms"`
	LatencyMaxMS     float64   `json:"latency_max_ms"`
	LatencyP50MS     float64   `json:"latency_p50_ms"`
	LatencyP95MS     float64   `json:"latency_p95_ms"`
	LatencyP99MS     float64   `json:"latency_p99_ms"`
	RiskScoreAvg     float64   `json:"risk_score_avg"`
	RiskScoreMax     float64   `json:"risk_score_max"`
	Final            bool      `json:"final"`
	Version          int64     `json:"version"`
}

// Row returns the metric row of a, an aggregate of window w. Ratios of an
// empty aggregate are 0, never NaN.
func (a *Aggregate) Row(w window.Window) Row {
	return Row{
		Service:          a.Service,
		Window:           w.Name,
		Timestamp:        time.Unix(a.Start, 0).UTC(),
		Count:            int64(a.Count),
		ErrorCount:       int64(a.ErrorCount),
		WarningCount:     int64(a.WarningCount),
		ErrorRate:        ratio(float64(a.ErrorCount)*100, a.Count),
		ThroughputPerSec: float64(a.Count) / w.Seconds(),
		LatencyAvgMS:     ratio(a.LatencySum, a.Count),
		LatencyMinMS:     a.LatencyMin,
		LatencyMaxMS:     a.LatencyMax,
		LatencyP50MS:     a.Quantile(0.50),
		LatencyP95MS:     a.Quantile(0.95),
		LatencyP99MS:     a.Quantile(0.99),
		RiskScoreAvg:     ratio(a.RiskSum, a.RiskCount),
		RiskScoreMax:     a.RiskMax,
		Final:            a.Final,
		Version:          int64(a.Version),
	}
}

func ratio(x float64, n uint64) float64 {
	if n == 0 {
		return 0
	}
	return x / float64(n)
}
