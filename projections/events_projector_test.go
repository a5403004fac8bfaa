package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/harness/loadgen"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/natsutil"
	"github.com/stacklens/stacklens/internal/telemetry"
)

type pubEvent struct {
	payload string
	want    bool   // projected
	check   string // expected event JSON when it differs from payload
	lean    string // expected stored payload text, when set
}

// TestEventsProjector: valid events reach analytics_events with their Kafka
// coordinates, the stored payload holds only what the columns do not give
// back (lean.go), and stacklens_event_payload(e) is equal to the original
// as JSON — loadgen events and odd ones (nested values, unicode, escaped
// and repeated keys, numbers not in their shortest form, naive, zoned,
// epoch and nanosecond timestamps, whitespace); old and
// undecodable ones are skipped; redelivery (a second consumer reading the
// whole stream again) does not duplicate anything. Naive timestamps are
// read in EVENT_TIMEZONE (Asia/Tokyo here), as the bridge and processors
// read them.
func TestEventsProjector(t *testing.T) {
	ns := testenv.NATS(t)
	h := newHarness(t, "", ns)
	now := time.Now().UTC()
	ts := now.Add(-time.Minute).Format("2006-01-02T15:04:05.000000")
	old := now.Add(-49 * time.Hour).Format(time.RFC3339Nano)
	us := now.Add(-time.Second).Truncate(time.Microsecond).Format(time.RFC3339Nano) // canonical: stripped
	sec := now.Add(-2 * time.Second).Truncate(time.Second).Format(time.RFC3339Nano)
	nano := now.Add(-3 * time.Second).Truncate(time.Microsecond).Add(789).Format(time.RFC3339Nano) // below the column's precision: kept
	evs := []pubEvent{
		{payload: `{"timestamp":"` + us + `","service":"checkout","level":"info","latency_ms":52.25,"risk_score":0.123,"endpoint":"/api/v1/items","host":"host-3","trace_id":"1a2b","message":"request handled"}`, want: true,
			lean: `{"endpoint":"/api/v1/items","host":"host-3","trace_id":"1a2b","message":"request handled"}`},
		{payload: `{"timestamp":"` + nano + `","service":"checkout","level":"error","latency_ms":0.30000000000000004,"risk_score":0,"endpoint":"/x"}`, want: true,
			lean: `{"timestamp":"` + nano + `","endpoint":"/x"}`},
		{payload: ` { "timestamp" : "` + sec + `" , "service" : "ws" ,"level":"debug", "latency_ms" : 1000000000000000 , "extra" : [ 1 , {"a" : "b"} ] } `, want: true,
			lean: `{"extra" : [ 1 , {"a" : "b"} ]}`},
		{payload: `{"timestamp":"` + us + `","service":"only","level":"fatal","latency_ms":0.1}`, want: true, lean: `{}`},
		{payload: `{"timestamp":"` + us + `","service":"ünï 🎉","level":"notice","latency_ms":7.50,"count":"12","big":12345678901234567890,"neg":-0,"exp":1E-3}`, want: true,
			lean: `{"latency_ms":7.50,"count":"12","big":12345678901234567890,"neg":-0,"exp":1E-3}`},
		{payload: `{"timestamp":"` + us + `","service":"dup","level":"debug","latency_ms":1,"level":"error","risk_score":null}`, want: true,
			lean: `{"level":"debug","level":"error","risk_score":null}`},
		{payload: `{"timestamp":"` + us + `","\u0073ervice":"esc","service":"esc2","level":"info","latency_ms":1}`, want: true},
		{payload: `{"timestamp":"` + us + `","service":"\u0065sc","level":"info","latency_ms":2,"m":"\\u0000 is text"}`, want: true,
			lean: `{"service":"\u0065sc","m":"\\u0000 is text"}`},
		{payload: `{"timestamp":"` + ts + `","service":"checkout","level":"info","latency_ms":50.0,"risk_score":0.1}`, want: true},
		{payload: `{"timestamp":"` + now.Format(time.RFC3339) + `","service":"a.b","level":"WARN","latency_ms":1e2,"endpoint":"/x","nested":{"k":[1,2.5,"three",null,true]},"host":"h1"}`, want: true},
		{payload: `{"timestamp":` + strconv.FormatInt(now.UnixMilli(), 10) + `,"service":"ünï","level":"critical","latency_ms":0,"risk_score":null,"message":"émoji 🎉 \"quoted\""}`, want: true},
		{payload: `{"timestamp":"` + ts + `","service":"nul","level":"error","latency_ms":3,"message":"a\u0000b"}`, want: true,
			check: `{"timestamp":"` + ts + `","service":"nul","level":"error","latency_ms":3,"message":"a\ufffdb"}`},
		{payload: `{"timestamp":"` + ts + `","service":"sur","level":"error","latency_ms":3,"message":"x\ud800y"}`, want: true,
			check: `{"timestamp":"` + ts + `","service":"sur","level":"error","latency_ms":3,"message":"x\ufffdy"}`},
		{payload: `{"timestamp":"` + old + `","service":"old","level":"info","latency_ms":1}`, want: false},
		{payload: `not json`, want: false},
	}
	gen := loadgen.NewGenerator(5, 12, now)
	for i := range 100 { // loadgen events, with nanosecond and microsecond timestamps
		at := now.Add(-time.Duration(i) * time.Millisecond)
		if i%2 == 0 {
			at = at.Truncate(time.Microsecond)
		}
		msg, _ := gen.Next(nil, at)
		evs = append(evs, pubEvent{payload: string(msg), want: true})
	}
	for i := range 500 {
		evs = append(evs, pubEvent{payload: `{"timestamp":"` + ts + `","service":"bulk` + strconv.Itoa(i%7) + `","level":"debug","latency_ms":` + strconv.Itoa(i) + `,"trace_id":"t` + strconv.Itoa(i) + `"}`, want: true})
	}
	seqs := make([]uint64, len(evs))
	for i, e := range evs {
		m := nats.NewMsg(natsutil.EventSubject(i%16, "svc"))
		m.Data = []byte(e.payload)
		m.Header.Set(natsutil.HdrKafkaTopic, "stacklens-analytics")
		m.Header.Set(natsutil.HdrKafkaPartition, strconv.Itoa(i%12))
		m.Header.Set(natsutil.HdrKafkaOffset, strconv.Itoa(1000+i))
		ack, err := h.js.PublishMsg(h.ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		seqs[i] = ack.Sequence
	}
	// Not an event: bridge checkpoints share the stream.
	if _, err := h.js.Publish(h.ctx, natsutil.OffsetSubject("stacklens-analytics", 0), []byte("42")); err != nil {
		t.Fatal(err)
	}
	wantN := 0
	for _, e := range evs {
		if e.want {
			wantN++
		}
	}

	// Run from configuration alone (it connects to NATS and PostgreSQL).
	cfg := testenv.Config(t, map[string]string{"NATS_URL": ns.URL, "DATABASE_URL": h.dsn, "DB_POOL_MIN": "1", "DB_POOL_MAX": "3", "EVENT_TIMEZONE": "Asia/Tokyo"})
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Fatal(err)
	}
	lim := decodeLimits
	lim.Location = tokyo
	health := telemetry.NewHealth()
	before := progressFigures()
	ctx, cancel := context.WithCancel(h.ctx)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Deps{Config: cfg, Log: testLog(t), Health: health, Options: Options{DisableMetrics: true, BatchWait: 20 * time.Millisecond}})
	}()
	count := func() (int, error) {
		var n int
		err := h.pool.QueryRow(h.ctx, `SELECT count(*) FROM analytics_events`).Scan(&n)
		return n, err
	}
	testenv.Eventually(t, 20*time.Second, func() error {
		if n, err := count(); err != nil || n != wantN {
			return errorString("rows: " + strconv.Itoa(n))
		}
		return h.drained(natsutil.StreamEvents, "stacklens_projections_events")
	})
	// The progress line's figures moved with the work: every event was
	// received and inserted; "not json" counts as a dead letter (other tests
	// of the package may add to the same counters, never subtract).
	after := progressFigures()
	if after["in"]-before["in"] < float64(wantN) || after["out"]-before["out"] < float64(wantN) || after["dead_letters"]-before["dead_letters"] < 1 {
		t.Errorf("progress figures before %v, after %v: want in and out +%d or more, dead_letters +1", before, after, wantN)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i, e := range evs {
		var (
			same    bool
			level   string
			lat     float64
			risk    *float64
			part    int32
			off     int64
			service string
			evTime  time.Time
		)
		want := e.payload
		if e.check != "" {
			want = e.check
		}
		var stored string
		err := h.pool.QueryRow(h.ctx, `SELECT stacklens_event_payload(e) = $2::jsonb, payload::text, service, level, latency_ms, risk_score,
			kafka_partition, kafka_offset, timestamp FROM analytics_events e WHERE stream_seq = $1`,
			int64(seqs[i]), want).Scan(&same, &stored, &service, &level, &lat, &risk, &part, &off, &evTime)
		if !e.want {
			if err == nil {
				t.Errorf("event %d (%s) was projected", i, e.payload)
			}
			continue
		}
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		ev, derr := event.Decode([]byte(e.payload), now, lim)
		if derr != nil {
			t.Fatal(derr)
		}
		if !same {
			var got json.RawMessage
			_ = h.pool.QueryRow(h.ctx, `SELECT stacklens_event_payload(e) FROM analytics_events e WHERE stream_seq = $1`, int64(seqs[i])).Scan(&got)
			t.Errorf("event %d rebuilt as %s, want %s (stored %s)", i, got, want, stored)
		}
		if e.lean != "" && stored != e.lean {
			t.Errorf("event %d stored payload %s, want %s", i, stored, e.lean)
		}
		if service != ev.Service || level != ev.Level.String() || lat != ev.LatencyMS || !evTime.Equal(ev.Time.Truncate(time.Microsecond)) ||
			(risk == nil) == ev.HasRisk || (risk != nil && *risk != ev.Risk) ||
			part != int32(i%12) || off != int64(1000+i) {
			t.Errorf("event %d: got %s %s %v %v %v %d %d", i, service, level, lat, risk, evTime, part, off)
		}
		if i == 8 && !evTime.Equal(now.Add(-time.Minute-9*time.Hour).Truncate(time.Microsecond)) {
			t.Errorf("naive timestamp %s stored as %v, want it read as Tokyo time", ts, evTime)
		}
	}

	// Redelivery of everything (a new consumer) adds nothing. (With another
	// EVENT_TIMEZONE it would: the naive rows' timestamps, part of the key,
	// would differ.)
	h.cfg.Pipeline.EventTimezone = "Asia/Tokyo"
	h.start(Options{DisableMetrics: true, ConsumerPrefix: "again", RetentionInterval: -1})
	testenv.Eventually(t, 20*time.Second, func() error {
		return h.drained(natsutil.StreamEvents, "again_events")
	})
	if n, err := count(); err != nil || n != wantN {
		t.Fatalf("after redelivery: %d rows (%v), want %d", n, err, wantN)
	}
}

// TestInsertEventsDirect: the writer's idempotency and its fallbacks.
func TestInsertEventsDirect(t *testing.T) {
	h := newHarness(t, "", nil)
	wr := NewWriter(h.pool)
	now := time.Now().UTC().Truncate(time.Microsecond)
	rows := []EventRow{
		{Seq: 1, Time: now, Service: "a", Level: "info", LatencyMS: 1, Payload: []byte(`{"a":1}`)},
		{Seq: 2, Time: now, Service: "b", Level: "info", LatencyMS: 2, Payload: []byte(`{"m":"\u0000"}`)},
		{Seq: 3, Time: now, Service: "c", Level: "info", LatencyMS: -1, Payload: []byte(`{"bad":"latency"}`)}, // violates a CHECK: dropped
		{Seq: 1, Time: now, Service: "a", Level: "info", LatencyMS: 1, Payload: []byte(`{"a":1}`)},            // duplicate in the batch
	}
	n, err := wr.InsertEvents(h.ctx, rows)
	if err != nil || n != 2 {
		t.Fatalf("first insert: %d, %v", n, err)
	}
	var rebuilt string
	if err := h.pool.QueryRow(h.ctx, `SELECT stacklens_event_payload(e)::text FROM analytics_events e WHERE stream_seq = 2`).Scan(&rebuilt); err != nil ||
		!strings.Contains(rebuilt, `"m": "\ufffd"`) && !strings.Contains(rebuilt, "\"m\": \"\uFFFD\"") {
		t.Fatalf("a NUL payload rebuilt as %s (%v), want it normalised and readable as jsonb", rebuilt, err)
	}
	n, err = wr.InsertEvents(h.ctx, rows[:2])
	if err != nil || n != 0 {
		t.Fatalf("second insert: %d, %v", n, err)
	}
	if n, err := wr.InsertEvents(h.ctx, nil); n != 0 || err != nil {
		t.Fatal(n, err)
	}
	// The fast path (plain COPY), a conflicting batch (staging path), the
	// batches after it (staging path directly), and a failure that is not
	// about the data (returned, for the caller to retry).
	wr.stageNext.Store(0) // the redelivery above may have switched to the staging path
	clean := []EventRow{
		{Seq: 10, Time: now, Service: "d", Level: "info", LatencyMS: 1, Payload: []byte(`{"d":1}`)},
		{Seq: 11, Time: now, Service: "e", Level: "info", LatencyMS: 1, Payload: []byte(`{"e":1}`)},
	}
	if n, err := wr.InsertEvents(h.ctx, clean); n != 2 || err != nil {
		t.Fatal(n, err)
	}
	if n, err := wr.InsertEvents(h.ctx, clean); n != 0 || err != nil {
		t.Fatal(n, err)
	}
	if wr.stageNext.Load() != 20 {
		t.Fatalf("stageNext %d", wr.stageNext.Load())
	}
	clean[0].Seq, clean[1].Seq = 12, 13
	if n, err := wr.InsertEvents(h.ctx, clean); n != 2 || err != nil {
		t.Fatal(n, err)
	}
	if wr.stageNext.Load() != 19 {
		t.Fatalf("stageNext %d", wr.stageNext.Load())
	}
	cctx, cancel := context.WithCancel(h.ctx)
	cancel()
	clean[0].Seq, clean[1].Seq = 14, 15
	if _, err := wr.InsertEvents(cctx, clean); err == nil {
		t.Fatal("want an error with a cancelled context")
	}
	wr.stageNext.Store(0)
	if _, err := wr.InsertEvents(cctx, clean); err == nil {
		t.Fatal("want an error with a cancelled context")
	}
	for in, want := range map[string]string{
		`{"m":"\u0000"}`:          `{"m":"\ufffd"}`,
		`{"m":"\\u0000"}`:         `{"m":"\\u0000"}`,
		`{"m":"\\\u0000"}`:        `{"m":"\\\ufffd"}`,
		`not json`:                `{"raw":"not json"}`,
		`{"n":1.50,"s":"\ud800"}`: "{\"n\":1.50,\"s\":\"\uFFFD\"}",
	} {
		if got := string(sanitizeJSON([]byte(in))); got != want {
			t.Errorf("sanitizeJSON(%s) = %s, want %s", in, got, want)
		}
	}
}

// progressFigures reads ProgressFigures by name.
func progressFigures() map[string]float64 {
	m := map[string]float64{}
	for _, f := range ProgressFigures() {
		m[f.Name] = f.Value
	}
	return m
}

// TestRawEventsStreamOnly: with RAW_EVENTS=stream the projections write
// aggregates but no raw-event rows, and delete the raw-event consumer an
// earlier RAW_EVENTS=postgres run left behind (its lag would grow forever).
func TestRawEventsStreamOnly(t *testing.T) {
	h := newHarness(t, "", nil)
	stop := h.start(Options{RetentionInterval: -1})
	durable := "stacklens_projections" + eventsConsumerSuffix
	testenv.Eventually(t, 30*time.Second, func() error {
		_, err := h.js.Consumer(h.ctx, natsutil.StreamEvents, durable)
		return err
	})
	stop()

	h.cfg.Retention.RawEvents = "stream"
	h.start(Options{RetentionInterval: -1})
	m := nats.NewMsg(natsutil.EventSubject(0, "svc"))
	m.Data = []byte(`{"timestamp":"` + time.Now().UTC().Format(time.RFC3339) + `","service":"svc","level":"info","latency_ms":1}`)
	if _, err := h.js.PublishMsg(h.ctx, m); err != nil {
		t.Fatal(err)
	}
	w := h.wins[0]
	a := mkAgg(rand.New(rand.NewPCG(1, 2)), "svc", w, time.Now().Truncate(w.Size).Unix(), 10, false)
	h.put(w, ownKey(a), a)
	testenv.Eventually(t, 30*time.Second, func() error {
		var n int64
		if err := h.pool.QueryRow(h.ctx, `SELECT count FROM analytics_metrics_`+w.Name+` WHERE service = 'svc'`).Scan(&n); err != nil {
			return err
		}
		if n != 10 {
			return fmt.Errorf("count %d, want 10", n)
		}
		return nil
	})
	if _, err := h.js.Consumer(h.ctx, natsutil.StreamEvents, durable); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Errorf("raw-event consumer after RAW_EVENTS=stream: %v, want deleted", err)
	}
	var rows int64
	if err := h.pool.QueryRow(h.ctx, `SELECT count(*) FROM analytics_events`).Scan(&rows); err != nil || rows != 0 {
		t.Errorf("analytics_events has %d rows (%v), want none", rows, err)
	}
}
