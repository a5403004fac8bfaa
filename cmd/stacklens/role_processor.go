package main

import (
	"context"

	"github.com/stacklens/stacklens/processor"
)

func init() {
	registerRole(role{
		name:    "processor",
		summary: "fold event shards into exact per-window aggregates in JetStream KV (scale by running more)",
		order:   20,
		component: component{name: "processor", run: func(ctx context.Context, e *env) error {
			e.progress(ctx, "processor", processor.ProgressFigures)
			return processor.Run(ctx, processor.Deps{
				Config: e.cfg.Config,
				Log:    e.log.With("component", "processor"),
				Health: e.health,
			})
		}},
	})
}
