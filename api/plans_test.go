package api

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/window"
	"github.com/stacklens/stacklens/schema"
)

// TestQueryPlans: on 50 services × 24 h of rows, every /metrics statement
// variant's generic plan (what the API executes: prepared statements with
// plan_cache_mode = force_generic_plan) reads through an index, never a
// sequential scan of the table, and every variant returns what its
// filters say.
func TestQueryPlans(t *testing.T) {
	ctx := context.Background()
	pg := testenv.Postgres(t)
	db, err := pgx.Connect(ctx, pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	if _, err := schema.Up(ctx, db, schema.Options{Timescale: "off"}, nil); err != nil {
		t.Fatal(err)
	}
	seedBench(t, db, time.Now().UTC().Truncate(time.Minute), 50)
	if _, err := db.Exec(ctx, "SET plan_cache_mode = force_generic_plan"); err != nil {
		t.Fatal(err)
	}
	literals := []string{"'svc-07'", "now() - interval '3 hours'", "now() - interval '1 hour'"}
	explain := func(name, sql string, args []string) string {
		t.Helper()
		if _, err := db.Exec(ctx, "PREPARE "+name+" AS "+sql); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, sql)
		}
		exec := "EXPLAIN (ANALYZE, COSTS OFF) EXECUTE " + name
		if len(args) > 0 {
			exec += "(" + strings.Join(args, ", ") + ")"
		}
		rows, err := db.Query(ctx, exec)
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var s string
			_ = rows.Scan(&s)
			plan = append(plan, s)
		}
		rows.Close()
		return strings.Join(plan, "\n")
	}
	for win, variants := range newStore(nil, nil, 0, window.Defaults()).metricQ {
		for mask, sql := range variants {
			var args []string
			for i, l := range literals {
				if mask&(1<<i) != 0 {
					args = append(args, l)
				}
			}
			args = append(args, "100")
			plan := explain("m_"+win+"_"+itoa(int64(mask)), sql, args)
			if strings.Contains(plan, "Seq Scan") || !strings.Contains(plan, "Index") {
				t.Errorf("%s variant %03b: plan without index:\n%s", win, mask, plan)
			}
			if mask == 0 && win == "1min" {
				t.Logf("1min, no filter:\n%s", plan)
			}
		}
	}
	for mask, sql := range alertsSQL {
		var args []string
		for i, l := range []string{"'active'", "'critical'", "'svc-07'"} {
			if mask&(1<<i) != 0 {
				args = append(args, l)
			}
		}
		plan := explain("a_"+itoa(int64(mask)), sql, append(args, "100"))
		if strings.Contains(plan, "Sort Method: external") {
			t.Errorf("alerts variant %03b spills:\n%s", mask, plan)
		}
	}
	t.Logf("health-status:\n%s", explain("hs", healthStatusSQL, nil))
}
