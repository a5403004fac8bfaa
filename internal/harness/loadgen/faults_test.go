package loadgen

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/stacklens/stacklens/internal/harness/testenv"
)

func TestNewGeneratorHasAtLeastOneService(t *testing.T) {
	start := time.Date(2026, 11, 29, 1, 0, 0, 0, time.UTC)
	for _, n := range []int{-3, 0, 1} {
		g := NewGenerator(5, n, start)
		if s := g.Services(); len(s) != 1 || s[0].Name != "checkout" {
			t.Errorf("n=%d: services %v, want only checkout", n, s)
		}
		for range 100 {
			if _, ev := g.Next(nil, start); ev.Service != "checkout" {
				t.Fatalf("n=%d: event of service %q", n, ev.Service)
			}
		}
	}
}

// topicSize is the number of messages in topic, summed over its partitions.
func topicSize(t *testing.T, broker, topic string, partitions int) int64 {
	t.Helper()
	var total int64
	for p := range partitions {
		conn, err := kafka.DialLeader(context.Background(), "tcp", broker, topic, p)
		if err != nil {
			t.Fatal(err)
		}
		last, err := conn.ReadLastOffset()
		conn.Close()
		if err != nil {
			t.Fatal(err)
		}
		total += last
	}
	return total
}

func TestRunCountsWritesTheBrokerRejects(t *testing.T) {
	k := testenv.Kafka(t, 2, "in")
	if k.Cluster == nil {
		t.Skip("needs the embedded broker to inject produce errors")
	}
	// The broker refuses every produce request with a non-retriable error.
	var rejected atomic.Int64
	k.Cluster.ControlKey(int16(kmsg.Produce), func(r kmsg.Request) (kmsg.Response, error, bool) {
		k.Cluster.KeepControl()
		req := r.(*kmsg.ProduceRequest)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.TopicAuthorizationFailed.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		rejected.Add(1)
		return resp, nil, true
	})
	var logs testenv.SyncBuffer
	var seen uint64
	st, err := Run(testenv.Context(t), Config{
		Brokers: k.Brokers, Topic: "in", Rate: 1000, Duration: 250 * time.Millisecond, Services: 3, Seed: 9,
		OnEvent: func(Event) { seen++ },
	}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if rejected.Load() == 0 {
		t.Fatal("no produce request reached the broker")
	}
	// seen is not checked against Rate×Duration: Run can stop a few events
	// short when the deadline passes while it writes its last batch.
	if seen == 0 || seen > 250 || st.Produced != 0 || st.Failed != seen {
		t.Errorf("stats %+v for %d events; want all of them failed", st, seen)
	}
	if !strings.Contains(logs.String(), "loadgen: write failed") {
		t.Errorf("rejected writes not logged: %s", logs.String())
	}
	if n := topicSize(t, k.Brokers[0], "in", 2); n != 0 {
		t.Errorf("topic holds %d rejected messages", n)
	}
}

func TestRunToAMissingTopicLogsAndFinishes(t *testing.T) {
	k := testenv.Kafka(t, 1, "in")
	var logs testenv.SyncBuffer
	var seen uint64
	// The writer does not auto-create topics: every write is refused
	// before it is queued.
	st, err := Run(testenv.Context(t), Config{
		Brokers: k.Brokers, Topic: testenv.Name(t), Rate: 1000, Duration: 250 * time.Millisecond, Services: 2, Seed: 1,
		OnEvent: func(Event) { seen++ },
	}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	// Every event generated is accounted for as failed.
	if seen != 250 || st.Produced != 0 || st.Failed != seen {
		t.Errorf("stats %+v for %d events; want 250 generated, all failed", st, seen)
	}
	if out := logs.String(); !strings.Contains(out, "loadgen: write") || !strings.Contains(out, "Unknown Topic Or Partition") {
		t.Errorf("refused writes not logged with the cause: %s", out)
	}
}

func TestRunStopsOnCancelAndFlushes(t *testing.T) {
	k := testenv.Kafka(t, 3, "in")
	ctx, cancel := context.WithCancel(testenv.Context(t))
	defer cancel()
	var logs testenv.SyncBuffer
	var seen uint64
	base := producedTotal.Get() // the counter is process-wide
	done := make(chan struct{})
	var st Stats
	var err error
	go func() {
		defer close(done)
		// No duration: only the cancel ends the run.
		st, err = Run(ctx, Config{
			Brokers: k.Brokers, Topic: "in", Rate: 2000, Services: 4, Seed: 2,
			OnEvent: func(Event) { atomic.AddUint64(&seen, 1) },
		}, slog.New(slog.NewTextHandler(&logs, nil)))
	}()
	// Let it run until the broker has acknowledged some events.
	testenv.Eventually(t, 20*time.Second, func() error {
		if n := producedTotal.Get(); n == base {
			return fmt.Errorf("nothing produced yet")
		}
		return nil
	})
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if err != nil {
		t.Fatal(err)
	}
	total := atomic.LoadUint64(&seen)
	if st.Produced == 0 || st.Produced > total || st.Failed != 0 {
		t.Errorf("stats %+v for %d generated events", st, total)
	}
	// Run waited for its writes: the topic holds exactly what it reports.
	if n := topicSize(t, k.Brokers[0], "in", 3); uint64(n) != st.Produced {
		t.Errorf("topic holds %d messages, Run reports %d produced", n, st.Produced)
	}
	if strings.Contains(logs.String(), "loadgen: write") {
		t.Errorf("a cancel was logged as a write error: %s", logs.String())
	}
}
