// Package alerting is StackLens' alert engine (docs/ARCHITECTURE.md §2.4, §6): it
// evaluates the rules of analytics_alert_rules against metric windows as
// they become final, keeps one alert per fingerprint (rule + service) with
// `for` windows and hysteresis, records every state change together with
// its notifications in a transactional outbox, and delivers the outbox to
// Kafka (analytics-alerts), Slack, email and PagerDuty with retries. One
// engine evaluates at a time across API replicas (a lease in the NATS KV
// bucket stacklens_alerting).
//
// See docs/alerting.md.
package alerting

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/telemetry"
	"github.com/stacklens/stacklens/internal/window"
)

// Config is what the engine needs from the process configuration.
type Config struct {
	Alerting config.Alerting
	// Kafka: brokers, OutputTopic (KAFKA_OUTPUT_TOPIC), SASL and TLS.
	Kafka config.Kafka
	// DB is used to open the engine's own small pool when Deps.Pool is nil.
	DB config.DB
	// NATS: Replicas of the lease bucket.
	NATS config.NATS
	// Windows are the configured aggregation windows (AGGREGATION_WINDOWS);
	// rules on other windows are ignored (and counted as invalid).
	// Empty: window.Defaults().
	Windows []window.Window
	// LeaseTTL is how long a lease holder may stay silent before another
	// replica takes over (renewed every LeaseTTL/3). 0: 15 s.
	LeaseTTL time.Duration
	// Horizon bounds how old a window may be (by its start) and still be
	// evaluated when it becomes final or is corrected. 0: per window,
	// max(10 × window, 15 min).
	Horizon time.Duration
	// SingleReplica runs without the NATS lease: use it only when exactly
	// one api process runs (stacklens dev, tests).
	SingleReplica bool
	// NoDataGrace is how long after its end a window counts as over for
	// no_data rules (a service that sent during it has its row by then):
	// ALLOWED_LATENESS plus the pipeline's delay. 0: 30 s.
	NoDataGrace time.Duration
}

// Deps are the engine's collaborators.
type Deps struct {
	Log *slog.Logger
	// Pool is a read-write pool on the StackLens database (DB_USER). nil:
	// the engine opens its own from Config.DB (at most 4 connections) and
	// closes it when Run returns.
	Pool *pgxpool.Pool
	// NATS holds the lease (required unless Config.SingleReplica).
	NATS *nats.Conn
	// Health, optional, gets the engine's readiness as "alerting".
	Health *telemetry.Health
}

// Engine is the alert engine. Build it with New and run it with Run.
type Engine struct {
	cfg     Config
	log     *slog.Logger
	pool    *pgxpool.Pool
	dpool   *pgxpool.Pool // the dispatchers' sessions (dispatchPool)
	ownPool bool
	nc      *nats.Conn
	health  *telemetry.Health
	holder  string
	windows map[string]window.Window
	names   []string
	senders map[string]sender
	leader  atomic.Bool
	wake    chan struct{}
	kicks   map[string]chan struct{}

	// test seams
	now         func() time.Time
	retryBase   time.Duration
	retryMax    time.Duration
	overlap     time.Duration
	dispatchOff bool          // do not start the dispatchers (crash tests)
	idleInTx    time.Duration // idle_in_transaction_session_timeout of the engine's sessions
	afterCommit func()        // runs after an evaluation transaction committed

	ev     *evaluator
	noData map[string]noDataScan // per window: the last no_data scan
	// sloInvalid: why each invalid SLO cannot be evaluated (logged once)
	sloInvalid map[int64]string
	// sloEvery throttles SLO evaluation (test seam; 0: every cycle);
	// sloLast is when it last ran (zero: at the next cycle).
	sloEvery time.Duration
	sloLast  time.Time
	cycles   atomic.Int64 // completed evaluation cycles (tests)
}

// channelsAll are the outbox channels, in dispatch order.
var channelsAll = []string{"kafka", "slack", "email", "pagerduty"}

// New validates the configuration and builds the engine; it connects
// nothing yet (Run does).
func New(cfg Config, deps Deps) (*Engine, error) {
	if len(cfg.Windows) == 0 {
		cfg.Windows = window.Defaults()
	}
	// The defaults of configuration variables live in internal/config only;
	// a zero here is a caller that skipped it, not a request for a default.
	if cfg.Alerting.EvalInterval <= 0 {
		return nil, &config.Error{Var: "ALERT_EVAL_INTERVAL", Msg: fmt.Sprintf("%v: must be positive", cfg.Alerting.EvalInterval)}
	}
	if cfg.Alerting.DeliveryTimeout <= 0 {
		return nil, &config.Error{Var: "ALERT_DELIVERY_TIMEOUT", Msg: fmt.Sprintf("%v: must be positive", cfg.Alerting.DeliveryTimeout)}
	}
	if cfg.Kafka.OutputTopic == "" {
		return nil, &config.Error{Var: "KAFKA_OUTPUT_TOPIC", Msg: "must not be empty"}
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 15 * time.Second // not a configuration variable: the engine's own default
	}
	if len(cfg.Kafka.BootstrapServers) == 0 {
		return nil, &config.Error{Var: "KAFKA_BOOTSTRAP_SERVERS", Msg: "the alert engine needs a Kafka broker"}
	}
	if !cfg.SingleReplica && deps.NATS == nil {
		return nil, errors.New("alerting: a NATS connection is required for the evaluator lease (or set SingleReplica)")
	}
	if cfg.NoDataGrace <= 0 {
		cfg.NoDataGrace = 30 * time.Second
	}
	log := deps.Log
	if log == nil {
		log = slog.Default()
	}
	e := &Engine{
		cfg:        cfg,
		log:        log.With("component", "alerting"),
		pool:       deps.Pool,
		nc:         deps.NATS,
		health:     deps.Health,
		windows:    map[string]window.Window{},
		noData:     map[string]noDataScan{},
		sloInvalid: map[int64]string{},
		sloEvery:   sloInterval,
		wake:       make(chan struct{}, 1),
		kicks:      map[string]chan struct{}{},
		now:        time.Now,
		retryBase:  time.Second,
		retryMax:   5 * time.Minute,
		overlap:    10 * time.Second,
		idleInTx:   5 * time.Second,
	}
	for _, w := range cfg.Windows {
		e.windows[w.Name] = w
		e.names = append(e.names, w.Name)
	}
	for _, c := range channelsAll {
		e.kicks[c] = make(chan struct{}, 1)
	}
	host, _ := os.Hostname()
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	e.holder = fmt.Sprintf("%s:%d:%s", host, os.Getpid(), hex.EncodeToString(rnd[:]))
	var err error
	if e.senders, err = newSenders(cfg, e.holder, e.log); err != nil {
		return nil, err
	}
	initMetrics(e.senders)
	return e, nil
}

// Run opens what it needs, then evaluates and delivers while this replica
// holds the lease, until ctx is cancelled; it then releases the lease and
// closes its connections. It returns nil on cancellation.
func Run(ctx context.Context, cfg Config, deps Deps) error {
	e, err := New(cfg, deps)
	if err != nil {
		return err
	}
	return e.Run(ctx)
}

// Run runs the engine until ctx is cancelled (see the package function Run).
func (e *Engine) Run(ctx context.Context) error {
	if e.pool == nil {
		pc, err := pgxpool.ParseConfig(e.cfg.DB.DSN())
		if err != nil {
			return fmt.Errorf("alerting: database: %w", err)
		}
		pc.MaxConns = 4
		pc.MinConns = 1
		// The evaluator's transactions lock alert rows; a leader whose host
		// vanishes mid-transaction must not hold them for hours.
		limitSessions(pc.ConnConfig, "stacklens-alerting", evaluatorIdleInTx, nil)
		if e.pool, err = pgxpool.NewWithConfig(ctx, pc); err != nil {
			return fmt.Errorf("alerting: database: %w", err)
		}
		e.ownPool = true
	}
	dpool, err := e.dispatchPool(ctx)
	if err != nil {
		if e.ownPool {
			e.pool.Close()
		}
		return err
	}
	e.dpool = dpool
	defer func() {
		for _, s := range e.senders {
			_ = s.Close()
		}
		e.dpool.Close()
		if e.ownPool {
			e.pool.Close()
		}
		isLeaderGauge.Set(0)
		if e.health != nil {
			e.health.Remove("alerting")
		}
	}()
	e.log.Info("alert engine starting", "holder", e.holder, "eval_interval", e.cfg.Alerting.EvalInterval,
		"channels", e.configuredChannels(), "single_replica", e.cfg.SingleReplica)
	if e.cfg.SingleReplica {
		e.setLeader(true)
		e.lead(ctx)
		e.setLeader(false)
		return nil
	}
	return e.runLease(ctx)
}

// IsLeader reports whether this replica currently evaluates and delivers.
func (e *Engine) IsLeader() bool { return e.leader.Load() }

func (e *Engine) setLeader(v bool) {
	e.leader.Store(v)
	if v {
		isLeaderGauge.Set(1)
	} else {
		isLeaderGauge.Set(0)
	}
}

// RulesChanged triggers an evaluation cycle; its signature matches
// api.Hooks.RulesChanged.
func (e *Engine) RulesChanged(context.Context, int64, string) { e.poke() }

// SilencesChanged triggers an evaluation cycle; its signature matches
// api.Hooks.SilencesChanged.
func (e *Engine) SilencesChanged(context.Context, int64, string) { e.poke() }

// OnAcknowledge enqueues the acknowledgement notifications of alertID in
// the API's acknowledge transaction (see EnqueueAcknowledged); the
// dispatchers pick them up at their next poll (≤ min(1 s, EvalInterval))
// after the commit. Wire it as
//
//	OnAcknowledge: func(ctx context.Context, tx pgx.Tx, a api.Alert) error {
//		return eng.OnAcknowledge(ctx, tx, a.AlertID)
//	}
func (e *Engine) OnAcknowledge(ctx context.Context, tx pgx.Tx, alertID string) error {
	return EnqueueAcknowledged(ctx, tx, alertID)
}

func (e *Engine) poke() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *Engine) kick() {
	for _, ch := range e.kicks {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// configuredChannels are the notification channels with configuration.
func (e *Engine) configuredChannels() []string {
	var out []string
	for _, c := range channelsAll {
		if e.senders[c] != nil {
			out = append(out, c)
		}
	}
	return out
}

// lead evaluates and dispatches until ctx is done.
func (e *Engine) lead(ctx context.Context) {
	e.log.Info("alert engine leading: evaluating and delivering")
	var wg sync.WaitGroup
	if !e.dispatchOff {
		for _, c := range channelsAll {
			wg.Go(func() { e.dispatchLoop(ctx, c) })
		}
	}
	e.ev = nil // reload state from the database: another replica may have led
	clear(e.noData)
	e.sloLast = time.Time{}
	t := time.NewTicker(e.cfg.Alerting.EvalInterval)
	defer t.Stop()
	var lastErr string
	for {
		err := e.cycle(ctx)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			cycleErrors.Inc()
			if err.Error() != lastErr {
				e.log.Warn("alert evaluation failed; retrying", "err", err)
			}
			lastErr = err.Error()
			e.ev = nil
			clear(e.noData)
		} else {
			lastErr = ""
		}
		if e.health != nil {
			e.health.Set("alerting", err)
		}
		select {
		case <-ctx.Done():
		case <-t.C:
		case <-e.wake:
		}
		if ctx.Err() != nil {
			break
		}
	}
	wg.Wait()
	e.log.Info("alert engine stopped leading")
}

// fpState is the cached state of one fingerprint.
type fpState struct {
	ruleID  int64
	service string
	State
	dirty     bool // changed in this cycle: to be written
	persisted bool // a row exists in analytics_alert_state
}

// evaluator is the leader's in-memory copy of analytics_alert_state.
type evaluator struct {
	states  map[string]*fpState
	cursors map[string]time.Time
}

const cursorPrefix = "cursor:"

func (e *Engine) loadState(ctx context.Context) (*evaluator, error) {
	rows, err := e.pool.Query(ctx, `SELECT fingerprint, rule_id, service, consecutive, last_window_start,
	firing, alert_id FROM analytics_alert_state`)
	if err != nil {
		return nil, fmt.Errorf("load alert state: %w", err)
	}
	defer rows.Close()
	ev := &evaluator{states: map[string]*fpState{}, cursors: map[string]time.Time{}}
	for rows.Next() {
		var fp, svc string
		var rid *int64
		var cons int
		var last *time.Time
		var firing bool
		var aid *string
		if err := rows.Scan(&fp, &rid, &svc, &cons, &last, &firing, &aid); err != nil {
			return nil, fmt.Errorf("load alert state: %w", err)
		}
		if name, ok := strings.CutPrefix(fp, cursorPrefix); ok {
			if last != nil {
				ev.cursors[name] = *last
			}
			continue
		}
		st := &fpState{service: svc, State: State{Consecutive: cons, Firing: firing}, persisted: true}
		if rid != nil {
			st.ruleID = *rid
		}
		if last != nil {
			st.LastWindow = *last
		}
		if aid != nil {
			st.AlertID = *aid
		}
		ev.states[fp] = st
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("load alert state: %w", err)
	}
	return ev, nil
}

func (e *Engine) loadSilences(ctx context.Context, now time.Time) ([]Silence, error) {
	rows, err := e.pool.Query(ctx, `SELECT id, rule_name, service, severity, starts_at, ends_at
FROM analytics_alert_silences WHERE ends_at > $1 AND starts_at <= $1`, now)
	if err != nil {
		return nil, fmt.Errorf("load silences: %w", err)
	}
	sils, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Silence, error) {
		var s Silence
		err := r.Scan(&s.ID, &s.RuleName, &s.Service, &s.Severity, &s.StartsAt, &s.EndsAt)
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("load silences: %w", err)
	}
	return sils, nil
}

// metricRow is a final row of analytics_metrics_<window>.
type metricRow struct {
	Service   string
	Start     time.Time
	UpdatedAt time.Time
	Version   int64
	vals      [13]*float64
}

func (r *metricRow) value(metric string) (float64, bool) {
	i := slices.Index(Metrics, metric)
	if i < 0 || r.vals[i] == nil {
		return 0, false
	}
	return *r.vals[i], true
}

// rowLimit is the page size of finalRows (a variable for tests).
var rowLimit = 5000

func (e *Engine) horizon(w window.Window) time.Duration {
	if e.cfg.Horizon > 0 {
		return e.cfg.Horizon
	}
	return max(10*w.Size, 15*time.Minute)
}

// rowKey is a position in the (updated_at, service, timestamp) order.
type rowKey struct {
	updated time.Time
	service string
	start   time.Time
}

// finalRows reads the final rows of window w updated after the cursor
// (minus the overlap that covers transactions committing out of order),
// in pages of rowLimit by keyset.
func (e *Engine) finalRows(ctx context.Context, w window.Window, cursor time.Time, now time.Time) ([]metricRow, error) {
	sql := `SELECT service, timestamp, updated_at, version, count::float8, error_count::float8,
	warning_count::float8, error_rate, throughput_per_sec, latency_avg_ms, latency_min_ms, latency_max_ms,
	latency_p50_ms, latency_p95_ms, latency_p99_ms, risk_score_avg, risk_score_max
FROM analytics_metrics_` + w.Name + `
WHERE final AND timestamp >= $1 AND (updated_at, service, timestamp) > ($2, $3, $4)
ORDER BY updated_at, service, timestamp LIMIT $5`
	after := rowKey{updated: cursor.Add(-e.overlap)}
	var out []metricRow
	for {
		rows, err := e.pool.Query(ctx, sql, now.Add(-e.horizon(w)), after.updated, after.service, after.start, rowLimit)
		if err != nil {
			return nil, fmt.Errorf("read %s windows: %w", w.Name, err)
		}
		page, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (metricRow, error) {
			var m metricRow
			dst := []any{&m.Service, &m.Start, &m.UpdatedAt, &m.Version}
			for i := range m.vals {
				dst = append(dst, &m.vals[i])
			}
			return m, r.Scan(dst...)
		})
		if err != nil {
			return nil, fmt.Errorf("read %s windows: %w", w.Name, err)
		}
		out = append(out, page...)
		if len(page) < rowLimit {
			return out, nil
		}
		last := page[len(page)-1]
		after = rowKey{updated: last.UpdatedAt, service: last.Service, start: last.Start}
	}
}

// change is one alert transition found by a cycle.
type change struct {
	rule    *Rule
	fp      string
	service string
	step    Step
	value   float64
	start   time.Time
	// no_data rules: the start of the service's newest row (zero: none in
	// the lookback)
	lastSeen time.Time
}

// cycle evaluates the windows that became final (or were corrected) since
// the last cycle and commits every resulting change in one transaction.
func (e *Engine) cycle(ctx context.Context) error {
	began := time.Now()
	defer func() {
		evaluationSecs.UpdateDuration(began)
		e.cycles.Add(1)
	}()
	cyclesTotal.Inc()
	if e.ev == nil {
		ev, err := e.loadState(ctx)
		if err != nil {
			return err
		}
		e.ev = ev
	}
	now := e.now()
	rules, err := loadRules(ctx, e.pool)
	if err != nil {
		return err
	}
	sorted := sortRules(rules, e.names)
	byWindow, noDataByWindow, ruleIDs := sorted.byWindow, sorted.noData, sorted.ids
	invalidRulesGauge.Set(float64(sorted.invalid))
	sils, err := e.loadSilences(ctx, now)
	if err != nil {
		return err
	}

	pend := map[string]*fpState{}
	get := func(fp string, r *Rule, svc string) *fpState {
		if s := pend[fp]; s != nil {
			return s
		}
		s := &fpState{ruleID: r.ID, service: svc}
		if old := e.ev.states[fp]; old != nil {
			s.State, s.persisted = old.State, old.persisted
		}
		pend[fp] = s
		return s
	}
	var changes []change
	for _, name := range e.names {
		if rs := noDataByWindow[name]; len(rs) > 0 {
			ch, err := e.evaluateNoData(ctx, e.windows[name], rs, now, get)
			if err != nil {
				return err
			}
			changes = append(changes, ch...)
		}
	}
	cursors := map[string]time.Time{}
	for _, name := range e.names {
		rs := byWindow[name]
		if len(rs) == 0 {
			continue
		}
		w := e.windows[name]
		cur := e.ev.cursors[name]
		rows, err := e.finalRows(ctx, w, cur, now)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			continue
		}
		newCur := cur
		for i := range rows {
			newCur = maxTime(newCur, rows[i].UpdatedAt)
		}
		if newCur.After(cur) {
			cursors[name] = newCur
		}
		changes = append(changes, evaluateRows(rs, w.Size, rows, get, func(row *metricRow) {
			if row.UpdatedAt.After(cur) {
				finalToEvalSecs.Update(now.Sub(row.UpdatedAt).Seconds())
			}
		})...)
	}
	var sloChanges []sloChange
	sloDue := now.Sub(e.sloLast) >= e.sloEvery || now.Before(e.sloLast)
	if sloDue {
		if sloChanges, err = e.evaluateSLOs(ctx, now); err != nil {
			return err
		}
	}
	drop, deletes := forgotten(e.ev.states, ruleIDs)
	dirty := 0
	for _, s := range pend {
		if s.dirty {
			dirty++
		}
	}
	orphans, err := e.orphanAlerts(ctx)
	if err != nil {
		return err
	}
	if len(changes) == 0 && len(sloChanges) == 0 && dirty == 0 && len(cursors) == 0 && len(deletes) == 0 && len(orphans) == 0 {
		for _, fp := range drop {
			delete(e.ev.states, fp)
		}
		if sloDue {
			e.sloLast = now
		}
		return nil
	}
	enqueued, err := e.commit(ctx, now, changes, sloChanges, pend, cursors, deletes, orphans, sils)
	if err != nil {
		return err
	}
	for fp, s := range pend {
		if s.dirty {
			s.dirty, s.persisted = false, true
		}
		e.ev.states[fp] = s
	}
	for _, fp := range drop {
		delete(e.ev.states, fp)
	}
	for name, c := range cursors {
		e.ev.cursors[name] = c
	}
	if sloDue {
		e.sloLast = now
	}
	if e.afterCommit != nil {
		e.afterCommit()
	}
	if enqueued > 0 {
		e.kick()
	}
	return nil
}

// sortedRules are the rules of one cycle that validate, by window and
// kind, and the count of those that do not.
type sortedRules struct {
	byWindow, noData map[string][]*Rule // threshold rules; no-data rules
	ids              map[int64]bool     // every valid rule
	invalid          int
}

// sortRules sorts the rules that validate against windows by window and
// kind.
func sortRules(rules []Rule, windows []string) sortedRules {
	out := sortedRules{byWindow: map[string][]*Rule{}, noData: map[string][]*Rule{}, ids: map[int64]bool{}}
	for i := range rules {
		r := &rules[i]
		if err := r.Validate(windows); err != nil {
			out.invalid++
			continue
		}
		if r.Metric == MetricNoData {
			out.noData[r.Window] = append(out.noData[r.Window], r)
		} else {
			out.byWindow[r.Window] = append(out.byWindow[r.Window], r)
		}
		out.ids[r.ID] = true
	}
	return out
}

// evaluateRows steps every rule of a window through the window's final
// rows in (start, service) order — so a rule sees each service's windows
// in time order — and returns the transitions. get returns the pending
// state of a fingerprint, which it updates; fresh is called for each row
// that moved at least one state (not stale for every rule). rows is
// sorted in place.
func evaluateRows(rules []*Rule, size time.Duration, rows []metricRow, get func(fp string, r *Rule, svc string) *fpState, fresh func(*metricRow)) []change {
	slices.SortFunc(rows, func(a, b metricRow) int {
		return cmp.Or(a.Start.Compare(b.Start), strings.Compare(a.Service, b.Service))
	})
	var changes []change
	for i := range rows {
		row := &rows[i]
		moved := false
		for _, r := range rules {
			v, ok := row.value(r.Metric)
			if !ok {
				continue // no data for this metric (e.g. no risk scores)
			}
			fp := Fingerprint(r.ID, row.Service)
			s := get(fp, r, row.Service)
			step := Evaluate(r, fp, size, s.State, row.Start, v)
			evaluationsTotal.Inc()
			if step.Stale {
				continue
			}
			moved = true
			s.State = step.Next
			s.dirty = s.dirty || step.Changed
			if step.Transition != None {
				changes = append(changes, change{rule: r, fp: fp, service: row.Service, step: step, value: v, start: row.Start})
			}
		}
		if moved {
			fresh(row)
		}
	}
	return changes
}

// forgotten returns the fingerprints whose rule is gone or disabled (drop)
// and those of them that have a row in analytics_alert_state (deletes).
func forgotten(states map[string]*fpState, ruleIDs map[int64]bool) (drop, deletes []string) {
	for fp, s := range states {
		if !ruleIDs[s.ruleID] {
			drop = append(drop, fp)
			if s.persisted {
				deletes = append(deletes, fp)
			}
		}
	}
	slices.Sort(drop)
	slices.Sort(deletes)
	return drop, deletes
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

type orphan struct {
	alertID string
	reason  string
}

// orphanAlerts are open rule alerts whose rule was deleted or disabled
// (burn-rate alerts of SLOs have no rule: evaluateSLOs resolves those).
func (e *Engine) orphanAlerts(ctx context.Context) ([]orphan, error) {
	rows, err := e.pool.Query(ctx, `SELECT a.alert_id, CASE WHEN r.id IS NULL THEN 'rule deleted' ELSE 'rule disabled' END
FROM analytics_alerts a LEFT JOIN analytics_alert_rules r ON r.id = a.rule_id
WHERE a.status IN ('active', 'acknowledged') AND a.slo_burn_alert IS NULL AND (r.id IS NULL OR NOT r.enabled)`)
	if err != nil {
		return nil, fmt.Errorf("orphan alerts: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (orphan, error) {
		var o orphan
		return o, r.Scan(&o.alertID, &o.reason)
	})
	if err != nil {
		return nil, fmt.Errorf("orphan alerts: %w", err)
	}
	return out, nil
}

// fireChannels are the outbox channels of a firing alert of r: Kafka
// always, plus the rule's channels that are configured.
func (e *Engine) fireChannels(r *Rule) []string {
	var out []string
	for _, c := range channelsAll {
		if r.wantsChannel(c) && e.senders[c] != nil {
			out = append(out, c)
		}
	}
	return out
}

// commit writes the cycle's alert changes, their outbox rows, the changed
// states and the cursors in one transaction; it returns the number of
// outbox rows enqueued.
func (e *Engine) commit(ctx context.Context, now time.Time, changes []change, sloChanges []sloChange, pend map[string]*fpState,
	cursors map[string]time.Time, drop []string, orphans []orphan, sils []Silence) (int, error) {
	tx, err := e.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("alert transaction: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	enqueued := 0
	now = now.UTC()
	for _, c := range changes {
		r := c.rule
		v := c.value
		start := c.start.UTC()
		switch c.step.Transition {
		case Fire:
			rid, thr := r.ID, r.Threshold
			ev := &Event{
				AlertID: c.step.AlertID, Fingerprint: c.fp, State: stateFiring, RuleID: &rid, Rule: r.Name,
				Service: c.service, Severity: r.Severity, Metric: r.Metric, Operator: r.Operator, Value: &v,
				Threshold: &thr, ResolveThreshold: r.ResolveThreshold, Window: r.Window, WindowStart: &start,
				FiredAt: now, Message: fireMessage(r, c.service, v, r.Window, start),
				Description: r.Description, EmittedAt: now,
			}
			if r.Metric == MetricNoData {
				first := c.lastSeen.Add(e.windows[r.Window].Size).UTC()
				ev.WindowStart, ev.Operator = &first, ">="
				thr = float64(r.ForWindows)
				ev.Message = noDataMessage(r, c.service, c.value, first)
			}
			channels := e.fireChannels(r)
			if silenced(sils, r, c.service, now) {
				channels = nil
				ev.Message += " [silenced: not notified]"
				silencedTotal.Inc()
			}
			id, inserted, n, err := fire(ctx, tx, ev, channels)
			if err != nil {
				return 0, err
			}
			enqueued += n
			if id != c.step.AlertID {
				pend[c.fp].AlertID = id
			}
			if inserted {
				alertsCounter(stateFiring, r.Severity).Inc()
			}
		case Resolve:
			msg := fmt.Sprintf("%s %s is back (resolve threshold %s)", r.Metric, fmtValue(v), fmtValue(r.EffectiveResolveThreshold()))
			if r.Metric == MetricNoData {
				msg = fmt.Sprintf("data from %s is back (newest %s window starts %s)", c.service, r.Window, c.lastSeen.UTC().Format(time.RFC3339))
			}
			ev, n, err := resolve(ctx, tx, r, c.step.AlertID, &v, &start, now, msg)
			if err != nil {
				return 0, err
			}
			enqueued += n
			if ev != nil {
				alertsCounter(stateResolved, r.Severity).Inc()
			}
		}
	}
	for _, c := range sloChanges {
		n, err := e.commitSLO(ctx, tx, now, c, sils)
		if err != nil {
			return 0, err
		}
		enqueued += n
	}
	for _, o := range orphans {
		ev, n, err := resolve(ctx, tx, nil, o.alertID, nil, nil, now, o.reason)
		if err != nil {
			return 0, err
		}
		enqueued += n
		if ev != nil {
			alertsCounter(stateResolved, ev.Severity).Inc()
		}
	}
	b := &pgx.Batch{}
	for fp, s := range pend {
		if !s.dirty {
			continue
		}
		var last *time.Time
		if !s.LastWindow.IsZero() {
			l := s.LastWindow
			last = &l
		}
		var aid *string
		if s.AlertID != "" {
			a := s.AlertID
			aid = &a
		}
		b.Queue(`INSERT INTO analytics_alert_state (fingerprint, rule_id, service, consecutive, last_window_start, firing, alert_id)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (fingerprint) DO UPDATE SET rule_id = EXCLUDED.rule_id, consecutive = EXCLUDED.consecutive,
	last_window_start = EXCLUDED.last_window_start, firing = EXCLUDED.firing, alert_id = EXCLUDED.alert_id`,
			fp, s.ruleID, s.service, s.Consecutive, last, s.Firing, aid)
	}
	for name, c := range cursors {
		b.Queue(`INSERT INTO analytics_alert_state (fingerprint, service, last_window_start) VALUES ($1, '', $2)
ON CONFLICT (fingerprint) DO UPDATE SET last_window_start = EXCLUDED.last_window_start`, cursorPrefix+name, c)
	}
	for _, fp := range drop {
		b.Queue(`DELETE FROM analytics_alert_state WHERE fingerprint = $1`, fp)
	}
	if b.Len() > 0 {
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return 0, fmt.Errorf("write alert state: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("commit alerts: %w", err)
	}
	return enqueued, nil
}
