package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stacklens/stacklens/internal/harness/testenv"
)

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
