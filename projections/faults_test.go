package projections

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/agg"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/natsutil"
	"github.com/stacklens/stacklens/internal/telemetry"
)

// consumerInfo returns the durable consumer's state.
func (h *harness) consumerInfo(stream, name string) (*jetstream.ConsumerInfo, error) {
	c, err := h.js.Consumer(h.ctx, stream, name)
	if err != nil {
		return nil, err
	}
	return c.Info(h.ctx)
}

// healthErr returns the projections' readiness error ("" when ready).
func healthErr(ctx context.Context, health *telemetry.Health) string {
	st, _ := health.Snapshot(ctx)
	s, ok := st[HealthName]
	switch {
	case !ok:
		return "no check"
	case s.OK:
		return ""
	}
	return fmt.Sprint(s)
}

// stopWithin stops the projections and fails if that takes longer than d.
func stopWithin(t *testing.T, stop func(), d time.Duration) {
	t.Helper()
	began := time.Now()
	stop()
	if took := time.Since(began); took > d {
		t.Errorf("stopping took %v, want < %v", took, d)
	}
}

// TestShutdownWhileWriteBlocked: PostgreSQL blocks the upsert (a lock held
// by another transaction) while batches are queued behind it. On shutdown
// the blocked batch gets the grace period and is then abandoned; every
// message fetched but not written — the blocked batch, the queued one and
// the one the fetcher holds — is handed back at once (Nak), not kept until
// AckWait: once the lock is gone, a restart projects everything exactly,
// without waiting for AckWait.
func TestShutdownWhileWriteBlocked(t *testing.T) {
	h := newHarness(t, "", nil)
	w := h.wins[0]
	r := rand.New(rand.NewPCG(21, 22))
	start := w.Start(time.Now().Add(-time.Hour)).Unix()
	for i := range 8 {
		a := mkAgg(r, fmt.Sprintf("blocked%d", i), w, start, 3, i%2 == 0)
		h.put(w, ownKey(a), a)
	}
	table, _ := MetricsTable(w)
	lock, err := h.pool.Begin(h.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lock.Rollback(context.Background()) }()
	if _, err := lock.Exec(h.ctx, `LOCK TABLE `+table+` IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	o := Options{DisableEvents: true, MetricsBatch: 2, AckWait: time.Minute, RetentionInterval: -1}
	stop := h.start(o)
	durable := "stacklens_projections_" + w.Name
	testenv.Eventually(t, 20*time.Second, func() error {
		info, err := h.consumerInfo("KV_"+natsutil.AggBucket(w.Name), durable)
		if err != nil {
			return err
		}
		if info.NumAckPending != 6 {
			return fmt.Errorf("%d messages held, want 6 (3 batches of 2)", info.NumAckPending)
		}
		return nil
	})
	stopWithin(t, stop, shutdownGrace+10*time.Second)
	var n int
	if err := lock.QueryRow(h.ctx, `SELECT count(*) FROM `+table).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d rows written through the lock, %v", n, err)
	}
	if err := lock.Rollback(h.ctx); err != nil {
		t.Fatal(err)
	}
	// Handed back, they are delivered again at once — well before the
	// minute of AckWait after which held messages would be redelivered.
	restarted := time.Now()
	h.start(o)
	testenv.Eventually(t, 20*time.Second, h.checkI4)
	testenv.Eventually(t, 20*time.Second, func() error { return h.drained("KV_"+natsutil.AggBucket(w.Name), durable) })
	if took := time.Since(restarted); took > 30*time.Second {
		t.Errorf("redelivery took %v", took)
	}
}

// TestWritesRefused: PostgreSQL refuses every write (the projections run
// as the read-only role): readiness goes down with the database's error,
// nothing is acknowledged, and shutdown waits for the grace period, not
// for the retries' backoff.
// With the writer role the backlog is then projected exactly.
func TestWritesRefused(t *testing.T) {
	h := newHarness(t, "", nil)
	w := h.wins[0]
	r := rand.New(rand.NewPCG(23, 24))
	a := mkAgg(r, "refused", w, w.Start(time.Now().Add(-time.Hour)).Unix(), 5, true)
	h.put(w, ownKey(a), a)
	m := nats.NewMsg(natsutil.EventSubject(0, "refused"))
	m.Data = []byte(`{"timestamp":"` + time.Now().UTC().Format(time.RFC3339Nano) + `","service":"refused","level":"info","latency_ms":1}`)
	if _, err := h.js.PublishMsg(h.ctx, m); err != nil {
		t.Fatal(err)
	}
	sep := "?"
	if strings.Contains(h.dsn, "?") {
		sep = "&"
	}
	reader, err := OpenPool(h.ctx, h.dsn+sep+"options="+strings.ReplaceAll(url.QueryEscape("-c role=stacklens_reader"), "+", "%20"), 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	ctx, cancel := context.WithCancel(h.ctx)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Deps{Config: h.cfg, Log: testLog(t), Health: h.health, NATS: h.nc, Pool: reader,
			Options: Options{BatchWait: 20 * time.Millisecond, MaxBackoff: time.Minute, RetentionInterval: -1}})
	}()
	testenv.Eventually(t, 20*time.Second, func() error {
		e := healthErr(h.ctx, h.health)
		if !strings.Contains(e, "permission denied") {
			return fmt.Errorf("readiness %q", e)
		}
		return nil
	})
	testenv.Eventually(t, 20*time.Second, func() error {
		for _, c := range [][2]string{{"KV_" + natsutil.AggBucket(w.Name), "stacklens_projections_" + w.Name}, {natsutil.StreamEvents, "stacklens_projections_events"}} {
			info, err := h.consumerInfo(c[0], c[1])
			if err != nil {
				return err
			}
			if info.NumAckPending != 1 {
				return fmt.Errorf("%s: %d unacknowledged, want 1 (held, not acknowledged)", c[1], info.NumAckPending)
			}
		}
		return nil
	})
	began := time.Now()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The failing batch gets the shutdown grace, not the (minute-long)
	// backoff.
	if took := time.Since(began); took > shutdownGrace+5*time.Second {
		t.Errorf("shutdown waited %v", took)
	}
	h.start(Options{RetentionInterval: -1})
	testenv.Eventually(t, 20*time.Second, h.checkI4)
	testenv.Eventually(t, 20*time.Second, func() error {
		var n int
		if err := h.pool.QueryRow(h.ctx, `SELECT count(*) FROM analytics_events WHERE service = 'refused'`).Scan(&n); err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("%d events", n)
		}
		return nil
	})
}

// TestOnlyExpiredEvents: a batch whose events are all older than the
// retention horizon writes nothing and is acknowledged.
func TestOnlyExpiredEvents(t *testing.T) {
	h := newHarness(t, "", nil)
	old := time.Now().Add(-72 * time.Hour).UTC().Format(time.RFC3339Nano)
	for i := range 3 {
		m := nats.NewMsg(natsutil.EventSubject(i, "expired"))
		m.Data = []byte(`{"timestamp":"` + old + `","service":"expired","level":"info","latency_ms":1}`)
		if _, err := h.js.PublishMsg(h.ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	// A consumer created a week ago would deliver them.
	start := time.Now().Add(-7 * 24 * time.Hour)
	if _, err := h.js.CreateOrUpdateConsumer(h.ctx, natsutil.StreamEvents, jetstream.ConsumerConfig{
		Durable: "stacklens_projections_events", FilterSubject: natsutil.EventsPrefix + ">",
		AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &start,
	}); err != nil {
		t.Fatal(err)
	}
	h.start(Options{DisableMetrics: true, RetentionInterval: -1})
	testenv.Eventually(t, 20*time.Second, func() error { return h.drained(natsutil.StreamEvents, "stacklens_projections_events") })
	var n int
	if err := h.pool.QueryRow(h.ctx, `SELECT count(*) FROM analytics_events`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d events written, %v", n, err)
	}
}

// TestArchiveWithoutSchema: retention on a database without the schema
// reports the error.
func TestArchiveWithoutSchema(t *testing.T) {
	ctx := testenv.Context(t)
	pool, err := OpenPool(ctx, testenv.Postgres(t).DSN, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := ArchiveOldData(ctx, pool); err == nil || !strings.Contains(err.Error(), "analytics_archive_old_data") {
		t.Fatalf("retention without schema: %v", err)
	}
}

// TestDeleteConsumers: the parts read's clean-up deletes the named
// consumers, takes a name the server does not know as done, and with NATS
// away fails at once rather than waiting out its second.
func TestDeleteConsumers(t *testing.T) {
	ns := testenv.NATS(t)
	h := newHarness(t, "", ns)
	w := h.wins[0]
	js, err := jetstream.New(ns.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	p, err := newMetricsProjector(js, NewWriter(h.pool), w, 4, Options{}.withDefaults(), newStatus(telemetry.NewHealth()), testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"stacklens_parts_a", "stacklens_parts_b"} {
		if _, err := js.CreateConsumer(h.ctx, p.spec.stream, jetstream.ConsumerConfig{Name: name, AckPolicy: jetstream.AckNonePolicy}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.deleteConsumers(h.ctx, []string{"stacklens_parts_a", "stacklens_parts_never", "stacklens_parts_b"}); err != nil {
		t.Fatal(err)
	}
	kvs, err := js.Stream(h.ctx, p.spec.stream)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	names := kvs.ConsumerNames(h.ctx)
	for name := range names.Name() {
		left = append(left, name)
	}
	if err := names.Err(); err != nil || len(left) != 0 {
		t.Fatalf("left %v (%v)", left, err)
	}
	ns.Shutdown()
	testenv.Eventually(t, 10*time.Second, func() error {
		if js.Conn().IsConnected() {
			return errors.New("the client has not seen the outage yet")
		}
		return nil
	})
	t0 := time.Now()
	if err := p.deleteConsumers(h.ctx, []string{"stacklens_parts_c"}); !errors.Is(err, nats.ErrDisconnected) {
		t.Errorf("disconnected: %v", err)
	}
	if el := time.Since(t0); el > 100*time.Millisecond {
		t.Errorf("disconnected, it took %v", el)
	}
}

// TestLoadPartsAcrossNATSOutage: reading a row's sibling parts from KV is
// retried through a NATS outage, with readiness down meanwhile, and
// returns the parts once NATS is back; cancelled, it gives up.
func TestLoadPartsAcrossNATSOutage(t *testing.T) {
	ns := testenv.NATS(t)
	h := newHarness(t, "", ns)
	w := h.wins[0]
	r := rand.New(rand.NewPCG(25, 26))
	start := w.Start(time.Now().Add(-time.Hour)).Unix()
	for _, sh := range []int{0, 2} {
		svc := agg.OverflowService + "-" + itoa(int64(sh))
		h.put(w, agg.Key{Service: svc, Start: start}.KVKey(), mkAgg(r, svc, w, start, 2+sh, false))
	}
	nc := ns.Conn(t)
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	health := telemetry.NewHealth()
	st := newStatus(health)
	p, err := newMetricsProjector(js, NewWriter(h.pool), w, 4, Options{MaxBackoff: 100 * time.Millisecond}.withDefaults(), st, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	k := rowKey{agg.OverflowService, start}
	load := func(ctx context.Context, shardKeys bool) (*partGroup, chan error) {
		g := &partGroup{service: k.service, start: k.start, parts: map[string]*agg.Aggregate{}}
		done := make(chan error, 1)
		go func() { done <- p.loadParts(ctx, k, g, shardKeys) }()
		return g, done
	}
	waitDown := func() {
		t.Helper()
		testenv.Eventually(t, 20*time.Second, func() error {
			if e := healthErr(h.ctx, health); !strings.Contains(e, "reading KV parts") {
				return fmt.Errorf("readiness %q", e)
			}
			return nil
		})
	}

	for _, shardKeys := range []bool{true, false} {
		ns.Shutdown()
		g, done := load(h.ctx, shardKeys)
		waitDown()
		ns.Restart()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("loadParts did not recover")
		}
		if len(g.parts) != 2 || g.merged().Count != 2+4 {
			t.Errorf("shard keys %v: parts %v", shardKeys, g.parts)
		}
		if e := healthErr(h.ctx, health); e != "" {
			t.Errorf("readiness after recovery: %s", e)
		}
	}
	// The stream read leaves no consumer behind, even after creations
	// whose replies the outage lost (an ordered consumer's last one
	// stayed on the server until its inactivity threshold).
	kvs, err := h.js.Stream(h.ctx, "KV_"+natsutil.AggBucket(w.Name))
	if err != nil {
		t.Fatal(err)
	}
	if _, done := load(h.ctx, false); <-done != nil {
		t.Fatal("loadParts failed")
	}
	var left []string
	names := kvs.ConsumerNames(h.ctx)
	for name := range names.Name() {
		left = append(left, name)
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("consumers left on the bucket's stream: %v", left)
	}

	// Cancelled during the outage, both reads give up promptly (the
	// stream read once used an ordered consumer, whose Fetch re-created
	// it without a context and without end: it returned only when NATS
	// came back).
	ns.Shutdown()
	for _, shardKeys := range []bool{true, false} {
		ctx, cancel := context.WithCancel(h.ctx)
		_, done := load(ctx, shardKeys)
		waitDown()
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("shard keys %v: cancelled loadParts: %v", shardKeys, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("shard keys %v: cancelled loadParts did not return", shardKeys)
		}
	}
}

// TestStopWhileConsumerUnavailable: projections started before the
// processors created their buckets retry with backoff; a shutdown during
// the backoff returns at once.
func TestStopWhileConsumerUnavailable(t *testing.T) {
	ns := testenv.NATS(t)
	nc := ns.Conn(t)
	pg := testenv.Postgres(t)
	migrate(t, pg.DSN)
	ctx := testenv.Context(t)
	pool, err := OpenPool(ctx, pg.DSN, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	cfg := testenv.Config(t, map[string]string{"AGGREGATION_WINDOWS": "1min"})
	health := telemetry.NewHealth()
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- Run(rctx, Deps{Config: cfg, Log: testLog(t), Health: health, NATS: nc, Pool: pool,
			Options: Options{MaxBackoff: time.Minute, RetentionInterval: -1}})
	}()
	testenv.Eventually(t, 20*time.Second, func() error {
		if e := healthErr(ctx, health); !strings.Contains(e, "stacklens_projections_") {
			return fmt.Errorf("readiness %q", e)
		}
		return nil
	})
	began := time.Now()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Errorf("shutdown took %v", took)
	}
}

func TestGiveUpFetching(t *testing.T) {
	for _, c := range []struct {
		err  error
		errs int
		want bool
	}{
		{errors.New("timeout"), 1, false},
		{errors.New("timeout"), 2, false},
		{errors.New("timeout"), 3, true},
		{jetstream.ErrConsumerDeleted, 1, true},
		{fmt.Errorf("fetch: %w", jetstream.ErrConsumerNotFound), 1, true},
	} {
		if got := giveUpFetching(c.err, c.errs); got != c.want {
			t.Errorf("giveUpFetching(%v, %d) = %v, want %v", c.err, c.errs, got, c.want)
		}
	}
}
