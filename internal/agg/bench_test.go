package agg

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stacklens/stacklens/internal/event"
)

// BenchmarkAggregatorAdd: one op is one event folded into all three
// windows (1min, 5min, 1hour) with 100 services, lognormal latencies,
// event time advancing 1 ms per event (so buckets roll over as in a live
// stream at 1 000 events/s per service shard) and a Drain every 25 000
// events (a 250 ms flush at 100 000 events/s).
func BenchmarkAggregatorAdd(b *testing.B) { benchmarkAggregatorAdd(b, nil) }

// BenchmarkAggregatorAddThresholds is BenchmarkAggregatorAdd with four
// latency SLO thresholds counted in every aggregate.
func BenchmarkAggregatorAddThresholds(b *testing.B) {
	benchmarkAggregatorAdd(b, []float64{10, 50, 100, 300})
}

func benchmarkAggregatorAdd(b *testing.B, thresholds []float64) {
	g := newAggregator(b, "1min,5min,1hour", 0)
	if err := g.SetThresholds(thresholds); err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	const ring = 1 << 16
	evs := make([]event.Event, ring)
	for i := range evs {
		evs[i] = event.Event{
			Service:   fmt.Sprintf("service-%02d", rng.IntN(100)),
			Level:     event.Level(rng.IntN(int(event.NumLevels))),
			LatencyMS: math.Exp(3 + rng.NormFloat64()),
			Risk:      rng.Float64(), HasRisk: true,
		}
	}
	drain := func(Key, *Aggregate) {}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e := evs[i&(ring-1)]
		e.Time = t0.Add(time.Duration(i) * time.Millisecond)
		g.Add(e, uint64(i+1))
		if i%25000 == 24999 {
			g.Drain(drain)
			g.ForgetBefore(t0.Unix() + int64(i/1000) - 3600)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkSeedBaseline mirrors the seed's performance check: 1 000
// add_log('test', …, 'info', 50.0, 0.1) then aggregate('1min').
func BenchmarkSeedBaseline(b *testing.B) {
	e := event.Event{Time: t0, Service: "test", Level: event.LevelInfo, LatencyMS: 50, Risk: 0.1, HasRisk: true}
	b.ReportAllocs()
	for b.Loop() {
		g := newAggregator(b, "1min,5min,1hour", 0)
		for i := range 1000 {
			g.Add(e, uint64(i+1))
		}
		if rows := g.Aggregate("1min"); len(rows) != 1 {
			b.Fatal(len(rows))
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()*1e6/float64(b.N), "µs/seed-run")
}

func BenchmarkEncode(b *testing.B) {
	a := sampleAggregate(1, 10000)
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		buf = a.Encode(buf[:0], w1m)
	}
	b.SetBytes(int64(len(buf)))
}

// BenchmarkDecode: "typical" is 5 000 events of a lognormal latency around
// 50 ms (≈ 200 sketch bins); "wide" spans eight orders of magnitude (≈ 800
// bins), the sketch decode dominating.
func BenchmarkDecode(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	typical := NewAggregate("checkout", t0.Unix())
	for i := range 5000 {
		typical.Add(evRisk("checkout", time.Duration(i)*time.Millisecond, event.LevelInfo, 50*math.Exp(0.8*rng.NormFloat64()), 0.1))
	}
	wide := sampleAggregate(1, 10000)
	wide.Service = "checkout"
	for _, c := range []struct {
		name string
		a    *Aggregate
	}{{"typical", typical}, {"wide", wide}} {
		b.Run(c.name+"/into-reused", func(b *testing.B) {
			enc := c.a.Encode(nil, w1m)
			var a Aggregate
			b.SetBytes(int64(len(enc)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodeInto(&a, enc); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(c.name, func(b *testing.B) {
			enc := c.a.Encode(nil, w1m)
			b.SetBytes(int64(len(enc)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Decode(enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkMerge(b *testing.B) {
	x, y := sampleAggregate(1, 10000), sampleAggregate(2, 1000)
	b.ReportAllocs()
	for b.Loop() {
		x.Merge(y)
	}
}
