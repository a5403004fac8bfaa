package bridge

import (
	"context"
	"fmt"
	"maps"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/segmentio/kafka-go"

	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/natsutil"
)

// TestBridgeBench measures, in one run on the same M messages: (1) a bare
// kafka-go drain of the topic (one reader per partition, as the bridge
// reads), (2) bare JetStream publishing — async publish and atomic
// batches of KAFKA_BATCH_SIZE — and (3) the bridge end to end, Kafka to
// stream. It reports events/s of each and the ratio of the bridge to the
// lowest ceiling. Run with STACKLENS_BENCH=1 (M from STACKLENS_BENCH_M,
// default 200000; batch size from STACKLENS_BENCH_BATCH, default 500).
func TestBridgeBench(t *testing.T) {
	if os.Getenv("STACKLENS_BENCH") != "1" {
		t.Skip("set STACKLENS_BENCH=1")
	}
	m := 200_000
	if v, err := strconv.Atoi(os.Getenv("STACKLENS_BENCH_M")); err == nil && v > 0 {
		m = v
	}
	s := newSetup(t)
	s.env["KAFKA_BATCH_SIZE"] = "500"
	if v := os.Getenv("STACKLENS_BENCH_BATCH"); v != "" {
		s.env["KAFKA_BATCH_SIZE"] = v
	}
	s.env["KAFKA_BATCH_TIMEOUT_MS"] = "20"
	s.env["LOG_LEVEL"] = "INFO"
	cfg := s.config()

	c := newCorpus()
	t0 := time.Now()
	w := s.kafka.Writer(t, s.topic)
	w.BatchSize = 5000
	w.BatchBytes = 16 << 20
	for sent := 0; sent < m; sent += 20_000 {
		if err := w.WriteMessages(context.Background(), c.messages(min(20_000, m-sent), 0)...); err != nil {
			t.Fatal(err)
		}
	}
	hwm := s.highWaterMarks()
	t.Logf("produced %d messages in %v", m, time.Since(t0).Round(time.Millisecond))

	// (1) Bare kafka-go drain.
	b0, err := newBridge(Deps{Config: cfg, Log: testLogger(t), Options: testOptions("bench")})
	if err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	var wg sync.WaitGroup
	var drained atomic.Int64
	for p, end := range hwm {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := b0.newPartitionReader(p)
			defer r.Close()
			_ = r.SetOffset(0)
			for off := int64(0); off < end; {
				msg, err := r.FetchMessage(context.Background())
				if err != nil {
					t.Error(err)
					return
				}
				off = msg.Offset + 1
				drained.Add(1)
			}
		}()
	}
	wg.Wait()
	fetchRate := float64(drained.Load()) / time.Since(t0).Seconds()

	// Stream messages as the bridge builds them: one batch worth per
	// partition, reused, so the ceilings carry no extra memory or GC load.
	per := m / testPartitions
	tmpl := make([][]*nats.Msg, testPartitions)
	for p := range tmpl {
		mb := newMessageBuilder(s.topic, p, cfg.NATS.Shards, b0.limits)
		for i, v := range c.messages(cfg.Kafka.BatchSize, 0) {
			bm, _ := mb.build(&kafka.Message{Offset: int64(i), Value: v.Value, Time: time.Now()}, time.Now())
			tmpl[p] = append(tmpl[p], bm)
		}
	}
	bench := func(name string) jetstream.JetStream {
		js := s.nats.JetStream(t)
		sc := natsutil.EventsStreamConfig(cfg.NATS)
		sc.Name = name
		sc.Subjects = []string{name + ".>"}
		if _, err := js.CreateStream(context.Background(), sc); err != nil {
			t.Fatal(err)
		}
		return js
	}

	// (2a) Bare async publish, 12 publishers.
	var asyncRate float64
	func() {
		js := bench("BENCH_ASYNC")
		t0 = time.Now()
		var wg sync.WaitGroup
		for _, pm := range tmpl {
			wg.Add(1)
			go func() {
				defer wg.Done()
				jsp, _ := jetstream.New(js.Conn(), jetstream.WithPublishAsyncMaxPending(4000))
				for i := range per {
					bm := pm[i%len(pm)]
					msg := &nats.Msg{Subject: "BENCH_ASYNC." + bm.Subject, Data: bm.Data, Header: bm.Header}
					if _, err := jsp.PublishMsgAsync(msg, jetstream.WithStallWait(time.Minute)); err != nil {
						t.Error(err)
						return
					}
				}
				<-jsp.PublishAsyncComplete()
			}()
		}
		wg.Wait()
		asyncRate = float64(per*testPartitions) / time.Since(t0).Seconds()
	}()

	// (2b) Bare atomic batches of KAFKA_BATCH_SIZE + checkpoint, one in
	// flight per partition, 12 partitions in parallel.
	var batchRate float64
	func() {
		js := bench("BENCH_BATCH")
		t0 = time.Now()
		var wg sync.WaitGroup
		for p, pm := range tmpl {
			wg.Add(1)
			go func() {
				defer wg.Done()
				msgs := make([]*nats.Msg, 0, len(pm)+1)
				for _, bm := range pm {
					msgs = append(msgs, &nats.Msg{Subject: "BENCH_BATCH." + bm.Subject, Data: bm.Data, Header: maps.Clone(bm.Header)})
				}
				var prev uint64
				subj := "BENCH_BATCH.ck." + strconv.Itoa(p)
				for i := 0; i < per; i += len(pm) {
					n := min(len(pm), per-i)
					bt := &batch{msgs: append(msgs[:n:n], checkpointMsg(subj, Checkpoint{Topic: "t", Offset: int64(i)}))}
					seq, err := sendBatch(context.Background(), js, bt, prev, 10*time.Second)
					if err != nil {
						t.Error(err)
						return
					}
					prev = seq
				}
			}()
		}
		wg.Wait()
		batchRate = float64(per*testPartitions) / time.Since(t0).Seconds()
	}()

	// (3) The bridge, end to end.
	js := s.nats.JetStream(t)
	consumed0 := consumedTotal.Get()
	t0 = time.Now()
	rb := s.start("bench")
	var tFirst time.Time
	testenv.Eventually(t, 120*time.Second, func() error {
		if tFirst.IsZero() && consumedTotal.Get() > consumed0 {
			tFirst = time.Now()
		}
		return s.caughtUp(js, hwm)
	})
	total := time.Since(t0)
	steady := time.Since(tFirst)
	rb.stop(t)
	bridgeRate := float64(m) / steady.Seconds()
	ceiling := min(fetchRate, batchRate)
	report := fmt.Sprintf(`bridge benchmark, M=%d messages, 12 partitions, batch %d:
  kafka-go fetch drain      %10.0f events/s
  JetStream async publish   %10.0f events/s
  JetStream atomic batches  %10.0f events/s
  bridge end to end         %10.0f events/s (from first fetch; %.0f events/s including group join, %v)
  ratio bridge / min(fetch, atomic batch) = %.2f
  ratio bridge / min(fetch, async publish) = %.2f`,
		m, cfg.Kafka.BatchSize, fetchRate, asyncRate, batchRate, bridgeRate, float64(m)/total.Seconds(),
		total.Round(time.Millisecond), bridgeRate/ceiling, bridgeRate/min(fetchRate, asyncRate))
	t.Log(report)
	if out := os.Getenv("STACKLENS_BENCH_OUT"); out != "" {
		_ = os.WriteFile(out, []byte(report+"\n"), 0o644)
	}
}
