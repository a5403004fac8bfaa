package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestPercentileNearestRank(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- { // unsorted input
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}, {0, time.Millisecond}, {0.001, time.Millisecond}} {
		if got := Percentile(d, c.q); got != c.want {
			t.Errorf("p%v = %v, want %v", c.q, got, c.want)
		}
	}
	if d[0] != 100*time.Millisecond {
		t.Error("Percentile sorted its input")
	}
	if Percentile(nil, 0.5) != 0 {
		t.Error("empty")
	}
	if got := Percentile([]time.Duration{7}, 0.99); got != 7 {
		t.Errorf("single = %v", got)
	}
	// Three values: p50 is the second, p99 the third.
	three := []time.Duration{3, 1, 2}
	if Percentile(three, 0.5) != 2 || Percentile(three, 0.99) != 3 {
		t.Errorf("three: p50 %v p99 %v", Percentile(three, 0.5), Percentile(three, 0.99))
	}
}

func series(n int, f func(sec float64) float64) []LagSample {
	out := make([]LagSample, n)
	for i := range out {
		out[i] = LagSample{T: time.Duration(i) * time.Second, Lag: f(float64(i))}
	}
	return out
}

func TestJudgeLag(t *testing.T) {
	const rate = 10_000
	jitter := func(i float64) float64 { return []float64{-1, 1, 0.5, -0.5}[int(i)%4] }
	cases := []struct {
		name    string
		s       []LagSample
		bounded bool
	}{
		{"small jittery lag", series(11, func(i float64) float64 { return 3000 + 2000*jitter(i) }), true},
		{"large but flat lag (a standing backlog)", series(61, func(i float64) float64 { return 5*rate + 500*jitter(i) }), true},
		{"lag growing at 30% of the rate", series(11, func(i float64) float64 { return 0.3 * rate * i }), false},
		{"lag growing only in the second half", series(21, func(i float64) float64 { return max(0, i-10) * 0.5 * rate }), false},
		{"lag that grew then recovered", series(21, func(i float64) float64 { return max(0, 10-i) * 0.5 * rate }), true},
		{"slow growth under 5% of the rate, above the allowance", series(61, func(i float64) float64 { return 2*rate + 0.03*rate*i }), true},
		{"too few samples", series(3, func(float64) float64 { return 0 }), false},
	}
	for _, c := range cases {
		v := JudgeLag(c.s, rate)
		if v.Bounded != c.bounded {
			t.Errorf("%s: bounded %v (%+v), want %v", c.name, v.Bounded, v, c.bounded)
		}
	}
	if v := JudgeLag(series(11, func(i float64) float64 { return 0.3 * rate * i }), rate); v.Slope < 0.29*rate || v.Slope > 0.31*rate || v.EndLag != 3*rate {
		t.Errorf("slope %v end %v, want 3000/s and 30000", v.Slope, v.EndLag)
	}
	if v := JudgeLag(nil, rate); v.Bounded || v.Reason == "" {
		t.Errorf("no samples: %+v", v)
	}
}

func TestParseStat(t *testing.T) {
	// The command name may contain spaces and parentheses.
	line := "4242 (my (odd) name) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 75 3 4 20 0 8 0 100 0 0\n"
	st, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if st.ppid != 17 || st.utime != 250 || st.stime != 75 || st.cutime != 3 || st.cstime != 4 {
		t.Errorf("%+v", st)
	}
	if _, err := parseStat([]byte("garbage")); err == nil {
		t.Error("garbage accepted")
	}
	u, err := ReadProc(1, false) // any live process will do; pid 1 exists on Linux
	if err == nil && u.CPU < 0 {
		t.Errorf("pid 1: %+v", u)
	}
	if statusKB([]byte("Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t1 kB\n"), "VmHWM:") != 2048 {
		t.Error("VmHWM")
	}
}

func TestParseProm(t *testing.T) {
	text := `# HELP x
stacklens_processor_events_folded_total{shard="0"} 10
stacklens_processor_events_folded_total{shard="1"} 32
stacklens_processor_events_folded_totalx 1000
stacklens_bridge_forwarded_total 7.5e3
other 1
`
	m, err := parseProm(strings.NewReader(text), "stacklens_processor_events_folded_total", "stacklens_bridge_forwarded_total", "missing")
	if err != nil {
		t.Fatal(err)
	}
	if m["stacklens_processor_events_folded_total"] != 42 || m["stacklens_bridge_forwarded_total"] != 7500 || len(m) != 2 {
		t.Errorf("%v", m)
	}
	// One series by its labels.
	m, _ = parseProm(strings.NewReader(text), `stacklens_processor_events_folded_total{shard="1"}`)
	if m[`stacklens_processor_events_folded_total{shard="1"}`] != 32 || len(m) != 1 {
		t.Errorf("series: %v", m)
	}
	// Both: the series counts for the name's sum and for itself.
	m, _ = parseProm(strings.NewReader(text), `stacklens_processor_events_folded_total{shard="1"}`, "stacklens_processor_events_folded_total")
	if m[`stacklens_processor_events_folded_total{shard="1"}`] != 32 || m["stacklens_processor_events_folded_total"] != 42 || len(m) != 2 {
		t.Errorf("series and name: %v", m)
	}
}

func TestStageDelays(t *testing.T) {
	before := map[string]float64{}
	after := map[string]float64{}
	// As the roles expose them: the bridge's 10 batches (3 s), 9 within
	// 250 ms and one in (250 ms, 500 ms]; the projections' 4 metrics
	// batches (0.4 s) within 100 ms, beside 6 raw-event batches of a second
	// (6 s), which are left out. The bridge's and the projections' series
	// come from two roles' expositions.
	for _, text := range []string{`# HELP x
stacklens_bridge_delay_seconds_bucket{le="0.1"} 5
stacklens_bridge_delay_seconds_bucket{le="0.25"} 9
stacklens_bridge_delay_seconds_bucket{le="0.5"} 10
stacklens_bridge_delay_seconds_bucket{le="+Inf"} 10
stacklens_bridge_delay_seconds_sum 3
stacklens_bridge_delay_seconds_count 10
stacklens_bridge_delay_secondsx 99
stacklens_bridge_publish_seconds_bucket{le="0.005"} 0
stacklens_bridge_publish_seconds_bucket{le="0.01"} 2
stacklens_bridge_publish_seconds_bucket{le="0.025"} 10
stacklens_bridge_publish_seconds_bucket{le="+Inf"} 10
stacklens_bridge_publish_seconds_sum 0.15
stacklens_bridge_publish_seconds_count 10
`, `stacklens_projections_delay_seconds_bucket{consumer="stacklens_projections_1min",le="0.1"} 3
stacklens_projections_delay_seconds_bucket{consumer="stacklens_projections_5min",le="0.1"} 1
stacklens_projections_delay_seconds_bucket{consumer="stacklens_projections_events",le="0.1"} 0
stacklens_projections_delay_seconds_bucket{consumer="stacklens_projections_events",le="1"} 6
stacklens_projections_delay_seconds_bucket{consumer="stacklens_projections_1min",le="1"} 3
stacklens_projections_delay_seconds_bucket{consumer="stacklens_projections_5min",le="1"} 1
stacklens_projections_delay_seconds_sum{consumer="stacklens_projections_1min"} 0.3
stacklens_projections_delay_seconds_sum{consumer="stacklens_projections_5min"} 0.1
stacklens_projections_delay_seconds_sum{consumer="stacklens_projections_events"} 6
stacklens_projections_delay_seconds_count{consumer="stacklens_projections_1min"} 3
stacklens_projections_delay_seconds_count{consumer="stacklens_projections_5min"} 1
stacklens_projections_delay_seconds_count{consumer="stacklens_projections_events"} 6
`} {
		if err := addDelays(after, strings.NewReader(text)); err != nil {
			t.Fatal(err)
		}
	}
	ds := stageDelays(before, after)
	if len(ds) != 3 || ds[0].MeanMS != 300 || ds[0].Batches != 10 || math.Abs(ds[1].MeanMS-15) > 1e-9 || ds[1].Batches != 10 ||
		math.Abs(ds[2].MeanMS-100) > 1e-9 || ds[2].Batches != 4 {
		t.Fatalf("%+v", ds)
	}
	// p99: rank 9.9 of 10 lies in (250, 500] ms, 0.9 of the way through
	// its one batch; the publish's in (10, 25] ms with the bridge's own
	// finer bounds, 7.9 of its 8 batches in; the projections' rank 3.96 of
	// 4 in (50, 100] ms (the buckets below 100 ms are missing: empty).
	if math.Abs(ds[0].P99MS-475) > 1e-9 || math.Abs(ds[1].P99MS-24.8125) > 1e-9 || math.Abs(ds[2].P99MS-99.5) > 1e-9 {
		t.Fatalf("p99 %v, %v and %v ms, want 475, 24.8125 and 99.5", ds[0].P99MS, ds[1].P99MS, ds[2].P99MS)
	}
	if got := stageDelayText(ds); got != "Kafka → JetStream (bridge) 300 ms (p99 475), of which the commit (bridge publish) 15 ms (p99 25), KV → PostgreSQL (projections) 100 ms (p99 100)" {
		t.Errorf("text %q", got)
	}
}

func TestBucketQuantile(t *testing.T) {
	bounds := []float64{1, 2, 4}
	for _, c := range []struct {
		q    float64
		cum  []float64
		n    float64
		want float64
	}{
		{0.5, []float64{10, 10, 10}, 10, 0.5}, // first bucket interpolates from 0
		{0.99, []float64{0, 0, 10}, 10, 3.98}, // last finite bucket
		{0.99, []float64{5, 5, 5}, 10, 4},     // above every bound: the last one
		{0.5, []float64{5, 5, 10}, 10, 1},     // rank on a bound
		{0.9, []float64{0, 10, 10}, 10, 1.9},
	} {
		if got := bucketQuantile(c.q, bounds, c.cum, c.n); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("q %v of %v/%v: %v, want %v", c.q, c.cum, c.n, got, c.want)
		}
	}
}

func TestCPUBound(t *testing.T) {
	r := &run{rep: &Report{Machine: Machine{CPUs: 2}, Sustained: 10_000,
		Roles: []Role{{Role: "bridge", CPUPerMillion: 30}, {Role: "bench process", CPUPerMillion: 70}}}}
	r.cpuBound()
	if len(r.rep.Stages) != 1 {
		t.Fatalf("%+v", r.rep.Stages)
	}
	if s := r.rep.Stages[0]; s.CeilingRate != 20_000 || s.Ratio != 0.5 || !strings.Contains(s.Note, "100 CPU-seconds per million events") {
		t.Errorf("%+v", s)
	}
	r = &run{rep: &Report{Machine: Machine{CPUs: 2}, Roles: []Role{{CPUPerMillion: 30}}}} // nothing sustained
	if r.cpuBound(); len(r.rep.Stages) != 0 {
		t.Errorf("bound without a sustained rate: %+v", r.rep.Stages)
	}
}

func TestNum(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 999: "999", 1500: "1.5k", 20_000: "20k", 12_345: "12.3k", 2_500_000: "2.5M"} {
		if got := num(v); got != want {
			t.Errorf("num(%v) = %q, want %q", v, got, want)
		}
	}
}

func sampleReport() *Report {
	return &Report{
		Mode: "quick", StartedAt: time.Date(2026, 11, 29, 3, 0, 0, 0, time.UTC), Seconds: 70,
		Machine:  Machine{CPUs: 2, CPUModel: "Test CPU", MemoryMB: 4096, GoVersion: "go1.26", LoadAtStart: "1.00 1.00 1.00"},
		Settings: Settings{Processors: 1, Shards: 16, Partitions: 12, Services: 20, Rates: []float64{2000, 5000}, HoldSeconds: 10, CeilingMessages: 50_000, Clients: 32},
		Ceilings: []Ceiling{{Key: ceilKafka, Name: "kafka-go fetch drain", N: 50_000, Seconds: 0.5, Rate: 100_000, Unit: "msg/s"},
			{Key: ceilCopy, Name: "pgx CopyFrom", N: 50_000, Error: "boom"}},
		Steps: []Step{{Target: 2000, Achieved: 2000, BridgeRate: 1990, ProcessorRate: 1990, Lag: LagVerdict{Bounded: true}, Sustainable: true},
			{Target: 5000, Achieved: 5000, BridgeRate: 3000, ProcessorRate: 3000, Lag: LagVerdict{Slope: 2000, Reason: "lag growing"}, DrainSeconds: -1}},
		Sustained: 2000, StopReason: "stopped at 5k events/s: lag growing",
		Steady: &Steady{Rate: 2000, Seconds: 10, Lag: LagVerdict{Bounded: true}, Probes: 40, Seen: 40, PollMS: 50, FreshP50ms: 400, FreshP99ms: 900, ProduceP50ms: 30, ProduceP99ms: 120,
			API: []HTTPResult{{Name: "/metrics", Clients: 32, Requests: 1000, RPS: 500, P50ms: 2, P99ms: 8},
				{Name: "/alerts", Clients: 32, Requests: 900, Errors: 3, ErrorKinds: map[string]int{"503": 3}}}},
		Alert:   Alert{Note: "the burst's window did not become final before the run ended"},
		Roles:   []Role{{Role: "bridge", Processes: 1, CPUSeconds: 2, Events: 1e6, CPUPerMillion: 2, PeakRSSMB: 50}},
		Stages:  []Stage{{Stage: "bridge", Rate: 3000, Ceiling: "kafka", CeilingRate: 100_000, Ratio: 0.03, Saturated: true}},
		Targets: []Target{{"freshness p99", "≤ 1 s", "900 ms", "yes"}},
		Storage: &Storage{Events: 1000, MessageBytes: 200, Sampled: 1000, Stores: []StoreBytes{
			{Store: "JetStream stream STACKLENS_EVENTS", Bytes: 100_000, PerEvent: 100, Ratio: 0.5, Logical: 474_000, LogicalPerEvent: 474},
			{Store: "PostgreSQL WAL generated", Error: "no WAL position"}}},
	}
}

func TestRenderTable(t *testing.T) {
	var b bytes.Buffer
	sampleReport().RenderTable(&b)
	out := b.String()
	for _, want := range []string{
		"quick mode", "2 CPUs (Test CPU)", "load average 1.00 1.00 1.00",
		"kafka-go fetch drain", "100k msg/s", "failed: boom",
		"NOT sustainable (lag growing)", "maximum sustainable rate: 2k events/s",
		"p50 400 ms, p99 900 ms", "of which the probes' Kafka write (acks=all): p50 30 ms, p99 120 ms", "alert latency: not measured (the burst's window",
		"freshness p99", "0.03", "/alerts: 3 errors map[503:3]",
		"Bytes per event (1000 events of the run; average original message 200.0 B",
		"JetStream stream STACKLENS_EVENTS", "100.0       0.50            474.0", "failed: no WAL position",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	// Nothing sustainable.
	r := sampleReport()
	r.Sustained, r.Steady = 0, nil
	b.Reset()
	r.RenderTable(&b)
	if !strings.Contains(b.String(), "maximum sustainable rate: none of the steps") {
		t.Errorf("%s", b.String())
	}
}

func TestReportJSON(t *testing.T) {
	b, err := json.Marshal(sampleReport())
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"machine", "ceilings", "steps", "max_sustainable_events_per_s", "steady", "alert", "roles", "stages", "targets"} {
		if _, ok := back[k]; !ok {
			t.Errorf("JSON lacks %q", k)
		}
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if r.Sustained != 2000 || r.Steady.FreshP99ms != 900 || r.Ceilings[0].Key != ceilKafka || r.Stages[0].Saturated != true {
		t.Errorf("round trip: %+v", r)
	}
}

func TestDescribeMachine(t *testing.T) {
	m := DescribeMachine()
	if m.CPUs < 1 || m.GoVersion == "" || m.CPUModel == "" {
		t.Errorf("%+v", m)
	}
}

func TestLoadHTTPCountsLatenciesAndErrors(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if n.Add(1)%10 == 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	defer srv.Close()
	c := newHTTPClient(4)
	defer c.CloseIdleConnections()
	r := LoadHTTP(context.Background(), c, "test", srv.URL, 4, 200*time.Millisecond)
	if r.Requests == 0 || r.Errors == 0 || r.ErrorKinds["503"] != r.Errors {
		t.Fatalf("%+v", r)
	}
	if r.P50ms <= 0 || r.P99ms < r.P50ms || r.MaxMS < r.P99ms || r.RPS <= 0 {
		t.Errorf("%+v", r)
	}
}

// TestLoadHTTPEndOfHoldIsNoError: requests cut by the end of the hold (the
// context) are not the API's errors; the next endpoint's slot would
// otherwise report one transport error per client.
func TestLoadHTTPEndOfHoldIsNoError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}))
	defer srv.Close()
	c := newHTTPClient(4)
	defer c.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if r := LoadHTTP(ctx, c, "slow", srv.URL, 4, time.Minute); r.Errors != 0 {
		t.Fatalf("%d errors %v after the hold ended", r.Errors, r.ErrorKinds)
	}
}
