package agg

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/window"
)

// sampleAggregate has every stat non-trivial, inexact floats included.
func sampleAggregate(seed uint64, n int) *Aggregate {
	rng := rand.New(rand.NewPCG(seed, 1))
	a := NewAggregate("checkout \"eu\"/é\t\x01", t0.Unix())
	for i := range n {
		lvl := event.Level(rng.IntN(int(event.NumLevels)))
		e := evRisk("", time.Duration(rng.Int64N(int64(time.Minute))), lvl, math.Exp(3+2*rng.NormFloat64()), rng.Float64())
		if i%3 == 0 {
			e.HasRisk = false
		}
		if i%17 == 0 {
			e.LatencyMS = 0
		}
		a.Add(e)
	}
	a.LastSeq, a.Version, a.Final = 1<<63+5, 42, true
	return a
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	cases := map[string]*Aggregate{
		"empty":  NewAggregate("svc", t0.Unix()),
		"zero":   {Service: "svc", Start: t0.Unix()}, // nil sketch
		"one":    sampleAggregate(1, 1),
		"many":   sampleAggregate(2, 5000),
		"unsafe": sampleAggregate(3, 100),
	}
	cases["unsafe"].Service = "<a&b>\u2028\"\\\n\r\x7f"
	for name, a := range cases {
		for _, w := range []window.Window{w1m, w5m, w1h} {
			enc := a.Encode([]byte("prefix"), w)
			if !bytes.HasPrefix(enc, []byte("prefix")) {
				t.Fatalf("%s: Encode does not append", name)
			}
			enc = enc[len("prefix"):]
			if !json.Valid(enc) {
				t.Fatalf("%s: invalid JSON %s", name, enc)
			}
			var b Aggregate
			b.Add(ev("junk", 0, event.LevelError, 5)) // DecodeInto overwrites
			gotW, err := DecodeInto(&b, enc)
			if err != nil {
				t.Fatalf("%s/%s: %v\n%s", name, w.Name, err, enc)
			}
			if gotW != w {
				t.Fatalf("%s: window %+v, want %+v", name, gotW, w)
			}
			want := a
			if a.Sketch == nil {
				want = a.Clone()
				want.Sketch = NewSketch()
			}
			sameAggregate(t, name, &b, want)
			// Re-encoding gives the same bytes.
			if again := b.Encode(nil, w); !bytes.Equal(again, enc) {
				t.Fatalf("%s: re-encoding differs:\n%s\n%s", name, enc, again)
			}
		}
	}
}

// TestEncodeReadable checks the members an operator sees with
// `nats kv get` (docs/ARCHITECTURE.md §2.2) and that they agree with the row.
func TestEncodeReadable(t *testing.T) {
	a := sampleAggregate(4, 1000)
	a.Service = "checkout"
	enc := a.Encode(nil, w5m)
	var m map[string]any
	if err := json.Unmarshal(enc, &m); err != nil {
		t.Fatal(err)
	}
	names := "service window timestamp start count error_count warning_count error_rate throughput_per_sec " +
		"latency_avg_ms latency_min_ms latency_max_ms latency_p50_ms latency_p95_ms latency_p99_ms " +
		"risk_score_avg risk_score_max latency_sum latency_sq_sum risk_sum risk_count first_event last_event " +
		"final last_seq version sketch"
	for _, n := range strings.Fields(names) {
		if _, ok := m[n]; !ok {
			t.Errorf("KV value lacks %q", n)
		}
	}
	if len(m) != len(strings.Fields(names)) {
		t.Errorf("KV value has %d members, want %d", len(m), len(strings.Fields(names)))
	}
	r := a.Row(w5m)
	rowJSON, _ := json.Marshal(r)
	var rm map[string]any
	_ = json.Unmarshal(rowJSON, &rm)
	for k, v := range rm {
		if k == "version" || k == "final" {
			continue
		}
		if m[k] != v {
			t.Errorf("member %s: KV %v, row %v", k, m[k], v)
		}
	}
	if m["service"] != "checkout" || m["window"] != "5min" || m["timestamp"] != "2026-11-29T01:00:00Z" ||
		m["start"] != float64(t0.Unix()) {
		t.Errorf("identity members: %v %v %v %v", m["service"], m["window"], m["timestamp"], m["start"])
	}
	first, err := time.Parse(time.RFC3339Nano, m["first_event"].(string))
	if err != nil || first.UnixNano() != a.FirstEvent {
		t.Errorf("first_event %v", m["first_event"])
	}
	raw, err := base64.StdEncoding.DecodeString(m["sketch"].(string))
	if err != nil || len(raw) == 0 {
		t.Errorf("sketch is not base64: %v", err)
	}
}

func TestEncodeNonFinite(t *testing.T) {
	// Unreachable through Add/Merge/Decode, but must not produce JSON
	// that silently decodes.
	a := NewAggregate("s", 0)
	a.Add(ev("s", 0, event.LevelInfo, 1))
	a.LatencySqSum = math.Inf(1)
	enc := a.Encode(nil, w1m)
	if !json.Valid(enc) {
		t.Fatalf("invalid JSON: %s", enc)
	}
	if _, err := Decode(enc); err == nil {
		t.Fatal("decoded an aggregate with an infinite sum")
	}
}

// valid returns a decodable KV value as a generic map, for mutation.
func validMap(t *testing.T) map[string]any {
	t.Helper()
	a := sampleAggregate(5, 200)
	a.Service = "svc"
	var m map[string]any
	if err := json.Unmarshal(a.Encode(nil, w1m), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDecodeErrors(t *testing.T) {
	otherSketch := func() string {
		a := NewAggregate("x", 0)
		a.Add(ev("x", 0, event.LevelInfo, 1e6))
		var m map[string]any
		_ = json.Unmarshal(a.Encode(nil, w1m), &m)
		return m["sketch"].(string)
	}()
	emptySketch := ""
	zeroOnly := func() string {
		a := NewAggregate("x", 0)
		for range 200 {
			a.Add(ev("x", 0, event.LevelInfo, 0))
		}
		var m map[string]any
		_ = json.Unmarshal(a.Encode(nil, w1m), &m)
		return m["sketch"].(string)
	}()
	mutations := map[string]func(m map[string]any){
		"no service":        func(m map[string]any) { delete(m, "service") },
		"empty service":     func(m map[string]any) { m["service"] = "" },
		"service number":    func(m map[string]any) { m["service"] = 5 },
		"no start":          func(m map[string]any) { delete(m, "start") },
		"no count":          func(m map[string]any) { delete(m, "count") },
		"no sketch":         func(m map[string]any) { delete(m, "sketch") },
		"null sketch":       func(m map[string]any) { m["sketch"] = nil },
		"bad window":        func(m map[string]any) { m["window"] = "30s" },
		"unaligned start":   func(m map[string]any) { m["start"] = t0.Unix() + 30 },
		"huge start":        func(m map[string]any) { m["start"] = int64(1) << 62 },
		"timestamp differs": func(m map[string]any) { m["timestamp"] = "2026-11-29T01:01:00Z" },
		"bad timestamp":     func(m map[string]any) { m["timestamp"] = "yesterday" },
		"bad first_event":   func(m map[string]any) { m["first_event"] = "x" },
		"bad last_event":    func(m map[string]any) { m["last_event"] = "2026-11-29" },
		"far first_event":   func(m map[string]any) { m["first_event"] = "3000-01-01T00:00:00Z" },
		"first after last": func(m map[string]any) {
			m["first_event"], m["last_event"] = m["last_event"], m["first_event"]
		},
		"negative count":    func(m map[string]any) { m["count"] = -1 },
		"fraction count":    func(m map[string]any) { m["count"] = 1.5 },
		"count mismatch":    func(m map[string]any) { m["count"] = m["count"].(float64) + 1 },
		"too many errors":   func(m map[string]any) { m["error_count"] = m["count"].(float64) + 1 },
		"errors+warnings":   func(m map[string]any) { m["warning_count"] = m["count"].(float64) - m["error_count"].(float64) + 1 },
		"too many risks":    func(m map[string]any) { m["risk_count"] = m["count"].(float64) + 1 },
		"min above max":     func(m map[string]any) { m["latency_min_ms"] = m["latency_max_ms"].(float64) + 1 },
		"zeros but min > 0": func(m map[string]any) { m["latency_min_ms"] = 1e-3 },
		"max not in sketch": func(m map[string]any) { m["latency_max_ms"] = m["latency_max_ms"].(float64) * 2 },
		"negative min":      func(m map[string]any) { m["latency_min_ms"] = -1 },
		"max too large":     func(m map[string]any) { m["latency_max_ms"] = 1e300 },
		"negative sum":      func(m map[string]any) { m["latency_sum"] = -1 },
		"sum too large":     func(m map[string]any) { m["latency_sum"] = 1e300 },
		"sq sum too large":  func(m map[string]any) { m["latency_sq_sum"] = 1e300 },
		"risk max > 1":      func(m map[string]any) { m["risk_score_max"] = 1.5 },
		"risk sum large":    func(m map[string]any) { m["risk_sum"] = m["risk_count"].(float64) + 1 },
		"risk without count": func(m map[string]any) {
			m["risk_count"] = 0
		},
		"sketch not base64": func(m map[string]any) { m["sketch"] = "!!!" },
		"sketch garbage":    func(m map[string]any) { m["sketch"] = base64.StdEncoding.EncodeToString([]byte{0xff, 0x01, 0x02}) },
		"sketch empty":      func(m map[string]any) { m["sketch"] = emptySketch },
		"sketch other data": func(m map[string]any) { m["sketch"] = otherSketch },
		"sketch only zeros": func(m map[string]any) { m["sketch"] = zeroOnly },
		"empty with stats": func(m map[string]any) {
			m["count"], m["error_count"], m["warning_count"], m["risk_count"] = 0, 0, 0, 0
			m["risk_sum"], m["risk_score_max"], m["sketch"] = 0, 0, emptySketch
		},
		"row field wrong type": func(m map[string]any) { m["latency_sum"] = "1" },
	}
	for name, mutate := range mutations {
		m := validMap(t)
		mutate(m)
		b, _ := json.Marshal(m)
		if a, err := Decode(b); err == nil {
			t.Errorf("%s: decoded %+v", name, a)
		} else if !strings.HasPrefix(err.Error(), "agg: decode aggregate: ") {
			t.Errorf("%s: error %q lacks prefix", name, err)
		}
	}
	// The unmutated value decodes, and the derived row members are ignored.
	m := validMap(t)
	m["latency_p99_ms"], m["error_rate"], m["unknown_member"] = 1e9, -5, "x"
	b, _ := json.Marshal(m)
	if _, err := Decode(b); err != nil {
		t.Fatalf("valid value: %v", err)
	}
	for _, garbage := range []string{"", "null", "[]", "{}", "{", `"x"`, "5", `{"service":"s"}`} {
		if _, err := Decode([]byte(garbage)); err == nil {
			t.Errorf("Decode(%q) succeeded", garbage)
		}
	}
}

// TestDecodeSketchMismatchedMapping: a sketch encoded with another index
// mapping is refused rather than misread.
func TestDecodeSketchMismatchedMapping(t *testing.T) {
	m := validMap(t)
	raw, _ := base64.StdEncoding.DecodeString(m["sketch"].(string))
	// The mapping is encoded first: flag byte, then gamma as float64 LE.
	// Corrupting gamma makes it another mapping.
	raw[1] ^= 0xff
	m["sketch"] = base64.StdEncoding.EncodeToString(raw)
	b, _ := json.Marshal(m)
	if _, err := Decode(b); err == nil {
		t.Fatal("decoded a sketch with another mapping")
	}
}

// TestDecodeSketchPanics: bin indexes chosen to overflow the library's
// range arithmetic become an error, not a panic.
func TestDecodeSketchPanics(t *testing.T) {
	// A store whose second bin index is ~2^62 away from the first: the
	// library's range arithmetic overflows and slices out of range.
	crafted, _ := hex.DecodeString("02fd4a815abf52f03f000000000000000005270002ffffffffffffffffffff01")
	func() {
		defer func() {
			if recover() == nil {
				t.Log("the library no longer panics on the crafted input; the guard stays harmless")
			}
		}()
		_ = NewSketch().DecodeAndMergeWith(crafted)
	}()
	if _, err := decodeSketch(nil, crafted); err == nil || !strings.Contains(err.Error(), "corrupt sketch") {
		t.Fatalf("decodeSketch(nil, crafted) error %v", err)
	}

	// Mutate a valid encoding, with runs of 0xff to make huge varints.
	rng := rand.New(rand.NewPCG(1, 1))
	good := NewSketch()
	_ = good.Add(1)
	var base []byte
	good.Encode(&base, false)
	for range 20000 {
		b := append([]byte(nil), base...)
		for range 1 + rng.IntN(4) {
			switch rng.IntN(3) {
			case 0:
				if len(b) > 0 {
					b[rng.IntN(len(b))] = byte(rng.Uint32())
				}
			case 1:
				b = append(b, byte(rng.Uint32()), byte(rng.Uint32()))
			case 2:
				for range 10 {
					b = append(b, 0xff)
				}
				b = append(b, 0x01)
			}
		}
		if sk, err := decodeSketch(nil, b); err == nil {
			_ = checkSketch(sk, 1, 1, 1)
		}
	}
}

func FuzzDecodeAggregate(f *testing.F) {
	for i, a := range []*Aggregate{sampleAggregate(1, 1), sampleAggregate(2, 300), NewAggregate("s", 0)} {
		a.Service = "svc"
		f.Add(a.Encode(nil, []window.Window{w1m, w5m, w1h}[i]))
	}
	f.Add([]byte(`{"service":"s","window":"1min","timestamp":"1970-01-01T00:00:00Z","start":0,"count":0,"sketch":"","first_event":"1970-01-01T00:00:00Z","last_event":"1970-01-01T00:00:00Z"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`not json`))
	// latency_good: exact per-threshold counts, and broken variants.
	g := NewAggregate("svc", t0.Unix())
	g.SetThresholds([]float64{0, 2.5, 50, 300})
	for i, l := range []float64{0, 1, 2.5, 49, 50, 51, 300, 1e6} {
		g.Add(ev("svc", time.Duration(i)*time.Second, event.LevelInfo, l))
	}
	enc := g.Encode(nil, w1m)
	f.Add(enc)
	f.Add(bytes.Replace(enc, []byte(`"50":5`), []byte(`"50":9`), 1))
	f.Add(bytes.Replace(enc, []byte(`"2.5"`), []byte(`"2.50"`), 1))
	f.Add(bytes.Replace(enc, []byte(`"300":7`), []byte(`"300":7,"-0":0`), 1))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := Decode(b)
		if err != nil {
			if a != nil {
				t.Fatal("non-nil aggregate with error")
			}
			return
		}
		// Whatever decodes is consistent: it re-encodes, decodes to the
		// same aggregate, and its row is finite.
		var w window.Window
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		w, _ = window.Parse(m["window"].(string))
		enc := a.Encode(nil, w)
		b2, err := Decode(enc)
		if err != nil {
			t.Fatalf("re-encoded value does not decode: %v\n%s", err, enc)
		}
		sameAggregate(t, "fuzz", b2, a)
		r := a.Row(w)
		for _, v := range []float64{r.ErrorRate, r.LatencyAvgMS, r.LatencyP50MS, r.LatencyP99MS, r.RiskScoreAvg} {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("non-finite row %+v", r)
			}
		}
		// Merging it twice stays decodable.
		a.Merge(b2)
		if _, err := Decode(a.Encode(nil, w)); err != nil {
			t.Fatalf("merged value does not decode: %v", err)
		}
	})
}

// FuzzDecodeSketch feeds arbitrary bytes as the sketch of an otherwise
// valid value, where JSON-level fuzzing rarely reaches: the sketch library
// trusts its input, Decode must not.
func FuzzDecodeSketch(f *testing.F) {
	a := NewAggregate("svc", t0.Unix())
	for _, x := range []float64{0, 1, 2, 1e6} {
		a.Add(ev("svc", 0, event.LevelInfo, x))
	}
	var m map[string]any
	if err := json.Unmarshal(a.Encode(nil, w1m), &m); err != nil {
		f.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(m["sketch"].(string))
	f.Add(raw)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, sk []byte) {
		m["sketch"] = base64.StdEncoding.EncodeToString(sk)
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		d, err := Decode(b)
		if err != nil {
			return
		}
		for _, q := range testQuantiles {
			if v := d.Quantile(q); !(v >= 0 && v <= 1e6) {
				t.Fatalf("Quantile(%v) = %v outside [min, max]", q, v)
			}
		}
		if _, err := Decode(d.Encode(nil, w1m)); err != nil {
			t.Fatalf("re-encoded value does not decode: %v", err)
		}
	})
}

// One aggregate reused for a sequence of values (as the projections do)
// decodes each exactly like a fresh Decode — also after a value that fails
// — and keeps its sketch rather than allocating one per value.
func TestDecodeIntoReusesTheSketch(t *testing.T) {
	vals := [][]byte{
		sampleAggregate(1, 5000).Encode(nil, w1m),
		sampleAggregate(2, 3).Encode(nil, w1m),
		[]byte(`{"service":"x"}`), // fails
		sampleAggregate(3, 800).Encode(nil, w5m),
		sampleAggregate(4, 1).Encode(nil, w1h),
	}
	var a Aggregate
	var sk any
	for i, v := range vals {
		_, err := DecodeInto(&a, v)
		want, wantErr := Decode(v)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("value %d: error %v, fresh decode %v", i, err, wantErr)
		}
		if err != nil {
			continue
		}
		sameAggregate(t, "reused", &a, want)
		if sk != nil && any(a.Sketch) != sk {
			t.Errorf("value %d: a new sketch, want the reused one", i)
		}
		sk = a.Sketch
	}
	enc := vals[0]
	if n := testing.AllocsPerRun(20, func() { _, _ = DecodeInto(&a, enc) }); n >= mustAllocs(t, enc)-1 {
		t.Errorf("DecodeInto into a used aggregate: %v allocations, fresh Decode %v", n, mustAllocs(t, enc))
	}
}

func mustAllocs(t *testing.T, enc []byte) float64 {
	return testing.AllocsPerRun(20, func() {
		if _, err := Decode(enc); err != nil {
			t.Fatal(err)
		}
	})
}
