package backup

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stacklens/stacklens/internal/harness/testenv"
)

// executable writes a no-op shell script named name into dir.
func executable(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// serverDir makes a directory that looks like a PostgreSQL server
// installation (initdb and postgres) holding the given client tools.
func serverDir(t *testing.T, tools ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, n := range append([]string{"initdb", "postgres"}, tools...) {
		executable(t, dir, n)
	}
	return dir
}

func TestToolPrefersTheServerInstallationThenPATH(t *testing.T) {
	for _, tc := range []struct {
		name       string
		inServer   bool // pg_dump next to initdb/postgres
		onPATH     bool // pg_dump in another PATH directory
		wantServer bool
		wantErr    bool
	}{
		{name: "next to the server", inServer: true, onPATH: true, wantServer: true},
		{name: "only on PATH", onPATH: true},
		{name: "nowhere", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var srvTools []string
			if tc.inServer {
				srvTools = append(srvTools, "pg_dump")
			}
			srv := serverDir(t, srvTools...)
			other := t.TempDir()
			if tc.onPATH {
				executable(t, other, "pg_dump")
			}
			// other comes first: a plain PATH lookup would pick its pg_dump.
			t.Setenv("PATH", other+string(os.PathListSeparator)+srv)

			got, err := tool("pg_dump")
			switch {
			case tc.wantErr:
				if err == nil || !strings.Contains(err.Error(), "install the PostgreSQL client tools") {
					t.Fatalf("got %q, %v; want a not-found error", got, err)
				}
			case err != nil:
				t.Fatal(err)
			case tc.wantServer && got != filepath.Join(srv, "pg_dump"):
				t.Errorf("got %s, want the server installation's pg_dump", got)
			case !tc.wantServer && got != filepath.Join(other, "pg_dump"):
				t.Errorf("got %s, want the pg_dump on PATH", got)
			}
		})
	}
}

func TestDumpAndRestoreWithoutClientTools(t *testing.T) {
	t.Setenv("PATH", serverDir(t))
	ctx := context.Background()
	dir := t.TempDir()
	out := filepath.Join(dir, "x.dump")
	if err := Dump(ctx, "postgres://x@127.0.0.1:1/x", out); err == nil || !strings.Contains(err.Error(), "pg_dump not found") {
		t.Errorf("dump without pg_dump: %v", err)
	}
	if fileExists(out) || fileExists(out+".partial") {
		t.Error("a dump without pg_dump left a file behind")
	}
	existing := filepath.Join(dir, "existing.dump")
	if err := os.WriteFile(existing, []byte("PGDMP"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Restore(ctx, "postgres://x@127.0.0.1:1/x", existing); err == nil || !strings.Contains(err.Error(), "pg_restore not found") {
		t.Errorf("restore without pg_restore: %v", err)
	}
}

func TestRestoreOfACorruptDumpChangesNothing(t *testing.T) {
	ctx := testenv.Context(t)
	dsn, c := migrated(t, ctx)
	want := fingerprint(t, ctx, c)

	dir := t.TempDir()
	good := filepath.Join(dir, "good.dump")
	if err := Dump(ctx, dsn, good); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	// A dump cut off half-way, as a full disk or an interrupted copy leaves it.
	cut := filepath.Join(dir, "cut.dump")
	if err := os.WriteFile(cut, b[:len(b)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.dump")
	if err := os.WriteFile(garbage, []byte("this is not a dump"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{garbage, cut} {
		if err := Restore(ctx, dsn, p); err == nil || !strings.Contains(err.Error(), "backup: pg_restore") {
			t.Errorf("restore of %s: %v", filepath.Base(p), err)
		}
		if got := fingerprint(t, ctx, c); got != want {
			t.Errorf("a failed restore of %s changed the database: %s, want %s", filepath.Base(p), got, want)
		}
	}
}

func TestCancelledDumpLeavesNoFile(t *testing.T) {
	pg := testenv.Postgres(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	out := filepath.Join(t.TempDir(), "x.dump")
	if err := Dump(ctx, pg.DSN, out); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled dump: %v", err)
	}
	if fileExists(out) || fileExists(out+".partial") {
		t.Error("a cancelled dump left a file behind")
	}
}
