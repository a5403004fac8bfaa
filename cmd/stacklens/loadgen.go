package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/stacklens/stacklens/internal/harness/loadgen"
	"github.com/stacklens/stacklens/internal/kafkautil"
)

type loadgenFlags struct {
	rate              float64
	duration          time.Duration
	services          int
	seed              uint64
	burstService      string
	burstAt, burstFor time.Duration
}

func (f *loadgenFlags) register(fs *flag.FlagSet) {
	fs.Float64Var(&f.rate, "rate", 1000, "events per second")
	fs.DurationVar(&f.duration, "duration", time.Minute, "how long to produce (0: until interrupted)")
	fs.IntVar(&f.services, "services", 20, "number of simulated services")
	fs.Uint64Var(&f.seed, "seed", 1, "random seed (same seed, same events)")
	fs.StringVar(&f.burstService, "burst-service", "", "service that suffers an error burst (e.g. checkout)")
	fs.DurationVar(&f.burstAt, "burst-at", 30*time.Second, "when the burst starts, from the start of the run")
	fs.DurationVar(&f.burstFor, "burst-for", 3*time.Minute, "how long the burst lasts")
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
	e.log.Info("producing", "rate", f.rate, "duration", f.duration, "services", f.services, "topic", cfg.Kafka.InputTopic, "brokers", cfg.Kafka.BootstrapServers)
	st, err := loadgen.Run(ctx, loadgen.Config{
		Brokers: cfg.Kafka.BootstrapServers, Topic: cfg.Kafka.InputTopic, Rate: f.rate, Duration: f.duration,
		Services: f.services, Seed: f.seed, Bursts: f.bursts(), Transport: tr,
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
