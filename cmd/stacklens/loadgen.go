package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/stacklens/stacklens/internal/harness/loadgen"
	"github.com/stacklens/stacklens/internal/kafkautil"
	"github.com/stacklens/stacklens/internal/telemetry"
)

type loadgenFlags struct {
	rate              float64
	duration          time.Duration
	services          int
	seed              uint64
	burstService      string
	burstAt, burstFor time.Duration
	metrics           bool
}

func (f *loadgenFlags) register(fs *flag.FlagSet) {
	fs.Float64Var(&f.rate, "rate", 1000, "events per second")
	fs.DurationVar(&f.duration, "duration", time.Minute, "how long to produce (0: until interrupted)")
	fs.IntVar(&f.services, "services", 20, "number of simulated services")
	fs.Uint64Var(&f.seed, "seed", 1, "random seed (same seed, same events)")
	fs.StringVar(&f.burstService, "burst-service", "", "service that suffers an error burst (e.g. checkout)")
	fs.DurationVar(&f.burstAt, "burst-at", 30*time.Second, "when the burst starts, from the start of the run")
	fs.DurationVar(&f.burstFor, "burst-for", 3*time.Minute, "how long the burst lasts")
	fs.BoolVar(&f.metrics, "metrics", false, "serve the roles' metrics server (/ready, /metrics, /debug/pprof) on METRICS_HOST:METRICS_PORT while producing (stacklens bench profiles the generator through it)")
}

func (f *loadgenFlags) bursts() []loadgen.Burst {
	if f.burstService == "" {
		return nil
	}
	return []loadgen.Burst{{Service: f.burstService, Start: f.burstAt, Duration: f.burstFor}}
}

func cmdLoadgen(ctx context.Context, c *cli) int {
	var f loadgenFlags
	cfg, code := loadConfig(c, "loadgen", "produce realistic events to Kafka", f.register)
	if cfg == nil {
		return code
	}
	e := newEnv(c, cfg, "loadgen")
	tr, err := kafkautil.Transport(cfg.Kafka)
	if err != nil {
		fmt.Fprintln(c.stderr, "stacklens:", oneLine(err))
		return exitConfig
	}
	defer tr.CloseIdleConnections()
	if f.metrics {
		ms, err := telemetry.Listen(net.JoinHostPort(cfg.Telemetry.MetricsHost, strconv.Itoa(cfg.Telemetry.MetricsPort)), e.health, version)
		if err != nil {
			fmt.Fprintln(c.stderr, "stacklens:", oneLine(err))
			return exitFail
		}
		mctx, stop := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = ms.Run(mctx, e.log); close(done) }()
		defer func() { stop(); <-done }()
	}
	e.log.Info("producing", "rate", f.rate, "duration", f.duration, "services", f.services, "topic", cfg.Kafka.InputTopic, "brokers", cfg.Kafka.BootstrapServers)
	st, err := loadgen.Run(ctx, loadgen.Config{
		Brokers: cfg.Kafka.BootstrapServers, Topic: cfg.Kafka.InputTopic, Rate: f.rate, Duration: f.duration,
		Partitions: cfg.Kafka.Partitions,
		Services:   f.services, Seed: f.seed, Bursts: f.bursts(), Transport: tr,
	}, e.log)
	if err != nil {
		e.log.Error("loadgen failed", "err", err)
		return exitFail
	}
	fmt.Fprintf(c.stdout, "produced %d events in %s (%.0f/s), %d failed\n", st.Produced, st.Elapsed.Round(time.Millisecond), st.Rate(), st.Failed)
	if st.Failed > 0 {
		return exitFail
	}
	return exitOK
}
