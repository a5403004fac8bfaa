package agg

import (
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/DataDog/sketches-go/ddsketch"

	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/window"
)

// t0 is a 1hour bucket start (hence also a 1min and 5min one).
var t0 = time.Date(2026, 11, 29, 1, 0, 0, 0, time.UTC)

var (
	w1m = window.MustParse("1min")
	w5m = window.MustParse("5min")
	w1h = window.MustParse("1hour")
)

func ev(service string, at time.Duration, level event.Level, latency float64) event.Event {
	return event.Event{Time: t0.Add(at), Service: service, Level: level, LatencyMS: latency}
}

func evRisk(service string, at time.Duration, level event.Level, latency, risk float64) event.Event {
	e := ev(service, at, level, latency)
	e.Risk, e.HasRisk = risk, true
	return e
}

func newAggregator(t testing.TB, windows string, maxServices int) *Aggregator {
	t.Helper()
	ws, err := window.ParseList(windows)
	if err != nil {
		t.Fatal(err)
	}
	g, err := NewAggregator(Config{Windows: ws, MaxServices: maxServices})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// bins returns the sketch content: zero count and positive bins by index.
func bins(sk *ddsketch.DDSketch) (float64, map[int]float64) {
	m := map[int]float64{}
	if sk == nil {
		return 0, m
	}
	sk.GetPositiveValueStore().ForEach(func(i int, c float64) bool {
		m[i] = c
		return false
	})
	return sk.GetZeroCount(), m
}

var testQuantiles = []float64{0, 0.001, 0.01, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1}

// sameAggregate fails unless a and b are equal in every stat (floats bit
// for bit), in identity and bookkeeping, and in sketch bins and quantiles.
func sameAggregate(t testing.TB, what string, a, b *Aggregate) {
	t.Helper()
	ca, cb := *a, *b
	ca.Sketch, cb.Sketch = nil, nil
	if !sameFloats(ca, cb) {
		t.Fatalf("%s: aggregates differ:\n got %+v\nwant %+v", what, ca, cb)
	}
	za, ba := bins(a.Sketch)
	zb, bb := bins(b.Sketch)
	if za != zb || len(ba) != len(bb) {
		t.Fatalf("%s: sketches differ: zero %v/%v, %d/%d bins", what, za, zb, len(ba), len(bb))
	}
	for i, c := range ba {
		if bb[i] != c {
			t.Fatalf("%s: sketch bin %d: %v vs %v", what, i, c, bb[i])
		}
	}
	for _, q := range testQuantiles {
		if qa, qb := a.Quantile(q), b.Quantile(q); qa != qb {
			t.Fatalf("%s: Quantile(%v) = %v vs %v", what, q, qa, qb)
		}
	}
}

// sameFloats compares with == except that it tells -0 from 0 and NaN
// equals NaN, i.e. bit for bit.
func sameFloats(a, b Aggregate) bool {
	fa := []float64{a.LatencySum, a.LatencySqSum, a.LatencyMin, a.LatencyMax, a.RiskSum, a.RiskMax}
	fb := []float64{b.LatencySum, b.LatencySqSum, b.LatencyMin, b.LatencyMax, b.RiskSum, b.RiskMax}
	for i := range fa {
		if math.Float64bits(fa[i]) != math.Float64bits(fb[i]) {
			return false
		}
	}
	// LatencyGood: same thresholds (bit for bit) and counts; nil and empty
	// are the same.
	if len(a.LatencyGood) != len(b.LatencyGood) {
		return false
	}
	for i, g := range a.LatencyGood {
		h := b.LatencyGood[i]
		if math.Float64bits(g.ThresholdMS) != math.Float64bits(h.ThresholdMS) || g.Count != h.Count {
			return false
		}
	}
	a.LatencyGood, b.LatencyGood = nil, nil
	a.LatencySum, a.LatencySqSum, a.LatencyMin, a.LatencyMax, a.RiskSum, a.RiskMax = 0, 0, 0, 0, 0, 0
	b.LatencySum, b.LatencySqSum, b.LatencyMin, b.LatencyMax, b.RiskSum, b.RiskMax = 0, 0, 0, 0, 0, 0
	return reflect.DeepEqual(a, b)
}
