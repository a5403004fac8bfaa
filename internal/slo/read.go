package slo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stacklens/stacklens/internal/window"
)

// Querier is what the readers need from a pool, a connection or a
// transaction. The queries of one read go out as one pipelined batch:
// one round trip, however many tables and SLOs it involves.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// queryError is an error a batch callback already put in context.
type queryError struct{ error }

func (e queryError) Unwrap() error { return e.error }

// run sends b's queries in one round trip and runs their callbacks; an
// empty batch sends nothing. An error before any callback ran (a missing
// table fails the batch's prepare step) is wrapped with what.
func run(ctx context.Context, q Querier, b *pgx.Batch, what string) error {
	if b.Len() == 0 {
		return nil
	}
	err := q.SendBatch(ctx, b).Close()
	var qe queryError
	if errors.As(err, &qe) {
		return qe.error
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// Request asks for the counts of one objective over one range.
type Request struct {
	Service *string // nil: every service
	Key     string  // latency_good key; "": availability
	Range   Range
}

func requestOf(d *Definition, r Range) Request {
	return Request{Service: d.Service, Key: d.ThresholdKey(), Range: r}
}

func metricsTable(w window.Window) string { return "analytics_metrics_" + w.Name }

// goodExpr is the good-event count of a metrics row m for the objective
// of request s: count - error_count, or the latency_good counter of the
// threshold. Rows without the threshold's key are filtered out before.
const goodExpr = `CASE WHEN s.key = '' THEN m.count - m.error_count ELSE (m.latency_good ->> s.key)::bigint END`

// seriesSQL sums, per series row s of the arrays, the buckets of one
// metrics table in [s.lo, s.hi] by bucket start (over the services of the
// series): one statement for any number of series, each metrics row read
// once per series however many windows overlap it. A service's series use
// the (service, timestamp) primary key, every-service series the
// timestamp index. It reads only the pre-aggregated table, never
// analytics_events.
func seriesSQL(table string) string {
	return `WITH s AS (
	SELECT * FROM unnest($1::int[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[]) AS s(k, service, key, lo, hi))
SELECT s.k, m.timestamp, sum(m.count)::bigint, sum(` + goodExpr + `)::bigint
FROM s JOIN ` + table + ` m ON m.service = s.service AND m.timestamp >= s.lo AND m.timestamp <= s.hi
WHERE s.service IS NOT NULL AND (s.key = '' OR m.latency_good ? s.key)
GROUP BY s.k, m.timestamp
UNION ALL
SELECT s.k, m.timestamp, sum(m.count)::bigint, sum(` + goodExpr + `)::bigint
FROM s JOIN ` + table + ` m ON m.timestamp >= s.lo AND m.timestamp <= s.hi
WHERE s.service IS NULL AND (s.key = '' OR m.latency_good ? s.key)
GROUP BY s.k, m.timestamp`
}

// series is the objective (service, key) of some requests on one table.
type series struct {
	service string
	all     bool
	key     string
	table   string
}

// bucketSum is one bucket's counts of a series.
type bucketSum struct {
	start time.Time
	c     Counts
}

// Sums answers reqs with one query per metrics table involved: the
// requests of one objective and table share one series of bucket sums
// over the union of their ranges, from which each range is summed here;
// sums[i] answers reqs[i] (zero when no bucket matched).
func Sums(ctx context.Context, q Querier, reqs []Request) ([]Sum, error) {
	var b pgx.Batch
	out := queueSums(&b, reqs)
	if err := run(ctx, q, &b, "sum metrics"); err != nil {
		return nil, err
	}
	return out, nil
}

// queueSums queues Sums' queries on b; the returned sums are filled in
// when b's results are read.
func queueSums(b *pgx.Batch, reqs []Request) []Sum {
	out := make([]Sum, len(reqs))
	type span struct {
		lo, hi time.Time
		w      window.Window
		reqs   []int
	}
	spans := map[series]*span{}
	var order []series
	for i, r := range reqs {
		k := series{key: r.Key, table: r.Range.Window.Name, all: r.Service == nil}
		if r.Service != nil {
			k.service = *r.Service
		}
		sp := spans[k]
		if sp == nil {
			sp = &span{lo: r.Range.First, hi: r.Range.Last, w: r.Range.Window}
			spans[k] = sp
			order = append(order, k)
		}
		if r.Range.First.Before(sp.lo) {
			sp.lo = r.Range.First
		}
		if r.Range.Last.After(sp.hi) {
			sp.hi = r.Range.Last
		}
		sp.reqs = append(sp.reqs, i)
	}
	var tables []window.Window
	byTable := map[string][]series{}
	for _, k := range order {
		if _, ok := byTable[k.table]; !ok {
			tables = append(tables, spans[k].w)
		}
		byTable[k.table] = append(byTable[k.table], k)
	}
	for _, w := range tables {
		ks := byTable[w.Name]
		idx := make([]int32, len(ks))
		svcs := make([]*string, len(ks))
		keys := make([]string, len(ks))
		los := make([]time.Time, len(ks))
		his := make([]time.Time, len(ks))
		for j, k := range ks {
			idx[j], keys[j], los[j], his[j] = int32(j), k.key, spans[k].lo, spans[k].hi
			if !k.all {
				svc := k.service
				svcs[j] = &svc
			}
		}
		table := metricsTable(w)
		b.Queue(seriesSQL(table), idx, svcs, keys, los, his).Query(func(rows pgx.Rows) error {
			buckets := make([][]bucketSum, len(ks))
			var j int32
			var bs bucketSum
			_, err := pgx.ForEachRow(rows, []any{&j, &bs.start, &bs.c.Total, &bs.c.Good}, func() error {
				if int(j) < len(buckets) {
					buckets[j] = append(buckets[j], bs)
				}
				return nil
			})
			if err != nil {
				return queryError{fmt.Errorf("sum %s: %w", table, err)}
			}
			for j, k := range ks {
				for _, i := range spans[k].reqs {
					r := reqs[i].Range
					for _, bk := range buckets[j] {
						if bk.start.Before(r.First) || bk.start.After(r.Last) {
							continue
						}
						out[i].Counts = out[i].Counts.Add(bk.c)
						if out[i].CountedFrom == nil || bk.start.Before(*out[i].CountedFrom) {
							t := bk.start
							out[i].CountedFrom = &t
						}
					}
				}
			}
			return nil
		})
	}
	return out
}

// Evaluation is an SLO's counts at one instant.
type Evaluation struct {
	Period Sum
	Burn   map[time.Duration]Counts
}

// Evaluate reads the counts of defs at now: their periods (unless
// withPeriod is false) and every burn window of theirs, with one query
// per metrics table.
func Evaluate(ctx context.Context, q Querier, defs []Definition, now time.Time, windows []window.Window, withPeriod bool) ([]Evaluation, error) {
	var b pgx.Batch
	evaluations := queueEvaluate(&b, defs, now, windows, withPeriod)
	if err := run(ctx, q, &b, "evaluate slos"); err != nil {
		return nil, err
	}
	return evaluations(), nil
}

// queueEvaluate queues Evaluate's queries on b; the returned function
// assembles the evaluations once b's results were read.
func queueEvaluate(b *pgx.Batch, defs []Definition, now time.Time, windows []window.Window, withPeriod bool) func() []Evaluation {
	type slot struct {
		def int
		win time.Duration // 0: the period
	}
	var reqs []Request
	var slots []slot
	for i := range defs {
		d := &defs[i]
		if withPeriod {
			reqs = append(reqs, requestOf(d, RangeAt(d.Period, now, windows)))
			slots = append(slots, slot{i, 0})
		}
		for _, w := range d.BurnWindows() {
			reqs = append(reqs, requestOf(d, RangeAt(w, now, windows)))
			slots = append(slots, slot{i, w})
		}
	}
	sums := queueSums(b, reqs)
	return func() []Evaluation {
		out := make([]Evaluation, len(defs))
		for i := range out {
			out[i].Burn = map[time.Duration]Counts{}
		}
		for j, s := range slots {
			if s.win == 0 {
				out[s.def].Period = sums[j]
			} else {
				out[s.def].Burn[s.win] = sums[j].Counts
			}
		}
		return out
	}
}

const definitionsSQL = `SELECT id, name, service, objective, latency_threshold_ms, target,
	EXTRACT(epoch FROM period)::float8, burn_alerts, notification_channels, enabled, description
FROM analytics_slos`

// LoadDefinitions reads the SLOs (only id's when id is not nil, only the
// enabled ones when enabledOnly), by id. A stored definition that does not
// validate (written by hand) comes back with its reason in invalid[i]
// ("" when valid) and the default policy when its own cannot be read.
func LoadDefinitions(ctx context.Context, q Querier, id *int64, enabledOnly bool) (defs []Definition, invalid []string, err error) {
	sql := definitionsSQL + ` WHERE ($1::bigint IS NULL OR id = $1) AND (enabled OR NOT $2) ORDER BY id`
	rows, err := q.Query(ctx, sql, id, enabledOnly)
	if err != nil {
		return nil, nil, fmt.Errorf("load slos: %w", err)
	}
	var d Definition
	var periodSec float64
	var policy []byte
	_, err = pgx.ForEachRow(rows, []any{&d.ID, &d.Name, &d.Service, &d.Objective, &d.LatencyThresholdMS, &d.Target,
		&periodSec, &policy, &d.NotificationChannels, &d.Enabled, &d.Description}, func() error {
		def := d
		def.Service = clonePtr(d.Service)
		def.LatencyThresholdMS = clonePtr(d.LatencyThresholdMS)
		def.NotificationChannels = slices.Clone(d.NotificationChannels)
		def.Period = time.Duration(math.Round(periodSec)) * time.Second
		why := ""
		if policy != nil {
			p, perr := ParsePolicy(policy)
			if perr != nil {
				why = perr.Error()
			}
			def.BurnAlerts = p
		}
		if why == "" {
			if verr := def.Validate(); verr != nil {
				why = verr.Error()
			}
		}
		defs = append(defs, def)
		invalid = append(invalid, why)
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("load slos: %w", err)
	}
	return defs, invalid, nil
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

// FiringAlerts reads the open burn-rate alerts of the SLOs ids, by SLO id,
// oldest first.
func FiringAlerts(ctx context.Context, q Querier, ids []int64) (map[int64][]FiringAlert, error) {
	var b pgx.Batch
	out := queueFiringAlerts(&b, ids)
	if err := run(ctx, q, &b, "firing slo alerts"); err != nil {
		return nil, err
	}
	return out, nil
}

// queueFiringAlerts queues FiringAlerts' query on b; the returned map is
// filled in when b's results are read.
func queueFiringAlerts(b *pgx.Batch, ids []int64) map[int64][]FiringAlert {
	out := map[int64][]FiringAlert{}
	b.Queue(`SELECT id, slo_id, slo_burn_alert, fired_at FROM analytics_alerts
WHERE slo_id = ANY($1) AND status IN ('active', 'acknowledged') ORDER BY fired_at, id`, ids).Query(func(rows pgx.Rows) error {
		var a FiringAlert
		var sloID int64
		var entry []byte
		_, err := pgx.ForEachRow(rows, []any{&a.ID, &sloID, &entry, &a.StartedAt}, func() error {
			var e BurnAlert
			if err := json.Unmarshal(entry, &e); err != nil {
				return fmt.Errorf("alert %d: slo_burn_alert: %w", a.ID, err)
			}
			f := FiringAlert{ID: a.ID, Severity: e.Severity, BurnRate: e.BurnRate, Long: e.Long, Short: e.Short, StartedAt: a.StartedAt.UTC()}
			out[sloID] = append(out[sloID], f)
			return nil
		})
		if err != nil {
			return queryError{fmt.Errorf("firing slo alerts: %w", err)}
		}
		return nil
	})
	return out
}

// Statuses reads the status of defs at now: their counts and firing
// alerts, in one round trip whatever the number of SLOs.
func Statuses(ctx context.Context, q Querier, defs []Definition, invalid []string, now time.Time, windows []window.Window) ([]Status, error) {
	var b pgx.Batch
	evaluations := queueEvaluate(&b, defs, now, windows, true)
	ids := make([]int64, len(defs))
	for i := range defs {
		ids[i] = defs[i].ID
	}
	firing := queueFiringAlerts(&b, ids)
	if err := run(ctx, q, &b, "slo statuses"); err != nil {
		return nil, err
	}
	evs := evaluations()
	out := make([]Status, len(defs))
	for i := range defs {
		out[i] = NewStatus(&defs[i], now, windows, evs[i].Period, evs[i].Burn, firing[defs[i].ID])
		if i < len(invalid) {
			out[i].Invalid = invalid[i]
		}
	}
	return out, nil
}

// Point is one point of an SLO's history: the counts of the rolling
// period ending at Time.
type Point struct {
	Time                 time.Time `json:"time"`
	Good                 int64     `json:"good"`
	Total                int64     `json:"total"`
	Compliance           *float64  `json:"compliance"`
	BudgetRemainingRatio *float64  `json:"budget_remaining_ratio"`
}

// ceilDiv is ⌈a/b⌉ for b > 0.
func ceilDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a > 0 {
		q++
	}
	return q
}

// HistoryStep is the spacing of history points for d: one hour, or the
// period's table size when that is longer or does not divide an hour.
func HistoryStep(d *Definition, windows []window.Window) time.Duration {
	g := TableFor(d.Period, windows).Size
	if g <= time.Hour && time.Hour%g == 0 {
		return time.Hour
	}
	return g
}

// History is d's burn-down: a point at every step boundary in [from, to],
// each over the complete buckets of the rolling period before it
// (RangeBefore). One query reads the buckets once; the windows slide in
// memory.
func History(ctx context.Context, q Querier, d *Definition, from, to time.Time, windows []window.Window) (time.Duration, []Point, error) {
	step := HistoryStep(d, windows)
	// In seconds: a Duration since 1970 saturates after 2262.
	stepSec := int64(step / time.Second)
	first := time.Unix(ceilDiv(from.Unix(), stepSec)*stepSec, 0).UTC()
	points := []Point{}
	if first.After(to) {
		return step, points, nil
	}
	lo := RangeBefore(d.Period, first, windows)
	hi := RangeBefore(d.Period, to, windows)
	w := lo.Window
	rows, err := q.Query(ctx, `WITH s AS (SELECT $1::text AS service, $2::text AS key)
SELECT m.timestamp, sum(m.count)::bigint, sum(`+goodExpr+`)::bigint
FROM s JOIN `+metricsTable(w)+` m ON (s.service IS NULL OR m.service = s.service)
WHERE m.timestamp >= $3 AND m.timestamp <= $4 AND (s.key = '' OR m.latency_good ? s.key)
GROUP BY m.timestamp ORDER BY m.timestamp`, d.Service, d.ThresholdKey(), lo.First, hi.Last)
	if err != nil {
		return 0, nil, fmt.Errorf("slo history: %w", err)
	}
	type bucket struct {
		start time.Time
		c     Counts
	}
	var bs []bucket
	var b bucket
	if _, err := pgx.ForEachRow(rows, []any{&b.start, &b.c.Total, &b.c.Good}, func() error {
		bs = append(bs, b)
		return nil
	}); err != nil {
		return 0, nil, fmt.Errorf("slo history: %w", err)
	}
	// Two cursors over the buckets sorted by start: [i, j) is the window.
	var win Counts
	i, j := 0, 0
	for t := first; !t.After(to); t = t.Add(step) {
		r := RangeBefore(d.Period, t, windows)
		for j < len(bs) && !bs[j].start.After(r.Last) {
			win = win.Add(bs[j].c)
			j++
		}
		for i < j && bs[i].start.Before(r.First) {
			win = win.Add(Counts{-bs[i].c.Good, -bs[i].c.Total})
			i++
		}
		p := Point{Time: t, Good: win.Good, Total: win.Total, Compliance: Compliance(win)}
		p.BudgetRemainingRatio = ErrorBudget(win, d.Target).RemainingRatio
		points = append(points, p)
	}
	return step, points, nil
}
