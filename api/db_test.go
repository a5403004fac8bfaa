package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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

// TestPoolRecovers: after the server terminates the API's backends, the
// next requests reconnect instead of failing.
func TestPoolRecovers(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	f.srv.st.r.pingAfter = 0
	for i := 0; i < 3; i++ {
		f.mustGet("/metrics?limit=1")
	}
	if _, err := f.db.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'stacklens-api' AND pid <> pg_backend_pid()`); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	for i := 0; i < 3; i++ {
		f.mustGet("/metrics?limit=1")
	}
	// A closed pool refuses.
	f.srv.st.r.close()
	if err := f.srv.st.ping(ctx); !errors.Is(err, errPoolClosed) {
		t.Fatalf("closed pool: %v", err)
	}
}

// TestPoolLimits: at most max connections; waiters honour their context.
func TestPoolLimits(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	cc, err := poolConfig(f.dsn, time.Second, true)
	if err != nil {
		t.Fatal(err)
	}
	p := newPool(cc, 1, nil)
	defer p.close()
	c, err := p.acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := p.acquire(wctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second acquire: %v", err)
	}
	// A connection left in a transaction is not reused.
	if _, err := c.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	p.release(c)
	c2, err := p.acquire(ctx)
	if err != nil || c2 == c {
		t.Fatalf("reused a connection inside a transaction: %v", err)
	}
	p.release(c2)
	rows, err := p.Query(ctx, "SELECT generate_series(1, 3)")
	if err != nil {
		t.Fatal(err)
	}
	rows.Close()
	rows.Close()
	if rows.Next() {
		t.Fatal("Next after Close")
	}
	if _, err := p.Query(ctx, "SELECT nope"); err == nil {
		t.Fatal("bad query accepted")
	}
	if _, err := poolConfig("::not a dsn::", time.Second, true); err == nil {
		t.Fatal("bad DSN accepted")
	}
	cfg := testConfig("postgres://u@h/db?sslmode=bogus")
	if _, err := New(cfg, Deps{}); err == nil {
		t.Fatal("bad sslmode accepted")
	}
	// Unreachable server: acquire fails and releases its slot.
	bad, _ := poolConfig("postgres://u@127.0.0.1:1/db?connect_timeout=1", time.Second, true)
	bp := newPool(bad, 1, nil)
	for i := 0; i < 2; i++ {
		if _, err := bp.acquire(ctx); err == nil {
			t.Fatal("connected to nothing")
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
