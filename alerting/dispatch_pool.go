package alerting

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

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
	cc := pc.ConnConfig // from pgx's ParseConfig: RuntimeParams is never nil
	ms := func(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }
	for k, v := range map[string]string{
		"application_name":                    "stacklens-alerting-dispatch",
		"idle_in_transaction_session_timeout": ms(e.idleInTx),
		"statement_timeout":                   ms(dispatchStatementTimeout),
		"lock_timeout":                        ms(dispatchLockTimeout),
		"idle_session_timeout":                ms(dispatchIdleSession),
		"tcp_keepalives_idle":                 strconv.Itoa(int(keepAliveIdle.Seconds())),
		"tcp_keepalives_interval":             strconv.Itoa(int(keepAliveInterval.Seconds())),
		"tcp_keepalives_count":                strconv.Itoa(keepAliveCount),
	} {
		cc.RuntimeParams[k] = v
	}
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAliveConfig: net.KeepAliveConfig{
		Enable: true, Idle: keepAliveIdle, Interval: keepAliveInterval, Count: keepAliveCount}}
	cc.DialFunc = d.DialContext
	p, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("alerting: dispatcher database pool: %w", err)
	}
	return p, nil
}
