package alerting

import (
	"context"
	"fmt"
	"maps"
	"net"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Session limits of the dispatchers' PostgreSQL connections. A dispatcher
// never holds a transaction across a network send, so every one of its
// transactions is short; a session that stays idle inside one has lost
// its client (a host that vanished without a FIN, a partition) and would
// otherwise keep its row locks until PostgreSQL notices the dead TCP
// connection — hours with default keepalives.
const (
	dispatchStatementTimeout = 5 * time.Second
	dispatchLockTimeout      = 2 * time.Second
	// dispatchIdleSession ends sessions idle this long (the pool closes
	// its idle connections sooner, dispatchMaxConnIdle).
	dispatchIdleSession = 5 * time.Minute
	dispatchMaxConnIdle = time.Minute
	// TCP keepalive, both ends: a silent peer is declared dead after
	// idle + count × interval = 11 s.
	keepAliveIdle     = 5 * time.Second
	keepAliveInterval = 2 * time.Second
	keepAliveCount    = 3
	// evaluatorIdleInTx ends an evaluator session idle inside a
	// transaction: generous, as an evaluation cycle does its work inside
	// one, yet seconds rather than the hours a dead TCP peer takes.
	evaluatorIdleInTx = 30 * time.Second
)

// dispatchPool opens the dispatchers' own small pool on the engine's
// database (same address and credentials as e.pool) with server-side
// timeouts — idle_in_transaction_session_timeout, statement_timeout,
// lock_timeout, idle_session_timeout — and TCP keepalives on the client
// (dialer) and on the server (tcp_keepalives_*), so that PostgreSQL ends
// the session of a dispatcher that vanished within seconds and releases
// what it held.
func (e *Engine) dispatchPool(ctx context.Context) (*pgxpool.Pool, error) {
	pc := e.pool.Config()
	pc.MaxConns, pc.MinConns = 4, 0
	pc.MaxConnIdleTime = dispatchMaxConnIdle
	pc.HealthCheckPeriod = 15 * time.Second
	ms := func(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }
	limitSessions(pc.ConnConfig, "stacklens-alerting-dispatch", e.idleInTx, map[string]string{
		"statement_timeout":    ms(dispatchStatementTimeout),
		"lock_timeout":         ms(dispatchLockTimeout),
		"idle_session_timeout": ms(dispatchIdleSession),
	})
	p, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("alerting: dispatcher database pool: %w", err)
	}
	return p, nil
}

// limitSessions makes PostgreSQL end a session whose client vanished:
// idle_in_transaction_session_timeout for one that went silent inside a
// transaction (its row locks would block the next leader), TCP keepalives
// on both ends for one that went silent outside, plus extra settings.
func limitSessions(cc *pgx.ConnConfig, app string, idleInTx time.Duration, extra map[string]string) {
	params := map[string]string{ // from pgx's ParseConfig: RuntimeParams is never nil
		"application_name":                    app,
		"idle_in_transaction_session_timeout": strconv.FormatInt(idleInTx.Milliseconds(), 10),
		"tcp_keepalives_idle":                 strconv.Itoa(int(keepAliveIdle.Seconds())),
		"tcp_keepalives_interval":             strconv.Itoa(int(keepAliveInterval.Seconds())),
		"tcp_keepalives_count":                strconv.Itoa(keepAliveCount),
	}
	maps.Copy(params, extra)
	maps.Copy(cc.RuntimeParams, params)
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAliveConfig: net.KeepAliveConfig{
		Enable: true, Idle: keepAliveIdle, Interval: keepAliveInterval, Count: keepAliveCount}}
	cc.DialFunc = d.DialContext
}
