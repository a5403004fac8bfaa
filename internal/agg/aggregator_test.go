package agg

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/window"
)

func TestNewAggregatorErrors(t *testing.T) {
	many := make([]window.Window, 257)
	for i := range many {
		many[i] = window.MustParse(fmt.Sprintf("%dmin", i+1))
	}
	bad := map[string][]window.Window{
		"none":          nil,
		"too many":      many,
		"duplicate":     {w1m, w5m, w1m},
		"not canonical": {{Name: "60min", Size: time.Hour}},
		"hand made":     {{Name: "1min", Size: time.Second}},
		"zero":          {{}},
	}
	for name, ws := range bad {
		if _, err := NewAggregator(Config{Windows: ws}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	g, err := NewAggregator(Config{Windows: many[:256]})
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Windows()) != 256 || g.maxServices != DefaultMaxServices {
		t.Fatalf("windows %d, max services %d", len(g.Windows()), g.maxServices)
	}
}

// TestAggregatorMatchesAggregates: the Aggregator's aggregates equal
// aggregates built by hand from the events of each (service, window,
// bucket), whatever the interleaving of services (exercising the cache).
func TestAggregatorMatchesAggregates(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	g := newAggregator(t, "1min,5min,1hour", 0)
	want := map[Key]*Aggregate{}
	services := []string{"a", "b", "c", "a.b", "a_b"}
	svc := "a"
	for seq := uint64(1); seq <= 20000; seq++ {
		if rng.IntN(4) == 0 { // runs of one service, as in real streams
			svc = services[rng.IntN(len(services))]
		}
		// Times around t0, including before it (other hour).
		at := time.Duration(rng.Int64N(int64(2*time.Hour))) - time.Hour
		e := evRisk(svc, at, event.Level(rng.IntN(7)), rng.ExpFloat64()*100, rng.Float64())
		g.Add(e, seq)
		for wi, w := range g.Windows() {
			k := Key{Service: svc, Window: uint8(wi), Start: w.Start(e.Time).Unix()}
			a := want[k]
			if a == nil {
				a = NewAggregate(svc, k.Start)
				want[k] = a
			}
			a.Add(e)
			a.LastSeq = seq
		}
	}
	if g.Len() != len(want) {
		t.Fatalf("Len = %d, want %d", g.Len(), len(want))
	}
	for k, w := range want {
		got := g.Get(k)
		if got == nil {
			t.Fatalf("missing %+v", k)
		}
		sameAggregate(t, fmt.Sprint(k), got, w)
	}
	if g.Overflow() != 0 {
		t.Fatalf("overflow %d", g.Overflow())
	}
}

func TestAggregatorSeqIsMax(t *testing.T) {
	g := newAggregator(t, "1min", 0)
	g.Add(ev("s", 0, event.LevelInfo, 1), 7)
	g.Add(ev("s", 0, event.LevelInfo, 1), 3) // applied: dedupe is the caller's job
	g.Add(ev("s", 0, event.LevelInfo, 1), 0)
	a := g.Get(Key{Service: "s", Start: t0.Unix()})
	if a.Count != 3 || a.LastSeq != 7 {
		t.Fatalf("count %d last seq %d", a.Count, a.LastSeq)
	}
}

// TestAggregatorInterns: the aggregator never keeps the caller's string
// (which may share a large message buffer).
func TestAggregatorInterns(t *testing.T) {
	g := newAggregator(t, "1min", 0)
	buf := []byte("checkout and a lot of other payload")
	svc := unsafe.String(&buf[0], 8) // as a zero-copy decoder would

	g.Add(ev(svc, 0, event.LevelInfo, 1), 1)
	g.Drain(func(k Key, a *Aggregate) {
		if k.Service != "checkout" || a.Service != "checkout" {
			t.Fatalf("key %+v", k)
		}
		if unsafe.StringData(k.Service) == &buf[0] || unsafe.StringData(a.Service) == &buf[0] {
			t.Fatal("the aggregator keeps the caller's string")
		}
	})
}

func TestOverflow(t *testing.T) {
	g := newAggregator(t, "1min,5min", 3)
	add := func(svc string, at time.Duration) { g.Add(ev(svc, at, event.LevelInfo, 10), 0) }
	for _, s := range []string{"a", "b", "c", "d", "e", "a", "d"} {
		add(s, 0)
	}
	// 1min bucket t0: a b c admitted; d, e, d overflow (×2 windows).
	if g.Overflow() != 6 {
		t.Fatalf("overflow %d, want 6", g.Overflow())
	}
	ov := g.Get(Key{Service: OverflowService, Window: 0, Start: t0.Unix()})
	if ov == nil || ov.Count != 3 {
		t.Fatalf("overflow aggregate %+v", ov)
	}
	if a := g.Get(Key{Service: "a", Window: 0, Start: t0.Unix()}); a == nil || a.Count != 2 {
		t.Fatalf("a: %+v", a)
	}
	if g.Get(Key{Service: "d", Window: 0, Start: t0.Unix()}) != nil {
		t.Fatal("d has its own aggregate")
	}
	// Another 1min bucket (same 5min bucket): d is admitted there.
	add("d", time.Minute)
	if g.Get(Key{Service: "d", Window: 0, Start: t0.Unix() + 60}) == nil {
		t.Fatal("d not admitted in the next minute")
	}
	if g.Overflow() != 7 {
		t.Fatalf("overflow %d, want 7", g.Overflow())
	}
	// Admission survives Drain: d stays in _overflow for bucket t0.
	g.Drain(func(Key, *Aggregate) {})
	add("d", 0)
	add("a", 0)
	if g.Get(Key{Service: "d", Window: 0, Start: t0.Unix()}) != nil || g.Overflow() != 9 {
		t.Fatalf("after drain: overflow %d", g.Overflow())
	}
	// Rows include the overflow service.
	rows := g.Aggregate("1min")
	if len(rows) != 2 || rows[0].Service != OverflowService || rows[1].Service != "a" {
		t.Fatalf("rows %+v", rows)
	}
	// Forgetting the buckets that ended lets d in again.
	if n := g.ForgetBefore(t0.Unix() + 60); n != 1 {
		t.Fatalf("forgot %d buckets, want 1 (the 1min bucket at t0)", n)
	}
	add("d", 0)
	if g.Get(Key{Service: "d", Window: 0, Start: t0.Unix()}) == nil {
		t.Fatal("d not admitted after ForgetBefore")
	}
	if n := g.ForgetBefore(t0.Unix() + 3600); n != 3 {
		t.Fatalf("forgot %d buckets, want 3", n)
	}
	if len(g.admitted) != 0 {
		t.Fatalf("%d admission sets left", len(g.admitted))
	}
}

// TestOverflowBound: with a flood of distinct services, the number of
// aggregates stays at MaxServices+1 per window and bucket, and every event
// is counted exactly once per window.
func TestOverflowBound(t *testing.T) {
	g := newAggregator(t, "1min,1hour", 100)
	for i := range 10000 {
		g.Add(ev(fmt.Sprintf("svc-%d", i), time.Duration(i)*time.Millisecond, event.LevelInfo, 1), uint64(i+1))
	}
	if g.Len() != 2*101 {
		t.Fatalf("Len = %d, want %d", g.Len(), 2*101)
	}
	var total [2]uint64
	g.Drain(func(k Key, a *Aggregate) { total[k.Window] += a.Count })
	if total[0] != 10000 || total[1] != 10000 {
		t.Fatalf("totals %v", total)
	}
	if g.Overflow() != 2*9900 {
		t.Fatalf("overflow %d", g.Overflow())
	}
	// ForgetBefore keeps only a few spare sets.
	for m := range 20 {
		g.Add(ev("x", time.Duration(m)*time.Minute, event.LevelInfo, 1), 0)
	}
	g.ForgetBefore(t0.Unix() + 100*3600)
	if len(g.freeSets) > 4 {
		t.Fatalf("%d spare sets", len(g.freeSets))
	}
}

func TestDrain(t *testing.T) {
	g := newAggregator(t, "1min,5min", 0)
	for i := range 10 {
		g.Add(ev("s", time.Duration(i)*30*time.Second, event.LevelInfo, float64(i)), uint64(i+1))
	}
	if g.Len() != 5+1 {
		t.Fatalf("Len %d", g.Len())
	}
	seen := map[Key]uint64{}
	g.Drain(func(k Key, a *Aggregate) {
		if a.Service != k.Service || a.Start != k.Start {
			t.Fatalf("identity %q/%d vs key %+v", a.Service, a.Start, k)
		}
		seen[k] = a.Count
	})
	if len(seen) != 6 || seen[Key{Service: "s", Window: 1, Start: t0.Unix()}] != 10 {
		t.Fatalf("drained %v", seen)
	}
	if g.Len() != 0 || len(g.free) != 6 {
		t.Fatalf("after drain Len %d, free %d", g.Len(), len(g.free))
	}
	g.Drain(func(Key, *Aggregate) { t.Fatal("second drain not empty") })

	// Recycled aggregates come back clean, with the new identity.
	g.Add(ev("t", 0, event.LevelError, 3), 99)
	a := g.Get(Key{Service: "t", Window: 0, Start: t0.Unix()})
	want := NewAggregate("t", t0.Unix())
	want.Add(ev("t", 0, event.LevelError, 3))
	want.LastSeq = 99
	sameAggregate(t, "recycled", a, want)

	// The free list never exceeds the working set of the last interval.
	g.Drain(func(Key, *Aggregate) {})
	if len(g.free) != 2 {
		t.Fatalf("free %d", len(g.free))
	}
}

func TestSnapshotIsDeep(t *testing.T) {
	g := newAggregator(t, "1min", 0)
	g.Add(ev("s", 0, event.LevelInfo, 1), 1)
	snap := g.Snapshot()
	g.Add(ev("s", 0, event.LevelInfo, 1), 2)
	if a := snap[Key{Service: "s", Start: t0.Unix()}]; a.Count != 1 || a.Sketch.GetCount() != 1 {
		t.Fatalf("snapshot changed: %+v", a)
	}
}

func TestAggregateRows(t *testing.T) {
	g := newAggregator(t, "1min,5min,1hour", 0)
	for i := range 1000 {
		svc := []string{"b", "a", "c"}[i%3]
		g.Add(evRisk(svc, time.Duration(i)*time.Second, event.LevelInfo, 50, 0.1), uint64(i+1))
	}
	rows := g.Aggregate("1m") // any spelling
	if len(rows) != 17*3 {
		t.Fatalf("%d rows", len(rows))
	}
	for i := 1; i < len(rows); i++ {
		p, r := rows[i-1], rows[i]
		if r.Timestamp.After(p.Timestamp) || r.Timestamp.Equal(p.Timestamp) && r.Service <= p.Service {
			t.Fatalf("rows not newest first, then by service: %v %s, %v %s", p.Timestamp, p.Service, r.Timestamp, r.Service)
		}
	}
	if r := rows[len(rows)-1]; r.Service != "c" || r.Count != 20 || r.Window != "1min" || !r.Timestamp.Equal(t0) ||
		r.LatencyP99MS != 50 || math.Abs(r.RiskScoreAvg-0.1) > 1e-15 || r.ThroughputPerSec != 20.0/60 {
		t.Fatalf("oldest row %+v", r)
	}
	if rows := g.Aggregate("1hour"); len(rows) != 3 || rows[0].Count+rows[1].Count+rows[2].Count != 1000 {
		t.Fatalf("1hour rows %+v", rows)
	}
	if g.Aggregate("15min") != nil || g.Aggregate("bogus") != nil {
		t.Fatal("rows for a window that is not configured")
	}
	g.Drain(func(Key, *Aggregate) {})
	if rows := g.Aggregate("1min"); rows == nil || len(rows) != 0 {
		t.Fatalf("empty aggregator: %v", rows)
	}
}

// TestAggregatorAddAllocs: steady state — services and buckets already
// seen, also across Drain — allocates nothing.
func TestAggregatorAddAllocs(t *testing.T) {
	g := newAggregator(t, "1min,5min,1hour", 0)
	evs := make([]event.Event, 1000)
	rng := rand.New(rand.NewPCG(1, 1))
	for i := range evs {
		evs[i] = ev(fmt.Sprintf("service-%d", rng.IntN(100)), time.Duration(rng.Int64N(int64(time.Minute))), event.LevelInfo, 1+rng.ExpFloat64()*50)
	}
	for _, e := range evs {
		g.Add(e, 1)
	}
	g.Drain(func(Key, *Aggregate) {})
	for _, e := range evs {
		g.Add(e, 1)
	}
	i := 0
	allocs := testing.AllocsPerRun(5000, func() {
		g.Add(evs[i%len(evs)], uint64(i))
		i++
		if i%1000 == 0 {
			g.Drain(func(Key, *Aggregate) {})
		}
	})
	if allocs != 0 {
		t.Fatalf("Aggregator.Add allocates %v per event", allocs)
	}
}

// TestSeedScenario mirrors the seed's check: 1 000 events for service
// 'test', then agg.aggregate('1min').
func TestSeedScenario(t *testing.T) {
	g := newAggregator(t, "1min,5min,1hour", 0)
	for i := range 1000 {
		g.Add(evRisk("test", time.Duration(i)*time.Millisecond, event.LevelInfo, 50.0, 0.1), uint64(i+1))
	}
	rows := g.Aggregate("1min")
	if len(rows) != 1 {
		t.Fatalf("Aggregated %d metrics", len(rows))
	}
	r := rows[0]
	if r.Count != 1000 || r.LatencyAvgMS != 50 || r.LatencyP50MS != 50 || r.LatencyP99MS != 50 ||
		r.ErrorRate != 0 || r.RiskScoreMax != 0.1 || !strings.EqualFold(r.Service, "test") {
		t.Fatalf("row %+v", r)
	}
}
