package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stacklens/stacklens/internal/harness/testenv"
)

// TestReaderPoolLeastPrivilege: the query pool runs as stacklens_reader,
// read-only, with the statement timeout and generic plans; it cannot write.
func TestReaderPoolLeastPrivilege(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	var user, ro, plans, timeout, app string
	err := f.srv.st.r.QueryRow(ctx, `SELECT current_user, current_setting('default_transaction_read_only'),
		current_setting('plan_cache_mode'), current_setting('statement_timeout'), current_setting('application_name')`).
		Scan(&user, &ro, &plans, &timeout, &app)
	if err != nil {
		t.Fatal(err)
	}
	if user != "stacklens_reader" || ro != "on" || plans != "force_generic_plan" || timeout != "2s" || app != "stacklens-api" {
		t.Fatalf("session: user=%s read_only=%s plans=%s timeout=%s app=%s", user, ro, plans, timeout, app)
	}
	_, err = f.srv.st.r.Exec(ctx, `DELETE FROM analytics_alerts`)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || (pe.Code != "25006" && pe.Code != "42501") {
		t.Fatalf("reader wrote: %v", err)
	}
	_, err = f.srv.st.r.Exec(ctx, `SET TRANSACTION READ WRITE; UPDATE analytics_alerts SET message = 'x'`)
	if err == nil {
		t.Fatal("reader updated")
	}
	var n int
	_ = f.db.QueryRow(ctx, `SELECT count(*) FROM analytics_alerts WHERE message = 'x'`).Scan(&n)
	if n != 0 {
		t.Fatal("rows changed")
	}
	// A role the user may not assume is reported with a hint.
	cfg := testConfig(f.dsn)
	cfg.DB.ReaderUser = "no_such_role"
	srv, err := New(cfg, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.closePools()
	if err := srv.st.ping(ctx); err == nil || !strings.Contains(err.Error(), "DB_READER_PASSWORD") {
		t.Fatalf("bad role: %v", err)
	}
	// DB_READER_PASSWORD: the pool logs in as the reader (no SET ROLE).
	if _, err := f.db.Exec(ctx, `ALTER ROLE stacklens_reader LOGIN PASSWORD 'readerpw'`); err != nil {
		t.Fatal(err)
	}
	cfg = testConfig("")
	u := mustParseDSN(t, f.dsn)
	cfg.DB.Host, cfg.DB.Port, cfg.DB.Name, cfg.DB.User, cfg.DB.SSLMode = u.host, u.port, u.db, "postgres", "disable"
	cfg.DB.ReaderPassword = "readerpw"
	cfg.DB.ReaderUser = "stacklens_reader"
	srv2, err := New(cfg, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv2.closePools()
	if err := srv2.st.r.QueryRow(ctx, `SELECT session_user`).Scan(&user); err != nil || user != "stacklens_reader" {
		t.Fatalf("reader login: %q %v", user, err)
	}
}

type dsnParts struct {
	host, db string
	port     int
}

func mustParseDSN(t *testing.T, dsn string) dsnParts {
	cc, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return dsnParts{host: cc.Host, port: int(cc.Port), db: cc.Database}
}

// TestStatementTimeout: a query blocked past API_QUERY_TIMEOUT is a 503
// "query timed out", and the API answers again once the block is gone.
func TestStatementTimeout(t *testing.T) {
	dsn, db, now := newDB(t)
	f := serverOn(t, dsn, db, now, func(c *Config) { c.API.QueryTimeout = 100 * time.Millisecond })
	ctx := context.Background()
	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE analytics_metrics_1min IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	resp, b := f.request("GET", "/metrics?limit=1", "", nil)
	if resp.StatusCode != 503 || !strings.Contains(string(b), "timed out") {
		t.Fatalf("blocked query: %d %s", resp.StatusCode, b)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v", d)
	}
	_ = tx.Rollback(ctx)
	f.mustGet("/metrics?limit=1")
}

// backends lists the pids of the sessions on the test's database whose
// application_name is app.
func backends(t testing.TB, db *pgx.Conn, app string) []int32 {
	t.Helper()
	rows, err := db.Query(context.Background(), `SELECT pid FROM pg_stat_activity
		WHERE application_name = $1 AND datname = current_database() ORDER BY pid`, app)
	if err != nil {
		t.Fatal(err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		t.Fatal(err)
	}
	return pids
}

// waitBackends waits until exactly n sessions named app are on the test's
// database (backends leave pg_stat_activity asynchronously).
func waitBackends(t testing.TB, db *pgx.Conn, app string, n int) []int32 {
	t.Helper()
	var pids []int32
	testenv.Eventually(t, 5*time.Second, func() error {
		if pids = backends(t, db, app); len(pids) != n {
			return fmt.Errorf("%d %s backends (%v), want %d", len(pids), app, pids, n)
		}
		return nil
	})
	return pids
}

// TestPoolRecovers: after the server terminates the API's backends, the
// next requests reconnect instead of failing (idle connections are pinged
// before reuse), for the reader and the writer pool; a closed pool
// refuses and leaves no backend behind.
func TestPoolRecovers(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	st := f.srv.st
	// Three reader connections and one writer connection, then idle.
	var held []*pgxpool.Conn
	for range 3 {
		c, err := st.r.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	for _, c := range held {
		c.Release()
	}
	if _, err := st.w.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	f.mustGet("/metrics?limit=1")
	old := waitBackends(t, f.db, "stacklens-api", 4)
	if _, err := f.db.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE application_name = 'stacklens-api' AND datname = current_database()`); err != nil {
		t.Fatal(err)
	}
	waitBackends(t, f.db, "stacklens-api", 0)
	// Past the idle time after which a connection is pinged before reuse
	// (a connection used within the last second is trusted: a terminated
	// one fails that one request).
	time.Sleep(pingIdleAfter + 100*time.Millisecond)
	for range 3 {
		f.mustGet("/metrics?limit=1")
		f.mustGet("/health-status")
	}
	if _, err := st.w.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatalf("writer after restart: %v", err)
	}
	for _, pid := range backends(t, f.db, "stacklens-api") {
		if slices.Contains(old, pid) {
			t.Fatalf("terminated backend %d still listed", pid)
		}
	}
	if n := len(backends(t, f.db, "stacklens-api")); n < 2 {
		t.Fatalf("%d backends after reconnecting, want reader and writer", n)
	}
	// A closed pool refuses and closes its connections.
	f.srv.closePools()
	if err := st.ping(ctx); err == nil {
		t.Fatal("closed pool answered")
	}
	waitBackends(t, f.db, "stacklens-api", 0)
}

// TestPoolConfig: the API's settings on pgxpool's configuration.
func TestPoolConfig(t *testing.T) {
	pc, err := poolConfig("postgres://u@h/db", 1500*time.Millisecond, true, 0, "stacklens_reader")
	if err != nil {
		t.Fatal(err)
	}
	rp := pc.ConnConfig.RuntimeParams
	if rp["statement_timeout"] != "1500" || rp["plan_cache_mode"] != "force_generic_plan" ||
		rp["application_name"] != "stacklens-api" || rp["default_transaction_read_only"] != "on" {
		t.Fatalf("runtime params: %v", rp)
	}
	if pc.MaxConns != 1 || pc.MinConns != 0 || pc.ConnConfig.ConnectTimeout != 5*time.Second || pc.AfterConnect == nil {
		t.Fatalf("max=%d min=%d connect=%v", pc.MaxConns, pc.MinConns, pc.ConnConfig.ConnectTimeout)
	}
	if pc.ConnConfig.DefaultQueryExecMode != pgx.QueryExecModeCacheStatement {
		t.Fatalf("exec mode %v: prepared statements are not cached", pc.ConnConfig.DefaultQueryExecMode)
	}
	if !pc.ShouldPing(context.Background(), pgxpool.ShouldPingParams{IdleDuration: 2 * pingIdleAfter}) ||
		pc.ShouldPing(context.Background(), pgxpool.ShouldPingParams{IdleDuration: pingIdleAfter / 2}) {
		t.Fatal("ping before reuse")
	}
	pc, err = poolConfig("postgres://u@h/db?connect_timeout=1", time.Microsecond, false, 7, "")
	if err != nil {
		t.Fatal(err)
	}
	rp = pc.ConnConfig.RuntimeParams
	if rp["statement_timeout"] != "1" || rp["default_transaction_read_only"] != "" ||
		pc.MaxConns != 7 || pc.ConnConfig.ConnectTimeout != time.Second || pc.AfterConnect != nil {
		t.Fatalf("writer: %v max=%d connect=%v", rp, pc.MaxConns, pc.ConnConfig.ConnectTimeout)
	}
	if _, err := poolConfig("::not a dsn::", time.Second, true, 1, ""); err == nil {
		t.Fatal("bad DSN accepted")
	}
	cfg := testConfig("postgres://u@h/db?sslmode=bogus")
	if _, err := New(cfg, Deps{}); err == nil {
		t.Fatal("bad sslmode accepted")
	}
	// The server's pools: DB_POOL_MAX readers, two writers.
	cfg = testConfig("postgres://x@127.0.0.1:1/x")
	cfg.DB.PoolMax = 5
	srv, err := New(cfg, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.closePools()
	if r, w := srv.st.r.Config().MaxConns, srv.st.w.Config().MaxConns; r != 5 || w != 2 {
		t.Fatalf("pool sizes: reader %d, writer %d", r, w)
	}
}

// TestPoolLimits: however many callers, a pool opens at most its maximum
// of connections (counted on the server); waiters honour their context; a
// connection released inside a transaction is not reused; failed queries
// and unreachable servers do not leak connection slots.
func TestPoolLimits(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	const app = "stacklens-api-limits"
	open := func(dsn string, max int) *pgxpool.Pool {
		t.Helper()
		pc, err := poolConfig(dsn, time.Second, true, max, "stacklens_reader")
		if err != nil {
			t.Fatal(err)
		}
		pc.ConnConfig.RuntimeParams["application_name"] = app
		p, err := newPool(pc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		return p
	}
	// Twelve concurrent 100 ms queries on a pool of 3: three backends, four
	// rounds.
	p := open(f.dsn, 3)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 12)
	for range 12 {
		wg.Go(func() {
			_, err := p.Exec(ctx, "SELECT pg_sleep(0.1)")
			errs <- err
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	peak := 0
	for running := true; running; {
		select {
		case <-done:
			running = false
		case <-time.After(10 * time.Millisecond):
		}
		peak = max(peak, len(backends(t, f.db, app)))
	}
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if peak != 3 {
		t.Fatalf("%d backends at peak, want 3", peak)
	}
	if d := time.Since(start); d < 350*time.Millisecond {
		t.Fatalf("12 × 100 ms on 3 connections took %v", d)
	}
	// Connections are reused, not reopened.
	waitBackends(t, f.db, app, 3)
	p.Close()
	waitBackends(t, f.db, app, 0)

	// A pool of one: a second caller waits, bounded by its context.
	p1 := open(f.dsn, 1)
	c, err := p1.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := p1.Acquire(wctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second acquire: %v", err)
	}
	// A connection left in a transaction is not reused.
	var pid1, pid2 int32
	if err := c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid1); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	c.Release()
	if err := p1.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid2); err != nil || pid2 == pid1 {
		t.Fatalf("reused a connection inside a transaction: %d %d %v", pid1, pid2, err)
	}
	// A failed query releases its connection.
	for range 2 {
		if _, err := p1.Query(ctx, "SELECT nope"); err == nil {
			t.Fatal("bad query accepted")
		}
	}
	rows, err := p1.Query(ctx, "SELECT generate_series(1, 3)")
	if err != nil {
		t.Fatal(err)
	}
	rows.Close()
	qctx, qcancel := context.WithTimeout(ctx, time.Second)
	defer qcancel()
	if _, err := p1.Exec(qctx, "SELECT 1"); err != nil {
		t.Fatalf("after a failed query and closed rows: %v", err)
	}
	// Unreachable server: each acquire fails on its own, not by waiting for
	// a slot an earlier failure kept.
	bp := open("postgres://u@127.0.0.1:1/db?connect_timeout=1", 1)
	for range 2 {
		actx, acancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := bp.Acquire(actx)
		acancel()
		if err == nil || errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("unreachable server: %v", err)
		}
	}
}

// TestClassifyDBError maps database failures to statuses.
func TestClassifyDBError(t *testing.T) {
	for _, c := range []struct {
		err    error
		status int
	}{
		{&pgconn.PgError{Code: "57014"}, 503},
		{&pgconn.PgError{Code: "22023", Message: "bad"}, 400},
		{&pgconn.PgError{Code: "22P02"}, 400},
		{&pgconn.PgError{Code: "23505"}, 409},
		{&pgconn.PgError{Code: "23514", ConstraintName: "c"}, 400},
		{&pgconn.PgError{Code: "42P01"}, 503},
		{&pgconn.PgError{Code: "25006"}, 503},
		{&pgconn.PgError{Code: "08006"}, 503},
		{&pgconn.PgError{Code: "53300"}, 503},
		{&pgconn.PgError{Code: "57P01"}, 503},
		{fmt.Errorf("wrapped: %w", context.DeadlineExceeded), 503},
		{&net.OpError{Op: "dial", Err: errors.New("refused")}, 503},
		{pgx.ErrTxClosed, 503},
		{&pgconn.PgError{Code: "42883"}, 0},
		{errors.New("other"), 0},
	} {
		st, msg, ok := classifyDBError(c.err)
		if st != c.status || ok != (c.status != 0) || (ok && msg == "") {
			t.Errorf("%v: %d %q %v, want %d", c.err, st, msg, ok, c.status)
		}
	}
	s := &Server{log: slog.New(slog.DiscardHandler), cfg: Config{}}
	if st, body := s.classify(errors.New("boom")); st != 500 || body.Error != "internal error" {
		t.Fatalf("generic: %d %v", st, body)
	}
	if st, _ := s.classify(&pgconn.PgError{Code: "57014"}); st != 503 {
		t.Fatal(st)
	}
	if (&apiError{Msg: "m"}).Error() != "m" || (&apiError{Msg: "m", Field: "f"}).Error() != "f: m" {
		t.Fatal("apiError.Error")
	}
}

// TestPanicAndAccessLog: a panicking handler is a 500 JSON error and the
// server keeps serving; the access log names callers without secrets.
func TestPanicAndAccessLog(t *testing.T) {
	dsn, db, now := newDB(t)
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := testConfig(dsn)
	withCreds(&cfg)
	srv, err := New(cfg, Deps{Log: log, Mount: func(s *Server) error {
		s.Route("GET", "/boom", AccessReader, func(*fiber.Ctx) error { panic("kaboom") })
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.closePools)
	f := &fixture{t: t, dsn: dsn, db: db, srv: srv, now: now}
	f.expectError("GET", "/boom", "", bearer(readerKey), 500, "")
	f.getJSON("/metrics?limit=1", bearer(readerKey), 200)
	f.getJSON("/metrics?limit=1", basic("bob", "builder"), 200)
	f.expectError("GET", "/metrics", "", bearer("wrong-key-0123456789"), 401, "")
	out := buf.String()
	for _, secret := range []string{readerKey, adminKey, "builder", "wrong-key-0123456789"} {
		if strings.Contains(out, secret) {
			t.Fatalf("log contains a secret %q:\n%s", secret, out)
		}
	}
	for _, want := range []string{`"msg":"panic in handler"`, `"msg":"request"`, `"route":"/metrics"`, `"caller":"user:bob"`, `"caller":"key:`, `"status":401`} {
		if !strings.Contains(out, want) {
			t.Fatalf("log lacks %s:\n%s", want, out)
		}
	}
}
