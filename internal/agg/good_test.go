package agg

import (
	"bytes"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stacklens/stacklens/internal/event"
)

// goodOf returns the counts of a as threshold key → count.
func goodOf(a *Aggregate) map[string]uint64 {
	m := map[string]uint64{}
	for _, g := range a.LatencyGood {
		m[ThresholdKey(g.ThresholdMS)] = g.Count
	}
	return m
}

func withThresholds(ts []float64, latencies ...float64) *Aggregate {
	a := NewAggregate("svc", t0.Unix())
	a.SetThresholds(ts)
	for i, l := range latencies {
		a.Add(ev("svc", time.Duration(i)*time.Millisecond, event.LevelInfo, l))
	}
	return a
}

func TestLatencyGoodCounts(t *testing.T) {
	cases := []struct {
		name       string
		thresholds []float64
		latencies  []float64
		want       map[string]uint64
	}{
		{"none", nil, []float64{1, 2}, map[string]uint64{}},
		{"no events", []float64{100}, nil, map[string]uint64{"100": 0}},
		{"boundary is good", []float64{100}, []float64{99.999, 100, 100.001}, map[string]uint64{"100": 2}},
		{"several", []float64{0, 2.5, 50, 300}, []float64{0, 1, 2.5, 2.6, 49, 50, 51, 300, 1e6},
			map[string]uint64{"0": 1, "2.5": 3, "50": 6, "300": 8}},
		{"guarded inputs", []float64{0, 1e15}, []float64{math.NaN(), -5, math.Inf(1), 1e300},
			map[string]uint64{"0": 2, "1000000000000000": 4}},
	}
	for _, c := range cases {
		a := withThresholds(c.thresholds, c.latencies...)
		if got := goodOf(a); !mapsEqual(got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
		if err := a.checkGood(); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

func mapsEqual(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestSetThresholdsOnlyBeforeFirstEvent(t *testing.T) {
	a := withThresholds([]float64{10}, 5)
	if a.SetThresholds([]float64{10, 20}) {
		t.Fatal("SetThresholds changed an aggregate that has events")
	}
	if got := a.Thresholds(); !slices.Equal(got, []float64{10}) {
		t.Fatalf("thresholds %v", got)
	}
	if n, ok := a.GoodCount(10); !ok || n != 1 {
		t.Fatalf("GoodCount(10) = %d, %v", n, ok)
	}
	if _, ok := a.GoodCount(20); ok {
		t.Fatal("GoodCount(20) reported a threshold not counted")
	}
	// Reset forgets the thresholds but keeps the memory.
	p := &a.LatencyGood[:1][0]
	a.Reset()
	if len(a.LatencyGood) != 0 || !a.SetThresholds([]float64{7}) || &a.LatencyGood[0] != p {
		t.Fatalf("Reset: %+v", a.LatencyGood)
	}
	// Clone copies the counts.
	a.Add(ev("svc", 0, event.LevelInfo, 1))
	c := a.Clone()
	a.Add(ev("svc", 0, event.LevelInfo, 1))
	if n, _ := c.GoodCount(7); n != 1 {
		t.Fatalf("clone shares counts: %d", n)
	}
}

func TestMergeLatencyGood(t *testing.T) {
	cases := []struct {
		name       string
		total      *Aggregate
		delta      *Aggregate
		want       map[string]uint64
		wantCount  uint64
		wantAbsent []string
	}{
		{"same thresholds add", withThresholds([]float64{10, 100}, 5, 50, 500), withThresholds([]float64{10, 100}, 10, 11),
			map[string]uint64{"10": 2, "100": 4}, 5, nil},
		{"intersection", withThresholds([]float64{10, 100, 300}, 5, 200), withThresholds([]float64{1, 100, 300, 400}, 99),
			map[string]uint64{"100": 2, "300": 3}, 3, []string{"1", "10", "400"}},
		{"total without thresholds", withThresholds(nil, 5), withThresholds([]float64{10}, 1),
			map[string]uint64{}, 2, []string{"10"}},
		{"delta without thresholds", withThresholds([]float64{10}, 5), withThresholds(nil, 1),
			map[string]uint64{}, 2, []string{"10"}},
		{"empty total adopts", NewAggregate("svc", t0.Unix()), withThresholds([]float64{10, 20}, 15),
			map[string]uint64{"10": 0, "20": 1}, 1, nil},
		{"empty delta changes nothing", withThresholds([]float64{10}, 5), withThresholds([]float64{20}),
			map[string]uint64{"10": 1}, 1, []string{"20"}},
	}
	for _, c := range cases {
		c.total.Merge(c.delta)
		if got := goodOf(c.total); !mapsEqual(got, c.want) || c.total.Count != c.wantCount {
			t.Errorf("%s: got %v (count %d), want %v (count %d)", c.name, got, c.total.Count, c.want, c.wantCount)
		}
		for _, k := range c.wantAbsent {
			if _, ok := goodOf(c.total)[k]; ok {
				t.Errorf("%s: threshold %s survived", c.name, k)
			}
		}
		if err := c.total.checkGood(); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

func TestNormalizeThresholds(t *testing.T) {
	got, err := NormalizeThresholds([]float64{300, math.Copysign(0, -1), 2.5, 300, 0})
	if err != nil || !slices.Equal(got, []float64{0, 2.5, 300}) || math.Signbit(got[0]) {
		t.Fatalf("got %v, %v", got, err)
	}
	for _, bad := range [][]float64{{-1}, {math.NaN()}, {math.Inf(1)}, {MaxLatencyMS * 2}} {
		if _, err := NormalizeThresholds(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	many := make([]float64, MaxThresholds+1)
	for i := range many {
		many[i] = float64(i)
	}
	if _, err := NormalizeThresholds(many); err == nil {
		t.Error("too many thresholds accepted")
	}
	if got, err := NormalizeThresholds(nil); err != nil || len(got) != 0 {
		t.Errorf("nil: %v, %v", got, err)
	}
}

// TestAggregatorThresholds: a changed set applies to aggregates created
// afterwards, never to one already held.
func TestAggregatorThresholds(t *testing.T) {
	ws := newAggregator(t, "1min", 0).Windows()
	if _, err := NewAggregator(Config{Windows: ws, Thresholds: []float64{-1}}); err == nil {
		t.Fatal("negative threshold accepted")
	}
	g, err := NewAggregator(Config{Windows: ws, Thresholds: []float64{100}})
	if err != nil {
		t.Fatal(err)
	}
	g.Add(ev("a", 0, event.LevelInfo, 50), 1)
	if err := g.SetThresholds([]float64{100, 20}); err != nil {
		t.Fatal(err)
	}
	if err := g.SetThresholds([]float64{math.NaN()}); err == nil {
		t.Fatal("NaN accepted")
	}
	g.Add(ev("a", time.Second, event.LevelInfo, 10), 2) // held: keeps {100}
	g.Add(ev("b", time.Second, event.LevelInfo, 10), 3) // new: {20, 100}
	g.Add(ev("a", time.Minute, event.LevelInfo, 10), 4) // new bucket: {20, 100}
	want := map[Key]map[string]uint64{
		{Service: "a", Start: t0.Unix()}:      {"100": 2},
		{Service: "b", Start: t0.Unix()}:      {"20": 1, "100": 1},
		{Service: "a", Start: t0.Unix() + 60}: {"20": 1, "100": 1},
	}
	snap := g.Snapshot()
	for k, w := range want {
		if got := goodOf(snap[k]); !mapsEqual(got, w) {
			t.Errorf("%v: %v, want %v", k, got, w)
		}
	}
	// Reused aggregates (after a Drain) take the current set too.
	g.Drain(func(Key, *Aggregate) {})
	_ = g.SetThresholds([]float64{5})
	g.Add(ev("a", 0, event.LevelInfo, 1), 5)
	if got := goodOf(g.Get(Key{Service: "a", Start: t0.Unix()})); !mapsEqual(got, map[string]uint64{"5": 1}) {
		t.Errorf("after drain: %v", got)
	}
}

func TestLatencyGoodCodec(t *testing.T) {
	a := withThresholds([]float64{0, 2.5, 300, 1e15}, 0, 1, 2.5, 400, 7)
	enc := a.Encode(nil, w1m)
	if !bytes.Contains(enc, []byte(`"latency_good":{"0":1,"2.5":3,"300":4,"1000000000000000":5}`)) {
		t.Fatalf("encoding: %s", enc)
	}
	b, err := Decode(enc)
	if err != nil {
		t.Fatal(err)
	}
	sameAggregate(t, "latency_good", b, a)
	if again := b.Encode(nil, w1m); !bytes.Equal(again, enc) {
		t.Fatalf("re-encoding differs:\n%s\n%s", enc, again)
	}
	// Without thresholds the member is absent (values of older versions
	// decode unchanged).
	if enc := withThresholds(nil, 1).Encode(nil, w1m); bytes.Contains(enc, []byte("latency_good")) {
		t.Fatalf("empty latency_good encoded: %s", enc)
	}
	if got := string(NewAggregate("x", 0).AppendLatencyGood(nil)); got != "{}" {
		t.Fatalf("AppendLatencyGood of none: %s", got)
	}
}

func TestDecodeLatencyGoodErrors(t *testing.T) {
	base := func() map[string]any {
		a := withThresholds([]float64{10, 100}, 5, 50, 500)
		var m map[string]any
		if err := json.Unmarshal(a.Encode(nil, w1m), &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	many := map[string]any{}
	for i := range MaxThresholds + 1 {
		many[ThresholdKey(float64(i))] = 0
	}
	bad := map[string]any{
		"not an object":      "x",
		"fraction count":     map[string]any{"10": 1.5},
		"negative count":     map[string]any{"10": -1},
		"non-canonical key":  map[string]any{"10.0": 1},
		"exponent key":       map[string]any{"1e3": 3},
		"not a number":       map[string]any{"ten": 1},
		"NaN":                map[string]any{"NaN": 0},
		"negative threshold": map[string]any{"-1": 0},
		"negative zero":      map[string]any{"-0": 0},
		"infinite":           map[string]any{"+Inf": 3},
		"too large":          map[string]any{"1e+300": 3},
		"above count":        map[string]any{"1000": 4},
		"not monotone":       map[string]any{"10": 2, "100": 1},
		"max not all good":   map[string]any{"1000": 2},
		"min good":           map[string]any{"1": 1},
		"too many":           many,
	}
	for name, v := range bad {
		m := base()
		m["latency_good"] = v
		b, _ := json.Marshal(m)
		if a, err := Decode(b); err == nil {
			t.Errorf("%s: decoded %+v", name, a.LatencyGood)
		} else if !strings.HasPrefix(err.Error(), "agg: decode aggregate: ") {
			t.Errorf("%s: error %q lacks prefix", name, err)
		}
	}
	m := base()
	m["latency_good"] = map[string]any{}
	b, _ := json.Marshal(m)
	if a, err := Decode(b); err != nil || len(a.LatencyGood) != 0 {
		t.Fatalf("empty latency_good: %v", err)
	}
}

func TestThresholdsValue(t *testing.T) {
	ts := []float64{0, 2.5, 300, 1e15}
	b := EncodeThresholds(ts)
	if string(b) != "[0,2.5,300,1000000000000000]" {
		t.Fatalf("encoded %s", b)
	}
	got, err := DecodeThresholds([]byte("[300, 2.5, 0, 1e15, 300]"))
	if err != nil || !slices.Equal(got, ts) {
		t.Fatalf("decoded %v, %v", got, err)
	}
	if got, err := DecodeThresholds(EncodeThresholds(nil)); err != nil || len(got) != 0 {
		t.Fatalf("empty: %v, %v", got, err)
	}
	for _, bad := range []string{"", "{}", `["1"]`, "[-1]", "[1e999]"} {
		if _, err := DecodeThresholds([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	a := withThresholds([]float64{1, 2}, 1)
	b2 := NewAggregate("svc", 0)
	if !b2.SetThresholdsLike(a) || !slices.Equal(b2.Thresholds(), []float64{1, 2}) || b2.LatencyGood[0].Count != 0 {
		t.Fatalf("SetThresholdsLike: %+v", b2.LatencyGood)
	}
	if a.SetThresholdsLike(b2) {
		t.Fatal("SetThresholdsLike changed an aggregate with events")
	}
}
