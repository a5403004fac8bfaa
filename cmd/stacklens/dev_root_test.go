package main

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

	"github.com/stacklens/stacklens/internal/embedded"
)

// TestDevUnderPrivateDirectory runs `stacklens dev --infra-only` as root
// from a directory the postgres user cannot enter (a clone under /root,
// mode 0700): it starts, serves, and a second run finds the first run's
// data. The private cluster's data lives in a shadow directory under
// embedded.DefaultShadowBase, removed at the end.
func TestDevUnderPrivateDirectory(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := user.Lookup("postgres"); err != nil {
		t.Skip("no postgres OS user")
	}
	if _, err := embedded.FindPostgresBin(); err != nil {
		t.Skip(err)
	}
	home, err := os.MkdirTemp("", "stacklens-home-")
	if err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(home, 0o755)
	t.Cleanup(func() { _ = os.RemoveAll(home) })
	private := filepath.Join(home, "root")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(private, "clone", ".data")
	link := filepath.Join(dataDir, "postgres", "data")
	t.Cleanup(func() {
		if target, err := os.Readlink(link); err == nil && strings.HasPrefix(target, embedded.DefaultShadowBase+"/") {
			_ = os.RemoveAll(filepath.Dir(target))
		}
		// The base directories, if this test made them (Remove keeps them
		// when anything else is inside).
		_ = os.Remove(embedded.DefaultShadowBase)
		_ = os.Remove(filepath.Dir(embedded.DefaultShadowBase))
	})

	run := func(sql string) string {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ep, done := startDevInfra(t, ctx, dataDir)
		conn, err := pgx.Connect(ctx, ep.Postgres)
		if err != nil {
			t.Fatal(err)
		}
		var out string
		if err := conn.QueryRow(ctx, sql).Scan(&out); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		_ = conn.Close(ctx)
		cancel()
		select {
		case code := <-done:
			if code != exitOK {
				t.Fatalf("dev exit %d", code)
			}
		case <-time.After(time.Minute):
			t.Fatal("dev did not stop within a minute")
		}
		return out
	}
	run(`INSERT INTO analytics_settings (key, value) VALUES ('issue17', 'kept') RETURNING key`)
	if target, err := os.Readlink(link); err != nil || !strings.HasPrefix(target, embedded.DefaultShadowBase+"/") {
		t.Fatalf("%s -> %q (%v), want a shadow under %s", link, target, err, embedded.DefaultShadowBase)
	}
	if got := run(`SELECT value FROM analytics_settings WHERE key = 'issue17'`); got != "kept" {
		t.Errorf("second run: %q, want the first run's row", got)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "postgres", "postgres.log")); errors.Is(err, os.ErrNotExist) {
		t.Error("no server log in the cluster directory")
	}
}
