package bridge

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/segmentio/kafka-go"

	"github.com/stacklens/stacklens/internal/harness/procstat"
	"github.com/stacklens/stacklens/internal/natsutil"
)

// TestBridgeFixedRate (STACKLENS_BENCH=1) offers STACKLENS_BENCH_RATE
// events/s (default 5000) for STACKLENS_BENCH_SECONDS (default 10) and
// reports the atomic batches per second the bridge commits, the process's
// CPU per event (bridge, in-process NATS server, kfake and producer) and
// the freshness of each event from its production to its delivery out of
// the stream (p50, p99). KAFKA_BATCH_SIZE, KAFKA_BATCH_TIMEOUT_MS and
// KAFKA_LINGER are taken from the environment (defaults otherwise), so
// settings can be compared (docs/bridge.md, "Batching").
func TestBridgeFixedRate(t *testing.T) {
	if os.Getenv("STACKLENS_BENCH") != "1" {
		t.Skip("set STACKLENS_BENCH=1")
	}
	rate, secs := 5000, 10
	if v, err := strconv.Atoi(os.Getenv("STACKLENS_BENCH_RATE")); err == nil && v > 0 {
		rate = v
	}
	if v, err := strconv.Atoi(os.Getenv("STACKLENS_BENCH_SECONDS")); err == nil && v > 0 {
		secs = v
	}
	s := newSetup(t)
	s.env["LOG_LEVEL"] = "INFO"
	s.env["KAFKA_BATCH_SIZE"] = "500"
	s.env["KAFKA_BATCH_TIMEOUT_MS"] = "20"
	for _, k := range []string{"KAFKA_BATCH_SIZE", "KAFKA_BATCH_TIMEOUT_MS", "KAFKA_LINGER"} {
		if v := os.Getenv(k); v != "" {
			s.env[k] = v
		}
	}
	cfg := s.config()
	s.start("a")
	js := s.nats.JetStream(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var lat []time.Duration
	got := make(chan struct{})
	total := rate * secs
	var cc jetstream.Consumer
	var err error
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) { // polls for the bridge's stream
		cc, err = js.OrderedConsumer(ctx, natsutil.StreamEvents, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy})
		if err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		TS time.Time `json:"timestamp"`
	}
	sub, err := cc.Consume(func(m jetstream.Msg) {
		if json.Unmarshal(m.Data(), &v) != nil || v.TS.IsZero() {
			return // a checkpoint or an event of another test
		}
		lat = append(lat, time.Since(v.TS))
		if len(lat) == total {
			close(got)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Stop()

	w := &kafka.Writer{Addr: kafka.TCP(s.kafka.Brokers...), Topic: s.topic, Balancer: &kafka.Hash{},
		BatchSize: 64, BatchTimeout: time.Millisecond, Async: true}
	defer w.Close()
	cpu0, b0, t0 := procstat.ProcessCPU(), atomicBatches.Get(), time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	for sent := 0; sent < total; <-tick.C {
		due := min(total, int(float64(rate)*time.Since(t0).Seconds()))
		var msgs []kafka.Message
		for ; sent < due; sent++ {
			msgs = append(msgs, kafka.Message{
				Key:   []byte("svc-" + strconv.Itoa(sent%20)),
				Value: []byte(`{"timestamp":"` + time.Now().UTC().Format(time.RFC3339Nano) + `","service":"svc-` + strconv.Itoa(sent%20) + `","level":"info","latency_ms":1}`),
			})
		}
		if err := w.WriteMessages(ctx, msgs...); err != nil {
			t.Fatal(err)
		}
	}
	tick.Stop()
	select {
	case <-got:
	case <-time.After(2 * time.Minute):
		t.Fatalf("%d of %d events delivered", len(lat), total)
	}
	wall, cpu, batches := time.Since(t0), procstat.ProcessCPU()-cpu0, atomicBatches.Get()-b0
	slices.Sort(lat)
	t.Logf("KAFKA_BATCH_SIZE=%s KAFKA_BATCH_TIMEOUT_MS=%s KAFKA_LINGER=%s, %d ev/s for %ds: %.0f atomic batches/s (%.1f events each), CPU %.1f µs/event (whole process), freshness p50 %v p99 %v",
		strconv.Itoa(cfg.Kafka.BatchSize), strconv.Itoa(cfg.Kafka.BatchTimeoutMS), cfg.Kafka.Linger, rate, secs,
		float64(batches)/wall.Seconds(), float64(total)/float64(batches), float64(cpu.Microseconds())/float64(total),
		lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)*99/100].Round(time.Millisecond))
}
