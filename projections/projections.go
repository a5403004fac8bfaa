// Package projections materialises StackLens's derived state in PostgreSQL
// (docs/ARCHITECTURE.md §2.3, §3): the per-window aggregates of the JetStream KV
// buckets stacklens_agg_<window> into analytics_metrics_<window>, and the
// raw events of STACKLENS_EVENTS into analytics_events. It also runs the
// daily retention (analytics_archive_old_data()).
//
// Delivery is at least once and every write is idempotent: metric rows are
// upserted with a version guard, events are inserted keyed by stream
// sequence, and messages are acknowledged only after the transaction that
// contains them committed. See docs/projections.md.
package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/natsutil"
	"github.com/stacklens/stacklens/internal/retry"
	"github.com/stacklens/stacklens/internal/telemetry"
	"github.com/stacklens/stacklens/internal/window"
)

// HealthName is the readiness check the projections report under.
const HealthName = "projections"

// Options tunes the projections; zero values mean the defaults.
type Options struct {
	MetricsBatch      int           // most KV changes per upsert (default 500)
	EventsBatch       int           // most events per COPY (default 2000)
	BatchWait         time.Duration // longest wait to fill a batch (default 25ms; the next batch is fetched while one is written)
	AckWait           time.Duration // consumer AckWait (default 10s; extended while a batch is held)
	RetentionInterval time.Duration // between retention runs (default 24h); < 0 disables
	MaxBackoff        time.Duration // longest pause between retries (default 5s)
	DisableEvents     bool          // do not project raw events
	DisableMetrics    bool          // do not project aggregates
	// ConsumerPrefix names the durable consumers (default "stacklens_projections").
	ConsumerPrefix string
}

func (o Options) withDefaults() Options {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.MetricsBatch, 500)
	def(&o.EventsBatch, 2000)
	defd(&o.BatchWait, 25*time.Millisecond)
	defd(&o.AckWait, 10*time.Second)
	defd(&o.RetentionInterval, 24*time.Hour)
	defd(&o.MaxBackoff, 5*time.Second)
	if o.ConsumerPrefix == "" {
		o.ConsumerPrefix = "stacklens_projections"
	}
	return o
}

// Deps is what Run needs. NATS and Pool are optional: when nil, Run
// connects from Config and closes what it opened.
type Deps struct {
	Config  *config.Config
	Log     *slog.Logger
	Health  *telemetry.Health
	NATS    *nats.Conn
	Pool    *pgxpool.Pool
	Options Options
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// OpenPool opens the writer pool with DB_POOL_MIN/DB_POOL_MAX connections.
// Every connection gets the session-local staging table of the COPY path.
// It does not wait for the server: connections are made on demand and
// retried by the projectors.
func OpenPool(ctx context.Context, dsn string, minConns, maxConns int) (*pgxpool.Pool, error) {
	if maxConns <= 0 {
		// Not pgx's own default: DB_POOL_MAX's lives in internal/config.
		return nil, &config.Error{Var: "DB_POOL_MAX", Msg: fmt.Sprintf("%d: must be positive", maxConns)}
	}
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("projections: database DSN: %w", err)
	}
	pc.MaxConns = int32(maxConns)
	pc.MinConns = int32(max(0, min(minConns, int(pc.MaxConns))))
	pc.ConnConfig.RuntimeParams["application_name"] = "stacklens-projections"
	pc.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		_, err := c.Exec(ctx, createStage)
		return err
	}
	return pgxpool.NewWithConfig(ctx, pc)
}

// Run projects until ctx is cancelled, then stops fetching, finishes (or
// abandons, unacknowledged) the batch being written and returns nil.
// PostgreSQL and NATS outages are retried forever with backoff while the
// readiness check HealthName is down.
func Run(ctx context.Context, d Deps) error {
	if d.Config == nil {
		return errors.New("projections: no configuration")
	}
	o := d.Options.withDefaults()
	log := d.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "projections")
	now := d.Now
	if now == nil {
		now = time.Now
	}
	health := d.Health
	if health == nil {
		health = telemetry.NewHealth()
	}
	wins, err := d.Config.Pipeline.ValidWindows()
	if err != nil {
		return err
	}
	loc, err := d.Config.Pipeline.EventLocation()
	if err != nil {
		return err
	}
	st := newStatus(health)
	defer health.Remove(HealthName)

	nc := d.NATS
	if nc == nil {
		st.set("nats", errors.New("connecting to NATS"))
		nc, err = natsutil.Connect(ctx, d.Config.NATS, natsutil.DefaultName("projections"), log)
		if err != nil {
			return err
		}
		defer nc.Close()
		st.set("nats", nil)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("projections: jetstream: %w", err)
	}
	pool := d.Pool
	if pool == nil {
		pool, err = OpenPool(ctx, d.Config.DB.DSN(), d.Config.DB.PoolMin, d.Config.DB.PoolMax)
		if err != nil {
			return err
		}
		defer pool.Close()
	}
	wr := NewWriter(pool)

	var mps []*metricsProjector
	if !o.DisableMetrics {
		for _, w := range wins {
			mp, err := newMetricsProjector(js, wr, w, d.Config.NATS.Shards, o, st, log)
			if err != nil {
				return err
			}
			mps = append(mps, mp)
		}
	}
	if d.Config.Retention.RawEvents == "stream" {
		o.DisableEvents = true
		forgetEventsConsumer(ctx, js, o.ConsumerPrefix+eventsConsumerSuffix, log)
	}
	var wg sync.WaitGroup
	spawn := func(f func()) { wg.Add(1); go func() { defer wg.Done(); f() }() }
	for _, mp := range mps {
		spawn(func() { mp.run(ctx) })
	}
	if !o.DisableEvents {
		ep := newEventsProjector(js, wr, d.Config, loc, o, st, log, now)
		spawn(func() { ep.run(ctx) })
	}
	if o.RetentionInterval > 0 {
		spawn(func() { runRetention(ctx, pool, o, log) })
	}
	spawn(func() { watchDB(ctx, pool, st, log) })
	log.Info("projections started", "metrics", !o.DisableMetrics, "windows", windowNames(wins), "events", !o.DisableEvents,
		"pool_min", pool.Config().MinConns, "pool_max", pool.Config().MaxConns)
	<-ctx.Done()
	wg.Wait()
	log.Info("projections stopped")
	return nil
}

// forgetEventsConsumer deletes the raw-event consumer of an earlier
// RAW_EVENTS=postgres run: nothing reads it any more, and its growing lag
// would keep /health's pipeline warning. Switching back creates it anew at
// the RETENTION_HOT horizon, and the inserts are idempotent.
func forgetEventsConsumer(ctx context.Context, js jetstream.JetStream, durable string, log *slog.Logger) {
	err := js.DeleteConsumer(ctx, natsutil.StreamEvents, durable)
	switch {
	case err == nil:
		log.Info("RAW_EVENTS=stream: deleted the raw-event consumer", "consumer", durable)
	case errors.Is(err, jetstream.ErrConsumerNotFound), errors.Is(err, jetstream.ErrStreamNotFound):
	default:
		log.Warn("RAW_EVENTS=stream: cannot delete the raw-event consumer; delete it by hand", "consumer", durable, "err", err)
	}
}

// dbPingInterval is how often watchDB checks the database.
const dbPingInterval = 5 * time.Second

// watchDB pings PostgreSQL periodically so that readiness reflects an
// unreachable database also while there is nothing to write.
func watchDB(ctx context.Context, pool *pgxpool.Pool, st *status, log *slog.Logger) {
	t := time.NewTicker(dbPingInterval)
	defer t.Stop()
	var was error
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := pool.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		st.set("database", err)
		if (err == nil) != (was == nil) {
			if err != nil {
				log.Warn("database unreachable", "err", err)
			} else {
				log.Info("database reachable")
			}
		}
		was = err
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func windowNames(ws []window.Window) []string {
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = w.Name
	}
	return out
}

// status folds the states of the loops into the one readiness check.
type status struct {
	mu     sync.Mutex
	health *telemetry.Health
	errs   map[string]error
}

func newStatus(h *telemetry.Health) *status {
	s := &status{health: h, errs: map[string]error{}}
	h.Set(HealthName, nil)
	return s
}

func (s *status) set(part string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		delete(s.errs, part)
	} else {
		s.errs[part] = err
	}
	var first error
	for _, p := range slices.Sorted(maps.Keys(s.errs)) {
		first = fmt.Errorf("%s: %w", p, s.errs[p])
		break
	}
	s.health.Set(HealthName, first)
}

// retryDB runs f until it succeeds or ctx ends, with backoff, counting
// failures and holding readiness down (part) while it fails. It returns
// ctx's error if it gave up.
func retryDB(ctx context.Context, part string, st *status, log *slog.Logger, maxBackoff time.Duration, f func(context.Context) error) error {
	failures := 0
	err := retry.Until(ctx, retry.New(50*time.Millisecond, maxBackoff), f, func(err error, _ time.Duration) {
		failures++
		dbErrors.Inc()
		st.set(part, err)
		if failures == 1 || failures%20 == 0 {
			log.Warn("database write failed; retrying", "part", part, "failures", failures, "err", err)
		}
	})
	if err == nil && failures > 0 {
		st.set(part, nil)
		log.Info("database write recovered", "part", part, "failures", failures)
	}
	return err
}
