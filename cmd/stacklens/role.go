package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"time"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/telemetry"
)

// env is what every role gets: its configuration, a logger and the
// process's health registry.
type env struct {
	cfg    *config.Loaded
	log    *slog.Logger
	health *telemetry.Health
}

// component is one long-running part of the product. run returns when ctx
// is cancelled, after its own ordered shutdown.
type component struct {
	name string
	run  func(ctx context.Context, e *env) error
}

// loadConfig parses flags and environment for a command, printing one line
// naming the bad variable on failure.
func loadConfig(c *cli, name, summary string, extra func(fs *flag.FlagSet)) (*config.Loaded, int) {
	cfg, err := config.Load(name, c.args, config.Options{
		LookupEnv: c.env,
		Output:    c.stderr,
		Flags:     extra,
		Usage: func(fs *flag.FlagSet) {
			fmt.Fprintf(c.stderr, "stacklens %s — %s\n\nFlags (each also an environment variable, e.g. --db-port is DB_PORT):\n", name, summary)
			fs.SetOutput(c.stderr)
			fs.PrintDefaults()
		},
	})
	if errors.Is(err, config.ErrHelp) {
		return nil, exitOK
	}
	if err != nil {
		fmt.Fprintln(c.stderr, "stacklens:", oneLine(err))
		return nil, exitConfig
	}
	if cfg.Runtime.MaxThreads > 0 {
		runtime.GOMAXPROCS(cfg.Runtime.MaxThreads)
	}
	return cfg, -1
}

// progress logs a component's progress line every STATS_INTERVAL_SEC (0:
// never) until ctx ends.
func (e *env) progress(ctx context.Context, component string, figures func() []telemetry.Figure) {
	every := time.Duration(e.cfg.Telemetry.StatsInterval) * time.Second
	go telemetry.Progress(ctx, e.log.With("component", component), every, figures)
}

func newEnv(c *cli, cfg *config.Loaded, role string) *env {
	log := telemetry.NewLogger(c.stderr, cfg.Telemetry.LogLevel, cfg.Telemetry.LogFormat).With("role", role)
	return &env{cfg: cfg, log: log, health: telemetry.NewHealth()}
}

// runComponents runs the metrics server and the components until ctx is
// cancelled or one fails, then stops them one by one in list order — the
// intake first, so nothing new arrives while the later ones drain — and
// the metrics server last, logging each step.
func runComponents(ctx context.Context, e *env, comps ...component) int {
	var ms *telemetry.Server
	if e.cfg.Telemetry.EnableMetrics {
		addr := net.JoinHostPort(e.cfg.Telemetry.MetricsHost, strconv.Itoa(e.cfg.Telemetry.MetricsPort))
		var err error
		if ms, err = telemetry.Listen(addr, e.health, version); err != nil {
			e.log.Error("cannot start", "err", err)
			return exitFail
		}
	}
	type running struct {
		name   string
		cancel context.CancelFunc
		done   chan error
	}
	failed := make(chan string, len(comps)+1)
	var runs []running
	start := func(name string, f func(context.Context) error) {
		cctx, cancel := context.WithCancel(context.Background())
		r := running{name: name, cancel: cancel, done: make(chan error, 1)}
		go func() {
			err := f(cctx)
			if err != nil && !errors.Is(err, context.Canceled) {
				e.log.Error("component failed", "component", name, "err", err)
				failed <- name
			}
			r.done <- err
		}()
		runs = append(runs, r)
	}
	if ms != nil {
		start("metrics", func(ctx context.Context) error { return ms.Run(ctx, e.log) })
	}
	for _, c := range comps {
		start(c.name, func(ctx context.Context) error { return c.run(ctx, e) })
	}
	code := exitOK
	select {
	case <-ctx.Done():
		e.log.Info("shutting down", "reason", context.Cause(ctx))
	case name := <-failed:
		e.log.Error("shutting down after a component failed", "component", name)
		code = exitFail
	}
	// Components in list order (intake first), metrics server last.
	order := append(runs[1:len(runs):len(runs)], runs[0])
	if ms == nil {
		order = runs
	}
	for _, r := range order {
		e.log.Info("stopping", "component", r.name)
		r.cancel()
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			e.log.Error("component did not stop within 30s", "component", r.name)
			code = exitFail
		}
		e.log.Info("stopped", "component", r.name)
	}
	return code
}

// role is a component runnable as its own process.
type role struct {
	name, summary string
	component     component
}

// roles are the pipeline's roles in the order `stacklens dev` runs and
// stops them: intake first, so that nothing new arrives while the later
// ones drain.
func roles() []role {
	return []role{bridgeRole, processorRole, projectionsRole, apiRole}
}

// roleCommand is the subcommand that runs r as its own process.
func roleCommand(r role) command {
	return command{name: r.name, summary: r.summary, run: func(ctx context.Context, c *cli) int {
		cfg, code := loadConfig(c, r.name, r.summary, nil)
		if cfg == nil {
			return code
		}
		e := newEnv(c, cfg, r.name)
		e.log.Info("starting", "version", version, "commit", commit())
		return runComponents(ctx, e, r.component)
	}}
}
