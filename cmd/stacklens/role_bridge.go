package main

import (
	"context"

	"github.com/stacklens/stacklens/bridge"
)

func init() {
	registerRole(role{
		name:    "bridge",
		summary: "forward the Kafka input topic into the JetStream event log, exactly once",
		order:   10,
		component: component{name: "bridge", run: func(ctx context.Context, e *env) error {
			e.progress(ctx, "bridge", bridge.ProgressFigures)
			return bridge.Run(ctx, bridge.Deps{
				Config: e.cfg.Config,
				Log:    e.log.With("component", "bridge"),
				Health: e.health,
			})
		}},
	})
}
