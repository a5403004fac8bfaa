package processor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/agg"
	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/lease"
	"github.com/stacklens/stacklens/internal/natsutil"
	"github.com/stacklens/stacklens/internal/telemetry"
)

// loggedWorker is a processor member whose log a test can read.
type loggedWorker struct {
	cancel context.CancelFunc
	done   chan error
	log    *testenv.SyncBuffer
}

// runLogged starts a member like startWorker, logging at debug level into
// a buffer the test polls.
func (h *harness) runLogged(name string, clock Clock, health *telemetry.Health) *loggedWorker {
	h.t.Helper()
	env := map[string]string{}
	for k, v := range h.env {
		env[k] = v
	}
	env["PROCESSOR_ID"] = name
	cfg := testenv.Config(h.t, env)
	buf := &testenv.SyncBuffer{}
	log := slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	w := &loggedWorker{cancel: cancel, done: make(chan error, 1), log: buf}
	go func() {
		w.done <- Run(ctx, Deps{Config: cfg, Log: log, Health: health, Options: Options{Name: name, Clock: clock}})
	}()
	h.t.Cleanup(func() { w.stop(h.t) })
	return w
}

func (w *loggedWorker) stop(t testing.TB) error {
	t.Helper()
	if w.cancel == nil {
		return nil
	}
	w.cancel()
	w.cancel = nil
	select {
	case err := <-w.done:
		return err
	case <-time.After(30 * time.Second):
		t.Errorf("worker did not stop")
		return nil
	}
}

// waitLog waits until the member logged every one of the substrings.
func (w *loggedWorker) waitLog(t testing.TB, timeout time.Duration, subs ...string) {
	t.Helper()
	testenv.Eventually(t, timeout, func() error {
		s := w.log.String()
		for _, sub := range subs {
			if !strings.Contains(s, sub) {
				return fmt.Errorf("log has no %q", sub)
			}
		}
		return nil
	})
}

// TestUnreadableAggregateIsNotOverwritten: a stored aggregate that does not
// decode (its own key, or the shard's overflow key) wedges the shard — the
// value is never overwritten blindly — until an operator deletes it; then
// counting resumes exactly.
func TestUnreadableAggregateIsNotOverwritten(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "1", "AGGREGATION_WINDOWS": "1min", "MAX_SERVICES": "1"})
	ctx := testenv.Context(t)
	kv, err := natsutil.EnsureKV(ctx, h.js, AggBucketConfig(h.cfg, h.windows[0], natsutil.AggBucket("1min")))
	if err != nil {
		t.Fatal(err)
	}
	b1 := time.Now().Add(-time.Hour).Truncate(time.Minute)
	b2 := b1.Add(time.Minute)
	own := agg.Key{Service: "a", Start: b1.Unix()}.KVKey()
	overflow := agg.Key{Service: "_overflow-0", Start: b2.Unix()}.KVKey()
	for _, k := range []string{own, overflow} {
		if _, err := kv.Put(ctx, k, []byte(`{"broken"`)); err != nil {
			t.Fatal(err)
		}
	}
	h.publish(ev("a", b1, 1), ev("a", b2, 2), ev("b", b2, 3))
	// b is past MAX_SERVICES in b2: expected under the overflow service.
	h.mu.Lock()
	k := expKey{Service: "b", Window: "1min", Start: b2.Unix()}
	h.expected[expKey{Service: "_overflow-0", Window: "1min", Start: b2.Unix()}] = h.expected[k]
	delete(h.expected, k)
	h.mu.Unlock()

	w := h.runLogged("w", nil, nil)
	stillBroken := func(key string) {
		t.Helper()
		e, err := kv.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if string(e.Value()) != `{"broken"` {
			t.Fatalf("%s overwritten: %s", key, e.Value())
		}
	}
	w.waitLog(t, 20*time.Second, "cannot load an aggregate", own)
	stillBroken(own)
	stillBroken(overflow)
	if err := kv.Delete(ctx, own); err != nil {
		t.Fatal(err)
	}
	w.waitLog(t, 20*time.Second, overflow)
	stillBroken(overflow)
	if _, err := kv.Get(ctx, agg.Key{Service: "b", Start: b2.Unix()}.KVKey()); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("b has its own key past MAX_SERVICES: %v", err)
	}
	if err := kv.Delete(ctx, overflow); err != nil {
		t.Fatal(err)
	}
	h.waitExact(20 * time.Second)
	if err := w.stop(t); err != nil {
		t.Fatal(err)
	}
}

// TestDeadLetterFailureIsRetried: when the processor cannot publish a dead
// letter (the stream refuses the message), it does not skip the event:
// nothing after it is counted and the shard re-consumes from its
// checkpoint until the dead letter is stored, with the original headers.
func TestDeadLetterFailureIsRetried(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "1", "AGGREGATION_WINDOWS": "1min"})
	ctx := testenv.Context(t)
	base := time.Now().Add(-time.Hour).Truncate(time.Minute)
	h.publish(ev("before", base, 1))
	bad := nats.NewMsg(natsutil.EventSubject(0, "x"))
	bad.Header.Set("X-Origin", "test")
	bad.Data = []byte(`{"not":"an event"`)
	if _, err := h.js.PublishMsg(ctx, bad); err != nil {
		t.Fatal(err)
	}
	h.publish(ev("after", base, 2))

	// Every message in the stream is < 200 bytes; a dead letter (original
	// plus its Dlq-* headers) is not.
	st, err := h.js.Stream(ctx, natsutil.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.MaxMsgSize = 200
	if _, err := h.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	w := h.runLogged("w", nil, nil)
	w.waitLog(t, 20*time.Second, "dead-letter failed")
	kv, err := h.js.KeyValue(ctx, natsutil.AggBucket("1min"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, agg.Key{Service: "after", Start: base.Unix()}.KVKey()); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("an event after the undeliverable dead letter was counted: %v", err)
	}
	cfg.MaxMsgSize = -1
	if _, err := h.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	h.waitExact(20 * time.Second)
	m, err := st.GetLastMsgForSubject(ctx, natsutil.DLQSubject("processor", event.ReasonInvalidJSON))
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get("X-Origin") != "test" || m.Header.Get(natsutil.HdrDLQStage) != "processor" ||
		m.Header.Get("Stacklens-Stream-Seq") != "2" || string(m.Data) != string(bad.Data) {
		t.Errorf("dead letter %v %q", m.Header, m.Data)
	}
	if err := w.stop(t); err != nil {
		t.Fatal(err)
	}
}

// TestSetupWaitsForBuckets: while the aggregate or coordination bucket
// cannot be created (an operator's stream holds their subjects), the
// processor retries with backoff instead of failing; once the obstacle is
// gone it runs normally. Cancelling while it retries stops it.
func TestSetupWaitsForBuckets(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "1", "AGGREGATION_WINDOWS": "1min"})
	ctx := testenv.Context(t)
	block := func(name, bucket string) {
		t.Helper()
		if _, err := h.js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{"$KV." + bucket + ".>"}}); err != nil {
			t.Fatal(err)
		}
	}
	block("BLOCK_AGG", natsutil.AggBucket("1min"))
	block("BLOCK_COORD", natsutil.ProcessorBucket)

	t.Run("cancel", func(t *testing.T) {
		w := h.runLogged("c", nil, nil)
		w.waitLog(t, 20*time.Second, "cannot provision streams and buckets")
		if err := w.stop(t); !errors.Is(err, context.Canceled) {
			t.Fatalf("Run returned %v, want context.Canceled", err)
		}
	})

	h.publish(ev("s", time.Now().Add(-time.Hour), 1))
	w := h.runLogged("w", nil, nil)
	w.waitLog(t, 20*time.Second, "cannot provision streams and buckets", natsutil.AggBucket("1min"))
	if err := h.js.DeleteStream(ctx, "BLOCK_AGG"); err != nil {
		t.Fatal(err)
	}
	w.waitLog(t, 20*time.Second, "kv bucket "+natsutil.ProcessorBucket)
	select {
	case err := <-w.done:
		t.Fatalf("Run gave up: %v", err)
	default:
	}
	if err := h.js.DeleteStream(ctx, "BLOCK_COORD"); err != nil {
		t.Fatal(err)
	}
	h.waitExact(30 * time.Second)
	if err := w.stop(t); err != nil {
		t.Fatal(err)
	}
}

// TestNATSOutage stops the server under a running member with a health
// registry: the health check fails, heartbeats and renewals fail (logged),
// and after the server is back the member is healthy and exact again.
func TestNATSOutage(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "2", "AGGREGATION_WINDOWS": "1min"})
	ctx := testenv.Context(t)
	base := time.Now().Add(-time.Hour).Truncate(time.Minute)
	h.publish(ev("o1", base, 1), ev("o2", base, 2))
	health := telemetry.NewHealth()
	w := h.runLogged("w", nil, health)
	h.waitExact(20 * time.Second)
	if _, ok := health.Snapshot(ctx); !ok {
		t.Fatal("not healthy with NATS up")
	}
	h.nats.Shutdown()
	testenv.Eventually(t, 20*time.Second, func() error {
		if _, ok := health.Snapshot(ctx); ok {
			return errors.New("still healthy with NATS down")
		}
		return nil
	})
	w.waitLog(t, 30*time.Second, "heartbeat failed", "lease renewal failed")
	h.nats.Restart()
	testenv.Eventually(t, 20*time.Second, func() error {
		if st, ok := health.Snapshot(ctx); !ok {
			return fmt.Errorf("unhealthy after restart: %v", st)
		}
		return nil
	})
	h.publish(ev("o1", base, 3), ev("o3", base, 4))
	h.waitExact(30 * time.Second)
	if err := w.stop(t); err != nil {
		t.Fatal(err)
	}
}

// TestLostLeaseNotReleased: a member stopping after its lease was taken
// over does not release (overwrite) the new owner's lease.
func TestLostLeaseNotReleased(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "1", "LEASE_TTL": "30s"})
	ctx := testenv.Context(t)
	w := h.runLogged("w", nil, nil)
	h.waitOwners(20*time.Second, ownsAll("w", 1))
	kv, err := h.js.KeyValue(ctx, natsutil.ProcessorBucket)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(lease.Value{Owner: "intruder", Epoch: 9, Expires: time.Now().Add(time.Hour)})
	if _, err := kv.Put(ctx, leaseKey(0), b); err != nil {
		t.Fatal(err)
	}
	if err := w.stop(t); err != nil {
		t.Fatal(err)
	}
	ls, err := h.leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ls[0].Owner != "intruder" || ls[0].Epoch != 9 {
		t.Errorf("lease after stop: %+v", ls[0])
	}
}

// TestCorruptLeaseTakenOver: a lease value that is not JSON counts as
// free: a member takes the shard with epoch 1.
func TestCorruptLeaseTakenOver(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "1"})
	ctx := testenv.Context(t)
	kv, err := natsutil.EnsureKV(ctx, h.js, CoordBucketConfig(h.cfg))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, leaseKey(0), []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	h.startWorker("w", nil)
	h.waitOwners(20*time.Second, ownsAll("w", 1))
	ls, err := h.leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ls[0].Epoch != 1 {
		t.Errorf("lease %+v, want epoch 1", ls[0])
	}
}

// TestStaleOpenCheckpoint: a checkpoint whose open-bucket list is stale (it
// names an older bucket than the oldest non-final aggregate, far enough
// back that the whole bucket is listed) is corrected by the new owner
// without any event, and cleared once the recovered aggregate is final.
func TestStaleOpenCheckpoint(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "1", "AGGREGATION_WINDOWS": "1min"})
	ctx := testenv.Context(t)
	now := time.Now().Truncate(time.Minute).Add(10 * time.Second)
	clock := newFakeClock(now)
	start := now.Truncate(time.Minute)
	sh, err := setup(ctx, h.nats.Conn(t), h.cfg, testLogger(t, "s"), clock, "s")
	if err != nil {
		t.Fatal(err)
	}
	a := agg.NewAggregate("open", start.Unix())
	a.Add(event.Event{Service: "open", Time: start, LatencyMS: 5, Level: event.LevelInfo})
	a.LastSeq, a.Version = 0, 1
	if _, err := sh.buckets.agg[0].Put(ctx, agg.Key{Service: "open", Start: start.Unix()}.KVKey(), a.Encode(nil, h.windows[0])); err != nil {
		t.Fatal(err)
	}
	stale := strconv.FormatInt(start.Add(-24*time.Hour).Unix(), 10)
	putCkpt := func(v string) {
		t.Helper()
		if _, err := sh.coord.Put(ctx, ckptKey(0), []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	// First a window that is not configured (any more) besides the stale one.
	putCkpt(`{"seq":0,"open":{"1min":` + stale + `,"5min":` + stale + `}}`)
	owner := "w1"
	ckpt := func(want map[string]int64) func() error {
		return func() error {
			e, err := sh.coord.Get(ctx, ckptKey(0))
			if err != nil {
				return err
			}
			var v checkpointValue
			if err := json.Unmarshal(e.Value(), &v); err != nil {
				return err
			}
			if v.Owner != owner || len(v.Open) != len(want) || v.Open["1min"] != want["1min"] {
				return fmt.Errorf("checkpoint %s", e.Value())
			}
			return nil
		}
	}
	w1 := h.startWorker(owner, clock)
	testenv.Eventually(t, 20*time.Second, ckpt(map[string]int64{"1min": start.Unix()}))
	w1.stop(t)
	// Then only the stale bucket of the configured window.
	putCkpt(`{"seq":0,"open":{"1min":` + stale + `}}`)
	owner = "w2"
	h.startWorker(owner, clock)
	testenv.Eventually(t, 20*time.Second, ckpt(map[string]int64{"1min": start.Unix()}))
	clock.Advance(2 * time.Minute)
	got := h.waitAgg("1min", "open", start, isFinal(true))
	if got.Count != 1 || got.Version != 2 {
		t.Errorf("finalized aggregate: count %d version %d", got.Count, got.Version)
	}
	testenv.Eventually(t, 20*time.Second, ckpt(nil))
}

// TestClosedConnection drives a shard worker's NATS operations over a
// connection that is then closed: every one reports its error instead of
// pretending success, a failed flush keeps nothing, and a failed restart
// is counted for the retry log.
func TestClosedConnection(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "1", "AGGREGATION_WINDOWS": "1min"})
	ctx := testenv.Context(t)
	nc := h.nats.Conn(t)
	sh, err := setup(ctx, nc, h.cfg, testLogger(t, "c"), RealClock, "c")
	if err != nil {
		t.Fatal(err)
	}
	// A checkpoint written meanwhile by another owner: its open buckets
	// are kept even though this writer has none.
	if _, err := sh.coord.Put(ctx, ckptKey(0), []byte(`{"seq":10,"open":{"1min":60}}`)); err != nil {
		t.Fatal(err)
	}
	w := newShardWorker(sh, 0, nil)
	if err := w.writeCheckpoint(ctx, time.Now(), 5, nil); err != nil {
		t.Fatal(err)
	}
	if v, _, err := w.getCheckpoint(ctx); err != nil || v.Seq != 10 || v.Open["1min"] != 60 || v.Owner != "c" {
		t.Fatalf("merged checkpoint %+v, %v", v, err)
	}

	// A stream message to dead-letter, with an error that has no reason.
	in := nats.NewMsg(natsutil.EventSubject(0, "x"))
	in.Header.Set("X-Origin", "test")
	in.Data = []byte("payload")
	if _, err := h.js.PublishMsg(ctx, in); err != nil {
		t.Fatal(err)
	}
	cons, err := h.js.OrderedConsumer(ctx, natsutil.StreamEvents, jetstream.OrderedConsumerConfig{FilterSubjects: []string{natsutil.ShardFilter(0)}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.deadLetter(m, 1, errors.New("plain failure")); err != nil {
		t.Fatal(err)
	}
	dl, err := sh.stream.GetLastMsgForSubject(ctx, natsutil.DLQSubject("processor", event.ReasonInvalidJSON))
	if err != nil {
		t.Fatal(err)
	}
	if dl.Header.Get(natsutil.HdrDLQError) != "plain failure" || dl.Header.Get("X-Origin") != "test" {
		t.Errorf("dead letter headers %v", dl.Header)
	}

	// Something folded, not yet written.
	base := time.Now().Add(-time.Hour).Truncate(time.Minute)
	w.mu.Lock()
	err = w.fold(event.Event{Service: "x", Time: base, LatencyMS: 1, Level: event.LevelInfo}, 1)
	w.mu.Unlock()
	if err != nil || len(w.dirty) != 1 {
		t.Fatalf("fold: %v, %d dirty", err, len(w.dirty))
	}

	nc.Close()
	if err := w.deadLetter(m, 1, errors.New("x")); err == nil {
		t.Error("dead letter on a closed connection succeeded")
	}
	if err := w.writeCheckpoint(ctx, time.Now(), 20, nil); err == nil || lease.IsConflict(err) {
		t.Errorf("checkpoint on a closed connection: %v", err)
	}
	if _, _, err := w.getCheckpoint(ctx); err == nil {
		t.Error("checkpoint read on a closed connection succeeded")
	}
	if a, _, err := w.load(0, agg.Key{Service: "x", Start: base.Unix()}.KVKey()); err == nil {
		t.Errorf("aggregate read on a closed connection succeeded: %+v", a)
	}
	w.mu.Lock()
	err = w.fold(event.Event{Service: "x", Time: base.Add(time.Hour), LatencyMS: 1, Level: event.LevelInfo}, 2)
	w.mu.Unlock()
	if err == nil {
		t.Error("fold into a new bucket (listing it) on a closed connection succeeded")
	}
	// Lease acquisition that cannot read the lease takes nothing.
	mem := newMembership(sh, time.Second)
	mem.acquire(ctx, ctx, time.Now(), 1)
	if len(mem.held) != 0 || len(mem.workers) != 0 {
		t.Errorf("acquired %v on a closed connection", mem.heldShards())
	}
	w.mu.Lock()
	err = w.flushLocked()
	w.mu.Unlock()
	if err == nil || !strings.Contains(err.Error(), "aggregate write") {
		t.Errorf("flush on a closed connection: %v", err)
	}
	// The final flush of a handover that fails drops the memory.
	w.stopping = true
	w.flush()
	if len(w.entries) != 0 || len(w.dirty) != 0 {
		t.Errorf("failed final flush kept %d entries, %d dirty", len(w.entries), len(w.dirty))
	}
	// A restart that cannot read the checkpoint is counted, to retry.
	w.stopping, w.needReset = false, true
	w.flush()
	w.flush()
	if w.restartFailures != 2 || !w.needReset {
		t.Errorf("restart failures %d, needReset %v", w.restartFailures, w.needReset)
	}
	// Replay's swap steps report the outage too.
	if err := checkStopped(ctx, sh.coord, 1, time.Now()); err == nil {
		t.Error("lease check on a closed connection succeeded")
	}
	if keys, err := listKeys(ctx, sh.buckets.agg[0]); err == nil {
		t.Errorf("key listing on a closed connection succeeded: %v", keys)
	}
	if n, err := swap(ctx, sh.js, h.windows, sh.buckets, 0); err == nil || n != 0 {
		t.Errorf("swap on a closed connection: %d, %v", n, err)
	}
	// Without a coordination bucket (replay), the restart fails on the
	// open buckets' listing or on the shard head.
	rsh := *sh
	rsh.coord = nil
	rw := newShardWorker(&rsh, 0, nil)
	rw.ckptOpen = map[string]int64{"1min": base.Unix()}
	if err := rw.restartLocked(); err == nil {
		t.Error("restart listing open buckets on a closed connection succeeded")
	}
	rw = newShardWorker(&rsh, 0, nil)
	if err := rw.restartLocked(); err == nil {
		t.Error("restart reading the shard head on a closed connection succeeded")
	}
}

// replayHarness is a harness whose stream holds events of shard 0 only
// (of 2), with the live buckets provisioned.
func replayHarness(t *testing.T) (*harness, *shared) {
	h := newHarness(t, map[string]string{"SHARDS": "2", "AGGREGATION_WINDOWS": "1min"})
	sh, err := setup(testenv.Context(t), h.nats.Conn(t), h.cfg, testLogger(t, "r"), RealClock, "r")
	if err != nil {
		t.Fatal(err)
	}
	var svcs []string
	for i := 0; len(svcs) < 3; i++ {
		if s := fmt.Sprintf("r%d", i); event.Shard(s, 2) == 0 {
			svcs = append(svcs, s)
		}
	}
	base := time.Now().Add(-time.Hour).Truncate(time.Minute)
	var evs []testEvent
	for i := range 30 {
		evs = append(evs, ev(svcs[i%3], base.Add(time.Duration(i)*7*time.Second), float64(i)/4))
	}
	h.publish(evs...)
	return h, sh
}

// TestReplaySwapFromNothing: with no processor ever run (live buckets
// empty, one lease released, the other never taken, one shard without
// events), a swapping replay makes the live aggregates exact, checkpoints
// the shard with events at its end and only that one, and removes the
// fresh buckets.
func TestReplaySwapFromNothing(t *testing.T) {
	h, sh := replayHarness(t)
	ctx := testenv.Context(t)
	b, _ := json.Marshal(lease.Value{Owner: "", Epoch: 3})
	if _, err := sh.coord.Put(ctx, leaseKey(0), b); err != nil {
		t.Fatal(err)
	}
	res, err := Replay(ctx, h.cfg, h.nats.Conn(t), nil, ReplayOptions{Suffix: "s"})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.diff(ctx); err != nil {
		t.Fatal(err)
	}
	if res.Events != 30 || res.EndSeq[0] != 30 || res.EndSeq[1] != 0 || res.Swapped != res.Keys || res.Keys == 0 {
		t.Errorf("result %+v", res)
	}
	v, _, err := newShardWorker(sh, 0, nil).getCheckpoint(ctx)
	if err != nil || v.Seq != 30 || v.Owner != "replay" {
		t.Errorf("ckpt.0 %+v, %v", v, err)
	}
	if _, err := sh.coord.Get(ctx, ckptKey(1)); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("ckpt.1 written for a shard without events: %v", err)
	}
	if _, err := h.js.KeyValue(ctx, FreshBucket(h.windows[0], "s")); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Errorf("fresh bucket not removed: %v", err)
	}
}

// TestReplaySwapRecreatesMissingLiveBucket: a live bucket removed by an
// operator (nats kv rm, to rebuild it) is created again by a swapping
// replay, which then fills it exactly.
func TestReplaySwapRecreatesMissingLiveBucket(t *testing.T) {
	h, _ := replayHarness(t)
	ctx := testenv.Context(t)
	if err := h.js.DeleteKeyValue(ctx, natsutil.AggBucket(h.windows[0].Name)); err != nil {
		t.Fatal(err)
	}
	if _, err := Replay(ctx, h.cfg, h.nats.Conn(t), nil, ReplayOptions{Suffix: "m", Force: true}); err != nil {
		t.Fatal(err)
	}
	if err := h.diff(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestReplayErrors: no stream, a closed connection; and the default
// suffix of the fresh buckets.
func TestReplayErrors(t *testing.T) {
	h, _ := replayHarness(t)
	ctx := testenv.Context(t)
	empty := testenv.NATS(t)
	if _, err := Replay(ctx, h.cfg, empty.Conn(t), nil, ReplayOptions{IntoFresh: true}); err == nil || !strings.Contains(err.Error(), natsutil.StreamEvents) {
		t.Errorf("replay without a stream: %v", err)
	}
	nc := h.nats.Conn(t)
	nc.Close()
	if _, err := Replay(ctx, h.cfg, nc, nil, ReplayOptions{IntoFresh: true}); err == nil {
		t.Error("replay on a closed connection succeeded")
	}
	// Buckets that cannot be created (an operator's stream holds their
	// subjects): the coordination bucket, then the fresh bucket.
	if err := h.js.DeleteKeyValue(ctx, natsutil.ProcessorBucket); err != nil {
		t.Fatal(err)
	}
	for _, bucket := range []string{natsutil.ProcessorBucket, FreshBucket(h.windows[0], "b")} {
		if _, err := h.js.CreateStream(ctx, jetstream.StreamConfig{Name: "BLOCK", Subjects: []string{"$KV." + bucket + ".>"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := Replay(ctx, h.cfg, h.nats.Conn(t), nil, ReplayOptions{IntoFresh: true, Suffix: "b"}); err == nil || !strings.Contains(err.Error(), bucket) {
			t.Errorf("replay with bucket %s blocked: %v", bucket, err)
		}
		if err := h.js.DeleteStream(ctx, "BLOCK"); err != nil {
			t.Fatal(err)
		}
	}
	res, err := Replay(ctx, h.cfg, h.nats.Conn(t), nil, ReplayOptions{IntoFresh: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Buckets) != 1 || !strings.HasPrefix(res.Buckets[0], natsutil.AggBucket("1min")+"_replay_") {
		t.Errorf("fresh buckets %v", res.Buckets)
	}
	if _, err := h.js.KeyValue(ctx, res.Buckets[0]); err != nil {
		t.Errorf("fresh bucket %s: %v", res.Buckets[0], err)
	}
}

// TestReplayCancelledWhileWedged: a value in the fresh bucket that does not
// decode is not overwritten; the replay retries until it is cancelled and
// then returns the cancellation.
func TestReplayCancelledWhileWedged(t *testing.T) {
	h, _ := replayHarness(t)
	ctx := testenv.Context(t)
	var key string
	h.mu.Lock()
	for k := range h.expected {
		key = agg.Key{Service: k.Service, Start: k.Start}.KVKey()
		break
	}
	h.mu.Unlock()
	name := FreshBucket(h.windows[0], "w")
	kv, err := natsutil.EnsureKV(ctx, h.js, AggBucketConfig(h.cfg, h.windows[0], name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, key, []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	buf := &testenv.SyncBuffer{}
	log := slog.New(slog.NewTextHandler(buf, nil))
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := Replay(rctx, h.cfg, h.nats.Conn(t), log, ReplayOptions{IntoFresh: true, Suffix: "w"})
		done <- err
	}()
	testenv.Eventually(t, 20*time.Second, func() error {
		if n := strings.Count(buf.String(), "cannot load an aggregate"); n < 2 {
			return fmt.Errorf("%d load failures logged", n)
		}
		return nil
	})
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("replay returned %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("replay did not stop")
	}
	e, err := kv.Get(ctx, key)
	if err != nil || string(e.Value()) != "garbage" {
		t.Fatalf("unreadable value overwritten: %v", err)
	}
}

// TestUnreadableOpenAggregateBlocksRestart: a new owner must load the
// non-final aggregates its checkpoint lists as open; one that does not
// decode blocks the shard's (re)start — retried and logged, nothing
// counted — until an operator deletes it, then the shard starts and
// counts exactly.
func TestUnreadableOpenAggregateBlocksRestart(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "1", "AGGREGATION_WINDOWS": "1min"})
	ctx := testenv.Context(t)
	sh, err := setup(ctx, h.nats.Conn(t), h.cfg, testLogger(t, "s"), RealClock, "s")
	if err != nil {
		t.Fatal(err)
	}
	open := time.Now().Add(-time.Hour).Truncate(time.Minute)
	key := agg.Key{Service: "open", Start: open.Unix()}.KVKey()
	if _, err := sh.buckets.agg[0].Put(ctx, key, []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	if _, err := sh.coord.Put(ctx, ckptKey(0), []byte(`{"seq":0,"open":{"1min":`+strconv.FormatInt(open.Unix(), 10)+`}}`)); err != nil {
		t.Fatal(err)
	}
	h.publish(ev("later", open.Add(time.Minute), 1))
	w := h.runLogged("w", nil, nil)
	w.waitLog(t, 20*time.Second, "cannot (re)start the shard consumer", key)
	later, err := h.get(ctx, "1min", "later", open.Add(time.Minute))
	if !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("counted while the shard could not start: %+v, %v", later, err)
	}
	if err := sh.buckets.agg[0].Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	w.waitLog(t, 20*time.Second, "shard consumer restarted")
	h.waitExact(20 * time.Second)
	if err := w.stop(t); err != nil {
		t.Fatal(err)
	}
}

// TestWatermarksBounded: under a backlog that keeps growing, the finality
// watermarks kept in memory stay bounded, and once the backlog is consumed
// the shard is caught up to the newest sample.
func TestWatermarksBounded(t *testing.T) {
	cfg := testenv.Config(t, nil)
	w := &shardWorker{sh: &shared{cfg: cfg, unreadable: &unreadableSet{}}}
	t0 := time.Unix(1_800_000_000, 0)
	for i := range 5000 {
		w.coveredAt = t0.Add(time.Duration(i) * time.Millisecond)
		w.pending = uint64(i + 1)
		w.advanceWatermark(w.coveredAt)
		if len(w.marks) > 4096 {
			t.Fatalf("%d watermarks kept after %d samples", len(w.marks), i+1)
		}
	}
	if !w.caughtUpAt.IsZero() {
		t.Fatalf("caught up to %v with nothing consumed", w.caughtUpAt)
	}
	w.consumed, w.handled, w.pending = 5000, 5000, 1
	w.advanceWatermark(t0.Add(time.Hour))
	if want := t0.Add(4999 * time.Millisecond); !w.caughtUpAt.Equal(want) {
		t.Errorf("caught up to %v, want %v", w.caughtUpAt, want)
	}
}

// TestWatermarkOnInterleavedShard: a shard's consumer is filtered, so the
// stream sequences it sees jump over the other shards' messages while its
// pending count counts only its own. A sample of the head taken with a
// backlog must not be reached before that backlog is consumed (a bucket
// would become final with events still unfolded), and a shard whose
// backlog shrank under it (messages removed by the stream's limits before
// delivery) must still catch up once nothing is pending. The consumer
// callback is driven directly with interleaved sequences.
func TestWatermarkOnInterleavedShard(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "4", "AGGREGATION_WINDOWS": "1min"})
	t0 := time.Now().Truncate(time.Minute).Add(-10 * time.Minute)
	clock := newFakeClock(t0)
	w := h.bareWorker(clock, "i")
	data := ev("i", t0, 1).JSON()
	seq := uint64(0)
	deliver := func(pending uint64) {
		seq += 4 // every fourth message of the stream is this shard's
		clock.Advance(time.Millisecond)
		w.handle(1, fakeMsg{reply: fmt.Sprintf("$JS.ACK.%s.c.1.%d.1.%d.%d", natsutil.StreamEvents, seq, clock.Now().UnixNano(), pending), data: data})
		if w.consumed != seq {
			t.Fatalf("message %d not handled (consumed %d)", seq, w.consumed)
		}
	}
	step := func() time.Time {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.advanceWatermark(clock.Now())
		return w.caughtUpAt
	}

	deliver(99) // 99 more of this shard's messages in the stream
	sample := w.coveredAt
	if got := step(); !got.IsZero() {
		t.Fatalf("caught up to %v with 99 messages pending", got)
	}
	// 74 of the 99 consumed: the stream sequence is far past seq+pending
	// of the sample, yet 25 messages published before it are unfolded.
	for p := uint64(98); p >= 25; p-- {
		deliver(p)
	}
	if w.consumed < 4+99 {
		t.Fatalf("test setup: consumed %d should be past the sample's sequence + pending", w.consumed)
	}
	if got := step(); !got.IsZero() {
		t.Fatalf("caught up to %v with 25 messages of the sample's backlog unconsumed", got)
	}
	for p := uint64(24); p >= 1; p-- {
		deliver(p)
	}
	if got := step(); !got.IsZero() {
		t.Fatalf("caught up to %v with one message of the sample's backlog unconsumed", got)
	}
	deliver(0)
	if got := step(); got.Before(sample) {
		t.Fatalf("backlog consumed, caught up only to %v, want ≥ %v", got, sample)
	}

	// A new backlog of 50 of which only 10 are ever delivered (the rest
	// removed from the stream first): the last one reports nothing pending.
	deliver(50)
	sample = w.coveredAt
	step()
	for p := uint64(9); p >= 1; p-- {
		deliver(p)
	}
	if got := step(); got.After(sample) || got.Equal(sample) {
		t.Fatalf("caught up to %v before the last message, want < %v", got, sample)
	}
	deliver(0)
	if got := step(); got.Before(sample) {
		t.Fatalf("nothing pending, caught up only to %v, want ≥ %v", got, sample)
	}

	// A message the client held for a while: its pending count covers what
	// was published until it entered the stream, its age before now.
	seq += 4
	w.handle(1, fakeMsg{reply: fmt.Sprintf("$JS.ACK.%s.c.1.%d.1.%d.0", natsutil.StreamEvents, seq, time.Now().Add(-5*time.Second).UnixNano()), data: data})
	if d := clock.Now().Sub(w.coveredAt); d < 5*time.Second || d > 6*time.Second {
		t.Fatalf("a 5-s-old message covers until %v before it was handled, want its age", d)
	}
}

// TestWatermarkAfterRestart: a restart's sample (the shard's last stream
// sequence) is reached only by consuming up to it or by a message that
// reports nothing pending — not by a message whose metadata did not
// parse, which reports nothing at all. And an idle shard whose backlog was
// removed from the stream before delivery re-reads its head and catches
// up, while one with a message still ahead of it does not.
func TestWatermarkAfterRestart(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "4", "AGGREGATION_WINDOWS": "1min"})
	ctx := testenv.Context(t)
	clock := newFakeClock(time.Now().Truncate(time.Minute).Add(-10 * time.Minute))
	w := h.bareWorker(clock, "r")
	restartAt := clock.Now()
	w.marks = []watermark{{t: restartAt, seq: 40}} // as restartLocked leaves them
	// step is one flush, as the worker's ticker runs it.
	step := func() time.Time {
		w.mu.Lock()
		defer w.mu.Unlock()
		if err := w.flushLocked(); err != nil {
			t.Fatal(err)
		}
		return w.caughtUpAt
	}
	clock.Advance(time.Second)
	w.handle(1, fakeMsg{reply: "", data: ev("r", clock.Now(), 1).JSON()})
	w.msgsSince = 1 // not idle: no head re-read
	if got := step(); !got.IsZero() {
		t.Fatalf("an unparsable message after a restart made the shard caught up to %v", got)
	}

	// Idle, the restart's backlog (up to sequence 40) gone from the
	// stream, but one message of the shard ahead of what was consumed:
	// still behind.
	js := h.nats.JetStream(t)
	ack, err := js.Publish(ctx, natsutil.EventSubject(0, "r"), ev("r", clock.Now(), 1).JSON())
	if err != nil {
		t.Fatal(err)
	}
	w.msgsSince = 0
	if got := step(); !got.IsZero() {
		t.Fatalf("caught up to %v with message %d of the shard unconsumed", got, ack.Sequence)
	}
	// That message removed too: nothing of the shard lies ahead, so the
	// sample is reached.
	st, err := js.Stream(ctx, natsutil.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(ctx, ack.Sequence); err != nil {
		t.Fatal(err)
	}
	if got := step(); got.Before(restartAt) {
		t.Fatalf("backlog gone, caught up only to %v, want ≥ %v", got, restartAt)
	}
	if len(w.marks) != 0 || w.pending != 0 {
		t.Fatalf("samples %v, pending %d left", w.marks, w.pending)
	}
}

// TestOutOfOrderDeliveryRestarts: a message older than the last one
// handled (the ordered consumer's reset racing with the consumer it
// replaced) is not skipped as a duplicate — its event would be lost, since
// last_seq would skip it — but makes the shard re-consume from its
// checkpoint. The same message twice is only a duplicate.
func TestOutOfOrderDeliveryRestarts(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "1", "AGGREGATION_WINDOWS": "1min"})
	w := h.bareWorker(RealClock, "o")
	data := ev("o", time.Now().Add(-time.Minute), 1).JSON()
	deliver := func(seq uint64) {
		w.handle(1, fakeMsg{reply: fmt.Sprintf("$JS.ACK.%s.c.1.%d.1.%d.0", natsutil.StreamEvents, seq, time.Now().UnixNano()), data: data})
	}
	deliver(7)
	deliver(7)
	if w.folded != 1 || w.needReset {
		t.Fatalf("a duplicate: folded %d, reset %v", w.folded, w.needReset)
	}
	deliver(5)
	if w.folded != 1 || !w.needReset {
		t.Fatalf("out of order: folded %d, reset %v; want 1 and a reset", w.folded, w.needReset)
	}
}

// TestUnreadableAggregateVisibleAndReplayed: an aggregate that already
// holds counted events is corrupted in KV. Its shard stalls — visibly: the
// processor's health check names the key and the gauge counts it — and
// the documented way out (docs/RUNBOOK.md, "Unreadable aggregate": stop
// the processors, `stacklens replay --from-time` before the key's bucket,
// start them) makes every aggregate exact again, the events counted
// before the corruption included (deleting the key would lose them).
func TestUnreadableAggregateVisibleAndReplayed(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "1", "AGGREGATION_WINDOWS": "1min"})
	ctx := testenv.Context(t)
	b1 := time.Now().Add(-time.Hour).Truncate(time.Minute)
	key := agg.Key{Service: "a", Start: b1.Unix()}.KVKey()
	health := telemetry.NewHealth()
	start := func() (context.CancelFunc, chan error) {
		runCtx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- Run(runCtx, Deps{Config: h.cfg, Log: testLogger(t, "p"), Health: health, Options: Options{Clock: RealClock}})
		}()
		return cancel, done
	}
	stop := func(cancel context.CancelFunc, done chan error) {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("processor did not stop")
		}
	}
	cancel, done := start()
	h.publish(ev("a", b1, 1), ev("a", b1.Add(time.Second), 2), ev("z", b1, 5))
	h.waitExact(20 * time.Second)

	kv, err := h.js.KeyValue(ctx, natsutil.AggBucket("1min"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, key, []byte(`{"broken"`)); err != nil {
		t.Fatal(err)
	}
	h.publish(ev("a", b1.Add(2*time.Second), 3), ev("z", b1, 6))
	testenv.Eventually(t, 30*time.Second, func() error {
		st, ok := health.Snapshot(ctx)
		if ok {
			return errors.New("processor still healthy")
		}
		if s := st[HealthName]; !strings.Contains(s.Message, key) {
			return fmt.Errorf("health does not name %s: %+v", key, st)
		}
		return nil
	})
	if n := metricValue(t, "stacklens_processor_unreadable_aggregates"); n != 1 {
		t.Fatalf("stacklens_processor_unreadable_aggregates %v, want 1", n)
	}
	stop(cancel, done)

	// The way out: replay from before the key's bucket (less
	// MAX_FUTURE_SKEW) with the processors stopped, then start them.
	if _, err := Replay(ctx, h.cfg, h.nats.Conn(t), testLogger(t, "r"), ReplayOptions{
		FromTime: b1.Add(-h.cfg.Pipeline.MaxFutureSkew - time.Minute), Suffix: "fix",
	}); err != nil {
		t.Fatal(err)
	}
	h.waitExact(30 * time.Second)
	// The shard counts again, into the repaired key too.
	cancel, done = start()
	defer stop(cancel, done)
	h.publish(ev("a", b1.Add(3*time.Second), 4))
	h.waitExact(30 * time.Second)
	testenv.Eventually(t, 20*time.Second, func() error {
		st, ok := health.Snapshot(ctx)
		if _, reg := st[HealthName]; !ok || !reg {
			return fmt.Errorf("not healthy after the repair: %+v", st)
		}
		return nil
	})
	if n := metricValue(t, "stacklens_processor_unreadable_aggregates"); n != 0 {
		t.Fatalf("stacklens_processor_unreadable_aggregates %v after the repair", n)
	}
}

// metricValue reads one unlabelled series of the process's metrics.
func metricValue(t *testing.T, name string) float64 {
	t.Helper()
	var buf bytes.Buffer
	metrics.WritePrometheus(&buf, false)
	for _, line := range strings.Split(buf.String(), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("%s not exported", name)
	return 0
}
