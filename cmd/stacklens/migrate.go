package main

import (
	"context"
	"fmt"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/schema"
)

func cmdMigrate(ctx context.Context, c *cli) int {
	if len(c.args) == 0 || (c.args[0] != "up" && c.args[0] != "status") {
		fmt.Fprintln(c.stderr, "usage: stacklens migrate up|status [flags]")
		return exitConfig
	}
	sub := *c
	sub.args = c.args[1:]
	cfg, code := loadConfig(&sub, "migrate "+c.args[0], "apply or list the SQL migrations", nil)
	if cfg == nil {
		return code
	}
	e := newEnv(c, cfg, "migrate")
	if c.args[0] == "up" {
		if _, err := migrateUp(ctx, cfg.Config, e.log); err != nil {
			e.log.Error("migrate failed", "err", err)
			return exitFail
		}
		return exitOK
	}
	conn, err := connectDB(ctx, cfg.DB.DSN())
	if err != nil {
		e.log.Error("migrate status", "err", err)
		return exitFail
	}
	defer conn.Close(context.Background())
	st, err := schema.StatusOf(ctx, conn)
	if err != nil {
		e.log.Error("migrate status", "err", err)
		return exitFail
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tNAME\tAPPLIED\tAT")
	for _, s := range st {
		at := "-"
		if s.Applied {
			at = s.AppliedAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%04d\t%s\t%v\t%s\n", s.Version, s.Name, s.Applied, at)
	}
	_ = tw.Flush()
	return exitOK
}

// migrateUp applies the migrations with the configured retention and
// TimescaleDB choice, and provides a table for every configured window.
func migrateUp(ctx context.Context, cfg *config.Config, log *slog.Logger) (int, error) {
	conn, err := connectDB(ctx, cfg.DB.DSN())
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	n, err := schema.Up(ctx, conn, schema.Options{
		Timescale:      cfg.DB.Timescale,
		RetentionHot:   cfg.Retention.HotDays,
		RetentionWarm:  cfg.Retention.WarmDays,
		RetentionCold:  cfg.Retention.ColdDays,
		ReaderPassword: cfg.DB.ReaderPassword,
		WriterPassword: cfg.DB.WriterPassword,
		AdminPassword:  cfg.DB.AdminPassword,
		Windows:        schemaWindows(cfg),
	}, log.With("component", "migrate"))
	if err != nil {
		return n, fmt.Errorf("migrate: %w", err)
	}
	return n, nil
}

// schemaWindows lists the configured windows with their retention tier,
// so every window gets its table.
func schemaWindows(cfg *config.Config) []schema.Window {
	out := make([]schema.Window, 0, len(cfg.Pipeline.WindowList))
	for _, w := range cfg.Pipeline.WindowList {
		out = append(out, schema.Window{Name: w.Name, Tier: cfg.Retention.WindowTier(w)})
	}
	return out
}

// connectDB connects once, retrying for up to 30 s while the server starts.
func connectDB(ctx context.Context, dsn string) (*pgx.Conn, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := pgx.Connect(cctx, dsn)
		cancel()
		if err == nil {
			return conn, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
