package main

import (
	"context"

	"github.com/stacklens/stacklens/processor"
)

// processorRole folds events into window aggregates (docs/processor.md).
var processorRole = role{
	name:    "processor",
	summary: "fold event shards into exact per-window aggregates in JetStream KV (scale by running more)",
	component: component{name: "processor", run: func(ctx context.Context, e *env) error {
		e.progress(ctx, "processor", processor.ProgressFigures)
		return processor.Run(ctx, processor.Deps{
			Config: e.cfg.Config,
			Log:    e.log,
			Health: e.health,
		})
	}},
}
