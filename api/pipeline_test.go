package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/natsutil"
)

// TestHealthPipelineLagAndDeadLetters builds a pipeline's JetStream state
// by hand on an embedded NATS — two shards (one consumed with a backlog of
// 3, one not consumed at all), a projections durable on the events and one
// on a window's KV stream, dead letters of two reasons — and checks what
// /health reports: lag per stage, dead letters by reason, the last minute
// from the sample ring, and that /health reads the sample (no NATS round
// trip per request; a failed sample keeps the numbers, marked unavailable).
func TestHealthPipelineLagAndDeadLetters(t *testing.T) {
	dsn, db, now := newDB(t)
	ns := testenv.NATS(t)
	nc := natsConnect(t, ns.URL)
	ctx := context.Background()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	events, err := natsutil.EnsureEventsStream(ctx, js, config.NATS{Shards: 2, Replicas: 1, EventsMaxAge: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	pub := func(subj string) uint64 {
		t.Helper()
		a, err := js.Publish(ctx, subj, []byte(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		return a.Sequence
	}
	var shard0 []uint64
	for range 5 {
		shard0 = append(shard0, pub(natsutil.EventSubject(0, "checkout")))
	}
	for range 2 {
		pub(natsutil.EventSubject(1, "search"))
	}
	for range 2 {
		pub(natsutil.DLQSubject("bridge", "missing_field"))
	}
	pub(natsutil.DLQSubject("processor", "too_late"))

	// The processor of shard 0 has consumed two events (an ephemeral
	// consumer, like its ordered one) and checkpointed the first.
	c0, err := events.CreateConsumer(ctx, jetstream.ConsumerConfig{FilterSubject: natsutil.ShardFilter(0), AckPolicy: jetstream.AckNonePolicy})
	if err != nil {
		t.Fatal(err)
	}
	fetch(t, c0, 2, false)
	kv, err := natsutil.EnsureKV(ctx, js, jetstream.KeyValueConfig{Bucket: natsutil.ProcessorBucket})
	if err != nil {
		t.Fatal(err)
	}
	ckptAt := time.Now().Add(-3 * time.Second).UTC()
	if _, err := kv.Put(ctx, "ckpt.0", fmt.Appendf(nil, `{"seq":%d,"owner":"proc-a","updated":%q}`, shard0[0], ckptAt.Format(time.RFC3339Nano))); err != nil {
		t.Fatal(err)
	}
	// Projections: the events durable acknowledged 3 of 7 events; the
	// 1min durable has not read its 2 KV updates.
	pe, err := events.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "stacklens_projections_events", FilterSubject: natsutil.EventsPrefix + ">", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	fetch(t, pe, 3, true)
	agg, err := natsutil.EnsureKV(ctx, js, jetstream.KeyValueConfig{Bucket: natsutil.AggBucket("1min")})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"checkout.1", "search.1"} {
		if _, err := agg.Put(ctx, k, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.CreateConsumer(ctx, "KV_"+natsutil.AggBucket("1min"), jetstream.ConsumerConfig{Durable: "stacklens_projections_1min", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}

	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	probe, err := NewPipelineProbe(nc, PipelineProbeOptions{Windows: []string{"1min", "5min"}, Now: func() time.Time { return time.Unix(0, clock.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(testConfig(dsn), Deps{NATS: nc, Pipeline: probe})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.closePools)
	f := &fixture{t: t, dsn: dsn, db: db, srv: srv, now: now}
	health := func() PipelineStatus {
		t.Helper()
		var h HealthResponse
		if err := json.Unmarshal(f.mustGet("/health"), &h); err != nil || h.Pipeline == nil {
			t.Fatalf("health: %v %+v", err, h)
		}
		return *h.Pipeline
	}
	if p := health(); p.Status != "unavailable" || p.Error != "not sampled yet" {
		t.Fatalf("before the first sample: %+v", p)
	}
	if err := probe.Sample(ctx); err != nil {
		t.Fatal(err)
	}
	p := health()
	if p.Status != "ok" || p.Processor == nil || p.DeadLetters == nil {
		t.Fatalf("pipeline %+v", p)
	}
	pr := p.Processor
	if pr.Shards != 2 || pr.Unconsumed != 1 || pr.Pending != 3 || len(pr.ShardLags) != 2 {
		t.Fatalf("processor %+v", pr)
	}
	s0, s1 := pr.ShardLags[0], pr.ShardLags[1]
	if !s0.Consumed || s0.Pending == nil || *s0.Pending != 3 || s0.LagSeconds <= 0 || s0.CheckpointSeq != shard0[0] ||
		s0.Owner != "proc-a" || s0.CheckpointAge == nil || *s0.CheckpointAge < 2.5 {
		t.Errorf("shard 0 %+v", s0)
	}
	if s1.Consumed || s1.Pending != nil || s1.LagSeconds <= 0 || s1.CheckpointSeq != 0 {
		t.Errorf("shard 1 %+v", s1)
	}
	if pr.MaxLagSeconds < s0.LagSeconds || pr.MaxLagSeconds < s1.LagSeconds {
		t.Errorf("max lag %v", pr.MaxLagSeconds)
	}
	want := []ConsumerLag{
		{Consumer: "stacklens_projections_1min", Stream: "KV_stacklens_agg_1min", Pending: 2},
		{Consumer: "stacklens_projections_events", Stream: natsutil.StreamEvents, Pending: 4},
	}
	if len(p.Projections) != 2 {
		t.Fatalf("projections %+v", p.Projections)
	}
	for i, w := range want {
		g := p.Projections[i]
		if g.Consumer != w.Consumer || g.Stream != w.Stream || g.Pending != w.Pending || g.AckPending != 0 || g.LagSeconds <= 0 {
			t.Errorf("projection %+v, want %+v and a lag", g, w)
		}
	}
	dl := p.DeadLetters
	if dl.Total != 3 || dl.LastMinute != 0 || len(dl.Reasons) != 2 ||
		dl.Reasons[0] != (DeadLetterReason{Stage: "bridge", Reason: "missing_field", Total: 2}) ||
		dl.Reasons[1] != (DeadLetterReason{Stage: "processor", Reason: "too_late", Total: 1}) {
		t.Fatalf("dead letters %+v", dl)
	}

	// The last minute is the difference to the sample about a minute old.
	pub(natsutil.DLQSubject("bridge", "missing_field"))
	pub(natsutil.DLQSubject("bridge", "missing_field"))
	clock.Add(int64(30 * time.Second))
	if err := probe.Sample(ctx); err != nil {
		t.Fatal(err)
	}
	dl = health().DeadLetters
	if dl.Total != 5 || dl.LastMinute != 2 || dl.LastMinuteSeconds != 30 || dl.Reasons[0].LastMinute != 2 || dl.Reasons[1].LastMinute != 0 {
		t.Fatalf("after 30 s: %+v", dl)
	}
	pub(natsutil.DLQSubject("processor", "too_late"))
	clock.Add(int64(60 * time.Second))
	if err := probe.Sample(ctx); err != nil {
		t.Fatal(err)
	}
	dl = health().DeadLetters
	if dl.Total != 6 || dl.LastMinute != 1 || dl.LastMinuteSeconds != 60 || dl.Reasons[0].LastMinute != 0 || dl.Reasons[1].LastMinute != 1 {
		t.Fatalf("after 90 s: %+v", dl)
	}

	// The full shape, for clients (testdata/golden/health_pipeline.json),
	// as OpenAPI declares it (a shard nobody consumes has pending null).
	golden(t, "health_pipeline", f.getJSON("/health", nil, 200))
	var doc map[string]any
	_ = json.Unmarshal(f.mustGet("/openapi.json"), &doc)
	v := &validator{doc: doc}
	var val any
	_ = json.Unmarshal(f.mustGet("/health"), &val)
	if err := v.validate(v.responseSchema("GET", "/health", 200), val, "GET /health"); err != nil {
		t.Errorf("/health with a pipeline sample does not match OpenAPI: %v", err)
	}

	// /health reads the sample: requests cause no NATS traffic.
	before := nc.Stats().OutMsgs
	for range 20 {
		health()
	}
	if after := nc.Stats().OutMsgs; after != before {
		t.Errorf("20 /health requests sent %d NATS messages", after-before)
	}

	// A failed sample keeps the last numbers, marked unavailable.
	nc.Close()
	if err := probe.Sample(ctx); err == nil {
		t.Fatal("sample on a closed connection succeeded")
	}
	p = health()
	if p.Status != "unavailable" || p.Error == "" || p.DeadLetters == nil || p.DeadLetters.Total != 6 {
		t.Fatalf("after a failed sample %+v", p)
	}
}

func fetch(t *testing.T, c jetstream.Consumer, n int, ack bool) {
	t.Helper()
	b, err := c.FetchNoWait(n)
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for m := range b.Messages() {
		got++
		if ack {
			if err := m.DoubleAck(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got != n {
		t.Fatalf("fetched %d messages, want %d (%v)", got, n, b.Error())
	}
}

// TestPipelineStreamNearByteBound: with EVENTS_MAX_BYTES set, the probe
// reports each stream's bytes against its bound, turns "warning" from
// 80 % — before DiscardOld drops the oldest, possibly unconsumed, events —
// and exports stacklens_stream_bytes_used_ratio for the alert rule.
func TestPipelineStreamNearByteBound(t *testing.T) {
	ns := testenv.NATS(t)
	nc := natsConnect(t, ns.URL)
	ctx := testenv.Context(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	const bound = 64 << 10
	if _, err := natsutil.EnsureEventsStream(ctx, js, config.NATS{Shards: 2, Replicas: 1, EventsMaxAge: time.Hour,
		EventsMaxBytes: bound, Compression: "none"}); err != nil {
		t.Fatal(err)
	}
	probe, err := NewPipelineProbe(nc, PipelineProbeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	usage := func() (string, StreamUsage, StreamUsage) {
		t.Helper()
		if err := probe.Sample(ctx); err != nil {
			t.Fatal(err)
		}
		p := probe.PipelineStatus()
		if len(p.Streams) != 2 || p.Streams[0].Stream != natsutil.StreamEvents || p.Streams[1].Stream != natsutil.StreamDLQ {
			t.Fatalf("streams %+v", p.Streams)
		}
		return p.Status, p.Streams[0], p.Streams[1]
	}
	payload := make([]byte, 1024)
	for range 10 {
		if _, err := js.Publish(ctx, natsutil.EventSubject(0, "checkout"), payload); err != nil {
			t.Fatal(err)
		}
	}
	status, ev, dlq := usage()
	if status != "ok" || ev.Status != "ok" || ev.MaxBytes != bound || ev.Messages != 10 || ev.UsedRatio == nil ||
		*ev.UsedRatio != float64(ev.Bytes)/bound || *ev.UsedRatio >= 0.8 {
		t.Fatalf("below the bound: %s %+v", status, ev)
	}
	if dlq.MaxBytes != -1 || dlq.UsedRatio != nil || dlq.Status != "ok" {
		t.Errorf("unbounded DLQ %+v", dlq)
	}
	for range 45 {
		if _, err := js.Publish(ctx, natsutil.EventSubject(1, "search"), payload); err != nil {
			t.Fatal(err)
		}
	}
	status, ev, _ = usage()
	if status != "warning" || ev.Status != "warning" || ev.UsedRatio == nil || *ev.UsedRatio < 0.8 {
		t.Fatalf("at %d of %d bytes: %s %+v", ev.Bytes, bound, status, ev)
	}
	var prom bytes.Buffer
	metrics.WritePrometheus(&prom, false)
	want := fmt.Sprintf("stacklens_stream_bytes_used_ratio{stream=%q} %g", natsutil.StreamEvents, *ev.UsedRatio)
	if !strings.Contains(prom.String(), want) {
		t.Errorf("metrics lack %q", want)
	}
	if strings.Contains(prom.String(), `stacklens_stream_bytes_used_ratio{stream="`+natsutil.StreamDLQ) {
		t.Error("a ratio for the unbounded DLQ")
	}
}

// TestPipelineDatabaseNearByteBound: with DB_MAX_BYTES set, the probe
// reads pg_database_size as the reader role, reports it against the bound
// in /health's pipeline.database, turns "warning" from 80 % and exports
// stacklens_database_bytes(_used_ratio); the size is queried once per
// DatabaseInterval, not every sample, and a failed query keeps the last
// size, marked unavailable.
func TestPipelineDatabaseNearByteBound(t *testing.T) {
	ns := testenv.NATS(t)
	nc := natsConnect(t, ns.URL)
	ctx := testenv.Context(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := natsutil.EnsureEventsStream(ctx, js, config.NATS{Shards: 1, Replicas: 1, EventsMaxAge: time.Hour, Compression: "none"}); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, nil)
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	var queries atomic.Int32
	size := func(ctx context.Context) (int64, error) {
		queries.Add(1)
		return f.srv.DatabaseSize(ctx)
	}
	newProbe := func(max int64) *PipelineProbe {
		p, err := NewPipelineProbe(nc, PipelineProbeOptions{Now: now, DatabaseSize: size, DatabaseMaxBytes: max})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	sample := func(p *PipelineProbe) *PipelineStatus {
		t.Helper()
		if err := p.Sample(ctx); err != nil {
			t.Fatal(err)
		}
		return p.PipelineStatus()
	}
	prom := func() string {
		var b bytes.Buffer
		metrics.WritePrometheus(&b, false)
		return b.String()
	}

	// No bound: the size, no ratio, no warning.
	st := sample(newProbe(0))
	db := st.Database
	if st.Status != "ok" || db == nil || db.Status != "ok" || db.Bytes < 1<<20 || db.MaxBytes != -1 || db.UsedRatio != nil {
		t.Fatalf("unbounded: %s %+v", st.Status, db)
	}
	if m := prom(); !strings.Contains(m, fmt.Sprintf("stacklens_database_bytes %d", db.Bytes)) || strings.Contains(m, "stacklens_database_bytes_used_ratio") {
		t.Errorf("unbounded metrics: want stacklens_database_bytes %d and no ratio", db.Bytes)
	}

	t.Logf("migrated, seeded database: %d bytes", db.Bytes)

	// A migrated database is larger than 1 MiB: at (past) the bound.
	const bound = 1 << 20
	p := newProbe(bound)
	st = sample(p)
	db = st.Database
	if st.Status != "warning" || db.Status != "warning" || db.MaxBytes != bound || db.UsedRatio == nil ||
		*db.UsedRatio != float64(db.Bytes)/bound || *db.UsedRatio < 0.8 {
		t.Fatalf("over 1 MiB: %s %+v", st.Status, db)
	}
	if want := fmt.Sprintf("stacklens_database_bytes_used_ratio %g", *db.UsedRatio); !strings.Contains(prom(), want) {
		t.Errorf("metrics lack %q", want)
	}

	// Within the interval the size is not queried again.
	before := queries.Load()
	clock.Add(int64(5 * time.Second))
	if sample(p); queries.Load() != before {
		t.Errorf("size queried again after 5 s")
	}

	// A failed query keeps the size, marked unavailable; NATS is fine.
	f.srv.closePools()
	clock.Add(int64(time.Minute))
	st = sample(p)
	if st.Database.Status != "unavailable" || st.Database.Error == "" || st.Database.Bytes != db.Bytes || queries.Load() != before+1 {
		t.Fatalf("after a failed size query: %s %+v", st.Status, st.Database)
	}

	// A roomy bound is ok.
	f = newFixture(t, nil)
	st = sample(newProbe(1 << 40))
	if st.Status != "ok" || st.Database.Status != "ok" || *st.Database.UsedRatio >= 0.8 {
		t.Fatalf("under a 1 TiB bound: %s %+v", st.Status, st.Database)
	}
}
