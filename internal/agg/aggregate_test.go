package agg

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/DataDog/sketches-go/ddsketch"

	"github.com/stacklens/stacklens/internal/event"
)

func TestAddStatistics(t *testing.T) {
	a := NewAggregate("checkout", t0.Unix())
	a.Add(evRisk("checkout", 3*time.Second, event.LevelInfo, 50, 0.1))
	a.Add(ev("checkout", 1*time.Second, event.LevelError, 10))
	a.Add(evRisk("checkout", 2*time.Second, event.LevelWarning, 90, 0.5))
	a.Add(evRisk("checkout", 4*time.Second, event.LevelCritical, 30, 0.25))
	a.Add(ev("checkout", 5*time.Second, event.LevelFatal, 20))
	a.Add(ev("checkout", 6*time.Second, event.LevelDebug, 0))
	a.Add(ev("checkout", 7*time.Second, event.LevelNotice, 40))

	want := Aggregate{
		Service: "checkout", Start: t0.Unix(),
		Count: 7, ErrorCount: 3, WarningCount: 1,
		LatencySum: 240, LatencySqSum: 50*50 + 10*10 + 90*90 + 30*30 + 20*20 + 40*40,
		LatencyMin: 0, LatencyMax: 90,
		RiskSum: 0.1 + 0.5 + 0.25, RiskMax: 0.5, RiskCount: 3,
		FirstEvent: t0.Add(time.Second).UnixNano(), LastEvent: t0.Add(7 * time.Second).UnixNano(),
	}
	got := *a
	got.Sketch = nil
	if !sameFloats(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	if a.Sketch.GetCount() != 7 || a.Sketch.GetZeroCount() != 1 {
		t.Fatalf("sketch count %v, zeros %v", a.Sketch.GetCount(), a.Sketch.GetZeroCount())
	}
}

// TestSumsAreLeftFolds: the sums are exactly what a plain loop computes in
// the same order, for arbitrary (inexact) values.
func TestSumsAreLeftFolds(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	var a Aggregate // zero value is usable
	var sum, sq, risk float64
	for i := range 10000 {
		x := rng.ExpFloat64() * 100 * rng.Float64()
		r := rng.Float64()
		a.Add(evRisk("s", time.Duration(i)*time.Millisecond, event.LevelInfo, x, r))
		sum += x
		sq += float64(x * x)
		risk += r
	}
	if a.LatencySum != sum || a.LatencySqSum != sq || a.RiskSum != risk {
		t.Fatalf("sums %v %v %v, plain loop %v %v %v", a.LatencySum, a.LatencySqSum, a.RiskSum, sum, sq, risk)
	}
}

func TestInputGuard(t *testing.T) {
	var a Aggregate
	a.Add(ev("s", 0, event.LevelInfo, math.NaN()))
	a.Add(ev("s", 0, event.LevelInfo, -5))
	a.Add(ev("s", 0, event.LevelInfo, math.Copysign(0, -1)))
	a.Add(ev("s", 0, event.LevelInfo, math.Inf(1)))
	a.Add(ev("s", 0, event.LevelInfo, 1e300))
	e := ev("s", 0, event.LevelInfo, 1)
	e.Risk, e.HasRisk = math.NaN(), true
	a.Add(e)
	a.Add(evRisk("s", 0, event.LevelInfo, 1, 7))
	a.Add(evRisk("s", 0, event.LevelInfo, 1, -3))
	e = ev("s", 0, event.LevelInfo, 1)
	e.Risk = 0.9 // HasRisk false: ignored
	a.Add(e)

	if a.Count != 9 || a.LatencyMin != 0 || math.Signbit(a.LatencyMin) || a.LatencyMax != MaxLatencyMS {
		t.Fatalf("count %d min %v max %v", a.Count, a.LatencyMin, a.LatencyMax)
	}
	if a.LatencySum != 2*MaxLatencyMS+4 || math.IsInf(a.LatencySqSum, 0) {
		t.Fatalf("sums %v %v", a.LatencySum, a.LatencySqSum)
	}
	if a.RiskCount != 2 || a.RiskSum != 1 || a.RiskMax != 1 {
		t.Fatalf("risk count %d sum %v max %v", a.RiskCount, a.RiskSum, a.RiskMax)
	}
	if a.Sketch.GetCount() != 9 {
		t.Fatalf("sketch count %v", a.Sketch.GetCount())
	}
	// Still encodable and decodable.
	if _, err := Decode(a.Encode(nil, w1m)); err == nil {
		t.Fatal("decode should fail: no service set")
	}
	a.Service = "s"
	b, err := Decode(a.Encode(nil, w1m))
	if err != nil {
		t.Fatal(err)
	}
	sameAggregate(t, "guarded", b, &a)
}

func TestEmptyAggregate(t *testing.T) {
	for _, a := range []*Aggregate{{}, NewAggregate("x", 60)} {
		for _, q := range testQuantiles {
			if v := a.Quantile(q); v != 0 {
				t.Errorf("empty Quantile(%v) = %v", q, v)
			}
		}
		r := a.Row(w1m)
		if r.Count != 0 || r.ErrorRate != 0 || r.ThroughputPerSec != 0 || r.LatencyAvgMS != 0 ||
			r.LatencyP99MS != 0 || r.RiskScoreAvg != 0 || r.RiskScoreMax != 0 || r.LatencyMinMS != 0 {
			t.Errorf("empty row %+v", r)
		}
		if _, err := json.Marshal(r); err != nil {
			t.Errorf("empty row does not marshal: %v", err)
		}
	}
}

func TestRow(t *testing.T) {
	a := NewAggregate("checkout", t0.Unix())
	for i := range 100 {
		lvl := event.LevelInfo
		switch {
		case i%10 == 0:
			lvl = event.LevelError
		case i%25 == 1:
			lvl = event.LevelWarning
		}
		a.Add(evRisk("checkout", time.Duration(i)*100*time.Millisecond, lvl, float64(i+1), float64(i%5)/4))
	}
	a.Final, a.Version = true, 9
	r := a.Row(w5m)
	want := Row{
		Service: "checkout", Window: "5min", Timestamp: t0,
		Count: 100, ErrorCount: 10, WarningCount: 4, ErrorRate: 10,
		ThroughputPerSec: 100.0 / 300, LatencyAvgMS: 50.5, LatencyMinMS: 1, LatencyMaxMS: 100,
		LatencyP50MS: r.LatencyP50MS, LatencyP95MS: r.LatencyP95MS, LatencyP99MS: r.LatencyP99MS,
		RiskScoreAvg: 0.5, RiskScoreMax: 1, Final: true, Version: 9,
	}
	if r != want {
		t.Fatalf("row\n got %+v\nwant %+v", r, want)
	}
	// Nearest rank on 1..100: p50 = 50, p95 = 95, p99 = 99, within 1 %.
	for _, c := range []struct{ got, want float64 }{{r.LatencyP50MS, 50}, {r.LatencyP95MS, 95}, {r.LatencyP99MS, 99}} {
		if math.Abs(c.got-c.want) > 0.01*c.want {
			t.Errorf("percentile %v, want %v ± 1 %%", c.got, c.want)
		}
	}
	if r.Timestamp.Location() != time.UTC {
		t.Errorf("timestamp not UTC")
	}

	// JSON member names are the API contract (docs/ARCHITECTURE.md §2.5).
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	names := "service window timestamp count error_count warning_count error_rate throughput_per_sec " +
		"latency_avg_ms latency_min_ms latency_max_ms latency_p50_ms latency_p95_ms latency_p99_ms " +
		"risk_score_avg risk_score_max final version"
	for _, n := range strings.Fields(names) {
		if _, ok := m[n]; !ok {
			t.Errorf("row JSON lacks %q: %s", n, b)
		}
	}
	if len(m) != len(strings.Fields(names)) {
		t.Errorf("row JSON has %d members, want %d: %s", len(m), len(strings.Fields(names)), b)
	}
	if m["timestamp"] != "2026-11-29T01:00:00Z" {
		t.Errorf("timestamp %v", m["timestamp"])
	}
}

func TestQuantileEdges(t *testing.T) {
	a := NewAggregate("s", 0)
	a.Add(ev("s", 0, event.LevelInfo, 123.456))
	for _, q := range []float64{-1, math.NaN(), 0, 0.5, 0.99, 1, 2} {
		if v := a.Quantile(q); v != 123.456 {
			t.Errorf("single value: Quantile(%v) = %v", q, v)
		}
	}
	a.Add(ev("s", 0, event.LevelInfo, 1000))
	if a.Quantile(0) != 123.456 || a.Quantile(1) != 1000 || a.Quantile(-1) != 123.456 || a.Quantile(3) != 1000 {
		t.Errorf("q outside (0, 1) must give min/max")
	}
	// Nearest rank of 2 values: q ≤ 0.5 → first, q > 0.5 → second.
	if v := a.Quantile(0.5); math.Abs(v-123.456) > 1.23456 {
		t.Errorf("Quantile(0.5) = %v", v)
	}
	if v := a.Quantile(0.51); math.Abs(v-1000) > 10 {
		t.Errorf("Quantile(0.51) = %v", v)
	}
}

func TestMergeBasics(t *testing.T) {
	x := NewAggregate("s", 60)
	x.Add(evRisk("s", 61*time.Second, event.LevelError, 5, 0.5))
	x.LastSeq, x.Version, x.Final = 10, 3, true

	// Merging nil or an empty aggregate changes only LastSeq.
	before := x.Clone()
	x.Merge(nil)
	x.Merge(&Aggregate{LastSeq: 4})
	sameAggregate(t, "merge empty", x, before)
	x.Merge(&Aggregate{LastSeq: 12})
	if x.LastSeq != 12 || x.Count != 1 {
		t.Fatalf("LastSeq %d count %d", x.LastSeq, x.Count)
	}

	// Merging into an empty (zero-value) aggregate copies the stats, but
	// neither identity nor Version/Final.
	var z Aggregate
	z.Merge(x)
	if z.Count != 1 || z.LatencyMin != 5 || z.LatencyMax != 5 || z.FirstEvent != x.FirstEvent ||
		z.Service != "" || z.Start != 0 || z.Version != 0 || z.Final || z.LastSeq != 12 {
		t.Fatalf("merge into empty: %+v", z)
	}
	if z.Quantile(0.5) != 5 {
		t.Fatalf("merged quantile %v", z.Quantile(0.5))
	}
}

// TestMergeForeignSketch: a sketch with another mapping cannot be merged
// bin by bin; its values are re-added so counts stay exact.
func TestMergeForeignSketch(t *testing.T) {
	foreign, err := ddsketch.LogUnboundedDenseDDSketch(0.02)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 100; i++ {
		_ = foreign.Add(float64(i))
	}
	o := &Aggregate{Count: 100, LatencyMin: 1, LatencyMax: 100, LatencySum: 5050, Sketch: foreign}
	a := NewAggregate("s", 0)
	a.Add(ev("s", 0, event.LevelInfo, 50))
	a.Merge(o)
	if a.Sketch.GetCount() != 101 || a.Count != 101 {
		t.Fatalf("count %d, sketch %v", a.Count, a.Sketch.GetCount())
	}
	if v := a.Quantile(0.5); math.Abs(v-50) > 0.04*50 {
		t.Fatalf("p50 %v", v)
	}
}

func TestResetAndClone(t *testing.T) {
	a := NewAggregate("s", 60)
	for i := range 50 {
		a.Add(evRisk("s", time.Minute+time.Duration(i)*time.Second, event.LevelError, float64(i), 0.5))
	}
	a.LastSeq, a.Version, a.Final = 5, 6, true
	c := a.Clone()
	sameAggregate(t, "clone", c, a)
	// The clone is deep.
	a.Add(ev("s", time.Minute, event.LevelInfo, 1e6))
	if c.Count != 50 || c.Sketch.GetCount() != 50 {
		t.Fatal("clone shares state")
	}
	sk := a.Sketch
	a.Reset()
	if a.Sketch != sk {
		t.Fatal("Reset dropped the sketch")
	}
	sameAggregate(t, "reset", a, &Aggregate{Sketch: NewSketch()})
	if (&Aggregate{}).Clone().Sketch != nil {
		t.Fatal("clone of zero value grew a sketch")
	}
	var z Aggregate
	z.Reset()
	if z.Sketch != nil {
		t.Fatal("reset of zero value grew a sketch")
	}
}

// TestAggregateAddAllocs: Aggregate.Add allocates nothing once the sketch
// has room for the range of values.
func TestAggregateAddAllocs(t *testing.T) {
	a := NewAggregate("s", 0)
	e := ev("s", 0, event.LevelInfo, 1)
	for _, x := range []float64{0.5, 5000} {
		e.LatencyMS = x
		a.Add(e)
	}
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		e.LatencyMS = float64(1 + i%4000)
		i++
		a.Add(e)
	})
	if allocs != 0 {
		t.Fatalf("Add allocates %v per call", allocs)
	}
}

// TestDecoderBoundIsClamp checks that the decoder's latency bound and the
// kernel's clamp are the same value: an event the decoder accepts is
// aggregated unaltered, and the first value above the clamp is refused at
// ingest (out_of_range) instead of being silently clamped.
func TestDecoderBoundIsClamp(t *testing.T) {
	now := time.Date(2026, 11, 29, 1, 0, 0, 0, time.UTC)
	for _, lat := range []float64{MaxLatencyMS, math.Nextafter(MaxLatencyMS, 0), math.Nextafter(MaxLatencyMS, math.Inf(1)), 1e300} {
		in := fmt.Sprintf(`{"timestamp":"2026-11-29T00:59:00Z","service":"s","level":"info","latency_ms":%s}`,
			strconv.FormatFloat(lat, 'g', -1, 64))
		e, err := event.Decode([]byte(in), now, event.Limits{})
		if lat > MaxLatencyMS {
			if event.ReasonOf(err) != event.ReasonOutOfRange {
				t.Errorf("latency %v: decoder says %v, want out_of_range (the kernel would clamp it)", lat, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("latency %v: %v", lat, err)
		}
		var a Aggregate
		a.Add(e)
		if a.LatencyMax != lat || a.LatencySum != lat {
			t.Errorf("latency %v aggregated as max %v sum %v", lat, a.LatencyMax, a.LatencySum)
		}
	}
}
