package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/harness/devstack"
	"github.com/stacklens/stacklens/internal/natsutil"
)

const devSummary = "run the whole product in one process on embedded NATS, Kafka and PostgreSQL"

func cmdDev(ctx context.Context, c *cli) int {
	var infraOnly, demo bool
	var ports devstack.Ports
	cfg, code := loadConfig(c, "dev", devSummary, func(fs *flag.FlagSet) {
		fs.BoolVar(&infraOnly, "infra-only", false, "start only the infrastructure (NATS, Kafka, PostgreSQL) and migrations; run roles as separate processes")
		fs.BoolVar(&demo, "demo", false, "also run the load generator with realistic traffic and an error burst")
		fs.IntVar(&ports.NATS, "nats-port", 0, "port of the embedded NATS server (0: 4222, -1: any free port)")
		fs.IntVar(&ports.Kafka, "kafka-port", 0, "port of the embedded Kafka broker (0: 9092, -1: any free port)")
	})
	if cfg == nil {
		return code
	}
	e := newEnv(c, cfg, "dev")
	e.log.Info("starting StackLens dev stack", "version", version, "data_dir", cfg.Runtime.DataDir)

	stack, err := devstack.Start(ctx, cfg, ports, e.log)
	if err != nil {
		e.log.Error("cannot start the dev stack", "err", err)
		return exitFail
	}
	defer stack.Stop(e.log)

	if err := provision(ctx, e); err != nil {
		e.log.Error("cannot provision", "err", err)
		return exitFail
	}
	path, err := stack.WriteEndpoints()
	if err != nil {
		e.log.Error("cannot write endpoints", "err", err)
		return exitFail
	}
	b, _ := json.MarshalIndent(stack.Endpoints, "", "  ")
	fmt.Fprintf(c.stdout, "StackLens dev stack is up (%s):\n%s\n", path, b)

	var comps []component
	if !infraOnly {
		// The demo's producer is the intake of the intake: it stops first.
		if demo {
			comps = append(comps, demoComponents()...)
		}
		for _, r := range roles() {
			comps = append(comps, r.component)
		}
	}
	return runComponents(ctx, e, comps...)
}

// provision applies the migrations and creates the event stream, so the
// infrastructure is usable by role processes and the NATS CLI at once.
func provision(ctx context.Context, e *env) error {
	if _, err := migrateUp(ctx, e.cfg.Config, e.log); err != nil {
		return err
	}
	nc, err := natsutil.Connect(ctx, e.cfg.NATS, natsutil.DefaultName("dev"), e.log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	_, err = natsutil.EnsureEventsStream(ctx, js, e.cfg.NATS)
	return err
}
