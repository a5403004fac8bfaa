package backup

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/telemetry"
	"github.com/stacklens/stacklens/schema"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func fingerprint(t *testing.T, ctx context.Context, c *pgx.Conn) string {
	t.Helper()
	var s string
	err := c.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM analytics_alert_rules)::text || '/' ||
		(SELECT coalesce(sum(count), 0) FROM analytics_metrics_1min)::text || '/' ||
		(SELECT coalesce(string_agg(service || ':' || latency_p99_ms::text, ',' ORDER BY service), '') FROM analytics_metrics_1min) || '/' ||
		(SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'v_%' AND table_schema = 'public')::text`).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestBackupDropRestoreRoundTrip is the runbook's disaster recovery on a
// real server: back up, lose the data, restore, compare.
func TestBackupDropRestoreRoundTrip(t *testing.T) {
	ctx := testenv.Context(t)
	dsn, c := migrated(t, ctx)
	if _, err := c.Exec(ctx, `INSERT INTO analytics_metrics_1min (service, "timestamp", count, error_count, warning_count, error_rate, throughput_per_sec,
		latency_avg_ms, latency_min_ms, latency_max_ms, latency_p50_ms, latency_p95_ms, latency_p99_ms, risk_score_avg, risk_score_max,
		latency_sum, latency_sq_sum, risk_sum, final, version, last_seq)
		SELECT 'svc-' || g, date_trunc('minute', now()) - g * interval '1 minute', 100 + g, g, 0, g, 1, 10, 1, 90, 9, 50, 80 + g, 0.1, 0.9, 1000, 20000, 10, true, 1, g
		FROM generate_series(1, 50) g`); err != nil {
		t.Fatal(err)
	}
	want := fingerprint(t, ctx, c)

	dump := filepath.Join(t.TempDir(), "stacklens.dump")
	if err := Dump(ctx, dsn, dump); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, `DELETE FROM analytics_metrics_1min; DELETE FROM analytics_alert_rules; DROP VIEW v_top_error_services`); err != nil {
		t.Fatal(err)
	}
	if got := fingerprint(t, ctx, c); got == want {
		t.Fatal("the data loss did not change anything: the test would prove nothing")
	}
	if err := Restore(ctx, dsn, dump); err != nil {
		t.Fatal(err)
	}
	if got := fingerprint(t, ctx, c); got != want {
		t.Fatalf("after restore %s, want %s", got, want)
	}
}

func TestErrorsAreReported(t *testing.T) {
	ctx := context.Background()
	if err := Restore(ctx, "postgres://x@127.0.0.1:1/x", "/nonexistent.dump"); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("restore of a missing file: %v", err)
	}
	out := filepath.Join(t.TempDir(), "x.dump")
	if err := Dump(ctx, "postgres://nobody@127.0.0.1:1/none?connect_timeout=2", out); err == nil || !strings.Contains(err.Error(), "pg_dump") {
		t.Errorf("dump of an unreachable server: %v", err)
	}
	if fileExists(out) || fileExists(out+".partial") {
		t.Error("a failed dump left a file behind")
	}
	if _, err := tool("no-such-pg-tool"); err == nil {
		t.Error("missing tool found")
	}
}

// migrated returns the DSN of a fresh test database with the schema
// applied, and a connection to it (closed at test end).
func migrated(t *testing.T, ctx context.Context) (string, *pgx.Conn) {
	t.Helper()
	pg := testenv.Postgres(t)
	c, err := pgx.Connect(ctx, pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	if _, err := schema.Up(ctx, c, schema.Options{}, telemetry.Discard()); err != nil {
		t.Fatal(err)
	}
	return pg.DSN, c
}
