package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"
)

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
