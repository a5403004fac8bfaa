package agg

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
)

// Good is the exact count of an aggregate's events with latency_ms ≤
// ThresholdMS: the good events of a latency SLO (docs/processor.md,
// "Latency good-event counts").
type Good struct {
	ThresholdMS float64
	Count       uint64
}

// MaxThresholds bounds the thresholds one aggregate counts: every event
// walks them, and the KV value carries them.
const MaxThresholds = 256

// NormalizeThresholds returns ts sorted and without duplicates, -0 read as
// 0. A threshold must be finite, ≥ 0 and ≤ MaxLatencyMS.
func NormalizeThresholds(ts []float64) ([]float64, error) {
	out := make([]float64, 0, len(ts))
	for _, t := range ts {
		if !(t >= 0 && t <= MaxLatencyMS) {
			return nil, fmt.Errorf("latency threshold %v is not a number of milliseconds in [0, %v]", t, MaxLatencyMS)
		}
		out = append(out, t+0) // -0 + 0 = +0
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) > MaxThresholds {
		return nil, fmt.Errorf("%d latency thresholds, at most %d", len(out), MaxThresholds)
	}
	return out, nil
}

// ThresholdKey is a threshold as it is spelled in the KV value and in
// latency_good of the metrics tables: the shortest decimal form ("300",
// "2.5").
func ThresholdKey(ms float64) string { return strconv.FormatFloat(ms, 'f', -1, 64) }

// SetThresholds makes a, which must not have counted any event yet, count
// the good events of every threshold of ts (sorted and distinct, as from
// NormalizeThresholds). It reports false and changes nothing when a already
// has events: a threshold is only counted from an aggregate's first event,
// so that every count it carries is exact.
func (a *Aggregate) SetThresholds(ts []float64) bool {
	if a.Count != 0 {
		return false
	}
	a.LatencyGood = a.LatencyGood[:0]
	for _, t := range ts {
		a.LatencyGood = append(a.LatencyGood, Good{ThresholdMS: t})
	}
	return true
}

// Thresholds returns the thresholds a counts, ascending.
func (a *Aggregate) Thresholds() []float64 {
	ts := make([]float64, len(a.LatencyGood))
	for i, g := range a.LatencyGood {
		ts[i] = g.ThresholdMS
	}
	return ts
}

// GoodCount returns the number of events with latency ≤ ms, and whether a
// counts that threshold at all.
func (a *Aggregate) GoodCount(ms float64) (uint64, bool) {
	for _, g := range a.LatencyGood {
		if g.ThresholdMS == ms {
			return g.Count, true
		}
	}
	return 0, false
}

// AppendLatencyGood appends the counts as a JSON object, thresholds
// ascending: {"300":12,"2.5":3} ordered by value ({} when none).
func (a *Aggregate) AppendLatencyGood(dst []byte) []byte {
	dst = append(dst, '{')
	for i, g := range a.LatencyGood {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '"')
		dst = strconv.AppendFloat(dst, g.ThresholdMS, 'f', -1, 64)
		dst = append(dst, `":`...)
		dst = strconv.AppendUint(dst, g.Count, 10)
	}
	return append(dst, '}')
}

// countGood adds an event of latency lat: the thresholds are ascending, so
// the ones it is good for are a suffix.
func (a *Aggregate) countGood(lat float64) {
	for i := len(a.LatencyGood) - 1; i >= 0 && lat <= a.LatencyGood[i].ThresholdMS; i-- {
		a.LatencyGood[i].Count++
	}
}

// mergeGood folds o's counts into a's, before a's Count is updated. An
// aggregate without events adopts o's thresholds (zero events counted for
// every threshold is exact); otherwise only the thresholds both count
// survive: a threshold one side did not count has an unknown number of
// good events there, and a missing threshold means "not counted".
func (a *Aggregate) mergeGood(o *Aggregate) {
	if a.Count == 0 {
		a.LatencyGood = append(a.LatencyGood[:0], o.LatencyGood...)
		return
	}
	out := a.LatencyGood[:0] // written behind the read position: in place
	i, j := 0, 0
	for i < len(a.LatencyGood) && j < len(o.LatencyGood) {
		x, y := a.LatencyGood[i], o.LatencyGood[j]
		switch {
		case x.ThresholdMS < y.ThresholdMS:
			i++
		case x.ThresholdMS > y.ThresholdMS:
			j++
		default:
			out = append(out, Good{ThresholdMS: x.ThresholdMS, Count: x.Count + y.Count})
			i++
			j++
		}
	}
	clear(a.LatencyGood[len(out):])
	a.LatencyGood = out
}

// checkGood verifies what Add and Merge maintain: thresholds ascending,
// distinct and in range; counts monotone in the threshold, within Count,
// Count for a threshold at or above LatencyMax and 0 below LatencyMin.
func (a *Aggregate) checkGood() error {
	if len(a.LatencyGood) > MaxThresholds {
		return fmt.Errorf("%d latency thresholds, at most %d", len(a.LatencyGood), MaxThresholds)
	}
	for i, g := range a.LatencyGood {
		t := g.ThresholdMS
		switch {
		case !(t >= 0 && t <= MaxLatencyMS) || math.Signbit(t):
			return fmt.Errorf("latency threshold %v out of range", t)
		case i > 0 && !(a.LatencyGood[i-1].ThresholdMS < t):
			return errors.New("latency thresholds not ascending and distinct")
		case g.Count > a.Count || (i > 0 && g.Count < a.LatencyGood[i-1].Count):
			return fmt.Errorf("latency_good %s: %d is not between the lower thresholds' count and count %d", ThresholdKey(t), g.Count, a.Count)
		case a.Count > 0 && t >= a.LatencyMax && g.Count != a.Count:
			return fmt.Errorf("latency_good %s: %d, but every event (max %v) is at or below it", ThresholdKey(t), g.Count, a.LatencyMax)
		case a.Count > 0 && t < a.LatencyMin && g.Count != 0:
			return fmt.Errorf("latency_good %s: %d, but no event (min %v) is at or below it", ThresholdKey(t), g.Count, a.LatencyMin)
		}
	}
	return nil
}

// EncodeThresholds is the value of the SLO thresholds key of the
// stacklens_config bucket: ts (normalized) as a JSON array, e.g. [2.5,300].
func EncodeThresholds(ts []float64) []byte {
	b := []byte{'['}
	for i, t := range ts {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendFloat(b, t, 'f', -1, 64)
	}
	return append(b, ']')
}

// DecodeThresholds parses a value written by EncodeThresholds, normalized.
func DecodeThresholds(b []byte) ([]float64, error) {
	var ts []float64
	if err := json.Unmarshal(b, &ts); err != nil {
		return nil, fmt.Errorf("latency thresholds: %w", err)
	}
	return NormalizeThresholds(ts)
}

// SetThresholdsLike is SetThresholds with the thresholds o counts.
func (a *Aggregate) SetThresholdsLike(o *Aggregate) bool {
	if a.Count != 0 {
		return false
	}
	a.LatencyGood = a.LatencyGood[:0]
	for _, g := range o.LatencyGood {
		a.LatencyGood = append(a.LatencyGood, Good{ThresholdMS: g.ThresholdMS})
	}
	return true
}
