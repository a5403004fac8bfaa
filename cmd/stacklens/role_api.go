package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/alerting"
	"github.com/stacklens/stacklens/api"
	"github.com/stacklens/stacklens/api/dashboard"
	"github.com/stacklens/stacklens/internal/natsutil"
	"github.com/stacklens/stacklens/internal/telemetry"
)

// apiRole serves the API and the dashboard and runs the alert engine in the
// same process: the engine needs no port of its own, and every API replica
// takes part in the evaluator lease, so scaling the API scales the
// engine's standbys with it (docs/alerting.md).
var apiRole = role{
	name:      "api",
	summary:   "dashboard HTTP API (Fiber), web dashboard and alert engine",
	component: component{name: "api", run: runAPI},
}

// runAPI serves the API and runs the alert engine next to it; the engine
// takes part in the evaluator lease, so any number of API replicas can run.
func runAPI(ctx context.Context, e *env) error {
	windows, err := e.cfg.Pipeline.ValidWindows()
	if err != nil {
		return fmt.Errorf("aggregation windows: %w", err)
	}
	// The API serves queries while NATS is down, /health reports it, and
	// the engine waits for its lease.
	nc, err := natsutil.Dial(e.cfg.NATS, natsutil.DefaultName("api"), e.log)
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	defer nc.Close()

	eng, err := alerting.New(alerting.Config{
		Alerting: e.cfg.Alerting, Kafka: e.cfg.Kafka, DB: e.cfg.DB, NATS: e.cfg.NATS, Windows: windows,
		// A window's row may still appear until it is final (late events),
		// plus the projections' delay: only then is a window "missing".
		NoDataGrace: e.cfg.Processor.AllowedLateness + 15*time.Second,
	}, alerting.Deps{Log: e.log, NATS: nc, Health: e.health})
	if err != nil {
		return fmt.Errorf("alert engine: %w", err)
	}
	var winNames []string
	for _, w := range windows {
		winNames = append(winNames, w.Name)
	}
	// Lag, dead letters and the database size for /health, sampled in the
	// background once the server (whose reader pool reads the size) exists.
	var srv *api.Server
	probe, err := api.NewPipelineProbe(nc, api.PipelineProbeOptions{Windows: winNames, Log: e.log,
		DatabaseSize: func(ctx context.Context) (int64, error) { return srv.DatabaseSize(ctx) }, DatabaseMaxBytes: int64(e.cfg.DB.MaxBytes)})
	if err != nil {
		return err
	}

	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	srv, err = api.New(api.Config{
		API: e.cfg.API, DB: e.cfg.DB, NATS: e.cfg.NATS, Windows: windows, Version: version, Environment: e.cfg.Runtime.DeployEnv,
	}, api.Deps{
		Log: e.log, Health: e.health, NATS: nc, JetStream: js, Pipeline: probe, Mount: dashboard.Mount,
		Hooks: api.Hooks{
			RulesChanged:    eng.RulesChanged,
			SilencesChanged: eng.SilencesChanged,
			OnAcknowledge: func(ctx context.Context, tx pgx.Tx, a api.Alert) error {
				return eng.OnAcknowledge(ctx, tx, a.AlertID)
			},
		},
	})
	if err != nil {
		return fmt.Errorf("api server: %w", err)
	}
	probeCtx, stopProbe := context.WithCancel(ctx)
	defer stopProbe()
	go probe.Run(probeCtx)

	e.progress(ctx, "api", func() []telemetry.Figure { return append(srv.ProgressFigures(), alerting.ProgressFigures()...) })

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
	if srvErr != nil {
		srvErr = fmt.Errorf("api server: %w", srvErr)
	}
	if engErr != nil && !errors.Is(engErr, context.Canceled) {
		engErr = fmt.Errorf("alert engine: %w", engErr)
	} else {
		engErr = nil
	}
	return errors.Join(srvErr, engErr)
}
