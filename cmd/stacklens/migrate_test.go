package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/stacklens/stacklens/internal/harness/testenv"
)

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
