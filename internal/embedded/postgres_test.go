package embedded

import (
	"context"
	"errors"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// searchableTempDir is a fresh directory the postgres user can reach
// (t.TempDir is 0700).
func searchableTempDir(t *testing.T, pattern string) string {
	t.Helper()
	d, err := os.MkdirTemp("", pattern)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

func needRootPostgres(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (the case where PostgreSQL runs as the postgres user)")
	}
	if _, err := user.Lookup("postgres"); err != nil {
		t.Skip("no postgres OS user")
	}
	if _, err := FindPostgresBin(); errors.Is(err, ErrNoPostgres) {
		t.Skip(err)
	}
}

// TestPostgresUnreachableDir: started as root with its directory under a
// 0700 directory (a clone under /root), the cluster keeps its data in a
// shadow directory the postgres user can reach, linked from Dir/data; it
// starts, serves, restarts on the same data (Restart and a new
// StartPostgres), and removing Dir orphans the shadow, which the next such
// start deletes.
func TestPostgresUnreachableDir(t *testing.T) {
	needRootPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	home := searchableTempDir(t, "stacklens-home-")
	private := filepath.Join(home, "root")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(private, "clone", ".data", "postgres")
	base := filepath.Join(searchableTempDir(t, "stacklens-shadow-"), "postgres")
	opts := PostgresOptions{Dir: dir, ShadowBase: base}

	pg, err := StartPostgres(ctx, opts)
	if err != nil {
		t.Fatalf("start under a 0700 directory: %v", err)
	}
	t.Cleanup(func() { _ = pg.Stop() })
	if !strings.HasPrefix(pg.DataDir(), base+"/") {
		t.Errorf("data dir %s, want it under %s", pg.DataDir(), base)
	}
	if target, err := os.Readlink(filepath.Join(dir, "data")); err != nil || target != pg.DataDir() {
		t.Errorf("%s/data links to %q (%v), want %s", dir, target, err, pg.DataDir())
	}
	exec := func(p *Postgres, sql string) string {
		t.Helper()
		conn, err := pgx.Connect(ctx, p.DSN("postgres", "postgres"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var out string
		if err := conn.QueryRow(ctx, sql).Scan(&out); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return out
	}
	conn, err := pgx.Connect(ctx, pg.DSN("postgres", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE kept AS SELECT 'still here'::text AS v`); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close(ctx)

	// Restart in place.
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := pg.Restart(ctx); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if got := exec(pg, `SELECT v FROM kept`); got != "still here" {
		t.Errorf("after restart: %q", got)
	}
	// A new start from the same directory (stacklens dev run again).
	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	pg2, err := StartPostgres(ctx, opts)
	if err != nil {
		t.Fatalf("second start: %v", err)
	}
	t.Cleanup(func() { _ = pg2.Stop() })
	if got := exec(pg2, `SELECT v FROM kept`); got != "still here" || pg2.DataDir() != pg.DataDir() {
		t.Errorf("second start: %q in %s, want the data of %s", got, pg2.DataDir(), pg.DataDir())
	}
	if err := pg2.Stop(); err != nil {
		t.Fatal(err)
	}

	// rm -rf .data: the next start of another cluster sweeps the orphan.
	if err := os.RemoveAll(filepath.Join(private, "clone", ".data")); err != nil {
		t.Fatal(err)
	}
	other, err := StartPostgres(ctx, PostgresOptions{Dir: filepath.Join(private, "other", "postgres"), ShadowBase: base})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Stop() })
	if _, err := os.Stat(filepath.Dir(pg.DataDir())); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("orphaned shadow %s not removed: %v", filepath.Dir(pg.DataDir()), err)
	}
	if _, err := os.Stat(filepath.Join(other.DataDir(), "PG_VERSION")); err != nil {
		t.Errorf("the other cluster's data: %v", err)
	}
}
