package compose

import (
	"context"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/schema"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// grafanaMacros expands the Grafana PostgreSQL macros the dashboards use,
// as Grafana does for a time range [from, to). An unknown macro is an
// error: add its expansion here when a dashboard starts using it.
func grafanaMacros(q string, from, to time.Time) (string, error) {
	f, tt := "'"+from.UTC().Format(time.RFC3339)+"'", "'"+to.UTC().Format(time.RFC3339)+"'"
	rules := []struct {
		re   *regexp.Regexp
		repl string
	}{
		{regexp.MustCompile(`\$__timeFilter\(([^)]+)\)`), "$1 BETWEEN " + f + " AND " + tt},
		{regexp.MustCompile(`\$__timeGroupAlias\(([^,]+),\s*'(\d+)m'\)`), `floor(extract(epoch from $1)/($2*60))*($2*60) AS "time"`},
		{regexp.MustCompile(`\$__timeFrom\(\)`), f},
		{regexp.MustCompile(`\$__timeTo\(\)`), tt},
	}
	for _, r := range rules {
		q = r.re.ReplaceAllString(q, r.repl)
	}
	if m := regexp.MustCompile(`\$__\w+`).FindString(q); m != "" {
		return "", &macroError{m}
	}
	return q, nil
}

type macroError struct{ name string }

func (e *macroError) Error() string { return "unknown Grafana macro " + e.name }

// TestDashboardSQLRunsAsReader runs every PostgreSQL query of the Grafana
// dashboards against a freshly migrated database as stacklens_reader, the
// role Grafana's data source logs in as: the names exist, the SQL parses
// and the reader may run it.
func TestDashboardSQLRunsAsReader(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL")
	}
	pg := testenv.Postgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := schema.Up(ctx, conn, schema.Options{Timescale: "auto"}, nil); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	// A little data, so aggregates and the alert functions have rows.
	if _, err := conn.Exec(ctx, `
		INSERT INTO analytics_metrics_1min (service, "timestamp", count, error_count, warning_count, error_rate,
		    throughput_per_sec, latency_avg_ms, latency_min_ms, latency_max_ms, latency_p50_ms, latency_p95_ms,
		    latency_p99_ms, latency_sum, latency_sq_sum, risk_sum, final, version, last_seq)
		SELECT 'svc-' || i, date_trunc('minute', now()) - interval '1 minute', 100, i, 0, i, 1.6, 50, 1, 900, 40, 300,
		       100 * i, 5000, 300000, 0, true, 1, i
		FROM generate_series(1, 3) AS i`); err != nil {
		t.Fatalf("seed metrics: %v", err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO analytics_slos (name, service, objective, latency_threshold_ms, target)
		VALUES ('svc-1 available', 'svc-1', 'availability', NULL, 99.9), ('all fast', NULL, 'latency', 300, 99)`); err != nil {
		t.Fatalf("seed slos: %v", err)
	}

	files, _ := filepath.Glob(filepath.Join(dashboardsDir, "*.json"))
	now := time.Now()
	n := 0
	for _, f := range files {
		var d struct{ Panels []json.RawMessage }
		if err := json.Unmarshal([]byte(readFile(t, f)), &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		var queries []struct{ title, sql string }
		var walk func(raw []json.RawMessage)
		walk = func(raw []json.RawMessage) {
			for _, r := range raw {
				var p struct {
					Title   string
					Panels  []json.RawMessage
					Targets []struct{ RawSQL string }
				}
				_ = json.Unmarshal(r, &p)
				walk(p.Panels)
				for _, tg := range p.Targets {
					if strings.TrimSpace(tg.RawSQL) != "" {
						queries = append(queries, struct{ title, sql string }{p.Title, tg.RawSQL})
					}
				}
			}
		}
		walk(d.Panels)
		for _, q := range queries {
			n++
			sql, err := grafanaMacros(q.sql, now.Add(-time.Hour), now)
			if err != nil {
				t.Errorf("%s: panel %q: %v", f, q.title, err)
				continue
			}
			if err := runAsReader(ctx, conn, sql); err != nil {
				t.Errorf("%s: panel %q: %v\n  SQL: %s", f, q.title, err, sql)
			}
		}
	}
	if n == 0 {
		t.Fatal("no SQL queries found in the dashboards")
	}
	// The check must be able to fail: a name the schema lacks, and a table
	// the reader may not read.
	if err := runAsReader(ctx, conn, "SELECT count(*) FROM v_active_alert"); err == nil {
		t.Error("a query of a missing view passed")
	}
	if err := runAsReader(ctx, conn, "SELECT count(*) FROM pg_authid"); err == nil {
		t.Error("the reader could read pg_authid: the check does not run as stacklens_reader")
	}
}

// runAsReader runs sql as stacklens_reader in a transaction that is rolled
// back, reading every row.
func runAsReader(ctx context.Context, conn *pgx.Conn, sql string) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := tx.Exec(ctx, "SET LOCAL ROLE stacklens_reader"); err != nil {
		return err
	}
	rows, err := tx.Query(ctx, sql)
	if err != nil {
		return err
	}
	for rows.Next() {
	}
	rows.Close()
	return rows.Err()
}
