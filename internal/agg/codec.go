package agg

import (
	"cmp"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/stacklens/stacklens/internal/jsonenc"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/stacklens/stacklens/internal/window"
)

// The KV value (docs/ARCHITECTURE.md §2.2) is a flat JSON object meant to be read by
// people with `nats kv get`: the identity, the metric row's fields, then
// the raw state that makes it mergeable. Decoding uses only the raw state
// (row fields are derived and ignored), so the value is lossless:
//
//	{"service":"checkout","window":"1min","timestamp":"2026-11-29T01:00:00Z",
//	 "start":1795914000,"count":3,"error_count":1,"warning_count":0,
//	 "error_rate":33.33…,"throughput_per_sec":0.05,"latency_avg_ms":50,
//	 "latency_min_ms":40,"latency_max_ms":60,"latency_p50_ms":…,
//	 "latency_p95_ms":…,"latency_p99_ms":…,"risk_score_avg":0.1,
//	 "risk_score_max":0.1,"latency_sum":150,"latency_sq_sum":7700,
//	 "risk_sum":0.3,"risk_count":3,"latency_good":{"50":2,"100":3},
//	 "first_event":"2026-11-29T01:00:00.123Z",
//	 "last_event":"…","final":false,"last_seq":42,"version":7,
//	 "sketch":"<base64 of ddsketch.Encode>"}
//
// Floats are written with strconv 'g' -1, the shortest text that parses back
// to the same float64, so every stat round-trips bit for bit. latency_good
// (the exact good-event count per latency threshold, keys ThresholdKey,
// ascending) is left out when the aggregate counts no threshold.

// emptySketchB64 is what a nil sketch encodes as: an empty sketch, so
// the value is the same as for an empty aggregate that has its sketch.
var emptySketchB64 = func() string {
	var b []byte
	NewSketch().Encode(&b, false)
	return base64.StdEncoding.EncodeToString(b)
}()

var scratchPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// Encode appends the KV value of a, an aggregate of window w, to dst and
// returns the extended slice.
func (a *Aggregate) Encode(dst []byte, w window.Window) []byte {
	r := a.Row(w)
	dst = append(dst, `{"service":`...)
	dst = jsonenc.AppendString(dst, a.Service)
	dst = append(dst, `,"window":`...)
	dst = jsonenc.AppendString(dst, w.Name)
	dst = append(dst, `,"timestamp":"`...)
	dst = r.Timestamp.AppendFormat(dst, time.RFC3339)
	dst = append(dst, `","start":`...)
	dst = strconv.AppendInt(dst, a.Start, 10)
	dst = appendUint(dst, "count", a.Count)
	dst = appendUint(dst, "error_count", a.ErrorCount)
	dst = appendUint(dst, "warning_count", a.WarningCount)
	dst = appendFloat(dst, "error_rate", r.ErrorRate)
	dst = appendFloat(dst, "throughput_per_sec", r.ThroughputPerSec)
	dst = appendFloat(dst, "latency_avg_ms", r.LatencyAvgMS)
	dst = appendFloat(dst, "latency_min_ms", a.LatencyMin)
	dst = appendFloat(dst, "latency_max_ms", a.LatencyMax)
	dst = appendFloat(dst, "latency_p50_ms", r.LatencyP50MS)
	dst = appendFloat(dst, "latency_p95_ms", r.LatencyP95MS)
	dst = appendFloat(dst, "latency_p99_ms", r.LatencyP99MS)
	dst = appendFloat(dst, "risk_score_avg", r.RiskScoreAvg)
	dst = appendFloat(dst, "risk_score_max", a.RiskMax)
	dst = appendFloat(dst, "latency_sum", a.LatencySum)
	dst = appendFloat(dst, "latency_sq_sum", a.LatencySqSum)
	dst = appendFloat(dst, "risk_sum", a.RiskSum)
	dst = appendUint(dst, "risk_count", a.RiskCount)
	if len(a.LatencyGood) > 0 {
		dst = append(dst, `,"latency_good":`...)
		dst = a.AppendLatencyGood(dst)
	}
	dst = appendTime(dst, "first_event", a.FirstEvent)
	dst = appendTime(dst, "last_event", a.LastEvent)
	dst = append(dst, `,"final":`...)
	dst = strconv.AppendBool(dst, a.Final)
	dst = appendUint(dst, "last_seq", a.LastSeq)
	dst = appendUint(dst, "version", a.Version)
	dst = append(dst, `,"sketch":"`...)
	if a.Sketch == nil {
		dst = append(dst, emptySketchB64...)
	} else {
		bp := scratchPool.Get().(*[]byte)
		buf := (*bp)[:0]
		a.Sketch.Encode(&buf, false) // with the mapping: self-describing
		dst = base64.StdEncoding.AppendEncode(dst, buf)
		*bp = buf
		scratchPool.Put(bp)
	}
	return append(dst, `"}`...)
}

func appendUint(dst []byte, name string, v uint64) []byte {
	dst = append(dst, `,"`...)
	dst = append(dst, name...)
	dst = append(dst, `":`...)
	return strconv.AppendUint(dst, v, 10)
}

func appendFloat(dst []byte, name string, v float64) []byte {
	dst = append(dst, `,"`...)
	dst = append(dst, name...)
	dst = append(dst, `":`...)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		// Unreachable for aggregates built by Add, Merge and Decode (the
		// input guard and Decode's bounds keep every stat finite). JSON
		// has no NaN or Inf; a string makes Decode fail loudly instead of
		// silently reading a zero.
		return strconv.AppendQuote(dst, strconv.FormatFloat(v, 'g', -1, 64))
	}
	return strconv.AppendFloat(dst, v, 'g', -1, 64)
}

func appendTime(dst []byte, name string, ns int64) []byte {
	dst = append(dst, `,"`...)
	dst = append(dst, name...)
	dst = append(dst, `":"`...)
	dst = time.Unix(0, ns).UTC().AppendFormat(dst, time.RFC3339Nano)
	return append(dst, '"')
}

// wire is the decoding view of the KV value. Pointers mark the members
// that must be present; the derived row fields are not read.
type wire struct {
	Service      *string           `json:"service"`
	Window       string            `json:"window"`
	Timestamp    string            `json:"timestamp"`
	Start        *int64            `json:"start"`
	Count        *uint64           `json:"count"`
	ErrorCount   uint64            `json:"error_count"`
	WarningCount uint64            `json:"warning_count"`
	LatencyMin   float64           `json:"latency_min_ms"`
	LatencyMax   float64           `json:"latency_max_ms"`
	RiskMax      float64           `json:"risk_score_max"`
	LatencySum   float64           `json:"latency_sum"`
	LatencySqSum float64           `json:"latency_sq_sum"`
	RiskSum      float64           `json:"risk_sum"`
	RiskCount    uint64            `json:"risk_count"`
	LatencyGood  map[string]uint64 `json:"latency_good"`
	FirstEvent   string            `json:"first_event"`
	LastEvent    string            `json:"last_event"`
	Final        bool              `json:"final"`
	LastSeq      uint64            `json:"last_seq"`
	Version      uint64            `json:"version"`
	Sketch       *[]byte           `json:"sketch"`
}

// Decode parses a KV value written by Encode. Any input that Encode cannot
// have produced from a consistent aggregate is an error; no input panics.
func Decode(b []byte) (*Aggregate, error) {
	a := new(Aggregate)
	if _, err := DecodeInto(a, b); err != nil {
		return nil, err
	}
	return a, nil
}

// DecodeInto is Decode into an existing aggregate (overwritten entirely,
// also on error), returning the window the value belongs to.
func DecodeInto(a *Aggregate, b []byte) (window.Window, error) {
	a.Reset()
	w, err := decodeInto(a, b)
	if err != nil {
		a.Reset()
		return window.Window{}, fmt.Errorf("agg: decode aggregate: %w", err)
	}
	return w, nil
}

func decodeInto(a *Aggregate, b []byte) (window.Window, error) {
	var v wire
	if err := json.Unmarshal(b, &v); err != nil {
		return window.Window{}, err
	}
	if v.Service == nil || *v.Service == "" {
		return window.Window{}, errors.New("missing service")
	}
	if v.Start == nil || v.Count == nil || v.Sketch == nil {
		return window.Window{}, errors.New("missing start, count or sketch")
	}
	w, err := window.Parse(v.Window)
	if err != nil {
		return window.Window{}, err
	}
	start := *v.Start
	if start < minStart || start > maxStart || !w.Aligned(start) {
		return window.Window{}, fmt.Errorf("start %d is not a %s bucket start", start, w.Name)
	}
	if ts, err := time.Parse(time.RFC3339, v.Timestamp); err != nil || ts.Unix() != start || ts.Nanosecond() != 0 {
		return window.Window{}, fmt.Errorf("timestamp %q does not match start %d", v.Timestamp, start)
	}
	first, err := parseNanos(v.FirstEvent)
	if err != nil {
		return window.Window{}, fmt.Errorf("first_event: %w", err)
	}
	last, err := parseNanos(v.LastEvent)
	if err != nil {
		return window.Window{}, fmt.Errorf("last_event: %w", err)
	}
	// Reset (in DecodeInto) kept a's sketch, emptied, and its
	// LatencyGood's array: a decoder that reuses one aggregate allocates
	// neither again (docs/PERFORMANCE.md, the projections' allocation).
	sk, good := a.Sketch, a.LatencyGood[:0]
	*a = Aggregate{
		LatencyGood:  good,
		Service:      *v.Service,
		Start:        start,
		Count:        *v.Count,
		ErrorCount:   v.ErrorCount,
		WarningCount: v.WarningCount,
		LatencySum:   v.LatencySum,
		LatencySqSum: v.LatencySqSum,
		LatencyMin:   v.LatencyMin,
		LatencyMax:   v.LatencyMax,
		RiskSum:      v.RiskSum,
		RiskMax:      v.RiskMax,
		RiskCount:    v.RiskCount,
		FirstEvent:   first,
		LastEvent:    last,
		LastSeq:      v.LastSeq,
		Version:      v.Version,
		Final:        v.Final,
	}
	if err := a.check(); err != nil {
		return window.Window{}, err
	}
	if err := a.decodeGood(v.LatencyGood); err != nil {
		return window.Window{}, err
	}
	sk, err = decodeSketch(sk, *v.Sketch)
	if err != nil {
		return window.Window{}, err
	}
	if err := checkSketch(sk, a.Count, a.LatencyMin, a.LatencyMax); err != nil {
		return window.Window{}, err
	}
	a.Sketch = sk
	return w, nil
}

// decodeGood reads latency_good: keys must be spelled as ThresholdKey
// spells them (so two spellings of one threshold cannot both appear), and
// the counts must be consistent (checkGood).
func (a *Aggregate) decodeGood(m map[string]uint64) error {
	if len(m) == 0 {
		return nil
	}
	if len(m) > MaxThresholds {
		return fmt.Errorf("%d latency thresholds, at most %d", len(m), MaxThresholds)
	}
	for k, c := range m {
		t, err := strconv.ParseFloat(k, 64)
		if err != nil || ThresholdKey(t) != k {
			return fmt.Errorf("latency_good key %q is not a threshold in shortest decimal form", k)
		}
		a.LatencyGood = append(a.LatencyGood, Good{ThresholdMS: t, Count: c})
	}
	slices.SortFunc(a.LatencyGood, func(x, y Good) int { return cmp.Compare(x.ThresholdMS, y.ThresholdMS) })
	return a.checkGood()
}

// Bucket starts are kept to years 1678–2262, where event times in Unix
// nanoseconds live.
const (
	minStart = math.MinInt64 / int64(time.Second)
	maxStart = math.MaxInt64 / int64(time.Second)
)

func parseNanos(s string) (int64, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, err
	}
	ns := t.UnixNano()
	if time.Unix(0, ns).Equal(t) {
		return ns, nil
	}
	return 0, fmt.Errorf("%q is outside the range of Unix nanoseconds", s)
}

// slack absorbs float rounding in the upper bounds of sums: a sum of n
// values each ≤ m can exceed n·m by about n·2⁻⁵³ relative.
const slack = 1 + 1e-9

// check verifies the invariants that Add and Merge maintain, so a decoded
// aggregate behaves like one built in memory (finite merges, meaningful
// rows).
func (a *Aggregate) check() error {
	if a.ErrorCount > a.Count || a.WarningCount > a.Count-a.ErrorCount || a.RiskCount > a.Count {
		return fmt.Errorf("error_count %d + warning_count %d or risk_count %d exceed count %d",
			a.ErrorCount, a.WarningCount, a.RiskCount, a.Count)
	}
	n := float64(a.Count)
	switch {
	case a.Count == 0 && (a.LatencyMin != 0 || a.LatencyMax != 0 || a.LatencySum != 0 || a.LatencySqSum != 0 ||
		a.FirstEvent != 0 || a.LastEvent != 0):
		return errors.New("empty aggregate with non-zero latency statistics")
	case !(0 <= a.LatencyMin && a.LatencyMin <= a.LatencyMax && a.LatencyMax <= MaxLatencyMS):
		return fmt.Errorf("latency range [%v, %v] invalid", a.LatencyMin, a.LatencyMax)
	case !(0 <= a.LatencySum && a.LatencySum <= n*MaxLatencyMS*slack) ||
		!(0 <= a.LatencySqSum && a.LatencySqSum <= n*MaxLatencyMS*MaxLatencyMS*slack):
		return fmt.Errorf("latency sums %v, %v out of range", a.LatencySum, a.LatencySqSum)
	case a.FirstEvent > a.LastEvent:
		return errors.New("first_event after last_event")
	case !(0 <= a.RiskMax && a.RiskMax <= 1 && 0 <= a.RiskSum && a.RiskSum <= float64(a.RiskCount)*slack) ||
		(a.RiskCount == 0 && (a.RiskSum != 0 || a.RiskMax != 0)):
		return fmt.Errorf("risk statistics (sum %v, max %v, count %d) invalid", a.RiskSum, a.RiskMax, a.RiskCount)
	}
	return nil
}
