package schema

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/stacklens/stacklens/internal/harness/testenv"
)

// ---------------------------------------------------------------------------
// Test PostgreSQL comes from internal/harness/testenv: TEST_DATABASE_URL, a
// container, or a throwaway local cluster whose pg_hba makes the
// application roles log in with real passwords.

func TestMain(m *testing.M) { testenv.Main(m) }

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func connect(t *testing.T, cfg *pgx.ConnConfig) *pgx.Conn {
	t.Helper()
	conn, err := pgx.ConnectConfig(testCtx(t), cfg)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// newDB creates a fresh database for the test and returns its config (copy
// it before changing) and a connection to it.
func newDB(t *testing.T) (*pgx.ConnConfig, *pgx.Conn) {
	t.Helper()
	cfg, err := pgx.ParseConfig(testenv.Postgres(t).DSN)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, connect(t, cfg.Copy())
}

// migrated returns a fresh database with Up applied.
func migrated(t *testing.T) (*pgx.ConnConfig, *pgx.Conn) {
	t.Helper()
	cfg, conn := newDB(t)
	if _, err := Up(testCtx(t), conn, Options{}, nil); err != nil {
		t.Fatalf("Up: %v", err)
	}
	return cfg, conn
}

func exec1(t *testing.T, db DB, sql string, args ...any) {
	t.Helper()
	if _, err := db.Exec(testCtx(t), sql, args...); err != nil {
		t.Fatalf("%s: %v", firstLine(sql), err)
	}
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func strings1(t *testing.T, db DB, sql string, args ...any) []string {
	t.Helper()
	rows, err := db.Query(testCtx(t), sql, args...)
	if err != nil {
		t.Fatalf("%s: %v", firstLine(sql), err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("%s: %v", firstLine(sql), err)
	}
	sort.Strings(out)
	return out
}

func pgCode(err error) string {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return pg.Code
	}
	return ""
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

// ---------------------------------------------------------------------------
// Migrations and the migrator.

// landedChecksums are the SHA-256 sums of migrations that have been
// released: databases record them in schema_migrations and refuse a binary
// whose copy differs (ErrChecksumMismatch), so a released migration never
// changes; a change is a new migration. Add a version here once it lands.
var landedChecksums = map[int]string{
	1:  "abfaa843e2da844ec40ff9973ae23d23cd03a351f8aa004186dad6c2e1e3e9e1",
	2:  "fc8803aa81c2281963134a537bcf41e660edc0cfce7c158f0b2d08d2697aff37",
	3:  "3f49b061a44f4934e1af643dabcfed5dd60369b6ed59aaa2c41f3da0531fb18f",
	4:  "6928dfbd9c766b5f3c00bf0f99af897a2d510aea821caab26131aaa07bc65783",
	5:  "bdd11a78a54ccb3745905ff2d7512f85eaab7a2d1cae9652d2c88aee48a81f1b",
	6:  "571279bf3c52ab2d4ed7a4210c126a79faeca0e2e585454a551766e1b503ea5b",
	7:  "86d22e1c7b5bc8ae8b60567f12ecf9d1636b6d182bdb1b19130d300248d2f26d",
	8:  "40393cf67c72ea31117cc0d8d96ed215484c1e25e1a4ce273eaffdc91c3efb13",
	9:  "ccd19413ff3929125b2819a118f6c313115f6d12a0fe21244b0cb7e8909f6653",
	10: "a6d3028b1b25b2ece24a3c4d8b414915dcced36dcd40c3dd6d043f4ecde3d830",
	11: "0bc2bc302cfcdf8d3e9480c79e525920084c7d9983860082a67e99be46488c5f",
	12: "6d57b229226d085391356a8c2fd73278d69c6e927cefd343ea4529c94a0920c4",
	13: "74b9cb2345c67fbbc6baac127e833901a882e988329255eca429055399f516a9",
}

// TestLandedMigrationsUnchanged: a database migrated by a released binary
// upgrades: no released migration's SQL has changed.
func TestLandedMigrationsUnchanged(t *testing.T) {
	migs, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range migs {
		if want, ok := landedChecksums[m.Version]; ok && m.Checksum() != want {
			t.Errorf("migration %04d_%s changed after it was released (checksum %s, released %s): restore it and put the change in a new migration", m.Version, m.Name, m.Checksum(), want)
		}
	}
}

func TestMigrationsEmbedded(t *testing.T) {
	migs, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"core", "alerting", "views", "functions", "timescale", "roles", "alert_no_data", "windows", "slos", "slo_alerts", "lean_events", "slo_status_view", "change_notify"}
	if len(migs) != len(want) {
		t.Fatalf("got %d migrations, want %d", len(migs), len(want))
	}
	for i, m := range migs {
		if m.Version != i+1 || m.Name != want[i] || m.SQL == "" || len(m.Checksum()) != 64 {
			t.Errorf("migration %d = %d %q (%d bytes)", i, m.Version, m.Name, len(m.SQL))
		}
	}
}

type readFileFails struct{ fstest.MapFS }

func (readFileFails) ReadFile(string) ([]byte, error) { return nil, errors.New("boom") }

type readDirFails struct{}

func (readDirFails) Open(string) (fs.File, error) { return nil, errors.New("boom") }

func TestLoadMigrationsErrors(t *testing.T) {
	f := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	good, err := loadMigrations(fstest.MapFS{
		"0002_b.sql": f("SELECT 2"), "0001_a.sql": f("SELECT 1"),
		"README.md": f("x"), "sub": &fstest.MapFile{Mode: fs.ModeDir},
	})
	if err != nil || len(good) != 2 || good[0].Name != "a" || good[1].Version != 2 {
		t.Fatalf("good set: %v %+v", err, good)
	}
	for name, fsys := range map[string]fs.FS{
		"not named NNNN_name.sql": fstest.MapFS{"1_a.sql": f("SELECT 1")},
		"used by":                 fstest.MapFS{"0001_a.sql": f("SELECT 1"), "0001_b.sql": f("SELECT 1")},
		"without gaps":            fstest.MapFS{"0001_a.sql": f("SELECT 1"), "0003_c.sql": f("SELECT 1")},
		"is empty":                fstest.MapFS{"0001_a.sql": f(" \n")},
		"no migrations":           fstest.MapFS{},
		"reading 0001_a.sql":      readFileFails{fstest.MapFS{"0001_a.sql": f("SELECT 1")}},
		"reading migrations":      readDirFails{},
	} {
		if _, err := loadMigrations(fsys); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: got %v", name, err)
		}
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("mustSub with a bad path did not panic")
			}
		}()
		mustSub(embedded, "../bad")
	}()
}

func TestBrokenEmbeddedSet(t *testing.T) {
	saved := migrationsFS
	migrationsFS = fstest.MapFS{}
	defer func() { migrationsFS = saved }()
	if _, err := Up(context.Background(), nil, Options{}, nil); err == nil {
		t.Error("Up with no migrations succeeded")
	}
	if _, err := StatusOf(context.Background(), nil); err == nil {
		t.Error("StatusOf with no migrations succeeded")
	}
}

func TestUpIdempotentAndStatus(t *testing.T) {
	ctx := testCtx(t)
	_, conn := newDB(t)
	migs, _ := Migrations()

	st, err := StatusOf(ctx, conn)
	if err != nil || len(st) != len(migs) {
		t.Fatalf("StatusOf on empty db: %v %+v", err, st)
	}
	for _, s := range st {
		if s.Applied || !s.AppliedAt.IsZero() || s.Name == "" {
			t.Errorf("empty db status %+v", s)
		}
	}

	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	n, err := Up(ctx, conn, Options{}, log)
	if err != nil || n != len(migs) {
		t.Fatalf("first Up = %d, %v; want %d", n, err, len(migs))
	}
	if !strings.Contains(logs.String(), "applied migration") || !strings.Contains(logs.String(), "name=roles") {
		t.Errorf("log does not name applied migrations:\n%s", logs.String())
	}
	n, err = Up(ctx, conn, Options{}, log)
	if err != nil || n != 0 {
		t.Fatalf("second Up = %d, %v; want 0", n, err)
	}
	st, err = StatusOf(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range st {
		if !s.Applied || s.Version != i+1 || s.Name != migs[i].Name || time.Since(s.AppliedAt) > time.Hour {
			t.Errorf("status %+v", s)
		}
	}

	// A migration recorded by a newer binary: warned about, listed, not fatal.
	exec1(t, conn, `INSERT INTO schema_migrations (version, name, checksum) VALUES (999, 'future', 'x')`)
	logs.Reset()
	if n, err := Up(ctx, conn, Options{}, log); err != nil || n != 0 {
		t.Fatalf("Up with a future migration = %d, %v", n, err)
	}
	if !strings.Contains(logs.String(), "does not know") {
		t.Errorf("no warning about version 999:\n%s", logs.String())
	}
	st, _ = StatusOf(ctx, conn)
	if last := st[len(st)-1]; last.Version != 999 || last.Name != "future" || !last.Applied {
		t.Errorf("future migration status %+v", last)
	}
	exec1(t, conn, `DELETE FROM schema_migrations WHERE version = 999`)

	// An edited migration is refused.
	exec1(t, conn, `UPDATE schema_migrations SET checksum = 'edited' WHERE version = 3`)
	if _, err := Up(ctx, conn, Options{}, nil); !errors.Is(err, ErrChecksumMismatch) || !strings.Contains(err.Error(), "0003_views") {
		t.Fatalf("Up after edit: %v", err)
	}
}

func TestUpConcurrent(t *testing.T) {
	cfg, conn := newDB(t)
	migs, _ := Migrations()
	const workers = 3
	conns := make([]*pgx.Conn, workers)
	for i := range conns {
		conns[i] = connect(t, cfg.Copy())
	}
	var wg sync.WaitGroup
	counts := make([]int, workers)
	errs := make([]error, workers)
	ctx := testCtx(t)
	for i := range conns {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			counts[i], errs[i] = Up(ctx, conns[i], Options{}, nil)
		}(i)
	}
	wg.Wait()
	total := 0
	for i := range conns {
		if errs[i] != nil {
			t.Errorf("Up #%d: %v", i, errs[i])
		}
		total += counts[i]
	}
	if total != len(migs) {
		t.Errorf("concurrent Ups applied %v migrations in total, want %d", counts, len(migs))
	}
	var recorded, rules int
	if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM schema_migrations), (SELECT count(*) FROM analytics_alert_rules)`).Scan(&recorded, &rules); err != nil {
		t.Fatal(err)
	}
	if recorded != len(migs) || rules != 4 {
		t.Errorf("after concurrent Up: %d recorded migrations, %d rules", recorded, rules)
	}
}

func TestApplyOneRaces(t *testing.T) {
	ctx := testCtx(t)
	_, conn := migrated(t)
	migs, _ := Migrations()
	s := settings{timescale: "off"}
	// Recorded meanwhile with the same checksum: skipped.
	if did, err := applyOne(ctx, conn, migs[0], s); did || err != nil {
		t.Errorf("applyOne of a recorded migration = %v, %v", did, err)
	}
	// Recorded meanwhile with another checksum: refused.
	edited := migs[0]
	edited.SQL += "\n-- edited"
	if _, err := applyOne(ctx, conn, edited, s); !errors.Is(err, ErrChecksumMismatch) {
		t.Errorf("applyOne of an edited migration: %v", err)
	}
}

func TestFailedMigrationRollsBack(t *testing.T) {
	ctx := testCtx(t)
	_, conn := newDB(t)
	migs := []Migration{
		{Version: 1, Name: "ok", SQL: "CREATE TABLE t_ok (id int);"},
		{Version: 2, Name: "bad", SQL: "CREATE TABLE t_half (id int);\n\nSELEC 1;"},
	}
	n, err := apply(ctx, conn, migs, settings{timescale: "off"}, slog.New(slog.DiscardHandler))
	if n != 1 || err == nil || !strings.Contains(err.Error(), "migration 0002_bad (line 3)") || pgCode(err) != "42601" {
		t.Fatalf("apply = %d, %v", n, err)
	}
	var half, recorded int
	if err := conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE to_regclass('t_half') IS NOT NULL), (SELECT count(*) FROM schema_migrations) FROM (SELECT 1) x`).Scan(&half, &recorded); err != nil {
		t.Fatal(err)
	}
	if half != 0 || recorded != 1 {
		t.Errorf("after the failed migration: t_half exists=%d, recorded=%d", half, recorded)
	}
	if got := where("SELECT 1", errors.New("plain")); got != "" {
		t.Errorf("where(non-pg error) = %q", got)
	}
}

func TestOptionsValidation(t *testing.T) {
	ctx := testCtx(t)
	_, conn := newDB(t)
	for _, o := range []Options{
		{Timescale: "maybe"},
		{RetentionHot: -1},
		{RetentionCold: maxRetentionDays + 1},
		{ReaderPassword: "pässword"},
		{WriterPassword: "tab\there"},
	} {
		if _, err := Up(ctx, conn, o, nil); err == nil {
			t.Errorf("Up(%+v) succeeded", o)
		}
	}
	avail, err := TimescaleAvailable(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if !avail {
		if _, err := Up(ctx, conn, Options{Timescale: "on"}, nil); !errors.Is(err, ErrTimescaleUnavailable) {
			t.Errorf("Timescale on without the extension: %v", err)
		}
	}
	// Nothing was created by the refused runs.
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("refused runs left %d tables (%v)", n, err)
	}
	if _, err := Up(ctx, conn, Options{Timescale: "OFF"}, nil); err != nil {
		t.Errorf("Timescale OFF: %v", err)
	}
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("Timescale off installed the extension (%d, %v)", n, err)
	}
}

func TestRetentionOptionsStored(t *testing.T) {
	ctx := testCtx(t)
	cfg, conn := newDB(t)
	// Options given on the first run seed the settings...
	if _, err := Up(ctx, conn, Options{RetentionHot: 2, RetentionWarm: 10, RetentionCold: 90}, nil); err != nil {
		t.Fatal(err)
	}
	got := strings1(t, conn, `SELECT key || '=' || value FROM analytics_settings`)
	want := []string{"retention_cold_days=90", "retention_hot_days=2", "retention_warm_days=10"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("settings = %v, want %v", got, want)
	}
	// ...later runs update what they are given and keep the rest.
	if _, err := Up(ctx, conn, Options{RetentionWarm: 14}, nil); err != nil {
		t.Fatal(err)
	}
	got = strings1(t, conn, `SELECT key || '=' || value FROM analytics_settings`)
	want = []string{"retention_cold_days=90", "retention_hot_days=2", "retention_warm_days=14"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("settings = %v, want %v", got, want)
	}
	// Defaults on a database migrated without options.
	_, conn2 := migrated(t)
	got = strings1(t, conn2, `SELECT key || '=' || value FROM analytics_settings`)
	want = []string{"retention_cold_days=30", "retention_hot_days=1", "retention_warm_days=7"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("default settings = %v, want %v", got, want)
	}
	_ = cfg
}

// faultDB fails the n-th database call (Begin, Exec, Query, QueryRow,
// Commit, on the DB or its transactions) to walk every error path.
type faultDB struct {
	DB
	calls, failAt int
}

var errInjected = errors.New("injected fault")

func (f *faultDB) step() error {
	f.calls++
	if f.calls == f.failAt {
		return errInjected
	}
	return nil
}

func (f *faultDB) Begin(ctx context.Context) (pgx.Tx, error) {
	if err := f.step(); err != nil {
		return nil, err
	}
	tx, err := f.DB.Begin(ctx)
	if err != nil {
		return nil, err
	}
	return &faultTx{Tx: tx, f: f}, nil
}

func (f *faultDB) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if err := f.step(); err != nil {
		return pgconn.CommandTag{}, err
	}
	return f.DB.Exec(ctx, sql, args...)
}

func (f *faultDB) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if err := f.step(); err != nil {
		return nil, err
	}
	return f.DB.Query(ctx, sql, args...)
}

func (f *faultDB) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if err := f.step(); err != nil {
		return errRow{err}
	}
	return f.DB.QueryRow(ctx, sql, args...)
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

type faultTx struct {
	pgx.Tx
	f *faultDB
}

func (t *faultTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if err := t.f.step(); err != nil {
		return pgconn.CommandTag{}, err
	}
	return t.Tx.Exec(ctx, sql, args...)
}

func (t *faultTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if err := t.f.step(); err != nil {
		return nil, err
	}
	return t.Tx.Query(ctx, sql, args...)
}

func (t *faultTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if err := t.f.step(); err != nil {
		return errRow{err}
	}
	return t.Tx.QueryRow(ctx, sql, args...)
}

func (t *faultTx) Commit(ctx context.Context) error {
	if err := t.f.step(); err != nil {
		return err
	}
	return t.Tx.Commit(ctx)
}

// TestFaultEveryStep fails each database call of Up and StatusOf in turn:
// every failure is reported (never swallowed), leaves the database
// consistent, and a later run completes the work.
func TestFaultEveryStep(t *testing.T) {
	ctx := testCtx(t)
	_, conn := newDB(t)
	opts := Options{ReaderPassword: "reader-pw", WriterPassword: "writer-pw", RetentionHot: 3}
	// First on an empty database (bootstrap and migrations), then on the
	// migrated one (configuration step, which runs every time).
	for round := 0; round < 2; round++ {
		for failAt := 1; ; failAt++ {
			if failAt > 500 {
				t.Fatal("Up never succeeded")
			}
			f := &faultDB{DB: conn, failAt: failAt}
			_, err := Up(ctx, f, opts, nil)
			if f.calls < failAt {
				if err != nil {
					t.Fatalf("Up without fault: %v", err)
				}
				break
			}
			if !errors.Is(err, errInjected) {
				t.Fatalf("round %d, failing call %d: Up returned %v", round, failAt, err)
			}
		}
	}
	for failAt := 1; failAt <= 2; failAt++ {
		if _, err := StatusOf(ctx, &faultDB{DB: conn, failAt: failAt}); !errors.Is(err, errInjected) {
			t.Errorf("StatusOf failing call %d: %v", failAt, err)
		}
	}
	st, err := StatusOf(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if !s.Applied {
			t.Errorf("not applied after recovery: %+v", s)
		}
	}
	if _, err := TimescaleAvailable(ctx, &faultDB{DB: conn, failAt: 1}); !errors.Is(err, errInjected) {
		t.Errorf("TimescaleAvailable: %v", err)
	}
	for _, ts := range []string{"auto", "on"} {
		if _, err := Up(ctx, &faultDB{DB: conn, failAt: 1}, Options{Timescale: ts}, nil); !errors.Is(err, errInjected) {
			t.Errorf("Up(Timescale %s) with failing availability check: %v", ts, err)
		}
	}
}

// ---------------------------------------------------------------------------
// The seed's checks.

func TestSeedSchemaValidation(t *testing.T) {
	_, conn := migrated(t)
	tables := strings1(t, conn, `SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'`)
	wantTables := []string{
		"analytics_alert_outbox", "analytics_alert_rules", "analytics_alert_silences",
		"analytics_alert_state", "analytics_alerts", "analytics_events", "analytics_metrics_1hour",
		"analytics_metrics_1min", "analytics_metrics_5min", "analytics_settings", "analytics_slos", "analytics_windows", "schema_migrations",
	}
	if strings.Join(tables, ",") != strings.Join(wantTables, ",") {
		t.Errorf("tables = %v\nwant %v", tables, wantTables)
	}
	// Verbatim from the seed's "Verify views exist".
	views := strings1(t, conn, `SELECT table_name FROM information_schema.tables 
WHERE table_name LIKE 'v_%' AND table_schema = 'public';`)
	wantViews := []string{"v_active_alerts", "v_alert_summary", "v_service_health_current",
		"v_service_performance_trend", "v_top_error_services", "v_top_latency_services"}
	if strings.Join(views, ",") != strings.Join(wantViews, ",") {
		t.Errorf("views = %v\nwant %v", views, wantViews)
	}
	// Verbatim from the seed's "Verify functions exist".
	routines := strings1(t, conn, `SELECT routine_name FROM information_schema.routines 
WHERE routine_schema = 'public' AND routine_name LIKE 'analytics_%';`)
	wantRoutines := []string{"analytics_archive_old_data", "analytics_calculate_sla", "analytics_get_alert_stats"}
	if strings.Join(routines, ",") != strings.Join(wantRoutines, ",") {
		t.Errorf("routines = %v\nwant %v", routines, wantRoutines)
	}
	// Every view and function is documented (ours: not the members of an
	// extension, such as TimescaleDB's functions installed in public).
	undocumented := strings1(t, conn, `
SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v') AND obj_description(c.oid, 'pg_class') IS NULL
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
UNION ALL
SELECT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'public' AND obj_description(p.oid, 'pg_proc') IS NULL
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')`)
	if len(undocumented) != 0 {
		t.Errorf("objects without COMMENT: %v", undocumented)
	}
	// The seed's performance-baseline query runs.
	exec1(t, conn, `EXPLAIN ANALYZE
SELECT * FROM analytics_metrics_1min
WHERE timestamp > CURRENT_TIMESTAMP - INTERVAL '1 hour'
LIMIT 1000;`)
}

const seedDefaultRules = `-- Ensure default alert rules are configured
INSERT INTO analytics_alert_rules (rule_name, metric_name, operator, threshold, severity, notification_channels, enabled)
VALUES
  ('High Error Rate', 'error_rate', '>', 5.0, 'warning', ARRAY['slack', 'email'], true),
  ('Critical Error Rate', 'error_rate', '>', 20.0, 'critical', ARRAY['slack', 'email', 'pagerduty'], true),
  ('High P99 Latency', 'latency_p99_ms', '>', 500, 'warning', ARRAY['slack', 'email'], true),
  ('Critical P99 Latency', 'latency_p99_ms', '>', 1000, 'critical', ARRAY['slack', 'email', 'pagerduty'], true)
ON CONFLICT DO NOTHING;`

func TestSeedDefaultRules(t *testing.T) {
	_, conn := migrated(t)
	exec1(t, conn, seedDefaultRules)
	exec1(t, conn, seedDefaultRules)
	got := strings1(t, conn, `SELECT format('%s|%s|%s|%s|%s|%s|%s|%s|%s', rule_name, metric_name, operator, threshold,
	    severity, array_to_string(notification_channels, ','), enabled, "window", for_windows) FROM analytics_alert_rules`)
	want := []string{
		"Critical Error Rate|error_rate|>|20|critical|slack,email,pagerduty|t|1min|1",
		"Critical P99 Latency|latency_p99_ms|>|1000|critical|slack,email,pagerduty|t|1min|1",
		"High Error Rate|error_rate|>|5|warning|slack,email|t|1min|1",
		"High P99 Latency|latency_p99_ms|>|500|warning|slack,email|t|1min|1",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// The constraints reject nonsense.
	ctx := testCtx(t)
	for _, bad := range []string{
		`INSERT INTO analytics_alert_rules (rule_name, metric_name, operator, threshold) VALUES ('x', 'error_rate', '=>', 1)`,
		`INSERT INTO analytics_alert_rules (rule_name, metric_name, operator, threshold, severity) VALUES ('x', 'error_rate', '>', 1, 'page')`,
		`INSERT INTO analytics_alert_rules (rule_name, metric_name, operator, threshold) VALUES ('x', 'bogus', '>', 1)`,
		`INSERT INTO analytics_alert_rules (rule_name, metric_name, operator, threshold, for_windows) VALUES ('x', 'error_rate', '>', 1, 0)`,
	} {
		if _, err := conn.Exec(ctx, bad); pgCode(err) != "23514" {
			t.Errorf("%s: got %v, want a check violation", bad, err)
		}
	}
	// updated_at follows updates.
	var moved bool
	if err := conn.QueryRow(ctx, `WITH u AS (UPDATE analytics_alert_rules SET updated_at = now() - interval '1 day', threshold = 6
	    WHERE rule_name = 'High Error Rate' RETURNING updated_at) SELECT updated_at > now() - interval '1 minute' FROM u`).Scan(&moved); err != nil || !moved {
		t.Errorf("updated_at trigger: %v %v", moved, err)
	}
}

func TestTimescaleHypertables(t *testing.T) {
	ctx := testCtx(t)
	cfg, conn := newDB(t)
	avail, err := TimescaleAvailable(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if !avail {
		t.Skip("timescaledb not available (not installed, or not in shared_preload_libraries): the plain PostgreSQL path is covered by the other tests")
	}
	if _, err := Up(ctx, conn, Options{Timescale: "on"}, nil); err != nil {
		t.Fatal(err)
	}
	got := strings1(t, conn, `SELECT hypertable_name::text FROM timescaledb_information.hypertables`)
	want := []string{"analytics_events", "analytics_metrics_1hour", "analytics_metrics_1min", "analytics_metrics_5min"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("hypertables = %v, want %v", got, want)
	}
	policies := strings1(t, conn, `SELECT hypertable_name || ':' || proc_name FROM timescaledb_information.jobs
	    WHERE proc_name IN ('policy_retention', 'policy_compression')`)
	if len(policies) != 6 {
		t.Errorf("policies = %v, want 4 retention + 2 compression", policies)
	}
	if n, err := Up(ctx, conn, Options{Timescale: "on", RetentionHot: 2}, nil); err != nil || n != 0 {
		t.Fatalf("second Up = %d, %v", n, err)
	}
	var drop string
	if err := conn.QueryRow(ctx, `SELECT config->>'drop_after' FROM timescaledb_information.jobs
	    WHERE proc_name = 'policy_retention' AND hypertable_name = 'analytics_events'`).Scan(&drop); err != nil || !strings.Contains(drop, "2 day") {
		t.Errorf("events retention after RetentionHot=2: %q %v", drop, err)
	}
	// The compression policies follow the retention days: max(warm, hot + 1).
	if _, err := Up(ctx, conn, Options{Timescale: "on", RetentionWarm: 10}, nil); err != nil {
		t.Fatal(err)
	}
	after := strings1(t, conn, `SELECT hypertable_name || ':' || (config->>'compress_after') FROM timescaledb_information.jobs
	    WHERE proc_name = 'policy_compression'`)
	if strings.Join(after, ",") != "analytics_metrics_1hour:10 days,analytics_metrics_5min:10 days" {
		t.Errorf("compression policies after RetentionWarm=10: %v", after)
	}
	if policies := strings1(t, conn, `SELECT job_id::text FROM timescaledb_information.jobs
	    WHERE proc_name IN ('policy_retention', 'policy_compression')`); len(policies) != 6 {
		t.Errorf("policies after changes = %v, want 6", policies)
	}
	// The change notification fires on a hypertable too: its statement
	// trigger stays on the root, which the statement targets.
	listener := connect(t, cfg.Copy())
	exec1(t, listener, `LISTEN stacklens_changes`)
	exec1(t, conn, `INSERT INTO analytics_metrics_1min (service, timestamp, count, version) VALUES ('notify', now(), 1, 1)`)
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if n, err := listener.WaitForNotification(wctx); err != nil || n.Payload != "analytics_metrics_1min" {
		t.Errorf("notification of an insert into the hypertable: %+v, %v", n, err)
	}
	exec1(t, conn, `INSERT INTO analytics_events (stream_seq, timestamp, service, level, latency_ms)
	    VALUES (1, now() - interval '10 days', 's', 'info', 1), (2, now(), 's', 'info', 1)`)
	var n int64
	if err := conn.QueryRow(ctx, `SELECT rows_deleted FROM analytics_archive_old_data() WHERE table_name = 'analytics_events'`).Scan(&n); err != nil || n != 1 {
		t.Errorf("archive on a hypertable deleted %d (%v), want 1", n, err)
	}
	// Compressed chunks: the writer's upsert with the version guard and the
	// archive (drop_chunks + DELETE in the straddling chunk) work on them.
	exec1(t, conn, `INSERT INTO analytics_metrics_5min (service, timestamp, version, count) VALUES
	    ('s', date_trunc('day', now()) - interval '20 days', 1, 1),
	    ('s', now() - interval '40 days', 1, 1),
	    ('s', now() - interval '30 days' + interval '1 hour', 1, 1),
	    ('s', now() - interval '30 days' - interval '1 hour', 1, 1)`)
	exec1(t, conn, `SELECT compress_chunk(c) FROM show_chunks('analytics_metrics_5min', older_than => interval '15 days') c`)
	exec1(t, conn, `SET ROLE stacklens_writer`)
	exec1(t, conn, `INSERT INTO analytics_metrics_5min AS m (service, timestamp, version, count)
	    VALUES ('s', date_trunc('day', now()) - interval '20 days', 2, 5)
	    ON CONFLICT (service, timestamp) DO UPDATE SET count = EXCLUDED.count, version = EXCLUDED.version
	    WHERE m.version < EXCLUDED.version`)
	if err := conn.QueryRow(ctx, `SELECT rows_deleted FROM analytics_archive_old_data() WHERE table_name = 'analytics_metrics_5min'`).Scan(&n); err != nil || n != 2 {
		t.Errorf("writer's archive of compressed 5min chunks deleted %d (%v), want 2", n, err)
	}
	exec1(t, conn, `RESET ROLE`)
	if got := strings1(t, conn, `SELECT count::text FROM analytics_metrics_5min`); strings.Join(got, ",") != "1,5" {
		t.Errorf("5min counts left = %v, want the upserted 5 and the young 1", got)
	}

	// A hypertable with a retention policy in a schema the migration user
	// cannot use (another application's) does not break Up or the archive.
	// (TimescaleDB runs a policy's job as the role that added it, which
	// therefore needs LOGIN.)
	exec1(t, conn, `CREATE ROLE stacklens_test_migrator LOGIN`)
	t.Cleanup(func() {
		ctx := context.Background()
		_, _ = conn.Exec(ctx, `RESET ROLE`)
		_, _ = conn.Exec(ctx, `REASSIGN OWNED BY stacklens_test_migrator TO CURRENT_USER`)
		_, _ = conn.Exec(ctx, `DROP OWNED BY stacklens_test_migrator`)
		if _, err := conn.Exec(ctx, `DROP ROLE IF EXISTS stacklens_test_migrator`); err != nil {
			t.Errorf("dropping the test role: %v", err)
		}
	})
	exec1(t, conn, `CREATE SCHEMA stacklens_test_other`)
	exec1(t, conn, `CREATE TABLE stacklens_test_other.t (ts timestamptz NOT NULL)`)
	exec1(t, conn, `SELECT create_hypertable('stacklens_test_other.t', 'ts')`)
	exec1(t, conn, `SELECT add_retention_policy('stacklens_test_other.t', interval '3 days')`)
	var db string
	if err := conn.QueryRow(ctx, `SELECT current_database()`).Scan(&db); err != nil {
		t.Fatal(err)
	}
	exec1(t, conn, `GRANT CREATE ON DATABASE `+pgx.Identifier{db}.Sanitize()+` TO stacklens_test_migrator`)
	for _, tbl := range []string{"analytics_events", "analytics_metrics_1min", "analytics_metrics_5min", "analytics_metrics_1hour",
		"analytics_settings", "schema_migrations"} {
		exec1(t, conn, `ALTER TABLE `+tbl+` OWNER TO stacklens_test_migrator`)
	}
	exec1(t, conn, `GRANT stacklens_writer, stacklens_reader, stacklens_admin TO stacklens_test_migrator`)
	exec1(t, conn, `ALTER FUNCTION analytics_archive_old_data() OWNER TO stacklens_test_migrator`)
	exec1(t, conn, `SET ROLE stacklens_test_migrator`)
	if _, err := Up(ctx, conn, Options{Timescale: "on", RetentionHot: 3}, nil); err != nil {
		t.Errorf("Up with a foreign hypertable in an unusable schema: %v", err)
	}
	if _, err := conn.Exec(ctx, `SELECT analytics_archive_old_data()`); err != nil {
		t.Errorf("archive with a foreign hypertable in an unusable schema: %v", err)
	}
	exec1(t, conn, `RESET ROLE`)
}

// TimescaleAvailable works for a migration user that may not read
// shared_preload_libraries (not a superuser, not in pg_read_all_settings),
// and agrees with what a superuser sees there.
func TestTimescaleAvailableNonSuperuser(t *testing.T) {
	ctx := testCtx(t)
	_, conn := newDB(t)
	var super bool
	if err := conn.QueryRow(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&super); err != nil {
		t.Fatal(err)
	}
	if !super {
		t.Skip("needs a superuser to compare with shared_preload_libraries")
	}
	var want bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
	    OR (EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
	        AND current_setting('shared_preload_libraries') ~ 'timescaledb')`).Scan(&want); err != nil {
		t.Fatal(err)
	}
	exec1(t, conn, `CREATE ROLE stacklens_test_plain NOLOGIN`)
	t.Cleanup(func() {
		_, _ = conn.Exec(context.Background(), `RESET ROLE`)
		_, _ = conn.Exec(context.Background(), `DROP ROLE IF EXISTS stacklens_test_plain`)
	})
	exec1(t, conn, `SET ROLE stacklens_test_plain`)
	got, err := TimescaleAvailable(ctx, conn)
	if err != nil {
		t.Fatalf("TimescaleAvailable as a plain role: %v", err)
	}
	if got != want {
		t.Errorf("TimescaleAvailable as a plain role = %v, superuser view says %v", got, want)
	}
	exec1(t, conn, `RESET ROLE`)
}

// ---------------------------------------------------------------------------
// Roles.

func TestRolePrivileges(t *testing.T) {
	ctx := testCtx(t)
	cfg, owner := migrated(t)
	exec1(t, owner, `INSERT INTO analytics_alerts (alert_id, fingerprint, rule_name, service, severity, metric_name)
	    VALUES ('a1', 'f1', 'High Error Rate', 's', 'warning', 'error_rate')`)
	// A table added by a later migration is covered by the default privileges.
	exec1(t, owner, `CREATE TABLE analytics_future (id int)`)

	as := func(role string) *pgx.Conn {
		c := connect(t, cfg.Copy())
		exec1(t, c, "SET ROLE "+role)
		return c
	}
	expect := func(c *pgx.Conn, role, sql, code string) {
		t.Helper()
		_, err := c.Exec(ctx, sql)
		if got := pgCode(err); got != code || (code == "" && err != nil) {
			t.Errorf("%s: %s: got %v, want code %q", role, sql, err, code)
		}
	}
	const denied = "42501"

	reader := as("stacklens_reader")
	for _, rel := range []string{"analytics_events", "analytics_metrics_1min", "analytics_metrics_5min",
		"analytics_metrics_1hour", "analytics_alert_rules", "analytics_alerts", "analytics_alert_silences",
		"analytics_alert_outbox", "analytics_alert_state", "analytics_settings", "analytics_future",
		"v_service_health_current", "v_service_performance_trend", "v_active_alerts", "v_alert_summary",
		"v_top_error_services", "v_top_latency_services"} {
		expect(reader, "stacklens_reader", "SELECT * FROM "+rel+" LIMIT 1", "")
	}
	expect(reader, "stacklens_reader", `SELECT * FROM analytics_calculate_sla('s', now() - interval '1 day', now())`, "")
	expect(reader, "stacklens_reader", `SELECT * FROM analytics_get_alert_stats()`, "")
	expect(reader, "stacklens_reader", `INSERT INTO analytics_metrics_1min (service, timestamp) VALUES ('s', now())`, denied)
	expect(reader, "stacklens_reader", `INSERT INTO analytics_events (stream_seq, timestamp, service, level, latency_ms) VALUES (1, now(), 's', 'info', 1)`, denied)
	expect(reader, "stacklens_reader", `UPDATE analytics_alert_rules SET threshold = 1`, denied)
	expect(reader, "stacklens_reader", `UPDATE analytics_alerts SET status = 'resolved', resolved_at = now()`, denied)
	expect(reader, "stacklens_reader", `DELETE FROM analytics_alerts`, denied)
	expect(reader, "stacklens_reader", `DELETE FROM analytics_future`, denied)
	expect(reader, "stacklens_reader", `TRUNCATE analytics_events`, denied)
	expect(reader, "stacklens_reader", `SELECT * FROM analytics_archive_old_data()`, denied)
	expect(reader, "stacklens_reader", `CREATE TABLE sneaky (id int)`, denied)
	expect(reader, "stacklens_reader", `SELECT stacklens_configure()`, denied)

	writer := as("stacklens_writer")
	expect(writer, "stacklens_writer", `INSERT INTO analytics_metrics_1min (service, timestamp, count) VALUES ('s', now(), 1)
	    ON CONFLICT (service, timestamp) DO UPDATE SET count = EXCLUDED.count, version = analytics_metrics_1min.version + 1
	    WHERE analytics_metrics_1min.version < EXCLUDED.version`, "")
	expect(writer, "stacklens_writer", `INSERT INTO analytics_events (stream_seq, timestamp, service, level, latency_ms)
	    VALUES (7, '2030-01-01T00:00:00Z', 's', 'info', 1) ON CONFLICT (timestamp, stream_seq) DO NOTHING`, "")
	expect(writer, "stacklens_writer", `INSERT INTO analytics_alert_silences (service, ends_at) VALUES ('s', now() + interval '1 hour')`, "")
	expect(writer, "stacklens_writer", `UPDATE analytics_alerts SET status = 'acknowledged', acknowledged_at = now(), acknowledged_by = 'op'`, "")
	expect(writer, "stacklens_writer", `INSERT INTO analytics_future VALUES (1)`, "")
	expect(writer, "stacklens_writer", `SELECT * FROM analytics_archive_old_data()`, "")
	expect(writer, "stacklens_writer", `UPDATE analytics_settings SET value = '1'`, denied)
	expect(writer, "stacklens_writer", `DELETE FROM schema_migrations`, denied)
	expect(writer, "stacklens_writer", `DROP TABLE analytics_events`, denied)
	expect(writer, "stacklens_writer", `CREATE TABLE sneaky (id int)`, denied)

	admin := as("stacklens_admin")
	expect(admin, "stacklens_admin", `UPDATE analytics_settings SET value = '2' WHERE key = 'retention_hot_days'`, "")
	expect(admin, "stacklens_admin", `SELECT * FROM analytics_archive_old_data()`, "")
	expect(admin, "stacklens_admin", `TRUNCATE analytics_future`, "")
	expect(admin, "stacklens_admin", `CREATE TABLE admin_made (id int)`, "")

	// Roles are NOLOGIN unless a password was configured (TestRolePasswords
	// gives all three one in this shared cluster).
}

func TestRolePasswords(t *testing.T) {
	ctx := testCtx(t)
	pg := testenv.Postgres(t)
	if pg.Source != "local" {
		t.Skip("needs testenv's local cluster (pg_hba with scram-sha-256 for the stacklens roles); server from " + pg.Source)
	}
	cfg, err := pgx.ParseConfig(pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	conn := connect(t, cfg.Copy())
	preHashed := scramVerifier("writer pw 2")
	// Quotes and backslashes reach ALTER ROLE only as a verifier, quoted by
	// format(%L): nothing to inject.
	const adminPW = `adm'in "pw" \ 3; DROP ROLE x`
	if _, err := Up(ctx, conn, Options{ReaderPassword: "reader pw 1", WriterPassword: preHashed, AdminPassword: adminPW}, nil); err != nil {
		t.Fatal(err)
	}
	var stored string
	if err := conn.QueryRow(ctx, `SELECT rolpassword FROM pg_authid WHERE rolname = 'stacklens_writer'`).Scan(&stored); err != nil || stored != preHashed {
		t.Errorf("writer verifier stored as %q (%v)", stored, err)
	}
	login := func(user, password string) error {
		c := cfg.Copy()
		c.Host, c.User, c.Password = "127.0.0.1", user, password
		conn, err := pgx.ConnectConfig(ctx, c)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, "SELECT count(*) FROM analytics_metrics_1min")
		return err
	}
	if err := login("stacklens_reader", "reader pw 1"); err != nil {
		t.Errorf("reader login: %v", err)
	}
	if err := login("stacklens_writer", "writer pw 2"); err != nil {
		t.Errorf("writer login: %v", err)
	}
	if err := login("stacklens_reader", "wrong"); pgCode(err) != "28P01" {
		t.Errorf("reader login with a wrong password: %v", err)
	}
	if err := login("stacklens_admin", adminPW); err != nil {
		t.Errorf("admin login: %v", err)
	}
	if err := login("stacklens_admin", "wrong"); pgCode(err) != "28P01" {
		t.Errorf("admin login with a wrong password: %v", err)
	}
	// A later run without passwords leaves the logins alone.
	if _, err := Up(ctx, conn, Options{}, nil); err != nil {
		t.Fatal(err)
	}
	if err := login("stacklens_admin", adminPW); err != nil {
		t.Errorf("admin login after a migration without passwords: %v", err)
	}
}

// ---------------------------------------------------------------------------
// Functions.

func TestCalculateSLA(t *testing.T) {
	ctx := testCtx(t)
	_, conn := migrated(t)
	exec1(t, conn, `
INSERT INTO analytics_metrics_1min (service, timestamp, count, error_count, latency_sum, latency_p99_ms) VALUES
  ('svc', '2025-03-01T10:00:00Z', 100, 1,  5000, 100),
  ('svc', '2025-03-01T10:01:00Z', 100, 0, 10000, 600),
  ('svc', '2025-03-01T10:02:00Z', 200, 3, 10000, 400),
  ('svc', '2025-03-01T13:00:00Z', 999, 999, 1, 1),       -- after p_to
  ('other', '2025-03-01T10:00:00Z', 10, 10, 100, 50);
INSERT INTO analytics_metrics_5min (service, timestamp, count, error_count, latency_sum, latency_p99_ms) VALUES
  ('svc', '2025-03-01T10:00:00Z', 400, 4, 25000, 600),    -- covered by 1min rows
  ('svc', '2025-03-01T11:00:00Z', 500, 5, 25000, 450);
INSERT INTO analytics_metrics_1hour (service, timestamp, count, error_count, latency_sum, latency_p99_ms) VALUES
  ('svc', '2025-03-01T10:00:00Z', 900, 9, 50000, 600),    -- covered by 1min rows
  ('svc', '2025-03-01T11:00:00Z', 500, 5, 25000, 450),    -- covered by a 5min row
  ('svc', '2025-03-01T12:00:00Z', 1000, 0, 50000, 300),
  ('svc', '2025-03-01T09:00:00Z', 999, 999, 1, 1);        -- before p_from`)

	type sla struct {
		service                                 string
		total, errors, warnings, minutes, okMin int64
		avail, errRate, latAvg, compliance      *float64
		p99Max, allowed, budget, sloLat, sloErr *float64
		met                                     *bool
	}
	query := func(sql string, args ...any) []sla {
		t.Helper()
		rows, err := conn.Query(ctx, `SELECT service, total_events, error_events, warning_events, windows_total,
		    windows_within_latency_slo, availability_pct, error_rate_pct, latency_avg_ms,
		    latency_slo_compliance_pct, latency_p99_max_ms, allowed_error_events,
		    error_budget_remaining_pct, latency_slo_ms, error_slo_pct, error_slo_met FROM `+sql, args...)
		if err != nil {
			t.Fatal(err)
		}
		var out []sla
		var s sla
		_, err = pgx.ForEachRow(rows, []any{&s.service, &s.total, &s.errors, &s.warnings, &s.minutes, &s.okMin,
			&s.avail, &s.errRate, &s.latAvg, &s.compliance, &s.p99Max, &s.allowed, &s.budget, &s.sloLat, &s.sloErr, &s.met}, func() error {
			out = append(out, s)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	from, to := "2025-03-01T10:00:00Z", "2025-03-01T13:00:00Z"

	got := query(`analytics_calculate_sla('svc', $1, $2)`, from, to)
	if len(got) != 1 {
		t.Fatalf("rows = %+v", got)
	}
	s := got[0]
	// 1min rows 10:00-10:02 (400 events), 5min 11:00 (500), 1hour 12:00 (1000).
	if s.service != "svc" || s.total != 1900 || s.errors != 9 || s.minutes != 68 || s.okMin != 67 {
		t.Errorf("sla counts %+v", s)
	}
	for name, c := range map[string][2]float64{
		"availability_pct":           {*s.avail, 100.0 * 1891 / 1900},
		"error_rate_pct":             {*s.errRate, 100.0 * 9 / 1900},
		"latency_avg_ms":             {*s.latAvg, 100000.0 / 1900},
		"latency_slo_compliance_pct": {*s.compliance, 100.0 * 67 / 68},
		"latency_p99_max_ms":         {*s.p99Max, 600},
		"allowed_error_events":       {*s.allowed, 19},
		"error_budget_remaining_pct": {*s.budget, 100 - 100*(100.0*9/1900)/1},
		"latency_slo_ms":             {*s.sloLat, 500},
		"error_slo_pct":              {*s.sloErr, 1},
	} {
		if !near(c[0], c[1]) {
			t.Errorf("%s = %v, want %v", name, c[0], c[1])
		}
	}
	if s.met == nil || !*s.met {
		t.Errorf("error_slo_met = %v", s.met)
	}

	// Tighter SLOs: p99 <= 300 holds for 10:00 (1 min) and 12:00 (60 min);
	// 0.1 % errors is overspent.
	s = query(`analytics_calculate_sla('svc', $1, $2, 300, 0.1)`, from, to)[0]
	if s.okMin != 61 || !near(*s.compliance, 100.0*61/68) || *s.met || !near(*s.budget, 100-100*(100.0*9/1900)/0.1) {
		t.Errorf("tight SLOs: ok minutes %d, compliance %v, met %v, budget %v", s.okMin, *s.compliance, *s.met, *s.budget)
	}

	// All services: one row each, by name.
	all := query(`analytics_calculate_sla(NULL, $1, $2)`, from, to)
	if len(all) != 2 || all[0].service != "other" || all[0].total != 10 || !near(*all[0].avail, 0) || all[1].total != 1900 {
		t.Errorf("all services: %+v", all)
	}

	// A service without data: one row of zeros, NULL percentages.
	none := query(`analytics_calculate_sla('ghost', $1, $2)`, from, to)
	if len(none) != 1 || none[0].service != "ghost" || none[0].total != 0 || none[0].avail != nil || none[0].met != nil || none[0].compliance != nil {
		t.Errorf("no data: %+v", none)
	}

	for _, bad := range []string{
		`SELECT * FROM analytics_calculate_sla('svc', '2025-03-02', '2025-03-01')`,
		`SELECT * FROM analytics_calculate_sla('svc', NULL, '2025-03-01')`,
		`SELECT * FROM analytics_calculate_sla('svc', '2025-03-01', '2025-03-02', -1)`,
		`SELECT * FROM analytics_calculate_sla('svc', '2025-03-01', '2025-03-02', 500, 0)`,
		`SELECT * FROM analytics_calculate_sla('svc', '2025-03-01', '2025-03-02', 500, 101)`,
	} {
		if _, err := conn.Exec(ctx, bad); pgCode(err) != "22023" {
			t.Errorf("%s: %v, want 22023", bad, err)
		}
	}
}

func TestAlertStats(t *testing.T) {
	ctx := testCtx(t)
	_, conn := migrated(t)
	exec1(t, conn, `
INSERT INTO analytics_alerts (alert_id, fingerprint, rule_name, service, severity, status, metric_name,
                              fired_at, acknowledged_at, resolved_at) VALUES
  ('c1', 'f1', 'r', 'api',  'critical', 'active',       'error_rate', '2025-03-01T10:00:00Z', NULL, NULL),
  ('c2', 'f2', 'r', 'api',  'critical', 'resolved',     'error_rate', '2025-03-01T10:00:00Z',
        '2025-03-01T10:01:00Z', '2025-03-01T10:05:00Z'),
  ('w1', 'f3', 'r', 'db',   'warning',  'acknowledged', 'error_rate', '2025-03-01T10:10:00Z', '2025-03-01T10:12:00Z', NULL),
  ('w2', 'f4', 'r', 'web',  'warning',  'resolved',     'error_rate', '2025-03-01T10:20:00Z', NULL, '2025-03-01T10:30:00Z'),
  ('i1', 'f5', 'r', 'web',  'info',     'resolved',     'error_rate', '2025-02-01T10:00:00Z', NULL, '2025-02-01T10:00:01Z');`)

	rows, err := conn.Query(ctx, `SELECT severity, total_alerts, active_alerts, acknowledged_alerts, resolved_alerts,
	    services_affected, mean_time_to_acknowledge_seconds, mean_time_to_resolve_seconds
	    FROM analytics_get_alert_stats('2025-03-01T09:00:00Z', '2025-03-01T11:00:00Z')`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	var sev string
	var total, active, acked, resolved, services int64
	var mtta, mttr *float64
	f := func(p *float64) string {
		if p == nil {
			return "-"
		}
		return strconv.FormatFloat(*p, 'f', 1, 64)
	}
	if _, err := pgx.ForEachRow(rows, []any{&sev, &total, &active, &acked, &resolved, &services, &mtta, &mttr}, func() error {
		got = append(got, fmt.Sprintf("%s %d %d %d %d %d %s %s", sev, total, active, acked, resolved, services, f(mtta), f(mttr)))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"critical 2 1 0 1 1 60.0 300.0",
		"warning 2 0 1 1 2 120.0 600.0",
		"info 0 0 0 0 0 - -",
		"all 4 1 1 2 3 90.0 450.0",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("alert stats:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM analytics_get_alert_stats()`).Scan(&n); err != nil || n != 4 {
		t.Errorf("default range: %d rows, %v", n, err)
	}
	if _, err := conn.Exec(ctx, `SELECT * FROM analytics_get_alert_stats(now(), now() - interval '1 hour')`); pgCode(err) != "22023" {
		t.Errorf("reversed range: %v", err)
	}
}

func archive(t *testing.T, db DB) map[string]int64 {
	t.Helper()
	rows, err := db.Query(testCtx(t), `SELECT table_name, rows_deleted FROM analytics_archive_old_data()`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	var name string
	var n int64
	if _, err := pgx.ForEachRow(rows, []any{&name, &n}, func() error { out[name] = n; return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestArchiveOldData(t *testing.T) {
	ctx := testCtx(t)
	_, conn := migrated(t) // retention 1 / 7 / 30 days
	exec1(t, conn, `
INSERT INTO analytics_events (stream_seq, timestamp, service, level, latency_ms) VALUES
  (1, now() - interval '25 hours', 's', 'info', 1),
  (2, now() - interval '3 days',   's', 'info', 1),
  (3, now() - interval '23 hours', 's', 'info', 1),
  (4, now(),                       's', 'info', 1);
INSERT INTO analytics_metrics_1min (service, timestamp) VALUES
  ('s', now() - interval '8 days'), ('s', now() - interval '6 days'), ('s', now());
INSERT INTO analytics_metrics_5min (service, timestamp) VALUES
  ('s', now() - interval '31 days'), ('s', now() - interval '29 days');
INSERT INTO analytics_metrics_1hour (service, timestamp) VALUES
  ('s', now() - interval '40 days'), ('s', now() - interval '31 days'), ('s', now() - interval '1 day');
INSERT INTO analytics_alerts (alert_id, fingerprint, rule_name, service, severity, status, metric_name, fired_at, resolved_at) VALUES
  ('old-resolved',  'f1', 'r', 's', 'warning', 'resolved', 'error_rate', now() - interval '40 days', now() - interval '31 days'),
  ('young-resolved','f2', 'r', 's', 'warning', 'resolved', 'error_rate', now() - interval '40 days', now() - interval '29 days'),
  ('old-active',    'f3', 'r', 's', 'warning', 'active',   'error_rate', now() - interval '60 days', NULL);
INSERT INTO analytics_alert_outbox (alert_id, channel, transition, payload, state, created_at) VALUES
  ('old-resolved', 'kafka', 'firing',   '{}', 'sent',    now() - interval '40 days'),
  ('old-resolved', 'kafka', 'resolved', '{}', 'sent',    now() - interval '31 days'),
  ('old-active',   'kafka', 'firing',   '{}', 'sent',    now() - interval '60 days'),
  ('old-active',   'slack', 'firing',   '{}', 'pending', now() - interval '60 days'),
  ('young-resolved','kafka','resolved', '{}', 'sent',    now() - interval '29 days');
INSERT INTO analytics_alert_silences (service, starts_at, ends_at) VALUES
  ('s', now() - interval '40 days', now() - interval '31 days'),
  ('s', now() - interval '1 day',   now() + interval '1 day');
INSERT INTO analytics_alert_state (fingerprint, service, firing, updated_at) VALUES
  ('idle', 's', false, now() - interval '31 days'),
  ('firing-long', 's', true, now() - interval '31 days'),
  ('recent', 's', false, now());`)

	want := map[string]int64{
		"analytics_events": 2, "analytics_metrics_1min": 1, "analytics_metrics_5min": 1,
		"analytics_metrics_1hour": 2, "analytics_alerts": 1, "analytics_alert_outbox": 3,
		"analytics_alert_silences": 1, "analytics_alert_state": 1,
	}
	if got := archive(t, conn); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("archive = %v\nwant %v", got, want)
	}
	left := strings1(t, conn, `
SELECT 'e' || stream_seq FROM analytics_events
UNION ALL SELECT 'a:' || alert_id FROM analytics_alerts
UNION ALL SELECT 'o:' || alert_id || '/' || channel || '/' || transition FROM analytics_alert_outbox
UNION ALL SELECT 's:' || fingerprint FROM analytics_alert_state
UNION ALL SELECT 'm:' || (SELECT count(*) FROM analytics_metrics_1min) || (SELECT count(*) FROM analytics_metrics_5min)
                      || (SELECT count(*) FROM analytics_metrics_1hour) || (SELECT count(*) FROM analytics_alert_silences)`)
	wantLeft := []string{"a:old-active", "a:young-resolved", "e3", "e4", "m:2111",
		"o:old-active/slack/firing", "o:young-resolved/kafka/resolved", "s:firing-long", "s:recent"}
	if strings.Join(left, ",") != strings.Join(wantLeft, ",") {
		t.Errorf("left after archive: %v\nwant %v", left, wantLeft)
	}
	for table, n := range archive(t, conn) {
		if n != 0 {
			t.Errorf("second archive deleted %d from %s", n, table)
		}
	}

	// The retention days come from analytics_settings (RETENTION_HOT = 2).
	if _, err := Up(ctx, conn, Options{RetentionHot: 2}, nil); err != nil {
		t.Fatal(err)
	}
	exec1(t, conn, `INSERT INTO analytics_events (stream_seq, timestamp, service, level, latency_ms) VALUES
	    (10, now() - interval '36 hours', 's', 'info', 1), (11, now() - interval '49 hours', 's', 'info', 1)`)
	if got := archive(t, conn)["analytics_events"]; got != 1 {
		t.Errorf("with RetentionHot=2 the archive deleted %d events, want 1", got)
	}
	if got := strings1(t, conn, `SELECT stream_seq::text FROM analytics_events`); strings.Join(got, ",") != "10,3,4" {
		t.Errorf("events left: %v", got)
	}
	// The seed's cron form works too.
	exec1(t, conn, `SELECT analytics_archive_old_data();`)
}

// TestEnsureWindows: every window of Options.Windows gets a metrics table
// like the default ones (columns, primary key, indexes, grants), the archive
// covers it with its tier's retention, and a second Up changes nothing.
// Without stacklens_ensure_window a 15min window had no table at all.
func TestEnsureWindows(t *testing.T) {
	ctx := testCtx(t)
	cfg, conn := newDB(t)
	opts := Options{Timescale: "off", Windows: []Window{{"1min", "warm"}, {"2min", "warm"}, {"15min", "cold"}, {"1day", "cold"}}}
	for range 2 { // idempotent
		if _, err := Up(ctx, conn, opts, nil); err != nil {
			t.Fatalf("Up: %v", err)
		}
	}
	reg := strings1(t, conn, `SELECT name || ':' || minutes || ':' || tier || ':' || metrics_table FROM analytics_windows`)
	if want := "15min:15:cold:analytics_metrics_15min,1day:1440:cold:analytics_metrics_1day,1hour:60:cold:analytics_metrics_1hour," +
		"1min:1:warm:analytics_metrics_1min,2min:2:warm:analytics_metrics_2min,5min:5:cold:analytics_metrics_5min"; strings.Join(reg, ",") != want {
		t.Errorf("analytics_windows = %v\nwant %s", reg, want)
	}
	// Same columns, constraints and indexes as the 5min table (LIKE 1min).
	shape := func(table string) string {
		cols := strings1(t, conn, `SELECT attname || ' ' || format_type(atttypid, atttypmod) || ' ' || attnotnull
		    FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped`, table)
		idx := strings1(t, conn, `SELECT replace(pg_get_indexdef(indexrelid), $1, 'T') FROM pg_index WHERE indrelid = $1::regclass`, table)
		return strings.Join(cols, ",") + "|" + strings.Join(idx, ",")
	}
	for _, tbl := range []string{"analytics_metrics_2min", "analytics_metrics_15min", "analytics_metrics_1day"} {
		if got, want := shape(tbl), shape("analytics_metrics_5min"); got != want {
			t.Errorf("%s:\n%s\nwant like analytics_metrics_5min:\n%s", tbl, got, want)
		}
	}
	// Grants: the reader reads, the writer upserts, neither edits the registry.
	as := func(role string) *pgx.Conn {
		c := connect(t, cfg.Copy())
		exec1(t, c, "SET ROLE "+role)
		return c
	}
	reader, writer := as("stacklens_reader"), as("stacklens_writer")
	exec1(t, writer, `INSERT INTO analytics_metrics_15min (service, timestamp, count, version) VALUES ('s', now(), 3, 1)
	    ON CONFLICT (service, timestamp) DO UPDATE SET count = EXCLUDED.count WHERE analytics_metrics_15min.version < EXCLUDED.version`)
	exec1(t, reader, `SELECT count FROM analytics_metrics_15min`)
	exec1(t, reader, `SELECT * FROM analytics_windows`)
	if _, err := reader.Exec(ctx, `INSERT INTO analytics_metrics_1day (service, timestamp) VALUES ('s', now())`); pgCode(err) != "42501" {
		t.Errorf("reader insert into analytics_metrics_1day: %v, want permission denied", err)
	}
	if _, err := writer.Exec(ctx, `DELETE FROM analytics_windows`); pgCode(err) != "42501" {
		t.Errorf("writer delete from analytics_windows: %v, want permission denied", err)
	}
	if _, err := writer.Exec(ctx, `SELECT stacklens_ensure_window('3min', 'warm')`); pgCode(err) != "42501" {
		t.Errorf("writer calls stacklens_ensure_window: %v, want permission denied", err)
	}

	// Every window's table and analytics_alerts notify stacklens_changes
	// once per changing transaction, at commit, with the table's name.
	if got := strings1(t, conn, `SELECT tgrelid::regclass::text FROM pg_trigger WHERE tgname = 'stacklens_notify_change' ORDER BY 1`); len(got) != 7 || got[0] != "analytics_alerts" {
		t.Errorf("change triggers on %v, want analytics_alerts and the 6 window tables", got)
	}
	listener := connect(t, cfg.Copy())
	exec1(t, listener, `LISTEN stacklens_changes`)
	tx, err := writer.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	exec1(t, tx.Conn(), `UPDATE analytics_metrics_15min SET count = count + 1`)
	exec1(t, tx.Conn(), `UPDATE analytics_metrics_15min SET count = count + 1`)
	wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	if n, err := listener.WaitForNotification(wctx); err == nil {
		t.Errorf("notified before commit: %+v", n)
	}
	cancel()
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wctx, cancel = context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if n, err := listener.WaitForNotification(wctx); err != nil || n.Channel != "stacklens_changes" || n.Payload != "analytics_metrics_15min" {
		t.Errorf("notification after commit: %+v, %v", n, err)
	}
	wctx2, cancel2 := context.WithTimeout(ctx, 200*time.Millisecond)
	if n, err := listener.WaitForNotification(wctx2); err == nil {
		t.Errorf("two notifications for one transaction: second %+v", n)
	}
	cancel2()

	// Retention by tier: 2min is warm (7 days), 15min and 1day are cold (30 days).
	exec1(t, conn, `
INSERT INTO analytics_metrics_2min (service, timestamp) VALUES ('s', now() - interval '8 days'), ('s', now() - interval '6 days');
INSERT INTO analytics_metrics_15min (service, timestamp) VALUES ('s', now() - interval '31 days'), ('s', now() - interval '8 days');
INSERT INTO analytics_metrics_1day (service, timestamp) VALUES ('s', now() - interval '40 days'), ('s', now() - interval '31 days'), ('s', now() - interval '2 days');`)
	got := archive(t, writer) // SECURITY DEFINER: the writer may run it
	for tbl, n := range map[string]int64{"analytics_metrics_2min": 1, "analytics_metrics_15min": 1, "analytics_metrics_1day": 2, "analytics_metrics_1min": 0} {
		if d, ok := got[tbl]; !ok || d != n {
			t.Errorf("archive deleted %d (listed %v) from %s, want %d; all: %v", d, ok, tbl, n, got)
		}
	}

	// Bad names never reach SQL text.
	for _, w := range []Window{{"15 min", "cold"}, {"x; DROP TABLE analytics_events", "cold"}, {"0min", "cold"}, {"15min", "hot"}} {
		_, err := Up(ctx, conn, Options{Timescale: "off", Windows: []Window{w}}, nil)
		if pgCode(err) != "22023" || !strings.Contains(err.Error(), "window "+w.Name) {
			t.Errorf("window %+v: %v, want 22023 naming the window", w, err)
		}
	}
	if n := strings1(t, conn, `SELECT count(*)::text FROM analytics_windows`); n[0] != "6" {
		t.Errorf("registry has %s windows after refused ones, want 6", n[0])
	}
}

func TestEventsIdempotentInsert(t *testing.T) {
	ctx := testCtx(t)
	_, conn := migrated(t)
	const ins = `INSERT INTO analytics_events (stream_seq, timestamp, service, level, latency_ms, risk_score, payload,
	    kafka_partition, kafka_offset) VALUES ($1, $2, 'checkout', 'info', 50, 0.1, '{"endpoint":"/pay"}',
	    3, 42) ON CONFLICT (timestamp, stream_seq) DO NOTHING`
	ts := time.Date(2026, 11, 29, 1, 0, 0, 123456000, time.UTC)
	for i := 0; i < 3; i++ {
		exec1(t, conn, ins, int64(42), ts)
	}
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM analytics_events WHERE stream_seq = 42`).Scan(&n); err != nil || n != 1 {
		t.Errorf("redelivered event stored %d times (%v)", n, err)
	}
	for _, bad := range []string{
		`INSERT INTO analytics_events (stream_seq, timestamp, service, level, latency_ms) VALUES (1, now(), '', 'info', 1)`,
		`INSERT INTO analytics_events (stream_seq, timestamp, service, level, latency_ms) VALUES (1, now(), 's', 'info', -1)`,
		`INSERT INTO analytics_events (stream_seq, timestamp, service, level, latency_ms, risk_score) VALUES (1, now(), 's', 'info', 1, 2)`,
		`INSERT INTO analytics_metrics_1min (service, timestamp, error_rate) VALUES ('s', now(), 101)`,
	} {
		if _, err := conn.Exec(ctx, bad); pgCode(err) != "23514" {
			t.Errorf("%s: %v, want a check violation", bad, err)
		}
	}
	// The open-alert invariant: one active alert per fingerprint.
	exec1(t, conn, `INSERT INTO analytics_alerts (alert_id, fingerprint, rule_name, service, severity, metric_name)
	    VALUES ('x1', 'fp', 'r', 's', 'warning', 'error_rate')`)
	if _, err := conn.Exec(ctx, `INSERT INTO analytics_alerts (alert_id, fingerprint, rule_name, service, severity, metric_name)
	    VALUES ('x2', 'fp', 'r', 's', 'warning', 'error_rate')`); pgCode(err) != "23505" {
		t.Errorf("second open alert for a fingerprint: %v", err)
	}
}

// ---------------------------------------------------------------------------
// Views.

func TestServiceHealthView(t *testing.T) {
	ctx := testCtx(t)
	_, conn := migrated(t)
	exec1(t, conn, `
WITH now_min AS (SELECT date_trunc('minute', now()) AS m)
INSERT INTO analytics_metrics_1min (service, timestamp, count, error_rate, latency_p99_ms, throughput_per_sec)
SELECT s, (SELECT m FROM now_min) - age, 100, er, p99, 1.5 FROM (VALUES
  ('err-5',       interval '0', 5.0,   100.0),
  ('err-5.01',    interval '0', 5.01,  100.0),
  ('err-20',      interval '0', 20.0,  100.0),
  ('err-20.01',   interval '0', 20.01, 100.0),
  ('p99-500',     interval '0', 0.0,   500.0),
  ('p99-500.5',   interval '0', 0.0,   500.5),
  ('p99-1000',    interval '0', 0.0,   1000.0),
  ('p99-1000.5',  interval '0', 0.0,   1000.5),
  ('recovered',   interval '3 minutes', 50.0, 5000.0),
  ('recovered',   interval '1 minute',  0.0,  10.0),
  ('gone',        interval '15 minutes', 0.0, 10.0)
) AS v (s, age, er, p99)`)
	got := strings1(t, conn, `SELECT service || '=' || status FROM v_service_health_current`)
	want := []string{
		"err-20.01=unhealthy", "err-20=degraded", "err-5.01=degraded", "err-5=healthy",
		"p99-1000.5=unhealthy", "p99-1000=degraded", "p99-500.5=degraded", "p99-500=healthy",
		"recovered=healthy",
	}
	sort.Strings(want)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("health:\n%v\nwant\n%v", got, want)
	}
	var lastSeenOK bool
	if err := conn.QueryRow(ctx, `SELECT bool_and(last_seen <= window_start + interval '1 minute' AND last_seen >= window_start
	    AND throughput_per_sec = 1.5) FROM v_service_health_current`).Scan(&lastSeenOK); err != nil || !lastSeenOK {
		t.Errorf("last_seen/throughput: %v %v", lastSeenOK, err)
	}
}

func TestPerformanceTrendView(t *testing.T) {
	ctx := testCtx(t)
	_, conn := migrated(t)
	exec1(t, conn, `
WITH h AS (SELECT date_trunc('hour', now(), 'UTC') AS cur)
INSERT INTO analytics_metrics_1hour (service, timestamp, count, error_count, error_rate, latency_p99_ms)
SELECT 'a', cur, 1000, 10, 1.0, 250 FROM h
UNION ALL SELECT 'a', cur - interval '24 hours', 5, 0, 0, 1 FROM h;   -- outside the 24 h
WITH h AS (SELECT date_trunc('hour', now(), 'UTC') AS cur)
INSERT INTO analytics_metrics_1min (service, timestamp, count, error_count, latency_sum, latency_p99_ms)
SELECT 'a', cur, 7, 7, 7, 7 FROM h                                   -- hour has an hourly row
UNION ALL SELECT 'b', cur - interval '1 hour', 100, 10, 1000, 200 FROM h
UNION ALL SELECT 'b', cur - interval '1 hour' + interval '1 minute', 300, 10, 9000, 400 FROM h`)
	got := strings1(t, conn, `SELECT format('%s %s %s %s %s %s %s', service,
	    (extract(epoch FROM date_trunc('hour', now(), 'UTC') - hour) / 3600)::int, count, error_count,
	    round(error_rate::numeric, 2), latency_p99_ms, source) FROM v_service_performance_trend`)
	want := []string{"a 0 1000 10 1.00 250 1hour", "b 1 400 20 5.00 400 1min"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("trend = %v\nwant %v", got, want)
	}
	var avg float64
	if err := conn.QueryRow(ctx, `SELECT latency_avg_ms FROM v_service_performance_trend WHERE service = 'b'`).Scan(&avg); err != nil || !near(avg, 25) {
		t.Errorf("rolled-up latency_avg_ms = %v (%v), want 25", avg, err)
	}
}

func TestAlertViews(t *testing.T) {
	ctx := testCtx(t)
	_, conn := migrated(t)
	exec1(t, conn, `
INSERT INTO analytics_alerts (alert_id, fingerprint, rule_name, service, severity, status, metric_name,
                              fired_at, acknowledged_at, resolved_at) VALUES
  ('old',   'f1', 'r', 's', 'critical', 'active',       'error_rate', now() - interval '2 hours', NULL, NULL),
  ('new',   'f2', 'r', 's', 'warning',  'active',       'error_rate', now() - interval '1 minute', NULL, NULL),
  ('acked', 'f3', 'r', 's', 'critical', 'acknowledged', 'error_rate', now() - interval '1 hour', now(), NULL),
  ('done',  'f4', 'r', 's', 'critical', 'resolved',     'error_rate', now() - interval '3 hours', NULL, now())`)
	rows, err := conn.Query(ctx, `SELECT alert_id FROM v_active_alerts`)
	if err != nil {
		t.Fatal(err)
	}
	active, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || strings.Join(active, ",") != "new,acked,old" {
		t.Errorf("v_active_alerts order = %v (%v), want newest first without resolved", active, err)
	}
	rows, err = conn.Query(ctx, `SELECT severity || '/' || status || '=' || alert_count FROM v_alert_summary`)
	if err != nil {
		t.Fatal(err)
	}
	summary, err := pgx.CollectRows(rows, pgx.RowTo[string])
	want := "critical/active=1,critical/acknowledged=1,critical/resolved=1,warning/active=1,warning/acknowledged=0," +
		"warning/resolved=0,info/active=0,info/acknowledged=0,info/resolved=0"
	if err != nil || strings.Join(summary, ",") != want {
		t.Errorf("v_alert_summary = %v (%v)\nwant %s", summary, err, want)
	}
}

func TestTopServiceViews(t *testing.T) {
	ctx := testCtx(t)
	_, conn := migrated(t)
	exec1(t, conn, `
WITH n AS (SELECT date_trunc('minute', now()) AS m)
INSERT INTO analytics_metrics_1min (service, timestamp, count, error_count, latency_sum, latency_p99_ms, latency_max_ms)
SELECT s, (SELECT m FROM n) - age, c, e, c * 10.0, p99, p99 * 2 FROM (VALUES
  ('a',     interval '1 minute',  100, 10, 100.0),   -- 10 %
  ('a',     interval '2 minutes', 100, 0,  900.0),   --   over 200 events: 5 %, worst p99 900
  ('b',     interval '1 minute',  50,  25, 300.0),   -- 50 %
  ('tiny',  interval '1 minute',  5,   5,  5000.0),  -- 100 % but under 10 events
  ('clean', interval '1 minute',  500, 0,  50.0),    -- no errors
  ('stale', interval '2 hours',   500, 500, 9000.0)  -- outside the hour
) AS v (s, age, c, e, p99)`)
	errs := strings1(t, conn, `SELECT service || '=' || round(error_rate::numeric, 1) FROM v_top_error_services`)
	if strings.Join(errs, ",") != "a=5.0,b=50.0" {
		t.Errorf("v_top_error_services = %v", errs)
	}
	rows, err := conn.Query(ctx, `SELECT service || '=' || latency_p99_ms || '/' || round(latency_p99_avg_ms::numeric) FROM v_top_latency_services`)
	if err != nil {
		t.Fatal(err)
	}
	lat, err := pgx.CollectRows(rows, pgx.RowTo[string])
	want := "tiny=5000/5000,a=900/500,b=300/300,clean=50/50"
	if err != nil || strings.Join(lat, ",") != want {
		t.Errorf("v_top_latency_services = %v (%v), want %s", lat, err, want)
	}
	var first string
	if err := conn.QueryRow(ctx, `SELECT service FROM v_top_error_services LIMIT 1`).Scan(&first); err != nil || first != "b" {
		t.Errorf("top error service = %q (%v), want b", first, err)
	}
}

// TestSLOs: 0009 adds the SLO table with its checks, and latency_good to
// the default window tables, to a window table that existed before 0009
// and to one created after it.
func TestSLOs(t *testing.T) {
	ctx := testCtx(t)
	_, conn := newDB(t)
	// A database migrated up to 0008 with an extra 2min window, as before 0009.
	migs, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range migs[:8] {
		exec1(t, conn, m.SQL)
	}
	exec1(t, conn, `SELECT stacklens_ensure_window('2min', 'warm')`)
	exec1(t, conn, migs[8].SQL)
	exec1(t, conn, `SELECT stacklens_ensure_window('15min', 'cold')`)
	for _, tbl := range []string{"analytics_metrics_1min", "analytics_metrics_5min", "analytics_metrics_1hour", "analytics_metrics_2min", "analytics_metrics_15min"} {
		exec1(t, conn, `INSERT INTO `+tbl+` (service, timestamp, latency_good) VALUES ('s', now(), '{"300": 4}')`)
		if got := strings1(t, conn, `SELECT latency_good->>'300' FROM `+tbl+` WHERE service = 's'`); len(got) != 1 || got[0] != "4" {
			t.Errorf("%s: latency_good->>'300' = %v, want 4", tbl, got)
		}
		exec1(t, conn, `INSERT INTO `+tbl+` (service, timestamp) VALUES ('d', now())`)
		if got := strings1(t, conn, `SELECT latency_good::text FROM `+tbl+` WHERE service = 'd'`); len(got) != 1 || got[0] != "{}" {
			t.Errorf("%s: default latency_good = %v, want {}", tbl, got)
		}
		if _, err := conn.Exec(ctx, `INSERT INTO `+tbl+` (service, timestamp, latency_good) VALUES ('x', now(), '[]')`); pgCode(err) != "23514" {
			t.Errorf("%s: latency_good array accepted: %v", tbl, err)
		}
	}
	exec1(t, conn, `INSERT INTO analytics_slos (name, service, objective, target) VALUES ('checkout availability', 'checkout', 'availability', 99.9)`)
	exec1(t, conn, `INSERT INTO analytics_slos (name, objective, latency_threshold_ms, target, period) VALUES ('all fast', 'latency', 300, 99, '28 days')`)
	for name, sql := range map[string]string{
		"latency without threshold":   `INSERT INTO analytics_slos (name, objective, target) VALUES ('a', 'latency', 99)`,
		"availability with threshold": `INSERT INTO analytics_slos (name, objective, latency_threshold_ms, target) VALUES ('b', 'availability', 300, 99)`,
		"target 100":                  `INSERT INTO analytics_slos (name, objective, target) VALUES ('c', 'availability', 100)`,
		"unknown objective":           `INSERT INTO analytics_slos (name, objective, target) VALUES ('d', 'durability', 99)`,
		"period too short":            `INSERT INTO analytics_slos (name, objective, target, period) VALUES ('e', 'availability', 99, '5 minutes')`,
		"burn alerts not an array":    `INSERT INTO analytics_slos (name, objective, target, burn_alerts) VALUES ('f', 'availability', 99, '{}')`,
		"unknown channel":             `INSERT INTO analytics_slos (name, objective, target, notification_channels) VALUES ('g', 'availability', 99, '{sms}')`,
	} {
		if _, err := conn.Exec(ctx, sql); pgCode(err) != "23514" {
			t.Errorf("%s: %v, want a check violation", name, err)
		}
	}
}

// TestSLOAlerts: 0010 lets an alert reference an SLO and its policy entry
// instead of a rule (never both), keeps it an SLO alert when the SLO is
// deleted, and stacklens_slo_status sums the 1hour table over each SLO's period.
func TestSLOAlerts(t *testing.T) {
	ctx := testCtx(t)
	_, conn := migrated(t)
	exec1(t, conn, `INSERT INTO analytics_slos (id, name, service, objective, target, period) VALUES (1, 'checkout availability', 'checkout', 'availability', 99.9, '1 day')`)
	exec1(t, conn, `INSERT INTO analytics_slos (id, name, objective, latency_threshold_ms, target, period) VALUES (2, 'all fast', 'latency', 2.5, 99, '6 hours')`)
	// checkout: 10,000 events, 30 errors in the current hour and the one
	// before; an hour outside the 1d period; 'other' counts only for the
	// all-services SLO, and its row without the 2.5 key is not counted.
	exec1(t, conn, `INSERT INTO analytics_metrics_1hour (service, timestamp, count, error_count, latency_good) VALUES
	('checkout', date_trunc('hour', now()), 4000, 10, '{"2.5": 3900}'),
	('checkout', date_trunc('hour', now()) - interval '1 hour', 6000, 20, '{"2.5": 5950}'),
	('checkout', date_trunc('hour', now()) - interval '1 day', 100000, 100000, '{"2.5": 0}'),
	('other', date_trunc('hour', now()), 500, 0, '{}')`)
	// Hour buckets are UTC whatever the session's zone (India: +05:30).
	exec1(t, conn, `SET TimeZone = 'Asia/Kolkata'`)
	var total, good, bad, firing int64
	var compliance, budget, remaining float64
	q := `SELECT total_events, good_events, bad_events, compliance, budget_events, budget_remaining_ratio, firing_alerts FROM stacklens_slo_status WHERE id = $1`
	if err := conn.QueryRow(ctx, q, 1).Scan(&total, &good, &bad, &compliance, &budget, &remaining, &firing); err != nil {
		t.Fatal(err)
	}
	if total != 10000 || good != 9970 || bad != 30 || !near(compliance, 99.7) || !near(budget, 10) || !near(remaining, -2) || firing != 0 {
		t.Errorf("availability: %d %d %d %v %v %v %d", total, good, bad, compliance, budget, remaining, firing)
	}
	if err := conn.QueryRow(ctx, q, 2).Scan(&total, &good, &bad, &compliance, &budget, &remaining, &firing); err != nil {
		t.Fatal(err)
	}
	if total != 10000 || good != 9850 || bad != 150 || !near(budget, 100) || !near(remaining, -0.5) {
		t.Errorf("latency: %d %d %d %v %v %v", total, good, bad, compliance, budget, remaining)
	}

	exec1(t, conn, `INSERT INTO analytics_alerts (alert_id, fingerprint, rule_name, service, severity, metric_name, slo_id, slo_burn_alert)
VALUES ('a1', 'f1', 'checkout availability', 'checkout', 'critical', 'burn_rate', 1, '{"severity":"page","burn_rate":14.4,"long":"1h","short":"5m"}')`)
	if got := strings1(t, conn, `SELECT firing_alerts::text FROM stacklens_slo_status WHERE id = 1`); len(got) != 1 || got[0] != "1" {
		t.Errorf("firing_alerts = %v", got)
	}
	for name, sql := range map[string]string{
		"rule and slo":        `INSERT INTO analytics_alerts (alert_id, fingerprint, rule_id, rule_name, service, severity, metric_name, slo_burn_alert) VALUES ('a2', 'f2', (SELECT min(id) FROM analytics_alert_rules), 'r', 's', 'warning', 'm', '{}')`,
		"slo without entry":   `INSERT INTO analytics_alerts (alert_id, fingerprint, rule_name, service, severity, metric_name, slo_id) VALUES ('a3', 'f3', 'r', 's', 'warning', 'm', 1)`,
		"entry not an object": `INSERT INTO analytics_alerts (alert_id, fingerprint, rule_name, service, severity, metric_name, slo_burn_alert) VALUES ('a4', 'f4', 'r', 's', 'warning', 'm', '[]')`,
	} {
		if _, err := conn.Exec(ctx, sql); pgCode(err) != "23514" {
			t.Errorf("%s: %v, want a check violation", name, err)
		}
	}
	exec1(t, conn, `DELETE FROM analytics_slos WHERE id = 1`)
	if got := strings1(t, conn, `SELECT coalesce(slo_id::text, 'null') || ' ' || (slo_burn_alert IS NOT NULL)::text FROM analytics_alerts WHERE alert_id = 'a1'`); len(got) != 1 || got[0] != "null true" {
		t.Errorf("after deleting the SLO: %v", got)
	}
	// The reader role (Grafana, the API) may read the view.
	exec1(t, conn, `SET ROLE stacklens_reader`)
	if got := strings1(t, conn, `SELECT name FROM stacklens_slo_status`); len(got) != 1 || got[0] != "all fast" {
		t.Errorf("reader: %v", got)
	}
}

// TestLeanEvents: 0011_lean_events on a table with rows written before it
// (full jsonb payloads, Kafka topic, ingested_at): the (stream_seq) index,
// kafka_topic and ingested_at are gone, payload is json, the old rows read
// back unchanged through stacklens_event_payload, and so do lean rows (the
// members the columns give back left out of the payload), whatever the
// session's extra_float_digits; the idempotent insert still works and the
// reader may call the function.
func TestLeanEvents(t *testing.T) {
	ctx := testCtx(t)
	cfg, conn := newDB(t)
	migs, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	var lean Migration
	for _, m := range migs {
		if m.Name == "lean_events" {
			lean = m
			break
		}
		exec1(t, conn, m.SQL)
	}
	const old = `{"timestamp":"2026-11-29T01:00:00.123456","service":"checkout","level":"WARN","latency_ms":50.0,"risk_score":0.1,"endpoint":"/pay","n":{"a":[1,"é"]}}`
	exec1(t, conn, `INSERT INTO analytics_events (stream_seq, timestamp, service, level, latency_ms, risk_score, payload, kafka_topic, kafka_partition, kafka_offset)
	    VALUES (1, '2026-11-29T01:00:00.123456Z', 'checkout', 'warning', 50, 0.1, $1::jsonb, 'stacklens-analytics', 3, 42),
	           (2, '2026-11-29T01:00:01Z', 's', 'info', 1, NULL, DEFAULT, NULL, NULL, NULL)`, old)
	exec1(t, conn, lean.SQL)

	shape := strings1(t, conn, `SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ',' ORDER BY attnum)
	    FROM pg_attribute WHERE attrelid = 'analytics_events'::regclass AND attnum > 0 AND NOT attisdropped`)
	if want := "stream_seq bigint,timestamp timestamp with time zone,service text,level text,latency_ms double precision," +
		"risk_score double precision,payload json,kafka_partition integer,kafka_offset bigint"; shape[0] != want {
		t.Errorf("columns %s\nwant %s", shape[0], want)
	}
	if idx := strings1(t, conn, `SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 'analytics_events'::regclass ORDER BY 1`); strings.Join(idx, ",") != "analytics_events_pkey,analytics_events_service_idx" {
		t.Errorf("indexes %v", idx)
	}
	// Rows from before 0011 read back as they were.
	same := func(seq int, want string) {
		t.Helper()
		var ok bool
		var got string
		if err := conn.QueryRow(ctx, `SELECT stacklens_event_payload(e) = $2::jsonb, stacklens_event_payload(e)::text FROM analytics_events e WHERE stream_seq = $1`,
			seq, want).Scan(&ok, &got); err != nil || !ok {
			t.Errorf("event %d rebuilt as %s (%v), want %s", seq, got, err, want)
		}
	}
	same(1, old)
	same(2, `{"timestamp":"2026-11-29T01:00:01Z","service":"s","level":"info","latency_ms":1}`)
	// Lean rows, written as the projections write them; extra_float_digits
	// of the session does not matter.
	exec1(t, conn, `SET extra_float_digits = 0`)
	const ins = `INSERT INTO analytics_events (stream_seq, timestamp, service, level, latency_ms, risk_score, payload, kafka_partition, kafka_offset)
	    VALUES ($1, $2, $3, 'info', $4, $5, $6, 0, 7) ON CONFLICT (timestamp, stream_seq) DO NOTHING`
	ts := time.Date(2026, 11, 29, 1, 0, 0, 120000000, time.UTC)
	for range 2 {
		exec1(t, conn, ins, 3, ts, "ünï \"q\"", 0.30000000000000004, 0.0, `{"host":"h","m":null}`)
	}
	exec1(t, conn, ins, 4, ts.Add(-120*time.Millisecond), "s", 1e15, nil, `{}`)
	same(3, `{"timestamp":"2026-11-29T01:00:00.12Z","service":"ünï \"q\"","level":"info","latency_ms":0.30000000000000004,"risk_score":0,"host":"h","m":null}`)
	same(4, `{"timestamp":"2026-11-29T01:00:00Z","service":"s","level":"info","latency_ms":1000000000000000}`)
	if n := strings1(t, conn, `SELECT count(*)::text FROM analytics_events`); n[0] != "4" {
		t.Errorf("%s rows, want 4 (the insert is idempotent)", n[0])
	}
	reader := connect(t, cfg.Copy())
	exec1(t, reader, `SET ROLE stacklens_reader`)
	exec1(t, reader, `SELECT stacklens_event_payload(e) FROM analytics_events e`)
}
