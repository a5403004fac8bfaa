package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stacklens/stacklens/api"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/telemetry"
)

func TestHealthcheckFollowsReadiness(t *testing.T) {
	h := telemetry.NewHealth()
	srv, err := telemetry.Listen("127.0.0.1:0", h, "test")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = srv.Run(ctx, telemetry.Discard()) }()
	_, port, _ := strings.Cut(srv.Addr(), ":")
	env := map[string]string{"ENV_FILE": writeEmpty(t), "METRICS_PORT": port, "METRICS_HOST": "0.0.0.0"}
	h.Set("bridge", errors.New("kafka unreachable"))
	if code, _, errs := runCLI(t, ctx, env, "healthcheck"); code != exitFail || !strings.Contains(errs, "503") {
		t.Errorf("not ready: exit %d %q", code, errs)
	}
	h.Set("bridge", nil)
	testenv.Eventually(t, 5e9, func() error {
		if code, _, errs := runCLI(t, ctx, env, "healthcheck"); code != exitOK {
			return errors.New(errs)
		}
		return nil
	})
	env["METRICS_PORT"] = "1"
	if code, _, _ := runCLI(t, ctx, env, "healthcheck"); code != exitFail {
		t.Errorf("nothing listening: exit %d", code)
	}
}

// TestHealthcheckWithoutMetrics: with ENABLE_METRICS=false the check probes
// the api's own /ready on API_PORT (a real api.Server on a real database),
// and refuses, as a configuration error, to pretend for a role that serves
// nothing.
func TestHealthcheckWithoutMetrics(t *testing.T) {
	pg := testenv.Postgres(t)
	ctx := testenv.Context(t)
	if code, _, errs := runCLI(t, ctx, map[string]string{"ENV_FILE": writeEmpty(t), "DATABASE_URL": pg.DSN}, "migrate", "up"); code != exitOK {
		t.Fatalf("migrate: %d %s", code, errs)
	}
	cfg := testenv.Config(t, map[string]string{"DATABASE_URL": pg.DSN})
	srv, err := api.New(api.Config{API: cfg.API, DB: cfg.DB, Version: "test"}, api.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx, ln) }()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	env := map[string]string{"ENV_FILE": writeEmpty(t), "ENABLE_METRICS": "false", "METRICS_PORT": "1", "API_PORT": port, "API_HOST": "0.0.0.0"}
	for _, role := range []string{"", "api"} {
		testenv.Eventually(t, 10*time.Second, func() error {
			args := []string{"healthcheck"}
			if role != "" {
				args = append(args, "--role", role)
			}
			if code, _, errs := runCLI(t, ctx, env, args...); code != exitOK {
				return fmt.Errorf("role %q: exit %d %s", role, code, errs)
			}
			return nil
		})
	}
	for _, role := range []string{"bridge", "processor", "projections"} {
		code, _, errs := runCLI(t, ctx, env, "healthcheck", "--role", role)
		if code != exitConfig || !strings.Contains(errs, "ENABLE_METRICS=false") || !strings.Contains(errs, "nothing to probe") || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
			t.Errorf("--role %s: exit %d %q", role, code, errs)
		}
	}
	stop()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if code, _, errs := runCLI(t, ctx, env, "healthcheck"); code != exitFail || !strings.Contains(errs, "API_PORT") {
		t.Errorf("api stopped: exit %d %q", code, errs)
	}
}
