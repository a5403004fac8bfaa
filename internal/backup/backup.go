// Package backup takes and restores compressed logical backups of the
// StackLens database with the local pg_dump and pg_restore (custom
// format), as the runbook's backup and disaster-recovery steps do.
package backup

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/stacklens/stacklens/internal/embedded"
)

// tool finds pg_dump/pg_restore next to the server binaries (so versions
// match the local server), else on PATH.
func tool(name string) (string, error) {
	if dir, err := embedded.FindPostgresBin(); err == nil {
		if p := filepath.Join(dir, name); fileExists(p) {
			return p, nil
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("backup: %s not found (install the PostgreSQL client tools): %w", name, err)
	}
	return p, nil
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// Dump writes a compressed custom-format dump of the database at dsn to
// path (written to a temporary name and renamed, so a failed dump never
// leaves a truncated file under the final name).
func Dump(ctx context.Context, dsn, path string) error {
	bin, err := tool("pg_dump")
	if err != nil {
		return err
	}
	tmp := path + ".partial"
	if err := run(ctx, bin, "--format=custom", "--compress=6", "--file="+tmp, "--dbname="+dsn); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

// Restore loads a dump into the database at dsn, replacing the objects it
// contains (--clean --if-exists) in a single transaction.
func Restore(ctx context.Context, dsn, path string) error {
	if !fileExists(path) {
		return fmt.Errorf("backup: %s does not exist", path)
	}
	bin, err := tool("pg_restore")
	if err != nil {
		return err
	}
	return run(ctx, bin, "--clean", "--if-exists", "--single-transaction", "--exit-on-error", "--dbname="+dsn, path)
}

func run(ctx context.Context, bin string, args ...string) error {
	cmd := exec.CommandContext(ctx, bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("backup: %s: %w: %s", filepath.Base(bin), err, strings.TrimSpace(out.String()))
	}
	return nil
}
