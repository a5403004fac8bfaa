package api

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// pool is a small connection pool over pgx.Conn. (pgxpool needs
// jackc/puddle, which is not in this module's go.sum; the API's needs —
// bounded connections, per-connection session setup, statement cache —
// fit in this file.)
//
// Connections are created lazily up to max; each runs setup once (session
// parameters are sent in the startup packet, the SET ROLE here). A
// connection that errored at the connection level, is mid-transaction or
// was closed is discarded on release; one idle longer than pingAfter is
// pinged before reuse.
type pool struct {
	cfg   *pgx.ConnConfig
	setup func(context.Context, *pgx.Conn) error
	sem   chan struct{}
	idle  chan *idleConn
	done  chan struct{}
	once  sync.Once
	// pingAfter: an idle connection unused for longer is pinged before
	// reuse, so a server restart or terminated backend costs a reconnect,
	// not a failed request.
	pingAfter time.Duration
}

type idleConn struct {
	c    *pgx.Conn
	used time.Time
}

var errPoolClosed = errors.New("database pool closed")

func newPool(cfg *pgx.ConnConfig, max int, setup func(context.Context, *pgx.Conn) error) *pool {
	max = maxInt(1, max)
	return &pool{cfg: cfg, setup: setup, sem: make(chan struct{}, max), idle: make(chan *idleConn, max), done: make(chan struct{}), pingAfter: time.Second}
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}

// poolConfig parses dsn and applies the API's session settings: statement
// timeout, generic plans for prepared statements (every optional filter
// has its own statement variant, so the generic plan is the right one and
// no execution pays for planning; TestQueryPlans checks the plans),
// application_name, read-only transactions for the reader.
func poolConfig(dsn string, timeout time.Duration, readOnly bool) (*pgx.ConnConfig, error) {
	cc, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("api: database DSN: %w", err)
	}
	rp := cc.RuntimeParams
	rp["statement_timeout"] = strconv.FormatInt(max(1, timeout.Milliseconds()), 10)
	rp["plan_cache_mode"] = "force_generic_plan"
	rp["application_name"] = "stacklens-api"
	if readOnly {
		rp["default_transaction_read_only"] = "on"
	}
	if cc.ConnectTimeout == 0 || cc.ConnectTimeout > 5*time.Second {
		cc.ConnectTimeout = 5 * time.Second
	}
	return cc, nil
}

// setRole returns a setup function that SETs role on each new connection.
func setRole(role string) func(context.Context, *pgx.Conn) error {
	stmt := "SET ROLE " + pgx.Identifier{role}.Sanitize()
	return func(ctx context.Context, c *pgx.Conn) error {
		if _, err := c.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("api: %s failed (grant the role to the database user, or set DB_READER_PASSWORD to log in as it): %w", stmt, err)
		}
		return nil
	}
}

func (p *pool) acquire(ctx context.Context) (*pgx.Conn, error) {
	select {
	case <-p.done:
		return nil, errPoolClosed
	default:
	}
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-p.done:
		return nil, errPoolClosed
	}
	for {
		select {
		case ic := <-p.idle:
			if ic.c.IsClosed() {
				continue
			}
			if time.Since(ic.used) > p.pingAfter {
				if err := ic.c.Ping(ctx); err != nil {
					p.discard(ic.c)
					continue
				}
			}
			return ic.c, nil
		default:
		}
		break
	}
	c, err := pgx.ConnectConfig(ctx, p.cfg)
	if err != nil {
		<-p.sem
		return nil, err
	}
	if p.setup != nil {
		if err := p.setup(ctx, c); err != nil {
			_ = c.Close(context.Background())
			<-p.sem
			return nil, err
		}
	}
	return c, nil
}

func (p *pool) release(c *pgx.Conn) {
	defer func() { <-p.sem }()
	select {
	case <-p.done:
		p.discard(c)
		return
	default:
	}
	if c.IsClosed() || c.PgConn().IsBusy() || c.PgConn().TxStatus() != 'I' {
		p.discard(c)
		return
	}
	select {
	case p.idle <- &idleConn{c: c, used: time.Now()}:
	default:
		p.discard(c)
	}
}

func (p *pool) discard(c *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = c.Close(ctx)
}

// with runs f on a pooled connection.
func (p *pool) with(ctx context.Context, f func(*pgx.Conn) error) error {
	c, err := p.acquire(ctx)
	if err != nil {
		return err
	}
	defer p.release(c)
	return f(c)
}

// close closes every connection; in-flight users discard theirs on release.
func (p *pool) close() {
	p.once.Do(func() {
		close(p.done)
		for {
			select {
			case ic := <-p.idle:
				p.discard(ic.c)
				continue
			default:
			}
			break
		}
	})
}

// QueryRow runs a single-row query on a pooled connection; the connection
// is held only while Scan runs.
func (p *pool) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return &poolRow{p: p, ctx: ctx, sql: sql, args: args}
}

type poolRow struct {
	p    *pool
	ctx  context.Context
	sql  string
	args []any
}

func (r *poolRow) Scan(dest ...any) error {
	return r.p.with(r.ctx, func(c *pgx.Conn) error { return c.QueryRow(r.ctx, r.sql, r.args...).Scan(dest...) })
}

// Query runs a query on a pooled connection, released when the rows are
// closed or exhausted.
func (p *pool) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	c, err := p.acquire(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := c.Query(ctx, sql, args...)
	if err != nil {
		p.release(c)
		return nil, err
	}
	return &poolRows{Rows: rows, p: p, c: c}, nil
}

type poolRows struct {
	pgx.Rows
	p *pool
	c *pgx.Conn
}

func (r *poolRows) Next() bool {
	if r.c == nil {
		return false
	}
	if r.Rows.Next() {
		return true
	}
	r.Close()
	return false
}

func (r *poolRows) Close() {
	if r.c == nil {
		return
	}
	r.Rows.Close()
	r.p.release(r.c)
	r.c = nil
}

// Exec runs a statement on a pooled connection.
func (p *pool) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	var tag pgconn.CommandTag
	err := p.with(ctx, func(c *pgx.Conn) error {
		var err error
		tag, err = c.Exec(ctx, sql, args...)
		return err
	})
	return tag, err
}
