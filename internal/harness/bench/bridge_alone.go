package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/natsutil"
)

// BridgeAlone is the bridge measured on its own: one bridge process, with
// nothing else of the pipeline running, drains a backlog of the ceilings'
// size from Kafka into the event stream.
type BridgeAlone struct {
	Messages int `json:"messages"`
	// StartupSeconds: process start → first event in the stream (start-up,
	// consumer-group join, first fetch).
	StartupSeconds float64 `json:"startup_seconds"`
	// Seconds: first event in the stream → all of them, the drain proper.
	Seconds float64 `json:"seconds"`
	Rate    float64 `json:"events_per_s"`
	// CPU of the bridge process from its start until the stream held the
	// backlog, and of the NATS server and the Kafka broker meanwhile.
	CPUSeconds         float64 `json:"cpu_seconds"`
	CPUPerMillion      float64 `json:"cpu_seconds_per_million_events"`
	NATSCPUPerMillion  float64 `json:"nats_server_cpu_seconds_per_million_events"`
	KafkaCPUPerMillion float64 `json:"kafka_broker_cpu_seconds_per_million_events"`
	Error              string  `json:"error,omitempty"`
}

const bridgeAloneGroup = "stacklens-bench-bridge-alone"

// bridgeAlone runs the isolated bridge phase. The backlog is the kafka-go
// fetch ceiling's scratch topic, which holds the corpus (n messages); the
// bridge reads it under a group of its own and forwards it into the event
// stream, which is purged afterwards so that the pipeline starts on an
// empty stream (its checkpoints are per topic, so the pipeline's bridge
// is not affected by them either). A failure of the phase is reported,
// not fatal; only a failed purge is, since it would skew everything after.
func (r *run) bridgeAlone(ctx context.Context, nc *nats.Conn, n int) error {
	r.alone = &BridgeAlone{Messages: n}
	r.rep.BridgeAlone = r.alone
	if _, ok := r.rep.ceiling(ceilKafka); !ok {
		r.alone.Error = "skipped: the kafka-go fetch ceiling failed, so there is no backlog"
		r.progress("bridge alone: %s", r.alone.Error)
		return nil
	}
	r.progress("bridge alone: draining a backlog of %d messages into the event stream", n)
	env := r.baseEnv()
	env["KAFKA_INPUT_TOPIC"] = scratchTopic
	env["KAFKA_GROUP_ID"] = bridgeAloneGroup
	nats0, kafka0 := r.natsProc.usage(), r.kafkaProc.usage()
	t0 := time.Now()
	p, err := startRole(r.o.Exe, r.dir, "bridge", "bridge-alone", env)
	if err != nil {
		r.alone.Error = err.Error()
		return nil
	}
	res := r.alone
	measure := func() error {
		var t1 time.Time
		var f1 float64
		deadline := t0.Add(max(2*time.Minute, time.Duration(n/500)*time.Second))
		for {
			if !p.alive() {
				return fmt.Errorf("the bridge exited:\n%s", p.logTail(1500))
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("the stream did not get the backlog within %v", deadline.Sub(t0).Round(time.Second))
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			m, err := scrape(ctx, r.hc, p.metricsURL(), "stacklens_bridge_forwarded_total")
			now := time.Now()
			if f := m["stacklens_bridge_forwarded_total"]; err == nil && f > 0 {
				if t1.IsZero() {
					t1, f1 = now, f
				}
				if f >= float64(n) {
					u := p.usage()
					res.StartupSeconds = t1.Sub(t0).Seconds()
					res.Seconds = now.Sub(t1).Seconds()
					if res.Seconds > 0 {
						res.Rate = (f - f1) / res.Seconds
					}
					res.CPUSeconds = u.CPU.Seconds()
					res.CPUPerMillion = res.CPUSeconds / float64(n) * 1e6
					res.NATSCPUPerMillion = (r.natsProc.usage().CPU - nats0.CPU).Seconds() / float64(n) * 1e6
					res.KafkaCPUPerMillion = (r.kafkaProc.usage().CPU - kafka0.CPU).Seconds() / float64(n) * 1e6
					return nil
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if err := measure(); err != nil {
		res.Error = err.Error()
		r.progress("bridge alone: %v", err)
	} else {
		r.progress("bridge alone: %s events/s (%d in %.2f s after %.2f s of start-up), %.1f CPU-s per million events",
			num(res.Rate), n, res.Seconds, res.StartupSeconds, res.CPUPerMillion)
	}
	if err := p.stop(); err != nil {
		r.progress("bridge alone: %v", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("bench: bridge alone: %w", err)
	}
	s, err := js.Stream(ctx, natsutil.StreamEvents)
	if err == nil {
		err = s.Purge(ctx)
	}
	if err != nil {
		return fmt.Errorf("bench: bridge alone: purge %s: %w", natsutil.StreamEvents, err)
	}
	return nil
}
