package processor

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stacklens/stacklens/internal/harness/procstat"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/embedded"
	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/natsutil"
)

type measurement struct {
	events    int
	wall, cpu time.Duration
	server    time.Duration // CPU of the server subprocess meanwhile
}

func (m measurement) rate() float64    { return float64(m.events) / m.wall.Seconds() }
func (m measurement) perCore() float64 { return float64(m.events) / m.cpu.Seconds() }

// TestProcessorThroughput (STACKLENS_BENCH=1) publishes M events into the
// stream, then measures, in the same run against the same in-process
// server: (1) a bare drain with one ordered consumer per shard (consume
// only, the ceiling), (2) one processor member draining the stream to fully
// flushed (every shard checkpoint at the stream head). CPU time is the
// process's (getrusage), which includes the in-process NATS server in both
// runs. STACKLENS_BENCH_EVENTS sets M (default 500000).
// STACKLENS_BENCH_THRESHOLDS adds SLO latency thresholds (comma-separated ms).
func TestProcessorThroughput(t *testing.T) {
	if os.Getenv("STACKLENS_BENCH") != "1" {
		t.Skip("set STACKLENS_BENCH=1")
	}
	m := 500_000
	if s := os.Getenv("STACKLENS_BENCH_EVENTS"); s != "" {
		m, _ = strconv.Atoi(s)
	}
	env := map[string]string{"SHARDS": "16", "FLUSH_INTERVAL": "250ms", "LEASE_TTL": "10s"}
	if os.Getenv("STACKLENS_BENCH_INPROC") != "1" {
		// The server runs in its own process, so getrusage counts the
		// client side (ceiling or processor) only.
		env["NATS_URL"] = spawnNATS(t)
	}
	h := newHarness(t, env)
	ctx := testenv.Context(t)
	// STACKLENS_BENCH_THRESHOLDS=10,50,100,300: SLO latency thresholds
	// every aggregate counts.
	if s := os.Getenv("STACKLENS_BENCH_THRESHOLDS"); s != "" {
		var ts []float64
		for _, f := range strings.Split(s, ",") {
			v, err := strconv.ParseFloat(f, 64)
			if err != nil {
				t.Fatalf("STACKLENS_BENCH_THRESHOLDS: %v", err)
			}
			ts = append(ts, v)
		}
		h.putThresholds(ctx, ts...)
	}
	perShard := publishBulk(t, h, m, 100)
	t.Logf("published %d events", m)

	ceil := measurement{events: 1, wall: 1, cpu: 1}
	if os.Getenv("STACKLENS_BENCH_SKIP_CEILING") != "1" {
		ceil = drainBare(t, h, perShard)
	}
	t.Logf("ceiling (bare ordered consumers, 16 shards): %d events in %v = %.0f ev/s, %.0f ev/s per core (cpu %v)",
		ceil.events, ceil.wall.Round(time.Millisecond), ceil.rate(), ceil.perCore(), ceil.cpu.Round(time.Millisecond))
	t.Logf("  server CPU during the ceiling drain: %v", ceil.server)

	kv, err := h.js.KeyValue(ctx, natsutil.ProcessorBucket)
	if err != nil {
		kv, err = natsutil.EnsureKV(ctx, h.js, CoordBucketConfig(h.cfg))
		if err != nil {
			t.Fatal(err)
		}
	}
	st, err := h.js.Stream(ctx, natsutil.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	heads := map[int]uint64{}
	for s, n := range perShard {
		if n == 0 {
			continue
		}
		msg, err := st.GetLastMsgForSubject(ctx, natsutil.ShardFilter(s))
		if err != nil {
			t.Fatal(err)
		}
		heads[s] = msg.Sequence
	}
	// Completion is observed by watching the checkpoints (pushed), not by
	// polling, so the measurement is not loaded by the observer.
	watch, err := kv.Watch(ctx, "ckpt.*", jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = watch.Stop() }()
	runtime.GC()
	if f := os.Getenv("STACKLENS_BENCH_PROFILE"); f != "" {
		pf, err := os.Create(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			t.Fatal(err)
		}
		defer func() { pprof.StopCPUProfile(); _ = pf.Close() }()
	}
	cpu0, s0, t0 := procstat.ProcessCPU(), serverCPU(), time.Now()
	w := h.startWorker("bench", nil)
	remaining := len(heads)
	timeout := time.After(10 * time.Minute)
	for remaining > 0 {
		select {
		case e := <-watch.Updates():
			if e == nil {
				continue
			}
			var v checkpointValue
			if err := json.Unmarshal(e.Value(), &v); err != nil {
				t.Fatal(err)
			}
			s, _ := strconv.Atoi(strings.TrimPrefix(e.Key(), "ckpt."))
			if head, ok := heads[s]; ok && v.Seq >= head {
				delete(heads, s)
				remaining--
			}
		case <-timeout:
			t.Fatalf("processor did not drain: %d shards left", remaining)
		}
	}
	proc := measurement{events: m, wall: time.Since(t0), cpu: procstat.ProcessCPU() - cpu0, server: serverCPU() - s0}
	w.stop(t)
	t.Logf("processor (1 member, 16 shards, fully flushed): %d events in %v = %.0f ev/s, %.0f ev/s per core (cpu %v)",
		proc.events, proc.wall.Round(time.Millisecond), proc.rate(), proc.perCore(), proc.cpu.Round(time.Millisecond))
	t.Logf("  server CPU during the processor drain: %v", proc.server)
	t.Logf("ratio processor/ceiling: throughput %.2f, per core %.2f", proc.rate()/ceil.rate(), proc.perCore()/ceil.perCore())
	if os.Getenv("STACKLENS_BENCH_VERIFY") == "1" {
		h.waitExact(time.Minute)
	}
}

// TestHelperNATSServer is not a test: it is the NATS server process of the
// throughput test.
func TestHelperNATSServer(t *testing.T) {
	if os.Getenv("STACKLENS_NATS_HELPER") != "1" {
		t.Skip("helper process of the throughput test")
	}
	port, _ := strconv.Atoi(os.Getenv("NATS_HELPER_PORT"))
	s, err := embedded.StartNATS(embedded.NATSOptions{Port: port, StoreDir: os.Getenv("NATS_HELPER_DIR")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	<-ctx.Done()
	s.Shutdown()
	s.WaitForShutdown()
}

// serverPID is the NATS server subprocess (0: in-process).
var serverPID int

// serverCPU returns the CPU time of the server subprocess so far.
func serverCPU() time.Duration {
	if serverPID == 0 {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(serverPID) + "/stat")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ = 100
}

// spawnNATS starts a JetStream server subprocess and returns its URL.
func spawnNATS(t *testing.T) string {
	port, err := embedded.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperNATSServer$", "-test.count=1")
	cmd.Env = append(os.Environ(), "STACKLENS_NATS_HELPER=1", "NATS_HELPER_PORT="+strconv.Itoa(port), "NATS_HELPER_DIR="+t.TempDir())
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	serverPID = cmd.Process.Pid
	t.Cleanup(func() {
		serverPID = 0
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	testenv.Eventually(t, 30*time.Second, func() error {
		nc, err := nats.Connect(url)
		if err != nil {
			return err
		}
		nc.Close()
		return nil
	})
	return url
}

// publishBulk publishes n events of nServices services over the last 10
// minutes and returns the events per shard.
func publishBulk(t *testing.T, h *harness, n, nServices int) map[int]int {
	nc := h.nats.Conn(t)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(21, 22))
	// Event time advances with the stream (as in a real backlog), with
	// jitter of up to 20 s, over 10 minutes.
	base := time.Now().Add(-11 * time.Minute)
	step := 10 * time.Minute / time.Duration(n)
	perShard := map[int]int{}
	verify := os.Getenv("STACKLENS_BENCH_VERIFY") == "1"
	levels := []string{"info", "info", "info", "warning", "error", "debug"}
	for i := 0; i < n; i++ {
		svc := "service-" + strconv.Itoa(r.IntN(nServices))
		e := testEvent{Service: svc, Time: base.Add(time.Duration(i)*step + time.Duration(r.Int64N(int64(20*time.Second)))),
			Latency: float64(r.IntN(4000)) / 4, Level: levels[r.IntN(len(levels))], Risk: float64(r.IntN(5)) / 4}
		shard := event.Shard(svc, h.cfg.NATS.Shards)
		perShard[shard]++
		if _, err := js.PublishMsgAsync(&nats.Msg{Subject: natsutil.EventSubject(shard, svc), Data: e.JSON()}); err != nil {
			t.Fatal(err)
		}
		if i%2000 == 1999 {
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(time.Minute):
				t.Fatal("publish did not complete")
			}
		}
		if verify {
			h.mu.Lock()
			h.record(e)
			h.mu.Unlock()
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(5 * time.Minute):
		t.Fatal("publish did not complete")
	}
	return perShard
}

// drainBare consumes every shard with a bare ordered consumer (no decode,
// no fold) until each has delivered its events.
func drainBare(t *testing.T, h *harness, perShard map[int]int) measurement {
	js, err := jetstream.New(h.nats.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	total := 0
	var got atomic.Int64
	doneCh := make(chan struct{}, len(perShard))
	runtime.GC()
	cpu0, s0, t0 := procstat.ProcessCPU(), serverCPU(), time.Now()
	var ccs []jetstream.ConsumeContext
	for s, n := range perShard {
		total += n
		cons, err := js.OrderedConsumer(ctx, natsutil.StreamEvents, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{natsutil.ShardFilter(s)}})
		if err != nil {
			t.Fatal(err)
		}
		cnt := 0
		cc, err := cons.Consume(func(m jetstream.Msg) {
			_ = m.Data()
			cnt++
			got.Add(1)
			if cnt == n {
				doneCh <- struct{}{}
			}
		}, jetstream.PullMaxMessages(2000))
		if err != nil {
			t.Fatal(err)
		}
		ccs = append(ccs, cc)
	}
	for range perShard {
		select {
		case <-doneCh:
		case <-time.After(5 * time.Minute):
			t.Fatalf("bare drain: %d of %d", got.Load(), total)
		}
	}
	res := measurement{events: total, wall: time.Since(t0), cpu: procstat.ProcessCPU() - cpu0, server: serverCPU() - s0}
	for _, cc := range ccs {
		cc.Stop()
	}
	return res
}

// BenchmarkFlush measures one FLUSH_INTERVAL of a shard at 2 000 ev/s:
// 2 000 events of 20 services folded, then flushed (60 dirty keys over the
// three default windows) — the per-flush cost that dominates at low rates
// (docs/PERFORMANCE.md, "Cuts driven by the profiles"). The NATS server is
// in-process, so ns/op, allocs/op and B/op include its side of the writes.
func BenchmarkFlush(b *testing.B) {
	h := newHarness(b, map[string]string{"SHARDS": "1"})
	ctx := testenv.Context(b)
	sh, err := setup(ctx, h.nats.Conn(b), h.cfg, testLogger(b, "c"), RealClock, "c")
	if err != nil {
		b.Fatal(err)
	}
	w := newShardWorker(sh, 0, nil)
	base := time.Now().Add(-time.Minute).Truncate(time.Hour)
	var seq uint64
	var svcs [20]string
	for i := range svcs {
		svcs[i] = "svc-" + strconv.Itoa(i)
	}
	fold := func() {
		for i := range 2000 {
			seq++
			ev := event.Event{Service: svcs[i%20], Time: base, LatencyMS: float64(1 + i%300), Level: event.LevelInfo}
			if err := w.fold(ev, seq); err != nil {
				b.Fatal(err)
			}
		}
		w.consumed = seq
	}
	b.ReportAllocs()
	for b.Loop() {
		w.mu.Lock()
		fold()
		err := w.flushLocked()
		w.mu.Unlock()
		if err != nil {
			b.Fatal(err)
		}
	}
}
