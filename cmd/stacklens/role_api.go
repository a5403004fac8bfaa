package main

import (
	"context"
	"errors"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"github.com/stacklens/stacklens/alerting"
	"github.com/stacklens/stacklens/api"
	"github.com/stacklens/stacklens/api/dashboard"
	"github.com/stacklens/stacklens/internal/natsutil"
)

func init() {
	registerRole(role{
		name:      "api",
		summary:   "dashboard HTTP API (Fiber), web dashboard and alert engine",
		order:     40,
		component: component{name: "api", run: runAPI},
	})
}

// runAPI serves the API and runs the alert engine next to it; the engine
// takes part in the evaluator lease, so any number of API replicas can run.
func runAPI(ctx context.Context, e *env) error {
	windows, err := e.cfg.Pipeline.ValidWindows()
	if err != nil {
		return err
	}
	// The api and alerting packages add their own component attribute.
	// Connects in the background and reconnects forever (natsutil.Options
	// retries a failed first connect): the API serves queries while NATS is
	// down, /health reports it, and the engine waits for its lease.
	opts, err := natsutil.Options(e.cfg.NATS, natsutil.DefaultName("api"), e.log)
	if err != nil {
		return err
	}
	nc, err := nats.Connect(strings.ReplaceAll(e.cfg.NATS.URL, " ", ""), opts...)
	if err != nil {
		return err
	}
	defer nc.Close()

	eng, err := alerting.New(alerting.Config{
		Alerting: e.cfg.Alerting, Kafka: e.cfg.Kafka, DB: e.cfg.DB, NATS: e.cfg.NATS, Windows: windows,
	}, alerting.Deps{Log: e.log, NATS: nc, Health: e.health})
	if err != nil {
		return err
	}
	srv, err := api.New(api.Config{
		API: e.cfg.API, DB: e.cfg.DB, Windows: windows, Version: version, Environment: e.cfg.Runtime.DeployEnv,
	}, api.Deps{
		Log: e.log, Health: e.health, NATS: nc, Mount: dashboard.Mount,
		Hooks: api.Hooks{
			RulesChanged:    eng.RulesChanged,
			SilencesChanged: eng.SilencesChanged,
			OnAcknowledge: func(ctx context.Context, tx pgx.Tx, a api.Alert) error {
				return eng.OnAcknowledge(ctx, tx, a.AlertID)
			},
		},
	})
	if err != nil {
		return err
	}

	// The HTTP server stops first (no new acknowledgements), then the engine
	// releases its lease.
	engCtx, stopEngine := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	var engErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		engErr = eng.Run(engCtx)
	}()
	srvErr := srv.Run(ctx)
	stopEngine()
	wg.Wait()
	if errors.Is(engErr, context.Canceled) {
		engErr = nil
	}
	return errors.Join(srvErr, engErr)
}
