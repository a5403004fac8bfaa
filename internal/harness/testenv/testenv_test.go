package testenv_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/segmentio/kafka-go"

	"github.com/stacklens/stacklens/internal/harness/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestNATSJetStreamPublishConsumeAndKV(t *testing.T) {
	srv := testenv.NATS(t)
	js := srv.JetStream(t)
	ctx := testenv.Context(t)

	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := js.Publish(ctx, "t.x", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(10, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for m := range batch.Messages() {
		if string(m.Data()) != fmt.Sprint(n) {
			t.Fatalf("message %d = %q", n, m.Data())
		}
		if err := m.Ack(); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 10 {
		t.Fatalf("consumed %d messages, want 10", n)
	}

	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "b"})
	if err != nil {
		t.Fatal(err)
	}
	rev, err := kv.Create(ctx, "k", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Update(ctx, "k", []byte("2"), rev+7); err == nil {
		t.Fatal("update with a stale revision succeeded; compare-and-set is broken")
	}
	if _, err := kv.Update(ctx, "k", []byte("2"), rev); err != nil {
		t.Fatal(err)
	}

	// The store survives a restart: state is durable, not in memory.
	srv.Restart()
	js2 := srv.JetStream(t)
	kv2, err := js2.KeyValue(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv2.Get(ctx, "k")
	if err != nil || string(e.Value()) != "2" {
		t.Fatalf("after restart: %v %v", e, err)
	}
}

func TestKafkaConsumerGroupAgainstBroker(t *testing.T) {
	const topic = "stacklens-analytics"
	k := testenv.Kafka(t, 4, topic)
	var msgs []kafka.Message
	for i := range 100 {
		msgs = append(msgs, kafka.Message{Key: []byte(fmt.Sprint("k", i%7)), Value: []byte(fmt.Sprint(i))})
	}
	k.Produce(t, topic, msgs...)

	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:        k.Brokers,
		GroupID:        "g",
		Topic:          topic,
		MaxWait:        50 * time.Millisecond,
		StartOffset:    kafka.FirstOffset,
		CommitInterval: 0,
	})
	t.Cleanup(func() { _ = r.Close() })
	ctx, cancel := context.WithTimeout(testenv.Context(t), 60*time.Second)
	defer cancel()
	seen := map[string]bool{}
	for len(seen) < 100 {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		seen[string(m.Value)] = true
		if err := r.CommitMessages(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	// The committed offsets are stored by the group coordinator.
	conn, err := kafka.DialLeader(ctx, "tcp", k.Brokers[0], topic, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	last, err := conn.ReadLastOffset()
	if err != nil || last <= 0 {
		t.Fatalf("partition 0 last offset %d, %v", last, err)
	}
}

func TestPostgresQueriesAndIsolation(t *testing.T) {
	ctx := testenv.Context(t)
	var wg sync.WaitGroup
	dsns := make([]string, 2)
	for i := range dsns {
		dsns[i] = testenv.Postgres(t).DSN
	}
	errs := make(chan error, 2)
	for i, dsn := range dsns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := pgx.Connect(ctx, dsn)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close(ctx)
			if _, err := c.Exec(ctx, "CREATE TABLE x (v int)"); err != nil {
				errs <- err
				return
			}
			if _, err := c.Exec(ctx, "INSERT INTO x VALUES ($1)", i); err != nil {
				errs <- err
				return
			}
			var v int
			if err := c.QueryRow(ctx, "SELECT sum(v) FROM x").Scan(&v); err != nil {
				errs <- err
				return
			}
			if v != i {
				errs <- fmt.Errorf("database %d sees sum %d: databases are not isolated", i, v)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestPrivatePostgresStopAndRestart(t *testing.T) {
	pg := testenv.PrivatePostgres(t)
	ctx := testenv.Context(t)
	dsn := pg.DSN("postgres", "postgres")
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "CREATE TABLE durable (v int); INSERT INTO durable VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	_ = c.Close(ctx)
	if err := pg.Kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := pgx.Connect(ctx, dsn); err == nil {
		t.Fatal("connected to a killed server")
	}
	if err := pg.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	c, err = pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var v int
	if err := c.QueryRow(ctx, "SELECT v FROM durable").Scan(&v); err != nil || v != 42 {
		t.Fatalf("after crash recovery: v=%d err=%v", v, err)
	}
}

func TestEventuallyReportsTheLastError(t *testing.T) {
	ft := &fakeT{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		testenv.Eventually(ft, 30*time.Millisecond, func() error { return errors.New("still false") })
	}()
	<-done
	if ft.msg == "" {
		t.Fatal("Eventually did not fail on a condition that never holds")
	}
}

type fakeT struct {
	testing.TB
	msg string
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, a ...any) {
	f.msg = fmt.Sprintf(format, a...)
	runtimeGoexit()
}
