package testenv

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/ory/dockertest/v3"
	"github.com/ory/dockertest/v3/docker"

	"github.com/stacklens/stacklens/internal/embedded"
)

// PG is a database for one test on the package's shared server.
type PG struct {
	// DSN connects to the test's own database as a superuser.
	DSN string
	// Name is the database name.
	Name string
	// Source says where the server came from: env, docker or local.
	Source string
}

var (
	pgOnce   sync.Once
	pgAdmin  string // superuser DSN of the shared server's maintenance db
	pgSource string
	pgErr    error
)

// Postgres returns a fresh, empty database on the package's shared
// server; it is dropped when the test ends.
func Postgres(t testing.TB) *PG {
	t.Helper()
	if !mainCalled {
		t.Fatal("testenv.Postgres needs the package to run its tests through testenv.Main (func TestMain(m *testing.M) { testenv.Main(m) })")
	}
	pgOnce.Do(func() { pgAdmin, pgSource, pgErr = sharedPostgres() })
	if pgErr != nil {
		t.Fatal(pgErr)
	}
	name := Name(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pgAdmin)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, pgAdmin); err == nil {
			_, _ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
			_ = c.Close(ctx)
		}
	})
	u, _ := url.Parse(pgAdmin)
	u.Path = "/" + name
	return &PG{DSN: u.String(), Name: name, Source: pgSource}
}

// appRolesHBA makes the application roles log in with a real password on
// the shared local server (everyone else is trusted), so tests of role
// passwords check something.
var appRolesHBA = []string{"host all stacklens_reader,stacklens_writer,stacklens_admin 127.0.0.1/32 scram-sha-256"}

func sharedPostgres() (dsn, source string, err error) {
	if env := os.Getenv("TEST_DATABASE_URL"); env != "" {
		return env, "env", nil
	}
	if dsn, ok := dockerPostgres(); ok {
		return dsn, "docker", nil
	}
	dir, err := os.MkdirTemp("", "stacklens-pg-")
	if err != nil {
		return "", "", err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg, err := embedded.StartPostgres(ctx, embedded.PostgresOptions{Dir: dir, HBA: appRolesHBA})
	if err != nil {
		_ = os.RemoveAll(dir)
		return "", "", fmt.Errorf("testenv: no PostgreSQL: set TEST_DATABASE_URL, run a Docker engine, or install PostgreSQL server binaries: %w", err)
	}
	atExit(func() {
		_ = pg.Stop()
		_ = os.RemoveAll(dir)
	})
	return pg.DSN("postgres", "postgres"), "local", nil
}

// dockerPostgres starts a TimescaleDB container when a Docker engine
// answers; ok is false (quietly) when none does.
func dockerPostgres() (string, bool) {
	pool, err := dockertest.NewPool("")
	if err != nil || pool.Client.Ping() != nil {
		return "", false
	}
	res, err := pool.RunWithOptions(&dockertest.RunOptions{
		Repository: "timescale/timescaledb",
		Tag:        "latest-pg15",
		Env:        []string{"POSTGRES_PASSWORD=stacklens", "POSTGRES_HOST_AUTH_METHOD=trust"},
	}, func(hc *docker.HostConfig) {
		hc.AutoRemove = true
		hc.RestartPolicy = docker.RestartPolicy{Name: "no"}
	})
	if err != nil {
		return "", false
	}
	_ = res.Expire(1800)
	dsn := fmt.Sprintf("postgres://postgres:stacklens@%s/postgres?sslmode=disable", res.GetHostPort("5432/tcp"))
	pool.MaxWait = 2 * time.Minute
	if err := pool.Retry(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return err
		}
		return c.Close(ctx)
	}); err != nil {
		_ = pool.Purge(res)
		return "", false
	}
	atExit(func() { _ = pool.Purge(res) })
	return dsn, true
}

// PrivatePostgres starts a cluster owned by this test alone, for tests
// that stop, kill or restart the server. It is stopped at test end.
func PrivatePostgres(t testing.TB) *embedded.Postgres {
	t.Helper()
	dir, err := os.MkdirTemp("", "stacklens-pg-")
	if err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(dir, 0o755)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg, err := embedded.StartPostgres(ctx, embedded.PostgresOptions{Dir: dir})
	if err != nil {
		_ = os.RemoveAll(dir)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = pg.Stop()
		_ = os.RemoveAll(dir)
	})
	return pg
}
