package loadgen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/segmentio/kafka-go"
)

var (
	producedTotal = metrics.NewCounter("stacklens_loadgen_produced_total")
	failedTotal   = metrics.NewCounter("stacklens_loadgen_failed_total")
)

// Config of an open-loop run.
type Config struct {
	Brokers  []string
	Topic    string
	Rate     float64       // events per second
	Duration time.Duration // 0: until ctx is cancelled
	Services int
	// Partitions of Topic (0: unknown, taken as 1); only sizes the
	// writer's batches (batchSize).
	Partitions int
	Seed       uint64
	Bursts     []Burst
	// Transport carries SASL/TLS settings (nil: plain TCP).
	Transport kafka.RoundTripper
	// OnEvent, when set, sees every event produced (checks, probes).
	OnEvent func(Event)
}

// Stats of a run.
type Stats struct {
	Produced, Failed uint64
	Elapsed          time.Duration
}

// Rate returns the achieved events per second.
func (s Stats) Rate() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Produced) / s.Elapsed.Seconds()
}

// tickEvery is how often Run hands the due events to the writer. The
// writer's BatchTimeout is shorter, so a partition's batch only ever holds
// events of one tick.
const tickEvery = 10 * time.Millisecond

// batchSize is the writer's BatchSize for a run: what one partition's batch
// holds in one tick, with headroom (4 × the mean share, for the hash's skew
// and late ticks), at least 16 and at most the tick's whole count (no
// partition gets more) and the former 2000. kafka-go allocates a
// BatchSize-long slice of Messages for every batch, so a fixed 2000 cost
// about 300 KB per batch of one or two events at low rates — 78 % of the
// generator's CPU in allocation and GC (docs/PERFORMANCE.md). A smaller
// size never lowers the rate: a partition's batch is closed by the timeout
// after one tick anyway, and a tick larger than the size only splits into
// more batches.
func batchSize(rate float64, partitions, services int) int {
	perTick := int(math.Ceil(rate * tickEvery.Seconds()))
	shares := max(1, min(partitions, services))
	n := int(math.Ceil(4 * float64(perTick) / float64(shares)))
	return max(16, min(n, perTick, 2000))
}

// Run produces events at cfg.Rate until cfg.Duration passes or ctx ends.
// The schedule is open-loop: events are due at fixed times whatever the
// broker's speed, so a slow pipeline shows up as lag, not as a lower rate.
// Writes are asynchronous and batched; Run waits for them before it returns.
func Run(ctx context.Context, cfg Config, log *slog.Logger) (Stats, error) {
	if cfg.Rate <= 0 {
		return Stats{}, errors.New("loadgen: rate must be positive")
	}
	if len(cfg.Brokers) == 0 || cfg.Topic == "" {
		return Stats{}, errors.New("loadgen: brokers and topic are required")
	}
	var produced, failed atomic.Uint64
	w := &kafka.Writer{
		Addr:         kafka.TCP(cfg.Brokers...),
		Topic:        cfg.Topic,
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		BatchSize:    batchSize(cfg.Rate, cfg.Partitions, cfg.Services),
		BatchBytes:   4 << 20,
		BatchTimeout: 5 * time.Millisecond,
		Async:        true,
		Transport:    cfg.Transport,
		Completion: func(msgs []kafka.Message, err error) {
			if err != nil {
				failed.Add(uint64(len(msgs)))
				failedTotal.Add(len(msgs))
				log.Warn("loadgen: write failed", "messages", len(msgs), "err", err)
				return
			}
			produced.Add(uint64(len(msgs)))
			producedTotal.Add(len(msgs))
		},
	}
	start := time.Now()
	gen := NewGenerator(cfg.Seed, cfg.Services, start, cfg.Bursts...)
	tick := time.NewTicker(tickEvery)
	defer tick.Stop()
	var due float64
	sent := 0
	for {
		now := time.Now()
		elapsed := now.Sub(start)
		if cfg.Duration > 0 && elapsed >= cfg.Duration {
			elapsed = cfg.Duration
		}
		due = cfg.Rate * elapsed.Seconds()
		// A fresh slice each tick: the async writer owns what it was given.
		var batch []kafka.Message
		for ; float64(sent) < due; sent++ {
			val, ev := gen.Next(nil, now)
			if cfg.OnEvent != nil {
				cfg.OnEvent(ev)
			}
			batch = append(batch, kafka.Message{Key: []byte(ev.Service), Value: val})
		}
		if len(batch) > 0 {
			if err := w.WriteMessages(ctx, batch...); err != nil && ctx.Err() == nil {
				// Refused before the async writer took them, so
				// Completion never sees them. (After a cancel they are
				// simply not sent.)
				failed.Add(uint64(len(batch)))
				failedTotal.Add(len(batch))
				log.Warn("loadgen: write", "err", err)
			}
		}
		// Judged on the same clock reading as the due count, so that a
		// slow last tick cannot end the run short of Rate × Duration.
		if cfg.Duration > 0 && elapsed >= cfg.Duration {
			break
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
			continue
		}
		break
	}
	if err := w.Close(); err != nil {
		return Stats{}, fmt.Errorf("loadgen: close writer: %w", err)
	}
	return Stats{Produced: produced.Load(), Failed: failed.Load(), Elapsed: time.Since(start)}, nil
}
