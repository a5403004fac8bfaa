package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/segmentio/kafka-go"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/stacklens/stacklens/api"
	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/harness/loadgen"
	"github.com/stacklens/stacklens/internal/natsutil"
)

// The ceilings: what a bare client of each piece of infrastructure does on
// this machine in this run, with message shapes like the pipeline's.

// Keys of the ceilings in the report.
const (
	ceilKafka   = "kafka_fetch"
	ceilAsync   = "jetstream_async_publish"
	ceilBatch   = "jetstream_batch_publish"
	ceilConsume = "consume_ack"
	ceilCopy    = "pgx_copy_from"
	ceilStatic  = "fiber_static_json"
)

// corpus is n generated input events (JSON) with their services.
type corpus struct {
	values   [][]byte
	services []string
}

func newCorpus(n, services int) corpus {
	g := loadgen.NewGenerator(42, services, time.Now())
	c := corpus{values: make([][]byte, n), services: make([]string, n)}
	now := time.Now()
	for i := range n {
		v, ev := g.Next(nil, now)
		c.values[i], c.services[i] = v, ev.Service
	}
	return c
}

func timed(name, unit string, n int, f func() error) Ceiling {
	t0 := time.Now()
	err := f()
	c := Ceiling{Name: name, Unit: unit, N: n, Seconds: time.Since(t0).Seconds()}
	if err != nil {
		c.Error = err.Error()
		return c
	}
	c.Rate = float64(n) / c.Seconds
	return c
}

// scratchTopic holds the corpus after the kafka-go fetch ceiling; the
// isolated bridge phase drains it again.
const scratchTopic = "stacklens-bench-scratch"

// kafkaFetchDrain produces the corpus to a scratch topic (not timed), then
// drains every partition from offset 0 with one kafka-go reader per
// partition, as the bridge reads.
func kafkaFetchDrain(ctx context.Context, brokers []string, partitions int, c corpus) Ceiling {
	const topic = scratchTopic
	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll,
		BatchSize: 5000, BatchBytes: 16 << 20, BatchTimeout: 5 * time.Millisecond, AllowAutoTopicCreation: true}
	n := len(c.values)
	for i := 0; i < n; i += 20_000 {
		j := min(n, i+20_000)
		msgs := make([]kafka.Message, 0, j-i)
		for k := i; k < j; k++ {
			msgs = append(msgs, kafka.Message{Key: []byte(c.services[k]), Value: c.values[k]})
		}
		var err error
		for attempt := 0; attempt < 20; attempt++ { // the topic is auto-created on first use
			if err = w.WriteMessages(ctx, msgs...); err == nil || ctx.Err() != nil {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		if err != nil {
			_ = w.Close()
			return Ceiling{Name: "kafka-go fetch drain", Unit: "msg/s", N: n, Error: err.Error()}
		}
	}
	_ = w.Close()
	hwm := make([]int64, partitions)
	for p := range partitions {
		conn, err := kafka.DialLeader(ctx, "tcp", brokers[0], topic, p)
		if err != nil {
			return Ceiling{Name: "kafka-go fetch drain", Unit: "msg/s", N: n, Error: err.Error()}
		}
		hwm[p], _ = conn.ReadLastOffset()
		_ = conn.Close()
	}
	var drained atomic.Int64
	return timed("kafka-go fetch drain", "msg/s", n, func() error {
		var wg sync.WaitGroup
		errs := make(chan error, partitions)
		for p, end := range hwm {
			if end == 0 {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p, MinBytes: 1, MaxBytes: 8 << 20,
					MaxWait: 100 * time.Millisecond, QueueCapacity: 1000, ReadLagInterval: -1})
				defer r.Close()
				_ = r.SetOffset(0)
				for off := int64(0); off < end; {
					m, err := r.FetchMessage(ctx)
					if err != nil {
						errs <- err
						return
					}
					off = m.Offset + 1
					drained.Add(1)
				}
			}()
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			return err
		}
		if d := drained.Load(); d != int64(n) {
			return fmt.Errorf("drained %d of %d", d, n)
		}
		return nil
	})
}

// streamMsgs builds the stream messages of the corpus for a scratch
// stream: subject <prefix>.<shard>.<service>, the bridge's Kafka headers.
func streamMsgs(prefix string, c corpus, shards int) []*nats.Msg {
	out := make([]*nats.Msg, len(c.values))
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	for i, v := range c.values {
		svc := c.services[i]
		m := nats.NewMsg(prefix + "." + strconv.Itoa(event.Shard(svc, shards)) + "." + event.ServiceToken(svc))
		m.Data = v
		m.Header.Set(natsutil.HdrKafkaTopic, "stacklens-analytics")
		m.Header.Set(natsutil.HdrKafkaPartition, strconv.Itoa(i%12))
		m.Header.Set(natsutil.HdrKafkaOffset, strconv.Itoa(i/12))
		m.Header.Set(natsutil.HdrKafkaTime, now)
		out[i] = m
	}
	return out
}

func scratchStream(ctx context.Context, js jetstream.JetStream, nc config.NATS, name, prefix string) error {
	sc := natsutil.EventsStreamConfig(nc)
	sc.Name = name
	sc.Subjects = []string{prefix + ".>"}
	_ = js.DeleteStream(ctx, name)
	_, err := js.CreateStream(ctx, sc)
	return err
}

// jsAsyncPublish publishes the corpus with PublishMsgAsync from 12
// publishers and waits for every ack.
func jsAsyncPublish(ctx context.Context, nc *nats.Conn, cfg config.NATS, c corpus) Ceiling {
	const name, prefix = "BENCH_ASYNC", "bench.async"
	js, _ := jetstream.New(nc)
	if err := scratchStream(ctx, js, cfg, name, prefix); err != nil {
		return Ceiling{Name: "JetStream async publish", Unit: "msg/s", N: len(c.values), Error: err.Error()}
	}
	msgs := streamMsgs(prefix, c, cfg.Shards)
	const pubs = 12
	return timed("JetStream async publish", "msg/s", len(msgs), func() error {
		var wg sync.WaitGroup
		var firstErr atomic.Value
		for p := range pubs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				jsp, _ := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4000))
				for i := p; i < len(msgs); i += pubs {
					if _, err := jsp.PublishMsgAsync(msgs[i], jetstream.WithStallWait(time.Minute)); err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
				}
				select {
				case <-jsp.PublishAsyncComplete():
				case <-time.After(2 * time.Minute):
					firstErr.CompareAndSwap(nil, errors.New("async publish did not complete"))
				}
			}()
		}
		wg.Wait()
		if err, _ := firstErr.Load().(error); err != nil {
			return err
		}
		return nil
	})
}

// jsBatchPublish publishes the corpus as atomic batches of batch messages
// (jetstreamext.PublishMsgBatch), one batch in flight per partition, 12
// partitions in parallel — as the bridge publishes.
func jsBatchPublish(ctx context.Context, nc *nats.Conn, cfg config.NATS, c corpus, batch int) Ceiling {
	const name, prefix = "BENCH_BATCH", "bench.batch"
	js, _ := jetstream.New(nc)
	if err := scratchStream(ctx, js, cfg, name, prefix); err != nil {
		return Ceiling{Name: "JetStream atomic batch publish", Unit: "msg/s", N: len(c.values), Error: err.Error()}
	}
	msgs := streamMsgs(prefix, c, cfg.Shards)
	const parts = 12
	per := make([][]*nats.Msg, parts)
	for i, m := range msgs {
		per[i%parts] = append(per[i%parts], m)
	}
	return timed(fmt.Sprintf("JetStream atomic batch publish (%d/batch)", batch), "msg/s", len(msgs), func() error {
		var wg sync.WaitGroup
		var firstErr atomic.Value
		for _, pm := range per {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < len(pm); i += batch {
					if _, err := jetstreamext.PublishMsgBatch(ctx, js, pm[i:min(len(pm), i+batch)]); err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if err, _ := firstErr.Load().(error); err != nil {
			return err
		}
		return nil
	})
}

// consumeAck drains the async scratch stream with one durable pull
// consumer per shard (AckAll, acking the last message of each fetched
// batch of 1000), no decoding.
func consumeAck(ctx context.Context, nc *nats.Conn, shards, want int) Ceiling {
	const name = "bare consume-and-ack (pull, AckAll per 1000)"
	js, _ := jetstream.New(nc)
	st, err := js.Stream(ctx, "BENCH_ASYNC")
	if err != nil {
		return Ceiling{Name: name, Unit: "msg/s", N: want, Error: err.Error()}
	}
	info, err := st.Info(ctx)
	if err != nil {
		return Ceiling{Name: name, Unit: "msg/s", N: want, Error: err.Error()}
	}
	total := int(info.State.Msgs)
	cons := make([]jetstream.Consumer, shards)
	for s := range shards {
		cons[s], err = st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
			Durable: "bench_" + strconv.Itoa(s), FilterSubject: "bench.async." + strconv.Itoa(s) + ".>",
			AckPolicy: jetstream.AckAllPolicy, MaxAckPending: 20_000, DeliverPolicy: jetstream.DeliverAllPolicy,
		})
		if err != nil {
			return Ceiling{Name: name, Unit: "msg/s", N: total, Error: err.Error()}
		}
	}
	var got atomic.Int64
	c := timed(name, "msg/s", total, func() error {
		var wg sync.WaitGroup
		for _, cn := range cons {
			// Each consumer's backlog at creation is what it must drain.
			target := int(cn.CachedInfo().NumPending)
			wg.Add(1)
			go func() {
				defer wg.Done()
				done, progress := 0, time.Now()
				for done < target && ctx.Err() == nil && time.Since(progress) < 30*time.Second {
					b, err := cn.Fetch(min(1000, target-done), jetstream.FetchMaxWait(2*time.Second))
					if err != nil {
						continue
					}
					var last jetstream.Msg
					n := 0
					for m := range b.Messages() {
						_ = m.Data()
						last = m
						n++
					}
					if last != nil {
						_ = last.Ack()
						done += n
						got.Add(int64(n))
						progress = time.Now()
					}
				}
			}()
		}
		wg.Wait()
		if g := got.Load(); g != int64(total) {
			return fmt.Errorf("consumed %d of %d", g, total)
		}
		return nil
	})
	return c
}

// copyFrom writes n metric-row-shaped rows into a scratch table without
// indexes with pgx CopyFrom, batches of 500 (the projections' batch).
func copyFrom(ctx context.Context, dsn string, n int) Ceiling {
	const name = "pgx CopyFrom (metric rows, 500/batch)"
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return Ceiling{Name: name, Unit: "rows/s", N: n, Error: err.Error()}
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `DROP TABLE IF EXISTS bench_scratch_metrics; CREATE TABLE bench_scratch_metrics (LIKE analytics_metrics_1min INCLUDING DEFAULTS)`); err != nil {
		return Ceiling{Name: name, Unit: "rows/s", N: n, Error: err.Error()}
	}
	defer func() { _, _ = conn.Exec(context.Background(), `DROP TABLE IF EXISTS bench_scratch_metrics`) }()
	cols := []string{"service", "timestamp", "count", "error_count", "warning_count", "error_rate",
		"throughput_per_sec", "latency_avg_ms", "latency_min_ms", "latency_max_ms", "latency_p50_ms",
		"latency_p95_ms", "latency_p99_ms", "risk_score_avg", "risk_score_max", "latency_sum",
		"latency_sq_sum", "risk_sum", "final", "version", "last_seq"}
	base := time.Now().UTC().Truncate(time.Minute)
	rows := make([][]any, n)
	for i := range rows {
		cnt := int64(1000 + i%500)
		rows[i] = []any{"service-" + strconv.Itoa(i%5000), base.Add(-time.Duration(i/5000) * time.Minute), cnt, cnt / 50, cnt / 20,
			2.0, float64(cnt) / 60, 42.5, 1.25, 900.0, 35.0, 120.0, 480.0, 0.2, 0.9, 42.5 * float64(cnt), 4000 * float64(cnt),
			0.2 * float64(cnt), i%2 == 0, int64(1 + i%3), int64(i)}
	}
	const batch = 500
	return timed(name, "rows/s", n, func() error {
		for i := 0; i < n; i += batch {
			if _, err := conn.CopyFrom(ctx, pgx.Identifier{"bench_scratch_metrics"}, cols, pgx.CopyFromRows(rows[i:min(n, i+batch)])); err != nil {
				return err
			}
		}
		return nil
	})
}

// staticApp is the StackLens API app (api.New, the API's middleware
// chain) with one extra static JSON route, StaticPath.
func staticApp(cfg *config.Loaded, log *slog.Logger) (*api.Server, error) {
	windows, err := cfg.Pipeline.ValidWindows()
	if err != nil {
		return nil, err
	}
	ac := cfg.API
	ac.Host, ac.Port, ac.RateLimit = "127.0.0.1", 0, 0
	body := []byte(`{"count":1,"window":"1min","metrics":[{"service":"static","count":1}]}`)
	return api.New(api.Config{API: ac, DB: cfg.DB, Windows: windows, Version: "bench"}, api.Deps{Log: log, Mount: func(s *api.Server) error {
		s.Route("GET", StaticPath, api.AccessReader, func(c *fiber.Ctx) error {
			c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
			return c.Send(body)
		})
		return nil
	}})
}

// StaticPath is the static JSON route of the API-ceiling server.
const StaticPath = "/bench/static"

// ServeStatic serves the API app with the static JSON route on addr until
// ctx ends: the process `stacklens bench --serve-static` runs it, so that
// the ceiling runs in its own process like the api role.
func ServeStatic(ctx context.Context, cfg *config.Loaded, addr string, log *slog.Logger) error {
	srv, err := staticApp(cfg, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return srv.Serve(ctx, ln)
}

// staticServer runs the static app in this process (when no static
// command is configured); it returns the route's URL and a stop function.
func staticServer(ctx context.Context, cfg *config.Loaded, log *slog.Logger) (string, func(), error) {
	srv, err := staticApp(cfg, log)
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, ln) }()
	return "http://" + ln.Addr().String() + StaticPath, func() { cancel(); <-done }, nil
}
