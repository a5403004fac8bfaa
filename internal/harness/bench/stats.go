package bench

import (
	"math"
	"slices"
	"time"
)

// Percentile returns the q-quantile (0 ≤ q ≤ 1) of d by the nearest-rank
// method: the smallest value with at least q·n values at or below it. d
// is not modified; an empty d gives 0.
func Percentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return sortedPercentile(s, q)
}

func sortedPercentile(s []time.Duration, q float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(len(s)-1, i))]
}

// LagSample is the end-to-end lag (events produced minus events counted
// by the processors) at an offset from the start of a step.
type LagSample struct {
	T   time.Duration `json:"t_ns"`
	Lag float64       `json:"lag"`
}

// Lag criteria (see JudgeLag and docs/PERFORMANCE.md).
const (
	// MaxGrowthFraction: over the second half of a hold, the lag may grow
	// by at most this fraction of the offered rate (events/s per event/s).
	MaxGrowthFraction = 0.05
	// LagAllowance: a lag never above this many seconds of the offered
	// rate during the second half counts as bounded whatever its slope
	// (batching and the 250 ms flush make a small lag jitter).
	LagAllowance = 1.0
	// minSamples is the fewest second-half samples a verdict needs.
	minSamples = 3
)

// LagVerdict is JudgeLag's answer.
type LagVerdict struct {
	Bounded bool    `json:"bounded"`
	Slope   float64 `json:"slope_events_per_s"` // least-squares growth of the lag over the second half
	MaxLag  float64 `json:"max_lag_second_half"`
	EndLag  float64 `json:"end_lag"`
	Reason  string  `json:"reason"`
}

// JudgeLag decides whether the lag series of a step held at rate events/s
// stayed bounded: over the second half of the step (by time) the lag
// either never exceeded LagAllowance seconds of events, or its
// least-squares slope was at most MaxGrowthFraction of the rate.
func JudgeLag(samples []LagSample, rate float64) LagVerdict {
	var v LagVerdict
	if len(samples) == 0 {
		v.Reason = "no samples"
		return v
	}
	end := samples[len(samples)-1].T
	half := samples[0].T + (end-samples[0].T)/2
	var second []LagSample
	for _, s := range samples {
		if s.T >= half {
			second = append(second, s)
		}
	}
	v.EndLag = samples[len(samples)-1].Lag
	for _, s := range second {
		v.MaxLag = max(v.MaxLag, s.Lag)
	}
	if len(second) < minSamples {
		v.Reason = "too few samples in the second half"
		return v
	}
	v.Slope = slope(second)
	switch {
	case v.MaxLag <= LagAllowance*rate:
		v.Bounded = true
		v.Reason = "lag within 1 s of events"
	case v.Slope <= MaxGrowthFraction*rate:
		v.Bounded = true
		v.Reason = "lag not growing"
	default:
		v.Reason = "lag growing"
	}
	return v
}

// slope is the least-squares slope of lag over time, per second.
func slope(s []LagSample) float64 {
	n := float64(len(s))
	var sx, sy, sxx, sxy float64
	for _, p := range s {
		x := p.T.Seconds()
		sx += x
		sy += p.Lag
		sxx += x * x
		sxy += x * p.Lag
	}
	den := n*sxx - sx*sx
	if den == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / den
}
