package alerting

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/telemetry"
)

// TestKafkaSinkOptions: the KAFKA_* SASL and TLS settings reach the
// transactional client, and a bad one fails naming its variable.
func TestKafkaSinkOptions(t *testing.T) {
	base := config.Kafka{BootstrapServers: []string{"127.0.0.1:1"}, OutputTopic: "alerts"}
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "scram-sha-512"} {
		k := base
		k.SASLMechanism, k.SASLUsername, k.SASLPassword = mech, "u", "p"
		if _, err := newKafkaSink(k, time.Second, "h", telemetry.Discard()); err != nil {
			t.Errorf("%s: %v", mech, err)
		}
	}
	for v, k := range map[string]config.Kafka{
		"KAFKA_SASL_MECHANISM": {BootstrapServers: base.BootstrapServers, SASLMechanism: "GSSAPI"},
		"KAFKA_TLS_CA_FILE":    {BootstrapServers: base.BootstrapServers, TLS: true, TLSCAFile: "/nonexistent/ca.pem"},
	} {
		var ce *config.Error
		if _, err := newKafkaSink(k, time.Second, "h", telemetry.Discard()); !errors.As(err, &ce) || ce.Var != v {
			t.Errorf("want an error naming %s, got %v", v, err)
		}
	}
	k := base
	k.TLS = true
	s, err := newKafkaSink(k, time.Second, "h", telemetry.Discard())
	if err != nil {
		t.Fatal(err)
	}
	if errs := s.send(t.Context(), []*Event{testEvent()}); len(errs) != 1 || !isPermanent(errs[0]) {
		t.Errorf("send without outbox ids: %v", errs)
	}
	if s.topic != "alerts" || s.posTopic != "alerts.outbox-position" || s.txnID != "stacklens-alerting.alerts" {
		t.Errorf("topics and transactional id: %q %q %q", s.topic, s.posTopic, s.txnID)
	}
}

// TestKafkaPositionSurvivesManySessions: the rows of a committed batch
// whose bookkeeping was lost are marked sent by a later session, also
// when many sessions (each leaving an aborted fencing probe on the
// position topic) came and went in between — the position is read back
// from further than the first step.
func TestKafkaPositionSurvivesManySessions(t *testing.T) {
	f := newFixture(t)
	e := f.engine(f.kafkaOnly(), Deps{})
	dpool, err := e.dispatchPool(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer dpool.Close()
	newSink := func() *kafkaSink {
		s, err := newKafkaSink(f.kafkaOnly().Kafka, 2*time.Second, "test", telemetry.Discard())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	tx, err := f.db.Begin(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	var evs []*Event
	now := time.Now().UTC()
	for i := range 3 {
		ev := &Event{AlertID: fmt.Sprintf("alr_pos%d", i), Fingerprint: fmt.Sprintf("fp%d", i), State: stateFiring,
			Rule: "r", Service: "svc", Severity: "critical", Window: "1min", FiredAt: now, EmittedAt: now}
		if _, _, _, err := fire(f.ctx, tx, ev, []string{"kafka"}); err != nil {
			t.Fatal(err)
		}
		evs = append(evs, ev)
	}
	if err := tx.Commit(f.ctx); err != nil {
		t.Fatal(err)
	}
	rows, err := f.db.Query(f.ctx, `SELECT id FROM analytics_alert_outbox ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		_ = rows.Scan(&id)
		ids = append(ids, id)
	}
	rows.Close()

	a := newSink()
	if err := a.ready(f.ctx, dpool); err != nil {
		t.Fatal(err)
	}
	if err := a.deliver(f.ctx, ids, evs); err != nil { // committed; never marked sent
		t.Fatal(err)
	}
	for range 40 { // 40 sessions: 80 offsets of aborted probes after the position
		s := newSink()
		if err := s.fence(f.ctx, mustClient(t, s)); err != nil {
			t.Fatal(err)
		}
	}
	b := newSink()
	if err := b.ready(f.ctx, dpool); err != nil {
		t.Fatal(err)
	}
	if n := f.int(`SELECT count(*) FROM analytics_alert_outbox WHERE state = 'sent' AND id = ANY($1)`, ids); n != len(ids) {
		t.Fatalf("%d of %d delivered rows marked sent by the later session", n, len(ids))
	}
	pos, err := b.readPosition(f.ctx, b.cl)
	if err != nil || pos == nil || !slices.Equal(pos.IDs, ids) || pos.MaxID != ids[len(ids)-1] || pos.Holder != "test" {
		t.Fatalf("position %+v (%v), want ids %v", pos, err, ids)
	}
	// The zombie: a's commit is refused now.
	if err := a.deliver(f.ctx, ids, evs); err == nil {
		t.Error("a fenced session delivered")
	}
	if a.open() {
		t.Error("the fenced session stays open")
	}
	if n := f.onceEach(); n != len(ids) {
		t.Errorf("%d distinct messages, want %d", n, len(ids))
	}
}

func mustClient(t *testing.T, s *kafkaSink) *kgo.Client {
	t.Helper()
	cl, err := s.newClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// TestKafkaSessionFaults: a session that cannot be opened — an unreadable
// position record, an outbox that refuses the bookkeeping — is an error
// (retried by the dispatcher), and nothing is delivered without a session.
func TestKafkaSessionFaults(t *testing.T) {
	f := newFixture(t)
	e := f.engine(f.kafkaOnly(), Deps{})
	dpool, err := e.dispatchPool(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer dpool.Close()
	s, err := newKafkaSink(f.kafkaOnly().Kafka, 2*time.Second, "test", telemetry.Discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if err := s.deliver(f.ctx, []int64{1}, []*Event{testEvent()}); err == nil {
		t.Error("delivered without a session")
	}
	if err := s.ready(f.ctx, dpool); err != nil {
		t.Fatal(err)
	}
	if err := s.deliver(f.ctx, []int64{1, 2}, []*Event{testEvent(), testEvent()}); err != nil {
		t.Fatal(err)
	}
	f.exec(`CREATE FUNCTION refuse_sent() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'injected fault: cannot mark sent'; END $$`)
	f.exec(`CREATE TRIGGER refuse_sent BEFORE UPDATE ON analytics_alert_outbox FOR EACH ROW
WHEN (NEW.state = 'sent') EXECUTE FUNCTION refuse_sent()`)
	tx, err := f.db.Begin(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	if _, _, _, err := fire(f.ctx, tx, &Event{AlertID: "alr_f", Fingerprint: "fpf", State: stateFiring, Rule: "r",
		Service: "svc", Severity: "critical", Window: "1min", FiredAt: now, EmittedAt: now}, []string{"kafka"}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(f.ctx); err != nil {
		t.Fatal(err)
	}
	var id int64
	if err := f.db.QueryRow(f.ctx, `SELECT id FROM analytics_alert_outbox`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	if err := s.deliver(f.ctx, []int64{id}, []*Event{testEvent()}); err != nil {
		t.Fatal(err)
	}
	s.reset()
	if err := s.ready(f.ctx, dpool); err == nil || s.open() {
		t.Errorf("session opened though its bookkeeping was refused: %v", err)
	}
	f.exec(`DROP TRIGGER refuse_sent ON analytics_alert_outbox`)

	// A record under the position key that is not a position.
	cl := mustClient(t, s)
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(f.ctx, &kgo.Record{Topic: s.posTopic, Key: []byte(positionKey), Value: []byte("garbage")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := cl.EndTransaction(f.ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	if err := s.ready(f.ctx, dpool); err == nil || s.open() {
		t.Errorf("session opened on an unreadable position: %v", err)
	}

	// A client already inside a transaction: an error, not a hang.
	inTxn, err := s.newClient()
	if err != nil {
		t.Fatal(err)
	}
	if err := inTxn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := s.fence(f.ctx, inTxn); err == nil {
		t.Error("fenced from inside a transaction")
	}
	s.cl = inTxn
	if err := s.deliver(f.ctx, []int64{1}, []*Event{testEvent()}); err == nil || s.open() {
		t.Errorf("delivered from inside a transaction: %v", err)
	}
}
