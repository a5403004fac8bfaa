package main

import (
	"context"

	"github.com/stacklens/stacklens/projections"
)

// projectionsRole writes aggregates and raw events to PostgreSQL (docs/projections.md).
var projectionsRole = role{
	name:    "projections",
	summary: "materialise the KV aggregates and raw events in PostgreSQL (idempotent upserts) and run retention",
	component: component{name: "projections", run: func(ctx context.Context, e *env) error {
		e.progress(ctx, "projections", projections.ProgressFigures)
		return projections.Run(ctx, projections.Deps{
			Config: e.cfg.Config,
			Log:    e.log,
			Health: e.health,
		})
	}},
}
