package main

import (
	"context"
	"time"

	"github.com/stacklens/stacklens/internal/harness/loadgen"
	"github.com/stacklens/stacklens/internal/kafkautil"
)

// demoComponents are what `stacklens dev --demo` adds: realistic traffic
// from a dozen services and, two minutes in, a four-minute error burst on
// checkout that fires (and then resolves) the default alert rules.
func demoComponents() []component {
	return []component{{name: "demo-loadgen", run: func(ctx context.Context, e *env) error {
		tr, err := kafkautil.Transport(e.cfg.Kafka)
		if err != nil {
			return err
		}
		defer tr.CloseIdleConnections()
		_, err = loadgen.Run(ctx, loadgen.Config{
			Brokers: e.cfg.Kafka.BootstrapServers, Topic: e.cfg.Kafka.InputTopic,
			Rate: 200, Services: 12, Seed: uint64(time.Now().UnixNano()), Transport: tr,
			Bursts: []loadgen.Burst{{Service: "checkout", Start: 2 * time.Minute, Duration: 4 * time.Minute}},
		}, e.log.With("component", "demo-loadgen"))
		return err
	}}}
}
