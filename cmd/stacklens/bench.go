package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/stacklens/stacklens/internal/bench"
	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/telemetry"
)

func init() {
	extraCommands = append(extraCommands, command{"bench", "benchmark: ceilings, maximum sustainable rate, freshness, API latency, cost per role (docs/PERFORMANCE.md)", cmdBench})
}

const benchSummary = "measure the pipeline on embedded infrastructure against ceilings measured in the same run"

func cmdBench(ctx context.Context, c *cli) int {
	var (
		quick, keep bool
		processors  int
		services    int
		jsonPath    string
		rates       string
		serveStatic string
		hold        time.Duration
	)
	cfg, code := loadConfig(c, "bench", benchSummary, func(fs *flag.FlagSet) {
		fs.BoolVar(&quick, "quick", false, "short run (10 s holds, fewer steps, 50k-message ceilings; under ~3 minutes)")
		fs.IntVar(&processors, "processors", 1, "processor processes to run")
		fs.IntVar(&services, "services", 20, "simulated services of the load")
		fs.StringVar(&jsonPath, "json", "", "also write the results as JSON to this file")
		fs.StringVar(&rates, "rates", "", "comma-separated rates of the ramp in events/s (default: the mode's)")
		fs.DurationVar(&hold, "hold", 0, "hold per step (default 60s, 10s with --quick)")
		fs.BoolVar(&keep, "keep", false, "keep the temporary data directory with the role logs")
		fs.StringVar(&serveStatic, "serve-static", "", "internal: only serve the static JSON ceiling route on this address (the bench runs it as a subprocess)")
	})
	if cfg == nil {
		return code
	}
	if serveStatic != "" {
		log := telemetry.NewLogger(c.stderr, cfg.Telemetry.LogLevel, cfg.Telemetry.LogFormat).With("role", "bench-static")
		if err := bench.ServeStatic(ctx, cfg, serveStatic, log); err != nil {
			fmt.Fprintln(c.stderr, "stacklens bench --serve-static:", oneLine(err))
			return exitFail
		}
		return exitOK
	}
	var rs []float64
	for _, f := range strings.Split(rates, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSuffix(strings.ToLower(f), "k"), 64)
		if err != nil || v <= 0 {
			fmt.Fprintf(c.stderr, "stacklens: --rates: bad rate %q\n", f)
			return exitConfig
		}
		if strings.HasSuffix(strings.ToLower(f), "k") {
			v *= 1000
		}
		rs = append(rs, v)
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(c.stderr, "stacklens:", oneLine(err))
		return exitFail
	}
	e := newEnv(c, cfg, "bench")
	// The infrastructure's own logs are noise next to the progress lines:
	// warnings and errors only.
	infraLog := telemetry.NewLogger(c.stderr, "WARN", cfg.Telemetry.LogFormat).With("role", "bench")
	rep, err := bench.Run(ctx, bench.Options{
		Config: cfg,
		Exe:    exe,
		Provision: func(ctx context.Context, bc *config.Loaded) error {
			return provision(ctx, &env{cfg: bc, log: infraLog, health: e.health})
		},
		StaticCommand: []string{"bench", "--serve-static"},
		Quick:         quick,
		Processors:    processors,
		Services:      services,
		Rates:         rs,
		Hold:          hold,
		Progress:      c.stderr,
		Log:           infraLog,
		KeepDir:       keep,
	})
	if rep != nil {
		rep.RenderTable(c.stdout)
		if jsonPath != "" {
			f, ferr := os.Create(jsonPath)
			if ferr == nil {
				ferr = rep.WriteJSON(f)
				if cerr := f.Close(); ferr == nil {
					ferr = cerr
				}
			}
			if ferr != nil {
				fmt.Fprintln(c.stderr, "stacklens: --json:", oneLine(ferr))
				return exitFail
			}
		}
	}
	if err != nil {
		fmt.Fprintln(c.stderr, "stacklens bench:", oneLine(err))
		return exitFail
	}
	return exitOK
}
