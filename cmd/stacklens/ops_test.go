package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/stacklens/stacklens/api"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/telemetry"
)

func TestMain(m *testing.M) { testenv.Main(m) }

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

func TestBackupAndRestoreCommands(t *testing.T) {
	pg := testenv.Postgres(t)
	ctx := testenv.Context(t)
	dir := t.TempDir()
	env := map[string]string{"ENV_FILE": writeEmpty(t), "DATABASE_URL": pg.DSN}
	if code, _, errs := runCLI(t, ctx, env, "migrate", "up"); code != exitOK {
		t.Fatalf("migrate: %d %s", code, errs)
	}
	if code, out, _ := runCLI(t, ctx, env, "migrate", "status"); code != exitOK || !strings.Contains(out, "0001") || !strings.Contains(out, "true") {
		t.Fatalf("status: %d %s", code, out)
	}
	file := filepath.Join(dir, "b.dump")
	if code, out, errs := runCLI(t, ctx, env, "backup", "--file", file); code != exitOK || strings.TrimSpace(out) != file {
		t.Fatalf("backup: %d %q %s", code, out, errs)
	}
	if st, err := os.Stat(file); err != nil || st.Size() == 0 {
		t.Fatalf("dump file: %v", err)
	}
	if code, _, errs := runCLI(t, ctx, env, "restore", "--file", file); code != exitOK {
		t.Fatalf("restore: %d %s", code, errs)
	}
	if code, _, _ := runCLI(t, ctx, env, "restore"); code != exitConfig {
		t.Errorf("restore without --file: %d", code)
	}
	if code, _, _ := runCLI(t, ctx, env, "restore", "--file", filepath.Join(dir, "missing")); code != exitFail {
		t.Errorf("restore of a missing file: %d", code)
	}
	bad := map[string]string{"ENV_FILE": writeEmpty(t), "DATABASE_URL": "postgres://nobody@127.0.0.1:1/x?connect_timeout=1"}
	if code, _, _ := runCLI(t, ctx, bad, "backup", "--file", filepath.Join(dir, "c.dump")); code != exitFail {
		t.Errorf("backup of an unreachable database: %d", code)
	}
}

// TestMigrateGivesConfiguredRolesALogin: DB_WRITER_PASSWORD and
// DB_ADMIN_PASSWORD_FILE reach `stacklens migrate up`, which gives the roles
// LOGIN with those passwords; checked by real logins over TCP, where
// testenv's cluster requires scram-sha-256 for the StackLens roles, and a
// wrong password is refused.
func TestMigrateGivesConfiguredRolesALogin(t *testing.T) {
	pg := testenv.Postgres(t)
	if pg.Source != "local" {
		t.Skip("needs testenv's local cluster (pg_hba with scram-sha-256 for the stacklens roles); server from " + pg.Source)
	}
	ctx := testenv.Context(t)
	adminFile := filepath.Join(t.TempDir(), "admin_pw")
	if err := os.WriteFile(adminFile, []byte("admin 'pw' from a file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"ENV_FILE": writeEmpty(t), "DATABASE_URL": pg.DSN,
		"DB_WRITER_PASSWORD": "writer pw", "DB_ADMIN_PASSWORD_FILE": adminFile}
	if code, _, errs := runCLI(t, ctx, env, "migrate", "up"); code != exitOK {
		t.Fatalf("migrate: %d %s", code, errs)
	}
	login := func(user, password string) error {
		c, err := pgx.ParseConfig(pg.DSN)
		if err != nil {
			return err
		}
		c.Host, c.User, c.Password = "127.0.0.1", user, password
		conn, err := pgx.ConnectConfig(ctx, c)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, "SELECT count(*) FROM analytics_metrics_1min")
		return err
	}
	if err := login("stacklens_writer", "writer pw"); err != nil {
		t.Errorf("writer login: %v", err)
	}
	if err := login("stacklens_admin", "admin 'pw' from a file"); err != nil {
		t.Errorf("admin login: %v", err)
	}
	for _, user := range []string{"stacklens_writer", "stacklens_admin"} {
		var pe *pgconn.PgError
		if err := login(user, "wrong"); !errors.As(err, &pe) || pe.Code != "28P01" {
			t.Errorf("%s with a wrong password: %v", user, err)
		}
	}
	env["DB_ADMIN_PASSWORD"] = "caf\u00e9"
	if code, _, errs := runCLI(t, ctx, env, "migrate", "up"); code != exitConfig || !strings.Contains(errs, "DB_ADMIN_PASSWORD") {
		t.Errorf("non-ASCII password: %d %s", code, errs)
	}
}
