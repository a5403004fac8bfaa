package main

import (
	"context"

	"github.com/stacklens/stacklens/bridge"
)

// bridgeRole forwards Kafka into the event stream (docs/bridge.md).
var bridgeRole = role{
	name:    "bridge",
	summary: "forward the Kafka input topic into the JetStream event log, exactly once",
	component: component{name: "bridge", run: func(ctx context.Context, e *env) error {
		e.progress(ctx, "bridge", bridge.ProgressFigures)
		return bridge.Run(ctx, bridge.Deps{
			Config: e.cfg.Config,
			Log:    e.log,
			Health: e.health,
		})
	}},
}
