package api

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// TestEncodeMatchesEncodingJSON: the hand-written /metrics encoder is
// byte-identical to encoding/json.
func TestEncodeMatchesEncodingJSON(t *testing.T) {
	names := []string{"checkout", "", `quote"back\slash`, "<script>&amp;</script>", "tab\tnl\ncr\r\b\f\x00\x1f",
		"ünïcødé 😀", "\u2028\u2029", "bad\xffutf8\xc3", "a.b_c-d/e", "\x7f"}
	floats := []float64{0, math.Copysign(0, -1), 1, -1, 0.1, 1e-7, 1e-6, 123456789.123, 1e20, 1e21, 1e300, -1e-300, math.SmallestNonzeroFloat64, math.MaxFloat64, 5e-324, 42.5}
	r := rand.New(rand.NewPCG(1, 2))
	pick := func() float64 { return floats[r.IntN(len(floats))] }
	for i := 0; i < 2000; i++ {
		var risk *float64
		if r.IntN(2) == 0 {
			v := pick()
			risk = &v
		}
		m := MetricRow{Service: names[r.IntN(len(names))], Window: "1min",
			Timestamp: time.Unix(r.Int64N(4e9), r.Int64N(1e9)*int64(r.IntN(2))).UTC(),
			Count:     r.Int64(), ErrorCount: -r.Int64N(5), WarningCount: 7,
			ErrorRate: pick(), ThroughputPerSec: pick(), LatencyAvgMs: pick(), LatencyMinMs: pick(), LatencyMaxMs: pick(),
			LatencyP50Ms: pick(), LatencyP95Ms: pick(), LatencyP99Ms: pick(), RiskScoreAvg: risk, RiskScoreMax: risk, Final: r.IntN(2) == 0}
		resp := MetricsResponse{Count: 2, Window: names[r.IntN(len(names))], Metrics: []MetricRow{m, m}}
		want, err := marshalJSON(resp)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendMetricsResponse(nil, &resp); string(got) != string(want) {
			t.Fatalf("mismatch:\n got %s\nwant %s", got, want)
		}
	}
	empty := MetricsResponse{Window: "1min", Metrics: []MetricRow{}}
	want, _ := marshalJSON(empty)
	if got := appendMetricsResponse(nil, &empty); string(got) != string(want) {
		t.Fatalf("empty: %s vs %s", got, want)
	}
	if string(appendFloat(nil, math.NaN())) != "null" || string(appendFloat(nil, math.Inf(-1))) != "null" {
		t.Fatal("non-finite not null")
	}
}

// TestCoalescer: concurrent identical calls share one execution; errors
// are not kept; a TTL reuses results until it passes.
