package main

import (
	"context"

	"github.com/stacklens/stacklens/projections"
)

func init() {
	registerRole(role{
		name:    "projections",
		summary: "materialise the KV aggregates and raw events in PostgreSQL (idempotent upserts) and run retention",
		order:   30,
		component: component{name: "projections", run: func(ctx context.Context, e *env) error {
			e.progress(ctx, "projections", projections.ProgressFigures)
			return projections.Run(ctx, projections.Deps{
				Config: e.cfg.Config,
				Log:    e.log.With("component", "projections"),
				Health: e.health,
			})
		}},
	})
}
