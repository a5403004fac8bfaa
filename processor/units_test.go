package processor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/agg"
	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/natsutil"
	"github.com/stacklens/stacklens/internal/telemetry"
)

func TestMemberIDAndScore(t *testing.T) {
	cfg := testenv.Config(t, map[string]string{"PROCESSOR_ID": "host.a/1 x"})
	if id := memberID(cfg); id != "host-a-1-x" {
		t.Errorf("memberID = %q", id)
	}
	cfg = testenv.Config(t, nil)
	if id := memberID(cfg); id == "" || strings.ContainsAny(id, ".@: ") {
		t.Errorf("default memberID = %q", id)
	}
	if score("a", 1) == score("a", 2) && score("a", 2) == score("a", 3) {
		t.Error("score does not spread")
	}
}

func TestRunErrors(t *testing.T) {
	if err := Run(context.Background(), Deps{}); err == nil {
		t.Error("Run without configuration succeeded")
	}
	// A cancelled context while connecting returns promptly.
	cfg := testenv.Config(t, map[string]string{"NATS_URL": "nats://127.0.0.1:1"})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := Run(ctx, Deps{Config: cfg}); err == nil {
		t.Error("Run without a server succeeded")
	}
}

// TestHealthAndInvalidInStream runs a member with a health registry and
// feeds its stream a message that is not a valid event (the bridge never
// forwards one, but the stream is the record): it is dead-lettered by the
// processor with its reason, and counting goes on.
func TestHealthAndInvalidInStream(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "1"})
	ctx := testenv.Context(t)
	health := telemetry.NewHealth()
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(runCtx, Deps{Config: h.cfg, Log: testLogger(t, "h"), Health: health, Options: Options{Clock: RealClock}})
	}()
	js := h.nats.JetStream(t)
	if _, err := js.Publish(ctx, natsutil.EventSubject(0, "x"), []byte(`{"not":"an event"`)); err != nil {
		t.Fatal(err)
	}
	h.publish(ev("ok", time.Now().Add(-time.Minute), 1))
	h.waitExact(20 * time.Second)
	testenv.Eventually(t, 20*time.Second, func() error {
		st, err := js.Stream(ctx, natsutil.StreamEvents)
		if err != nil {
			return err
		}
		_, err = st.GetLastMsgForSubject(ctx, natsutil.DLQSubject("processor", event.ReasonInvalidJSON))
		return err
	})
	if _, ok := health.Snapshot(ctx); !ok {
		t.Error("processor not healthy")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st, _ := health.Snapshot(ctx); len(st) != 0 {
		t.Errorf("health check not removed: %v", st)
	}
}

// TestReplayPartial replays from a sequence and from a time: buckets that
// may hold events from before the start keep their live values, later ones
// are rebuilt and equal the live ones.
func TestReplayPartial(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "2", "AGGREGATION_WINDOWS": "1min"})
	ctx := testenv.Context(t)
	r := rand.New(rand.NewPCG(19, 20))
	base := time.Now().Add(-30 * time.Minute).Truncate(time.Minute)
	h.publish(genEvents(r, 500, 5, base, 10*time.Minute)...)
	w := h.startWorker("w", nil)
	h.waitExact(20 * time.Second)
	w.stop(t)
	live, err := h.readAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []ReplayOptions{{FromSeq: 100, Suffix: "p1"}, {FromTime: time.Now().Add(-time.Hour), Suffix: "p2", Keep: true}} {
		res, err := Replay(ctx, h.cfg, h.nats.Conn(t), nil, o)
		if err != nil {
			t.Fatal(err)
		}
		after, err := h.readAll(ctx)
		if err != nil {
			t.Fatal(err)
		}
		compareAggs(t, live, after)
		if o.FromSeq > 0 && res.Events != 401 {
			t.Errorf("from seq 100: %d events, want 401", res.Events)
		}
	}
	if _, err := h.js.KeyValue(ctx, FreshBucket(h.windows[0], "p2")); err != nil {
		t.Errorf("--keep: %v", err)
	}
	if _, err := Replay(ctx, h.cfg, h.nats.Conn(t), nil, ReplayOptions{FromSeq: 1 << 40, Suffix: "p3"}); err == nil {
		t.Error("replay from a sequence beyond the stream succeeded")
	}
}

// TestMembersCounted: a live foreign heartbeat halves this member's target;
// a long-dead one is garbage-collected.
func TestMembersCounted(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "2", "LEASE_TTL": "1s"})
	ctx := testenv.Context(t)
	kv, err := natsutil.EnsureKV(ctx, h.js, CoordBucketConfig(h.cfg))
	if err != nil {
		t.Fatal(err)
	}
	put := func(id string, exp time.Time) {
		b, _ := jsonMarshal(memberValue{ID: id, Expires: exp})
		if _, err := kv.Put(ctx, memberKey(id), b); err != nil {
			t.Fatal(err)
		}
	}
	put("ghost", time.Now().Add(-time.Hour))
	put("other", time.Now().Add(time.Hour))
	put("garbage", time.Time{})
	if _, err := kv.Put(ctx, memberKey("bad"), []byte("not json")); err != nil {
		t.Fatal(err)
	}
	w := h.startWorker("me", nil)
	h.waitOwners(20*time.Second, func(by map[string]int) error {
		if by["me"] != 1 {
			return errors.New("want me to own 1 of 2 shards")
		}
		return nil
	})
	testenv.Eventually(t, 20*time.Second, func() error {
		if _, err := kv.Get(ctx, memberKey("ghost")); !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("ghost heartbeat still there: %v", err)
		}
		return nil
	})
	// The other member "leaves": its heartbeat expires, this one takes all.
	put("other", time.Now().Add(-time.Second))
	h.waitOwners(20*time.Second, ownsAll("me", 2))
	w.stop(t)
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

// TestCheckpointConflict: a checkpoint written by another owner meanwhile
// is merged — the larger sequence and the older open buckets win.
func TestCheckpointConflict(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "1"})
	ctx := testenv.Context(t)
	sh, err := setup(ctx, h.nats.Conn(t), h.cfg, testLogger(t, "c"), RealClock, "c")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sh.coord.Put(ctx, ckptKey(0), []byte(`{"seq":100,"open":{"1min":60}}`)); err != nil {
		t.Fatal(err)
	}
	w := newShardWorker(sh, 0, nil)
	if err := w.writeCheckpoint(ctx, time.Now(), 50, map[string]int64{"1min": 120, "5min": 300}); err != nil {
		t.Fatal(err)
	}
	v, _, err := w.getCheckpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v.Seq != 100 || v.Open["1min"] != 60 || v.Open["5min"] != 300 {
		t.Errorf("merged checkpoint %+v", v)
	}
	if err := w.writeCheckpoint(ctx, time.Now(), 150, nil); err != nil {
		t.Fatal(err)
	}
	if v, _, _ = w.getCheckpoint(ctx); v.Seq != 150 {
		t.Errorf("checkpoint %+v", v)
	}
	if _, err := sh.coord.Put(ctx, ckptKey(0), []byte(`garbage`)); err != nil {
		t.Fatal(err)
	}
	if err := w.readCheckpoint(ctx); err == nil {
		t.Error("corrupt checkpoint accepted")
	}
	if !w.ownsService("anything-goes-to-shard-0") || !w.ownsService("_overflow-0") || w.ownsService("_overflow-1") {
		t.Error("ownsService")
	}
}

// TestShardsChanged refuses to run against a stream made with another
// SHARDS value.
func TestShardsChanged(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "4"})
	cfg := testenv.Config(t, map[string]string{"NATS_URL": h.nats.URL, "SHARDS": "8"})
	err := Run(testenv.Context(t), Deps{Config: cfg})
	if !errors.Is(err, natsutil.ErrShardsChanged) {
		t.Fatalf("Run: %v", err)
	}
}

// TestAggBucketTTLByTier: a window's KV bucket keeps its aggregates as long
// as its table keeps its rows — RETENTION_WARM days under 5 minutes,
// RETENTION_COLD days otherwise — for any configured window.
func TestAggBucketTTLByTier(t *testing.T) {
	cfg := testenv.Config(t, map[string]string{"AGGREGATION_WINDOWS": "1min,2min,5min,15min,1day", "RETENTION_WARM": "3", "RETENTION_COLD": "11"})
	want := map[string]int{"1min": 3, "2min": 3, "5min": 11, "15min": 11, "1day": 11}
	for _, w := range cfg.Pipeline.WindowList {
		kv := AggBucketConfig(cfg, w, natsutil.AggBucket(w.Name))
		if kv.TTL != time.Duration(want[w.Name])*24*time.Hour || kv.Bucket != "stacklens_agg_"+w.Name {
			t.Errorf("%s: bucket %s TTL %v, want %d days", w.Name, kv.Bucket, kv.TTL, want[w.Name])
		}
	}
}

// fakeMsg is a stream message as the consumer callback sees it, with a
// reply subject of our choosing.
type fakeMsg struct {
	jetstream.Msg
	reply string
	data  []byte
}

func (m fakeMsg) Reply() string   { return m.reply }
func (m fakeMsg) Subject() string { return natsutil.EventSubject(0, "x") }
func (m fakeMsg) Data() []byte    { return m.data }

// TestUnparsableMetadataCounted: a message whose JetStream metadata (the
// ack reply) does not parse cannot be placed in the stream; it is counted
// and logged, and the shard goes on folding the messages after it. The
// ordered consumer's feed is not ours to forge, so the consumer callback
// is driven directly.
func TestUnparsableMetadataCounted(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "1", "AGGREGATION_WINDOWS": "1min"})
	ctx := testenv.Context(t)
	buf := &testenv.SyncBuffer{}
	sh, err := setup(ctx, h.nats.Conn(t), h.cfg, slog.New(slog.NewTextHandler(buf, nil)), RealClock, "u")
	if err != nil {
		t.Fatal(err)
	}
	w := newShardWorker(sh, 0, nil)
	defer w.stopF()
	w.gen = 1
	before := unparsableMeta.Get()
	e := ev("u", time.Now().Add(-time.Minute), 1)
	for _, reply := range []string{"", "_INBOX.x", "$JS.ACK.S.C.1.notanumber.1.1.0"} {
		w.handle(1, fakeMsg{reply: reply, data: e.JSON()})
	}
	if n := unparsableMeta.Get() - before; n != 3 {
		t.Fatalf("stacklens_processor_unparsable_metadata_total rose by %d, want 3", n)
	}
	if c := strings.Count(buf.String(), "without parsable JetStream metadata"); c != 1 {
		t.Fatalf("logged %d times, want once:\n%s", c, buf.String())
	}
	if w.consumed != 0 || w.folded != 0 {
		t.Fatalf("skipped message moved the shard: consumed %d folded %d", w.consumed, w.folded)
	}
	// The next well-formed message folds as usual.
	ts := time.Now().UnixNano()
	w.handle(1, fakeMsg{reply: fmt.Sprintf("$JS.ACK.%s.c.1.7.1.%d.0", natsutil.StreamEvents, ts), data: e.JSON()})
	if w.consumed != 7 || w.folded != 1 {
		t.Fatalf("well-formed message after the skipped ones: consumed %d folded %d", w.consumed, w.folded)
	}
	if unparsableMeta.Get()-before != 3 {
		t.Fatal("a well-formed message counted as unparsable")
	}
}

// TestUnreadableSet: failures are listed sorted, cleared by a good read,
// and forgotten when their shard leaves this process.
func TestUnreadableSet(t *testing.T) {
	u := &unreadableSet{}
	u.set(1, "b", "y.1", errors.New("bad"))
	u.set(1, "b", "x.1", errors.New("bad"))
	u.set(2, "b", "z.1", errors.New("bad"))
	if got := strings.Join(u.keys(), ","); got != "b x.1,b y.1,b z.1" {
		t.Fatalf("keys %s", got)
	}
	u.set(1, "b", "x.1", nil)
	u.dropShard(2)
	if got := strings.Join(u.keys(), ","); got != "b y.1" {
		t.Fatalf("keys %s", got)
	}
}

// A flush hands its deltas and its encode buffer to the next one
// (docs/PERFORMANCE.md), and the values written stay exact: two keys per
// flush in one buffer, three flushes.
func TestFlushReusesDeltasAndBuffer(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "1", "AGGREGATION_WINDOWS": "1min"})
	ctx := testenv.Context(t)
	w := h.bareWorker(RealClock, "c")
	base := time.Now().Add(-time.Hour).Truncate(time.Minute)
	var seq uint64
	var sketch any
	var buf *byte
	for round := range 3 {
		w.mu.Lock()
		for _, svc := range []string{"x", "y"} {
			seq++
			if err := w.fold(event.Event{Service: svc, Time: base, LatencyMS: float64(seq), Level: event.LevelInfo}, seq); err != nil {
				t.Fatal(err)
			}
		}
		if round > 0 && w.dirty[0].delta.Sketch != sketch && w.dirty[1].delta.Sketch != sketch {
			t.Errorf("round %d: new deltas, want the flushed ones reused", round)
		}
		err := w.flushLocked()
		w.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		if len(w.spare) != 2 || cap(w.encBuf) == 0 {
			t.Fatalf("round %d: %d spare deltas, encode buffer cap %d", round, len(w.spare), cap(w.encBuf))
		}
		if round > 0 && &w.encBuf[:1][0] != buf {
			t.Errorf("round %d: a new encode buffer", round)
		}
		sketch, buf = w.spare[0].Sketch, &w.encBuf[:1][0]
	}
	for i, svc := range []string{"x", "y"} {
		e, err := w.sh.buckets.agg[0].Get(ctx, agg.Key{Service: svc, Start: base.Unix()}.KVKey())
		if err != nil {
			t.Fatal(err)
		}
		a, err := agg.Decode(e.Value())
		if err != nil {
			t.Fatal(err)
		}
		// Latencies 1..6, x the odd ones, y the even ones.
		if want := float64(9 + 3*i); a.Service != svc || a.Count != 3 || a.LatencySum != want || a.LastSeq != uint64(5+i) || a.Version != 3 {
			t.Errorf("%s: %+v, want count 3, latency sum %v", svc, a, want)
		}
	}
}
