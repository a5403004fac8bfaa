package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/stacklens/stacklens/internal/backup"
)

func cmdBackup(ctx context.Context, c *cli) int {
	var file string
	cfg, code := loadConfig(c, "backup", "write a compressed pg_dump of the database", func(fs *flag.FlagSet) {
		fs.StringVar(&file, "file", "", "output file (default backups/stacklens_<UTC time>.dump)")
	})
	if cfg == nil {
		return code
	}
	e := newEnv(c, cfg, "backup")
	if file == "" {
		file = filepath.Join("backups", "stacklens_"+time.Now().UTC().Format("20060102_150405")+".dump")
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		e.log.Error("backup failed", "err", err)
		return exitFail
	}
	start := time.Now()
	if err := backup.Dump(ctx, cfg.DB.DSN(), file); err != nil {
		e.log.Error("backup failed", "err", err)
		return exitFail
	}
	st, _ := os.Stat(file)
	e.log.Info("backup written", "file", file, "bytes", st.Size(), "duration", time.Since(start).Round(time.Millisecond))
	fmt.Fprintln(c.stdout, file)
	return exitOK
}

func cmdRestore(ctx context.Context, c *cli) int {
	var file string
	cfg, code := loadConfig(c, "restore", "restore a backup", func(fs *flag.FlagSet) {
		fs.StringVar(&file, "file", "", "the dump to restore (required)")
	})
	if cfg == nil {
		return code
	}
	if file == "" {
		fmt.Fprintln(c.stderr, "stacklens restore: --file is required")
		return exitConfig
	}
	e := newEnv(c, cfg, "restore")
	if err := backup.Restore(ctx, cfg.DB.DSN(), file); err != nil {
		e.log.Error("restore failed", "err", err)
		return exitFail
	}
	e.log.Info("restored", "file", file)
	return exitOK
}

// cmdHealthcheck probes what this host's role serves: with ENABLE_METRICS
// (the default) every role answers /ready on METRICS_PORT; without it only
// the api (and dev) serve HTTP — /ready on API_PORT — and the bridge,
// processor and projections have nothing to probe, which is a
// configuration error, not a passing check (docs/RUNBOOK.md, Health checks).
func cmdHealthcheck(ctx context.Context, c *cli) int {
	var role string
	cfg, code := loadConfig(c, "healthcheck", "probe this host's role", func(fs *flag.FlagSet) {
		fs.StringVar(&role, "role", "", "the role this host runs: bridge, processor, projections, api or dev (needed only with ENABLE_METRICS=false; default: probe the API)")
	})
	if cfg == nil {
		return code
	}
	host, port, what := cfg.Telemetry.MetricsHost, cfg.Telemetry.MetricsPort, "METRICS_PORT"
	if !cfg.Telemetry.EnableMetrics {
		switch role {
		case "", "api", "dev":
			host, port, what = cfg.API.Host, cfg.API.Port, "API_PORT (ENABLE_METRICS=false: only the api serves /ready)"
		case "bridge", "processor", "projections":
			fmt.Fprintf(c.stderr, "stacklens healthcheck: ENABLE_METRICS=false: the %s serves no HTTP endpoint, so there is nothing to probe; set ENABLE_METRICS=true to health-check it\n", role)
			return exitConfig
		default:
			fmt.Fprintf(c.stderr, "stacklens healthcheck: --role %q: want bridge, processor, projections, api or dev\n", role)
			return exitConfig
		}
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	url := "http://" + net.JoinHostPort(host, strconv.Itoa(port)) + "/ready"
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(c.stderr, "not ready: %s on %s: %v\n", url, what, err)
		return exitFail
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(c.stderr, "not ready: %s on %s: %s\n", url, what, resp.Status)
		return exitFail
	}
	return exitOK
}
