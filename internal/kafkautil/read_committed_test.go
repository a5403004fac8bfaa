package kafkautil

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestReadCommitted: plain records and those of committed transactions are
// read, those of an aborted transaction are not, every partition to its
// end (one ends on a transaction marker); an unknown topic is an error.
func TestReadCommitted(t *testing.T) {
	cl, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	brokers := cl.ListenAddrs()

	plain, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if err := plain.ProduceSync(ctx, &kgo.Record{Topic: "t", Partition: 0, Value: []byte("plain")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	tx, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.TransactionalID("tx"), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	for _, c := range []struct {
		value  string
		commit kgo.TransactionEndTry
	}{{"aborted", kgo.TryAbort}, {"committed", kgo.TryCommit}} {
		if err := tx.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for p := int32(0); p < 2; p++ {
			if err := tx.ProduceSync(ctx, &kgo.Record{Topic: "t", Partition: p, Value: []byte(c.value)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.EndTransaction(ctx, c.commit); err != nil {
			t.Fatal(err)
		}
	}
	recs, err := ReadCommitted(ctx, brokers, "t")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		got = append(got, string(r.Value)+"@"+string(rune('0'+r.Partition)))
	}
	if want := "plain@0 committed@0 committed@1"; strings.Join(got, " ") != want {
		t.Errorf("read %q, want %q", strings.Join(got, " "), want)
	}
	if _, err := ReadCommitted(ctx, brokers, "missing"); err == nil {
		t.Error("unknown topic read without an error")
	}
	empty, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "e"))
	if err != nil {
		t.Fatal(err)
	}
	defer empty.Close()
	if recs, err := ReadCommitted(ctx, empty.ListenAddrs(), "e"); err != nil || len(recs) != 0 {
		t.Errorf("empty topic: %d records, %v", len(recs), err)
	}
}

// TestReadCommittedErrors: a broker that does not answer, a reader that
// never reaches the end before the context does, a bad client option.
func TestReadCommittedErrors(t *testing.T) {
	cl, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	p, err := kgo.NewClient(kgo.SeedBrokers(cl.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.ProduceSync(context.Background(), &kgo.Record{Topic: "t", Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	// Starting at the end, the reader never sees the record before it.
	if _, err := ReadCommitted(ctx, cl.ListenAddrs(), "t", kgo.ConsumeResetOffset(kgo.NewOffset().AtEnd())); err == nil || !strings.Contains(err.Error(), "to its end") {
		t.Errorf("reader stuck before the end: %v", err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	if _, err := ReadCommitted(ctx2, []string{"127.0.0.1:1"}, "t"); err == nil {
		t.Error("no broker: no error")
	}
	if _, err := ReadCommitted(context.Background(), cl.ListenAddrs(), "t", kgo.SeedBrokers()); err == nil {
		t.Error("bad option: no error")
	}
}
