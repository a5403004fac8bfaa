package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
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

func cmdHealthcheck(ctx context.Context, c *cli) int {
	cfg, code := loadConfig(c, "healthcheck", "probe this host's role", nil)
	if cfg == nil {
		return code
	}
	host := cfg.Telemetry.MetricsHost
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	url := "http://" + net.JoinHostPort(host, strconv.Itoa(cfg.Telemetry.MetricsPort)) + "/ready"
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintln(c.stderr, "not ready:", err)
		return exitFail
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(c.stderr, "not ready:", resp.Status)
		return exitFail
	}
	return exitOK
}
