package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/harness/bench"
	"github.com/stacklens/stacklens/internal/telemetry"
)

const benchSummary = "measure the pipeline on embedded infrastructure against ceilings measured in the same run"

func cmdBench(ctx context.Context, c *cli) int {
	var (
		quick, keep bool
		noAlert     bool
		processors  int
		runs        int
		ceilN       int
		services    int
		jsonPath    string
		profileDir  string
		rates       string
		serveStatic string
		hold        time.Duration
	)
	cfg, code := loadConfig(c, "bench", benchSummary, func(fs *flag.FlagSet) {
		fs.BoolVar(&quick, "quick", false, "short run (10 s holds, fewer steps, 50k-message ceilings; under ~3 minutes)")
		fs.IntVar(&processors, "processors", 1, "processor processes to run")
		fs.IntVar(&runs, "runs", 1, "repeat the whole benchmark this many times and report the medians (3 for published figures)")
		fs.IntVar(&services, "services", 20, "simulated services of the load")
		fs.StringVar(&jsonPath, "json", "", "also write the results as JSON to this file")
		fs.StringVar(&rates, "rates", "", "comma-separated rates of the ramp in events/s (default: the mode's)")
		fs.DurationVar(&hold, "hold", 0, "hold per step (default 60s, 10s with --quick)")
		fs.IntVar(&ceilN, "ceiling-messages", 0, "messages of the ceilings and of the bridge-alone backlog (default 200000, 50000 with --quick)")
		fs.StringVar(&profileDir, "profile", "", "after the ramp, hold the sustainable rate (half the first step if none) once more and write CPU profiles of every process (roles, nats-server, kafka-broker, loadgen, bench; not PostgreSQL) to this directory")
		fs.BoolVar(&noAlert, "no-alert", false, "skip the alert-latency probe (saves up to 45 s, 120 s in full mode)")
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
	if ceilN < 0 {
		fmt.Fprintln(c.stderr, "stacklens: --ceiling-messages: want at least 1")
		return exitConfig
	}
	if runs < 1 {
		fmt.Fprintln(c.stderr, "stacklens: --runs: want at least 1")
		return exitConfig
	}
	var reports []*bench.Report
	for i := range runs {
		if runs > 1 {
			fmt.Fprintf(c.stderr, "[bench] run %d of %d\n", i+1, runs)
		}
		pdir := profileDir
		if pdir != "" && runs > 1 {
			pdir = filepath.Join(profileDir, fmt.Sprintf("run-%d", i+1))
		}
		var rep *bench.Report
		rep, err = bench.Run(ctx, bench.Options{
			Config: cfg,
			Exe:    exe,
			Provision: func(ctx context.Context, bc *config.Loaded) error {
				return provision(ctx, &env{cfg: bc, log: infraLog, health: e.health})
			},
			StaticCommand:   []string{"bench", "--serve-static"},
			Quick:           quick,
			Processors:      processors,
			Services:        services,
			Rates:           rs,
			Hold:            hold,
			CeilingMessages: ceilN,
			Progress:        c.stderr,
			Log:             infraLog,
			KeepDir:         keep,
			ProfileDir:      pdir,
			NoAlert:         noAlert,
		})
		if rep != nil {
			rep.RenderTable(c.stdout)
			reports = append(reports, rep)
		}
		if err != nil {
			break
		}
	}
	var out any = reports
	if len(reports) == 1 {
		out = reports[0]
	} else if len(reports) > 1 {
		// The medians are of completed runs only: a failed run's report
		// is partial (it is still in the JSON).
		done := reports
		if err != nil {
			done = reports[:len(reports)-1]
		}
		sum := bench.Summarize(done)
		sum.RenderTable(c.stdout)
		out = struct {
			Summary *bench.Summary  `json:"summary"`
			Runs    []*bench.Report `json:"runs"`
		}{sum, reports}
	}
	if jsonPath != "" && len(reports) > 0 {
		if ferr := writeJSONFile(jsonPath, out); ferr != nil {
			fmt.Fprintln(c.stderr, "stacklens: --json:", oneLine(ferr))
			return exitFail
		}
	}
	if err != nil {
		fmt.Fprintln(c.stderr, "stacklens bench:", oneLine(err))
		return exitFail
	}
	return exitOK
}

// writeJSONFile writes v as indented JSON to path.
func writeJSONFile(path string, v any) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(f)
	enc.SetIndent("", "  ")
	err = enc.Encode(v)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
