package loadgen

import (
	"context"
	"math"
	"runtime"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/telemetry"
)

func TestGeneratedEventsAreValidAndDeterministic(t *testing.T) {
	start := time.Date(2026, 11, 29, 1, 0, 0, 0, time.UTC)
	a := NewGenerator(7, 20, start)
	b := NewGenerator(7, 20, start)
	if len(a.Services()) != 20 || a.Services()[0].Name != "checkout" || a.Services()[19].Name != "svc-19" {
		t.Fatalf("services %v", a.Services())
	}
	levels := map[string]int{}
	for i := range 5000 {
		now := start.Add(time.Duration(i) * time.Millisecond)
		ja, ea := a.Next(nil, now)
		jb, _ := b.Next(nil, now)
		if string(ja) != string(jb) {
			t.Fatalf("same seed, different event %d:\n%s\n%s", i, ja, jb)
		}
		got, err := event.Decode(ja, now, event.Limits{})
		if err != nil {
			t.Fatalf("generated an invalid event %s: %v", ja, err)
		}
		if got.Service != ea.Service || got.LatencyMS != ea.LatencyMS || !got.Time.Equal(ea.Time) || got.Level.String() != ea.Level || got.Risk != ea.Risk {
			t.Fatalf("decoded %+v, generated %+v", got, ea)
		}
		if ea.LatencyMS*4 != math.Trunc(ea.LatencyMS*4) {
			t.Fatalf("latency %v is not a multiple of 1/4", ea.LatencyMS)
		}
		levels[ea.Level]++
	}
	if levels["info"] < 4000 || levels["error"] == 0 || levels["warning"] == 0 {
		t.Errorf("level mix %v", levels)
	}
}

func TestBurstRaisesErrorRateOnlyInsideItsWindow(t *testing.T) {
	start := time.Now()
	g := NewGenerator(1, 1, start, Burst{Service: "checkout", Start: time.Minute, Duration: time.Minute})
	rate := func(at time.Duration) float64 {
		errs := 0
		for range 4000 {
			_, ev := g.Next(nil, start.Add(at))
			if ev.Level == "error" || ev.Level == "critical" {
				errs++
			}
		}
		return float64(errs) / 4000
	}
	before, during, after := rate(30*time.Second), rate(90*time.Second), rate(150*time.Second)
	if before > 0.05 || after > 0.05 || during < 0.25 {
		t.Errorf("error rate before %.3f during %.3f after %.3f", before, during, after)
	}
}

func TestRunProducesAtTheRequestedRate(t *testing.T) {
	k := testenv.Kafka(t, 3, "in")
	var seen int
	st, err := Run(testenv.Context(t), Config{
		Brokers: k.Brokers, Topic: "in", Rate: 2000, Duration: 1500 * time.Millisecond, Services: 5, Seed: 3,
		OnEvent: func(Event) { seen++ },
	}, telemetry.Discard())
	if err != nil {
		t.Fatal(err)
	}
	if st.Produced != 3000 || st.Failed != 0 || seen != 3000 {
		t.Fatalf("stats %+v, seen %d; want 3000 produced", st, seen)
	}
	if r := st.Rate(); r < 1500 || r > 2600 {
		t.Errorf("rate %.0f/s, want about 2000", r)
	}
	var total int64
	for p := range 3 {
		conn, err := kafka.DialLeader(context.Background(), "tcp", k.Brokers[0], "in", p)
		if err != nil {
			t.Fatal(err)
		}
		last, _ := conn.ReadLastOffset()
		total += last
		conn.Close()
	}
	if total != 3000 {
		t.Errorf("topic holds %d messages, want 3000", total)
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	if _, err := Run(context.Background(), Config{Rate: 0, Brokers: []string{"x:1"}, Topic: "t"}, telemetry.Discard()); err == nil {
		t.Error("rate 0 accepted")
	}
	if _, err := Run(context.Background(), Config{Rate: 1}, telemetry.Discard()); err == nil {
		t.Error("no brokers accepted")
	}
	if (Stats{}).Rate() != 0 {
		t.Error("empty stats rate")
	}
}

func TestBatchSizeFitsWhatABatchHolds(t *testing.T) {
	for _, c := range []struct {
		rate             float64
		partitions, svcs int
		want             int
	}{
		{2000, 12, 20, 16},   // 20 per tick, under 2 per partition: the floor
		{40000, 12, 20, 134}, // 400 per tick: 4 × 400/12
		{40000, 12, 3, 400},  // 3 keys: 4 × 400/3 capped at the tick's count
		{40000, 0, 20, 400},  // partitions unknown: the tick's count
		{1e6, 1, 1, 2000},    // never above the former fixed size
		{10, 12, 20, 16},     // floor
	} {
		if got := batchSize(c.rate, c.partitions, c.svcs); got != c.want {
			t.Errorf("batchSize(%v, %d, %d) = %d, want %d", c.rate, c.partitions, c.svcs, got, c.want)
		}
	}
}

// At a low rate the writer must not allocate a 2000-message slice for
// every batch of one or two events (docs/PERFORMANCE.md): the allocation
// per event, broker included, stays far below the old ~200 KB.
func TestRunAllocatesLittlePerEventAtLowRate(t *testing.T) {
	k := testenv.Kafka(t, 12, "in")
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	st, err := Run(testenv.Context(t), Config{
		Brokers: k.Brokers, Topic: "in", Rate: 2000, Duration: time.Second, Services: 20, Partitions: 12, Seed: 4,
	}, telemetry.Discard())
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if st.Produced != 2000 || st.Failed != 0 {
		t.Fatalf("stats %+v; want 2000 produced", st)
	}
	perEvent := float64(after.TotalAlloc-before.TotalAlloc) / float64(st.Produced)
	t.Logf("%.0f B allocated per event (generator, writer and broker)", perEvent)
	if perEvent > 40<<10 {
		t.Errorf("%.0f B allocated per event, want under 40 KiB", perEvent)
	}
}
