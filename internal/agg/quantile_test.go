package agg

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stacklens/stacklens/internal/event"
)

// nearestRank is the reference definition Quantile is held to: the value of
// rank ⌈q·n⌉ (1-based) of the sorted sample; q ≤ 0 gives the minimum.
func nearestRank(sorted []float64, q float64) float64 {
	k := int(math.Ceil(float64(q * float64(len(sorted)))))
	return sorted[min(max(k, 1), len(sorted))-1]
}

type distribution struct {
	name string
	n    int
	gen  func(*rand.Rand) float64
}

var distributions = []distribution{
	{"lognormal", 20000, func(r *rand.Rand) float64 { return math.Exp(3 + 1.5*r.NormFloat64()) }},
	{"pareto", 20000, func(r *rand.Rand) float64 { return 1 / math.Pow(1-r.Float64(), 1/1.16) }},
	{"bimodal", 20000, func(r *rand.Rand) float64 {
		if r.Float64() < 0.9 {
			return math.Abs(20 + 2*r.NormFloat64())
		}
		return math.Abs(800 + 50*r.NormFloat64())
	}},
	{"constant", 5000, func(*rand.Rand) float64 { return 50 }},
	{"single", 1, func(*rand.Rand) float64 { return 123.456 }},
	{"zeros", 20000, func(r *rand.Rand) float64 {
		if r.Float64() < 0.3 {
			return 0
		}
		return math.Exp(2 + r.NormFloat64())
	}},
	{"mostly-zeros", 1000, func(r *rand.Rand) float64 {
		if r.Float64() < 0.995 {
			return 0
		}
		return 7
	}},
	{"small-integers", 20000, func(r *rand.Rand) float64 { return float64(1 + r.IntN(10)) }},
	{"sub-ms", 20000, func(r *rand.Rand) float64 { return 0.001 + 0.01*r.Float64() }},
	{"log-uniform-1e-3..1e6", 20000, func(r *rand.Rand) float64 { return math.Pow(10, -3+9*r.Float64()) }},
	{"exponential", 3, func(r *rand.Rand) float64 { return r.ExpFloat64() * 100 }},
}

// TestQuantileAccuracy: every quantile is within 1 % of the exact
// nearest-rank value, on skewed and degenerate distributions, for several
// seeds, both for an aggregate built in one pass and for one merged from
// many deltas.
func TestQuantileAccuracy(t *testing.T) {
	qs := []float64{0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999}
	for _, d := range distributions {
		for seed := uint64(1); seed <= 3; seed++ {
			rng := rand.New(rand.NewPCG(seed, 99))
			xs := make([]float64, d.n)
			direct := NewAggregate("s", 0)
			merged := NewAggregate("s", 0)
			delta := NewAggregate("s", 0)
			for i := range xs {
				xs[i] = d.gen(rng)
				e := ev("s", time.Duration(i), event.LevelInfo, xs[i])
				direct.Add(e)
				delta.Add(e)
				if rng.IntN(100) == 0 {
					merged.Merge(delta)
					delta.Reset()
				}
			}
			merged.Merge(delta)
			slices.Sort(xs)
			for _, q := range qs {
				exact := nearestRank(xs, q)
				for _, a := range []*Aggregate{direct, merged} {
					got := a.Quantile(q)
					if math.Abs(got-exact) > RelativeAccuracy*exact*(1+1e-12) {
						t.Errorf("%s seed %d: Quantile(%v) = %v, exact %v (error %.3g %%)",
							d.name, seed, q, got, exact, 100*math.Abs(got-exact)/exact)
					}
				}
				if direct.Quantile(q) != merged.Quantile(q) {
					t.Errorf("%s seed %d: merged Quantile(%v) %v differs from direct %v",
						d.name, seed, q, merged.Quantile(q), direct.Quantile(q))
				}
			}
			if direct.Quantile(0) != xs[0] || direct.Quantile(1) != xs[len(xs)-1] {
				t.Errorf("%s: Quantile(0), (1) = %v, %v; want exact min/max %v, %v",
					d.name, direct.Quantile(0), direct.Quantile(1), xs[0], xs[len(xs)-1])
			}
		}
	}
}

// exactValue returns a random, skewed latency that is a multiple of 1/4
// below 2^16, so that every partial sum of values and of squares in these
// tests (fewer than 2^16 values) is exactly representable and float sums
// do not depend on the order of additions.
func exactValue(r *rand.Rand) float64 {
	if r.IntN(20) == 0 {
		return 0
	}
	return min(math.Round(math.Exp(3+2*r.NormFloat64())*4)/4, 65535.75)
}

// TestFiveMinuteIsMergeOfMinutes: merging the five 1min aggregates of a
// 5min bucket, in any order, gives exactly the 5min aggregate the
// Aggregator built directly: every stat and every quantile.
func TestFiveMinuteIsMergeOfMinutes(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	g := newAggregator(t, "1min,5min,1hour", 0)
	services := []string{"checkout", "search", "a.b", "a_b"}
	for seq := uint64(1); seq <= 50000; seq++ {
		at := time.Duration(rng.Int64N(int64(time.Hour)))
		lvl := event.Level(rng.IntN(int(event.NumLevels)))
		lat := exactValue(rng)
		e := evRisk(services[rng.IntN(len(services))], at, lvl, lat, float64(rng.IntN(1025))/1024)
		if rng.IntN(3) == 0 {
			e.HasRisk = false
		}
		g.Add(e, seq)
	}
	snap := g.Snapshot()
	checked := 0
	for k, five := range snap {
		if k.Window != 1 {
			continue
		}
		var minutes []*Aggregate
		for m := range 5 {
			if a := snap[Key{Service: k.Service, Window: 0, Start: k.Start + int64(60*m)}]; a != nil {
				minutes = append(minutes, a)
			}
		}
		rng.Shuffle(len(minutes), func(i, j int) { minutes[i], minutes[j] = minutes[j], minutes[i] })
		m := NewAggregate(k.Service, k.Start)
		for _, a := range minutes {
			m.Merge(a)
		}
		sameAggregate(t, k.Service, m, five)
		checked++
	}
	if checked != 4*12 {
		t.Fatalf("checked %d 5min buckets, want 48", checked)
	}
	// And the twelve 5min buckets of the hour merge into the 1hour one.
	for _, s := range services {
		h := NewAggregate(s, t0.Unix())
		for m := range 12 {
			h.Merge(snap[Key{Service: s, Window: 1, Start: t0.Unix() + int64(300*m)}])
		}
		sameAggregate(t, s+" hour", h, snap[Key{Service: s, Window: 2, Start: t0.Unix()}])
	}
}

// TestMergeAlgebra: random groupings and orders of merges of deltas give
// identical aggregates (exact values), and the same as one pass.
func TestMergeAlgebra(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 3))
	for range 20 {
		n := 1 + rng.IntN(2000)
		onePass := NewAggregate("s", 0)
		var deltas []*Aggregate
		cur := NewAggregate("s", 0)
		for i := range n {
			e := evRisk("s", time.Duration(rng.Int64N(int64(time.Minute))), event.Level(rng.IntN(7)), exactValue(rng), float64(rng.IntN(1025))/1024)
			onePass.Add(e)
			cur.Add(e)
			cur.LastSeq = uint64(i + 1)
			if rng.IntN(50) == 0 {
				deltas = append(deltas, cur)
				cur = NewAggregate("s", 0)
			}
		}
		deltas = append(deltas, cur, &Aggregate{}) // an empty delta too
		onePass.LastSeq = uint64(n)

		// Left fold in shuffled order.
		rng.Shuffle(len(deltas), func(i, j int) { deltas[i], deltas[j] = deltas[j], deltas[i] })
		left := NewAggregate("s", 0)
		for _, d := range deltas {
			left.Merge(d)
		}
		// Tree fold: pairwise merges of clones.
		level := make([]*Aggregate, len(deltas))
		for i, d := range deltas {
			level[i] = d.Clone()
		}
		for len(level) > 1 {
			var next []*Aggregate
			for i := 0; i < len(level); i += 2 {
				if i+1 < len(level) {
					level[i+1].Merge(level[i]) // (right ⊕ left): commuted
					next = append(next, level[i+1])
				} else {
					next = append(next, level[i])
				}
			}
			level = next
		}
		tree := level[0]
		tree.Service = "s"
		sameAggregate(t, "left fold vs one pass", left, onePass)
		sameAggregate(t, "tree fold vs one pass", tree, onePass)
	}
}
