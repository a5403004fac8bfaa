package api

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The API's database pools are pgxpool pools. poolConfig and setRole hold
// the API's session setup; pgxpool does the rest:
//
//   - connections are created lazily (MinConns 0) up to MaxConns; waiters
//     honour their context;
//   - session parameters travel in the startup packet; SET ROLE runs once
//     per new connection (AfterConnect);
//   - each connection keeps pgx's prepared-statement cache
//     (QueryExecModeCacheStatement), so every statement variant is parsed
//     and planned once per connection;
//   - a connection released closed, busy or inside a transaction is
//     destroyed, not reused;
//   - an idle connection unused for longer than pingIdleAfter is pinged
//     before reuse and replaced if the ping fails, so a database restart or
//     a terminated backend costs a reconnect, not a failed request;
//   - Close rejects new acquires and closes every connection once the
//     in-flight users have released theirs.

// pingIdleAfter: an idle connection unused for longer is pinged before
// reuse (pgxpool's ShouldPing; this is also its default, set explicitly
// because TestPoolRecovers depends on it).
const pingIdleAfter = time.Second

// connectTimeout bounds one connection attempt (a lower connect_timeout in
// the DSN wins).
const connectTimeout = 5 * time.Second

// poolConfig parses dsn into a pgxpool configuration with the API's
// session settings: statement timeout, generic plans for prepared
// statements (every optional filter has its own statement variant, so the
// generic plan is the right one and no execution pays for planning;
// TestQueryPlans checks the plans), application_name, read-only
// transactions for the reader. The pool holds at most maxConns
// connections (at least 1) and, when role is set, runs SET ROLE role on
// each new connection.
func poolConfig(dsn string, timeout time.Duration, readOnly bool, maxConns int, role string) (*pgxpool.Config, error) {
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("api: database DSN: %w", err)
	}
	cc := pc.ConnConfig
	rp := cc.RuntimeParams
	rp["statement_timeout"] = strconv.FormatInt(max(1, timeout.Milliseconds()), 10)
	rp["plan_cache_mode"] = "force_generic_plan"
	rp["application_name"] = "stacklens-api"
	if readOnly {
		rp["default_transaction_read_only"] = "on"
	}
	if cc.ConnectTimeout == 0 || cc.ConnectTimeout > connectTimeout {
		cc.ConnectTimeout = connectTimeout
	}
	pc.MaxConns = int32(min(max(1, maxConns), 1<<30))
	pc.MinConns, pc.MinIdleConns = 0, 0
	pc.ShouldPing = func(_ context.Context, p pgxpool.ShouldPingParams) bool {
		return p.IdleDuration > pingIdleAfter
	}
	if role != "" {
		pc.AfterConnect = setRole(role)
	}
	return pc, nil
}

// newPool creates a pool from cfg; it connects lazily, on first use.
func newPool(cfg *pgxpool.Config) (*pgxpool.Pool, error) {
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("api: database pool: %w", err)
	}
	return p, nil
}

// setRole returns an AfterConnect hook that SETs role on each new
// connection.
func setRole(role string) func(context.Context, *pgx.Conn) error {
	stmt := "SET ROLE " + pgx.Identifier{role}.Sanitize()
	return func(ctx context.Context, c *pgx.Conn) error {
		if _, err := c.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("api: %s failed (grant the role to the database user, or set DB_READER_PASSWORD to log in as it): %w", stmt, err)
		}
		return nil
	}
}
