package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/stacklens/stacklens/internal/backup"
)

func cmdBackup(ctx context.Context, c *cli) int {
	var file string
	cfg, code := loadConfig(c, "backup", "write a compressed pg_dump of the database", func(fs *flag.FlagSet) {
		fs.StringVar(&file, "file", "", "output file (default backups/stacklens_<UTC time>.dump)")
	})
	if cfg == nil {
		return code
	}
	e := newEnv(c, cfg, "backup")
	if file == "" {
		file = filepath.Join("backups", "stacklens_"+time.Now().UTC().Format("20060102_150405")+".dump")
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		e.log.Error("backup failed", "err", err)
		return exitFail
	}
	start := time.Now()
	if err := backup.Dump(ctx, cfg.DB.DSN(), file); err != nil {
		e.log.Error("backup failed", "err", err)
		return exitFail
	}
	st, _ := os.Stat(file)
	e.log.Info("backup written", "file", file, "bytes", st.Size(), "duration", time.Since(start).Round(time.Millisecond))
	fmt.Fprintln(c.stdout, file)
	return exitOK
}

func cmdRestore(ctx context.Context, c *cli) int {
	var file string
	cfg, code := loadConfig(c, "restore", "restore a backup", func(fs *flag.FlagSet) {
		fs.StringVar(&file, "file", "", "the dump to restore (required)")
	})
	if cfg == nil {
		return code
	}
	if file == "" {
		fmt.Fprintln(c.stderr, "stacklens restore: --file is required")
		return exitConfig
	}
	e := newEnv(c, cfg, "restore")
	if err := backup.Restore(ctx, cfg.DB.DSN(), file); err != nil {
		e.log.Error("restore failed", "err", err)
		return exitFail
	}
	e.log.Info("restored", "file", file)
	return exitOK
}
