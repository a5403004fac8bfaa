package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/agg"
	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/lease"
	"github.com/stacklens/stacklens/internal/natsutil"
	"github.com/stacklens/stacklens/internal/window"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// fakeClock is a settable clock shared by the workers of a test.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }
func (c *fakeClock) Set(t time.Time)         { c.ns.Store(t.UnixNano()) }

func testLogger(t testing.TB, name string) *slog.Logger {
	if os.Getenv("STACKLENS_TEST_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("worker", name)
	}
	return slog.New(slog.DiscardHandler)
}

// testEvent is one event to publish.
type testEvent struct {
	Service string
	Time    time.Time
	Latency float64 // a multiple of 1/4 below 2^16: sums are exact
	Level   string
	Risk    float64 // a multiple of 1/4 in [0, 1]; < 0: absent
	Stamp   string  // the timestamp as written, if not Time in RFC 3339
}

func (e testEvent) JSON() []byte {
	stamp := e.Stamp
	if stamp == "" {
		stamp = e.Time.UTC().Format(time.RFC3339Nano)
	}
	s := fmt.Sprintf(`{"timestamp":%q,"service":%q,"level":%q,"latency_ms":%v`,
		stamp, e.Service, e.Level, e.Latency)
	if e.Risk >= 0 {
		s += fmt.Sprintf(`,"risk_score":%v`, e.Risk)
	}
	return []byte(s + "}")
}

// expKey identifies an expected aggregate.
type expKey struct {
	Service string
	Window  string
	Start   int64
}

type expAgg struct {
	Count, Errors  uint64
	Sum, SqSum     float64
	RiskSum        float64
	MinLat, MaxLat float64
}

// harness is one test's NATS server, configuration and expected state.
type harness struct {
	t       testing.TB
	nats    *testenv.NATSServer
	env     map[string]string
	cfg     *config.Config
	js      jetstream.JetStream
	windows []window.Window

	mu       sync.Mutex
	expected map[expKey]*expAgg
	nPub     int
}

func newHarness(t testing.TB, env map[string]string) *harness {
	t.Helper()
	h := &harness{t: t, expected: map[expKey]*expAgg{}}
	if url := env["NATS_URL"]; url != "" {
		h.nats = &testenv.NATSServer{URL: url} // a server the test started elsewhere
	} else {
		h.nats = testenv.NATS(t)
	}
	h.env = map[string]string{
		"NATS_URL":         h.nats.URL,
		"SHARDS":           "4",
		"FLUSH_INTERVAL":   "50ms",
		"LEASE_TTL":        "2s",
		"ALLOWED_LATENESS": "30s",
		"ENABLE_METRICS":   "false",
	}
	for k, v := range env {
		h.env[k] = v
	}
	h.cfg = testenv.Config(t, h.env)
	h.js = h.nats.JetStream(t)
	ctx := testenv.Context(t)
	if _, err := natsutil.EnsureEventsStream(ctx, h.js, h.cfg.NATS); err != nil {
		t.Fatal(err)
	}
	var err error
	if h.windows, err = h.cfg.Pipeline.ValidWindows(); err != nil {
		t.Fatal(err)
	}
	return h
}

// publish appends events to the stream (as the bridge would) and records
// what the aggregates must become.
func (h *harness) publish(evs ...testEvent) {
	h.t.Helper()
	js, err := jetstream.New(h.nats.Conn(h.t))
	if err != nil {
		h.t.Fatal(err)
	}
	var futs []jetstream.PubAckFuture
	for _, e := range evs {
		subj := natsutil.EventSubject(event.Shard(e.Service, h.cfg.NATS.Shards), e.Service)
		f, err := js.PublishMsgAsync(&nats.Msg{Subject: subj, Data: e.JSON()})
		if err != nil {
			h.t.Fatal(err)
		}
		futs = append(futs, f)
	}
	for _, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			h.t.Fatal(err)
		case <-time.After(10 * time.Second):
			h.t.Fatal("publish timeout")
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range evs {
		h.record(e)
	}
	h.nPub += len(evs)
}

func (h *harness) record(e testEvent) {
	for _, w := range h.windows {
		k := expKey{Service: e.Service, Window: w.Name, Start: w.StartUnix(e.Time.UnixNano())}
		a := h.expected[k]
		if a == nil {
			a = &expAgg{MinLat: e.Latency, MaxLat: e.Latency}
			h.expected[k] = a
		}
		a.Count++
		if lv, _ := event.ParseLevel(e.Level); lv.IsError() {
			a.Errors++
		}
		a.Sum += e.Latency
		a.SqSum += e.Latency * e.Latency
		if e.Risk >= 0 {
			a.RiskSum += e.Risk
		}
		a.MinLat = min(a.MinLat, e.Latency)
		a.MaxLat = max(a.MaxLat, e.Latency)
	}
}

// genEvents makes n events of nServices services around base (spread over
// spread), with exact quarter latencies.
func genEvents(r *rand.Rand, n, nServices int, base time.Time, spread time.Duration) []testEvent {
	levels := []string{"info", "debug", "warning", "error", "critical", "INFO"}
	out := make([]testEvent, n)
	for i := range out {
		svc := fmt.Sprintf("svc-%d", r.IntN(nServices))
		if i%7 == 0 {
			svc = fmt.Sprintf("svc.%d", r.IntN(nServices)) // escaped token
		}
		risk := -1.0
		if r.IntN(2) == 0 {
			risk = float64(r.IntN(5)) / 4
		}
		out[i] = testEvent{
			Service: svc,
			Time:    base.Add(time.Duration(r.Int64N(int64(spread)))),
			Latency: float64(r.IntN(1<<16*4)) / 4,
			Level:   levels[r.IntN(len(levels))],
			Risk:    risk,
		}
	}
	return out
}

// readAll returns every stored aggregate.
func (h *harness) readAll(ctx context.Context) (map[expKey]*agg.Aggregate, error) {
	return readBuckets(ctx, h.js, h.windows, func(w window.Window) string { return natsutil.AggBucket(w.Name) })
}

func readBuckets(ctx context.Context, js jetstream.JetStream, windows []window.Window, name func(window.Window) string) (map[expKey]*agg.Aggregate, error) {
	out := map[expKey]*agg.Aggregate{}
	for _, w := range windows {
		kv, err := js.KeyValue(ctx, name(w))
		if err != nil {
			if errors.Is(err, jetstream.ErrBucketNotFound) {
				continue
			}
			return nil, err
		}
		lister, err := kv.ListKeys(ctx)
		if err != nil {
			return nil, err
		}
		var keys []string
		for k := range lister.Keys() {
			keys = append(keys, k)
		}
		for _, k := range keys {
			e, err := kv.Get(ctx, k)
			if err != nil {
				return nil, fmt.Errorf("get %s: %w", k, err)
			}
			a, err := agg.Decode(e.Value())
			if err != nil {
				return nil, fmt.Errorf("decode %s: %w", k, err)
			}
			out[expKey{Service: a.Service, Window: w.Name, Start: a.Start}] = a
		}
	}
	return out, nil
}

// diff compares the stored aggregates with the expected ones (docs/ARCHITECTURE.md §8
// I1 and I3): count, Σlatency, Σlatency², errors, risk, min/max, exactly.
func (h *harness) diff(ctx context.Context) error {
	got, err := h.readAll(ctx)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return diffAggs(got, h.expected)
}

func diffAggs(got map[expKey]*agg.Aggregate, want map[expKey]*expAgg) error {
	var problems []string
	for k, w := range want {
		g := got[k]
		switch {
		case g == nil:
			problems = append(problems, fmt.Sprintf("%v: missing (want count %d)", k, w.Count))
		case g.Count != w.Count || g.ErrorCount != w.Errors || g.LatencySum != w.Sum ||
			g.LatencySqSum != w.SqSum || g.RiskSum != w.RiskSum || g.LatencyMin != w.MinLat || g.LatencyMax != w.MaxLat:
			problems = append(problems, fmt.Sprintf("%v: got count %d err %d sum %v sq %v risk %v; want %d %d %v %v %v",
				k, g.Count, g.ErrorCount, g.LatencySum, g.LatencySqSum, g.RiskSum, w.Count, w.Errors, w.Sum, w.SqSum, w.RiskSum))
		}
	}
	for k, g := range got {
		if want[k] == nil && g.Count > 0 {
			problems = append(problems, fmt.Sprintf("%v: unexpected (count %d)", k, g.Count))
		}
	}
	if len(problems) == 0 {
		return nil
	}
	sort.Strings(problems)
	if len(problems) > 10 {
		problems = append(problems[:10], fmt.Sprintf("… %d more", len(problems)-10))
	}
	return errors.New(strings.Join(problems, "\n"))
}

// worker is an in-process processor member with its own NATS connection.
type worker struct {
	name   string
	cancel context.CancelFunc
	done   chan error
}

func (h *harness) startWorker(name string, clock Clock) *worker {
	h.t.Helper()
	env := map[string]string{}
	for k, v := range h.env {
		env[k] = v
	}
	env["PROCESSOR_ID"] = name
	cfg := testenv.Config(h.t, env)
	ctx, cancel := context.WithCancel(context.Background())
	w := &worker{name: name, cancel: cancel, done: make(chan error, 1)}
	go func() {
		w.done <- Run(ctx, Deps{Config: cfg, Log: testLogger(h.t, name), Options: Options{Name: name, Clock: clock}})
	}()
	h.t.Cleanup(func() { w.stop(h.t) })
	return w
}

// stop cancels the worker and waits for its clean handover.
func (w *worker) stop(t testing.TB) {
	t.Helper()
	if w.cancel == nil {
		return
	}
	w.cancel()
	w.cancel = nil
	select {
	case err := <-w.done:
		if err != nil {
			t.Errorf("worker %s: %v", w.name, err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("worker %s did not stop", w.name)
	}
}

// leases returns the owner of every shard lease.
func (h *harness) leases(ctx context.Context) (map[int]lease.Value, error) {
	kv, err := h.js.KeyValue(ctx, natsutil.ProcessorBucket)
	if err != nil {
		return nil, err
	}
	out := map[int]lease.Value{}
	for s := 0; s < h.cfg.NATS.Shards; s++ {
		e, err := kv.Get(ctx, leaseKey(s))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var v lease.Value
		if err := jsonUnmarshal(e.Value(), &v); err != nil {
			return nil, err
		}
		out[s] = v
	}
	return out, nil
}

// waitExact waits until the stored aggregates equal the expected ones.
func (h *harness) waitExact(timeout time.Duration) {
	h.t.Helper()
	ctx := testenv.Context(h.t)
	testenv.Eventually(h.t, timeout, func() error { return h.diff(ctx) })
}

// bareWorker returns shard 0's worker of a processor set up on h (no
// consumer, no lease), whose consumer callback and flushes a test drives
// itself; gen is 1, as for the callbacks of a first consumer.
func (h *harness) bareWorker(clock Clock, id string) *shardWorker {
	h.t.Helper()
	sh, err := setup(testenv.Context(h.t), h.nats.Conn(h.t), h.cfg, testLogger(h.t, id), clock, id)
	if err != nil {
		h.t.Fatal(err)
	}
	w := newShardWorker(sh, 0, nil)
	w.gen = 1
	h.t.Cleanup(w.stopF)
	return w
}
