package api

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/jackc/pgx/v5"

	"github.com/stacklens/stacklens/internal/retry"
)

// changesChannel is the channel the statement trigger of the metrics
// tables and analytics_alerts notifies when a change commits (schema
// migration 0013_change_notify).
const changesChannel = "stacklens_changes"

var (
	changesWatched = metrics.NewGauge(`stacklens_api_changes_watched`, nil)
	changesSeen    = metrics.NewCounter(`stacklens_api_changes_total`)
)

// changeWatch follows the changes of the tables behind /metrics,
// /health-status and /alerts. One dedicated connection LISTENs on
// changesChannel; a notification advances its table's version, and every
// (re)connection all of them. Answers read from a table are reused while
// its version is the one their read began at (see coalescer): PostgreSQL
// sends a notification only after its transaction committed, so a read
// that began after the version last moved has seen every change notified
// so far. While the connection is down nothing is reused: a change could
// go unnoticed.
type changeWatch struct {
	connect func(context.Context) (*pgx.Conn, error)
	log     *slog.Logger
	backoff *retry.Backoff
	// A table's version is epoch + its count: both only grow, so the sum
	// moves whenever either does, even when read apart.
	epoch  atomic.Uint64
	counts map[string]*atomic.Uint64 // fixed at construction
	up     atomic.Bool
}

// newChangeWatch follows the given tables; notifications of others (a
// window this replica does not serve) are ignored.
func newChangeWatch(connect func(context.Context) (*pgx.Conn, error), tables []string, log *slog.Logger) *changeWatch {
	w := &changeWatch{connect: connect, log: log, backoff: retry.New(100*time.Millisecond, 5*time.Second),
		counts: make(map[string]*atomic.Uint64, len(tables))}
	for _, t := range tables {
		w.counts[t] = new(atomic.Uint64)
	}
	return w
}

// version is table's current version, and whether changes are being
// followed (false: reuse nothing). A table not followed is never followed.
func (w *changeWatch) version(table string) (uint64, bool) {
	c := w.counts[table]
	if c == nil {
		return 0, false
	}
	v := w.epoch.Load() + c.Load()
	return v, w.up.Load()
}

// run follows changes until ctx ends, reconnecting with backoff. Losing
// the connection is logged once, not at every failed attempt.
func (w *changeWatch) run(ctx context.Context) {
	for {
		err := w.listen(ctx)
		wasUp := w.up.Load()
		w.setUp(false)
		if ctx.Err() != nil {
			return
		}
		if wasUp {
			w.log.Warn("change notifications lost: /metrics, /health-status and /alerts answers are not reused until they are back", "err", err)
		} else {
			w.log.Debug("change notifications: still not connected", "err", err)
		}
		if !w.backoff.Wait(ctx) {
			return
		}
	}
}

func (w *changeWatch) listen(ctx context.Context) error {
	conn, err := w.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+changesChannel); err != nil {
		return err
	}
	w.setUp(true)
	w.backoff.Reset()
	w.log.Info("following table changes", "channel", changesChannel)
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if c := w.counts[n.Payload]; c != nil {
			c.Add(1)
		}
		changesSeen.Inc()
	}
}

// setUp moves every version whenever following starts or stops, so that no
// answer read on the other side of either edge is reused. Stopping clears
// up before the version moves: a read that sees the new version already
// sees that nothing is followed.
func (w *changeWatch) setUp(up bool) {
	w.up.Store(false)
	w.epoch.Add(1)
	if up {
		w.up.Store(true)
		changesWatched.Set(1)
	} else {
		changesWatched.Set(0)
	}
}
