package projections

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stacklens/stacklens/internal/agg"
	"github.com/stacklens/stacklens/internal/window"
)

// MetricRow is one row of analytics_metrics_<window>: the API row of an
// aggregate plus its raw sums and bookkeeping.
type MetricRow struct {
	agg.Row
	LatencySum   float64
	LatencySqSum float64
	RiskSum      float64
	RiskCount    uint64 // 0: risk_score_avg/max are stored as NULL
	LastSeq      int64
	// LatencyGood is the latency_good JSON object: exact good-event
	// counts per SLO latency threshold ({} when none is counted).
	LatencyGood string
}

// RowOf returns the metric row of a, an aggregate of window w.
func RowOf(a *agg.Aggregate, w window.Window) MetricRow {
	return MetricRow{
		Row:          a.Row(w),
		LatencySum:   a.LatencySum,
		LatencySqSum: a.LatencySqSum,
		RiskSum:      a.RiskSum,
		RiskCount:    a.RiskCount,
		LastSeq:      int64(a.LastSeq),
		LatencyGood:  string(a.AppendLatencyGood(nil)),
	}
}

// EventRow is one row of analytics_events.
type EventRow struct {
	Seq       uint64
	Time      time.Time
	Service   string
	Level     string
	LatencyMS float64
	Risk      *float64
	Payload   []byte // JSON object: the members the other columns do not give back (lean.go)
	Partition *int32
	Offset    *int64
}

// Writer writes projection batches to PostgreSQL. Each call is one
// transaction: it either commits entirely or leaves nothing behind.
type Writer struct {
	pool *pgxpool.Pool
	// stageNext > 0: that many more event batches go straight to the
	// staging path (a redelivery run is under way).
	stageNext atomic.Int32
}

// NewWriter returns a writer on pool, which must come from OpenPool (its
// connections carry the staging tables the COPY path uses).
func NewWriter(pool *pgxpool.Pool) *Writer { return &Writer{pool: pool} }

var tableRE = regexp.MustCompile(`^[0-9a-z]+$`)

// MetricsTable is the table of window w's aggregates.
func MetricsTable(w window.Window) (string, error) {
	if !tableRE.MatchString(w.Name) {
		return "", fmt.Errorf("projections: window %q has no metrics table name", w.Name)
	}
	return "analytics_metrics_" + w.Name, nil
}

const metricCols = `service, timestamp, count, error_count, warning_count, error_rate,
	throughput_per_sec, latency_avg_ms, latency_min_ms, latency_max_ms, latency_p50_ms,
	latency_p95_ms, latency_p99_ms, risk_score_avg, risk_score_max, latency_sum,
	latency_sq_sum, risk_sum, final, version, last_seq, latency_good`

// upsertSQL is the multi-row upsert with the version guard (docs/ARCHITECTURE.md §3):
// a row is only overwritten by a strictly newer version, so duplicates and
// out-of-order deliveries are harmless.
func upsertSQL(table string) string {
	var set strings.Builder
	for i, c := range strings.Split(metricCols, ",") {
		c = strings.TrimSpace(c)
		if i < 2 {
			continue
		}
		fmt.Fprintf(&set, "%s = EXCLUDED.%s, ", c, c)
	}
	return `INSERT INTO ` + table + ` AS m (` + metricCols + `, updated_at)
SELECT u.*, now() FROM unnest($1::text[], $2::timestamptz[], $3::bigint[], $4::bigint[],
	$5::bigint[], $6::float8[], $7::float8[], $8::float8[], $9::float8[], $10::float8[],
	$11::float8[], $12::float8[], $13::float8[], $14::float8[], $15::float8[], $16::float8[],
	$17::float8[], $18::float8[], $19::bool[], $20::bigint[], $21::bigint[], $22::jsonb[]) AS u
ON CONFLICT (service, timestamp) DO UPDATE SET ` + set.String() + `updated_at = EXCLUDED.updated_at
WHERE m.version < EXCLUDED.version`
}

// dedupe sorts rows by (service, timestamp) — a fixed lock order, so two
// writers never deadlock — and keeps the highest version of each key (one
// statement must not update a row twice).
func dedupe(rows []MetricRow) []MetricRow {
	slices.SortFunc(rows, func(a, b MetricRow) int {
		return cmp.Or(strings.Compare(a.Service, b.Service), a.Timestamp.Compare(b.Timestamp),
			cmp.Compare(b.Version, a.Version))
	})
	return slices.CompactFunc(rows, func(a, b MetricRow) bool {
		return a.Service == b.Service && a.Timestamp.Equal(b.Timestamp)
	})
}

// UpsertMetrics writes rows of window w in one statement (one transaction)
// and returns how many rows were inserted or updated (rows whose stored
// version is not older are left alone and not counted). rows is not
// modified.
func (wr *Writer) UpsertMetrics(ctx context.Context, w window.Window, rows []MetricRow) (int64, error) {
	table, err := MetricsTable(w)
	if err != nil {
		return 0, err
	}
	rows = dedupe(slices.Clone(rows))
	if len(rows) == 0 {
		return 0, nil
	}
	n := len(rows)
	var (
		svc                                        = make([]string, n)
		ts                                         = make([]time.Time, n)
		cnt, errc, warnc, ver, seq                 = make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		rate, tput, avg, lmin, lmax, p50, p95, p99 = make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n)
		ravg, rmax                                 = make([]*float64, n), make([]*float64, n)
		lsum, lsq, rsum                            = make([]float64, n), make([]float64, n), make([]float64, n)
		final                                      = make([]bool, n)
		good                                       = make([]string, n)
	)
	for i := range rows {
		r := &rows[i]
		svc[i], ts[i] = r.Service, r.Timestamp
		cnt[i], errc[i], warnc[i] = r.Count, r.ErrorCount, r.WarningCount
		rate[i], tput[i] = r.ErrorRate, r.ThroughputPerSec
		avg[i], lmin[i], lmax[i] = r.LatencyAvgMS, r.LatencyMinMS, r.LatencyMaxMS
		p50[i], p95[i], p99[i] = r.LatencyP50MS, r.LatencyP95MS, r.LatencyP99MS
		if r.RiskCount > 0 {
			ravg[i], rmax[i] = &r.RiskScoreAvg, &r.RiskScoreMax
		}
		lsum[i], lsq[i], rsum[i] = r.LatencySum, r.LatencySqSum, r.RiskSum
		final[i], ver[i], seq[i] = r.Final, r.Version, r.LastSeq
		good[i] = r.LatencyGood
		if good[i] == "" {
			good[i] = "{}"
		}
	}
	tag, err := wr.pool.Exec(ctx, upsertSQL(table), svc, ts, cnt, errc, warnc, rate, tput, avg,
		lmin, lmax, p50, p95, p99, ravg, rmax, lsum, lsq, rsum, final, ver, seq, good)
	if err != nil {
		return 0, fmt.Errorf("upsert %s: %w", table, err)
	}
	return tag.RowsAffected(), nil
}

// stageEvents is the per-connection staging table of the COPY path,
// created by OpenPool's AfterConnect and emptied at every commit.
const stageEvents = "stacklens_stage_events"

const createStage = `CREATE TEMP TABLE IF NOT EXISTS ` + stageEvents + ` (
	stream_seq bigint, timestamp timestamptz, service text, level text,
	latency_ms double precision, risk_score double precision, payload json,
	kafka_partition integer, kafka_offset bigint
) ON COMMIT DELETE ROWS`

var eventCols = []string{"stream_seq", "timestamp", "service", "level", "latency_ms",
	"risk_score", "payload", "kafka_partition", "kafka_offset"}

const insertEventsSQL = `INSERT INTO analytics_events (stream_seq, timestamp, service, level,
	latency_ms, risk_score, payload, kafka_partition, kafka_offset)
SELECT stream_seq, timestamp, service, level, latency_ms, risk_score, payload,
	kafka_partition, kafka_offset
FROM ` + stageEvents + ` ORDER BY timestamp, stream_seq
ON CONFLICT (timestamp, stream_seq) DO NOTHING`

// InsertEvents writes raw events idempotently and returns the number of
// new rows. It first tries a plain COPY into analytics_events, which is
// atomic and as fast as PostgreSQL ingests; if any row exists already (a
// redelivery: unique violation) that COPY fails as a whole and the batch
// goes through the idempotent path: COPY into the connection's staging
// table, then INSERT … ON CONFLICT (timestamp, stream_seq) DO NOTHING, in
// one transaction. After a conflict the next batches take the idempotent
// path directly for a while.
//
// Payloads with a \u0000 escape or a surrogate half are normalised first
// (see sanitizeJSON), so that every stored payload converts to jsonb
// (stacklens_event_payload). A payload PostgreSQL refuses (the json
// column checks the syntax) is normalised (see sanitizeJSON) and the
// batch retried; a row that still fails is dropped and counted, so one bad
// row never blocks the stream.
func (wr *Writer) InsertEvents(ctx context.Context, rows []EventRow) (int64, error) {
	rows = dedupeEvents(rows)
	if len(rows) == 0 {
		return 0, nil
	}
	for i := range rows { // rows is our copy
		if needsSanitize(rows[i].Payload) {
			rows[i].Payload = sanitizeJSON(rows[i].Payload)
		}
	}
	sanitize := false
	if wr.stageNext.Load() <= 0 {
		n, err := wr.copyEvents(ctx, rows)
		switch {
		case err == nil:
			return n, nil
		case isUniqueViolation(err):
			wr.stageNext.Store(20)
		case isDataError(err):
			sanitize = true
		default:
			return 0, err
		}
	} else {
		wr.stageNext.Add(-1)
	}
	if !sanitize {
		n, err := wr.insertEvents(ctx, rows)
		if err == nil || !isDataError(err) {
			return n, err
		}
	}
	for i := range rows { // rows is our copy
		rows[i].Payload = sanitizeJSON(rows[i].Payload)
	}
	if n, err := wr.insertEvents(ctx, rows); err == nil || !isDataError(err) {
		return n, err
	}
	// Row by row: keep the good ones.
	var total int64
	for i := range rows {
		n, err := wr.insertEvents(ctx, rows[i:i+1])
		if err != nil && !isDataError(err) {
			return total, err
		}
		if err != nil {
			badMessages.Inc()
			continue
		}
		total += n
	}
	return total, nil
}

// dedupeEvents returns rows without repeated stream sequences (a copy; rows
// is not modified).
func dedupeEvents(rows []EventRow) []EventRow {
	rows = slices.Clone(rows)
	slices.SortFunc(rows, func(a, b EventRow) int { return cmp.Compare(a.Seq, b.Seq) })
	return slices.CompactFunc(rows, func(a, b EventRow) bool { return a.Seq == b.Seq })
}

func eventValues(r *EventRow) []any {
	return []any{int64(r.Seq), r.Time, r.Service, r.Level, r.LatencyMS, r.Risk,
		r.Payload, r.Partition, r.Offset}
}

// copyEvents is the fast path: one COPY straight into analytics_events.
func (wr *Writer) copyEvents(ctx context.Context, rows []EventRow) (int64, error) {
	n, err := wr.pool.CopyFrom(ctx, pgx.Identifier{"analytics_events"}, eventCols, pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
		return eventValues(&rows[i]), nil
	}))
	if err != nil {
		return 0, fmt.Errorf("copy events: %w", err)
	}
	return n, nil
}

func (wr *Writer) insertEvents(ctx context.Context, rows []EventRow) (int64, error) {
	var n int64
	err := pgx.BeginFunc(ctx, wr.pool, func(tx pgx.Tx) error {
		_, err := tx.CopyFrom(ctx, pgx.Identifier{stageEvents}, eventCols, pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
			return eventValues(&rows[i]), nil
		}))
		if err != nil {
			return fmt.Errorf("copy events: %w", err)
		}
		tag, err := tx.Exec(ctx, insertEventsSQL)
		if err != nil {
			return fmt.Errorf("insert events: %w", err)
		}
		n = tag.RowsAffected()
		return nil
	})
	return n, err
}

// isUniqueViolation reports SQLSTATE 23505.
func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// isDataError reports whether err is PostgreSQL refusing the data itself
// (class 22 data exception, class 23 integrity violation): retrying the
// same rows cannot help.
func isDataError(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "22") || strings.HasPrefix(pe.Code, "23"))
}

// sanitizeJSON turns a JSON value into one PostgreSQL's jsonb accepts:
// re-encoded by encoding/json (unpaired surrogates become U+FFFD, numbers
// are kept as written) with NUL characters replaced by U+FFFD, which jsonb
// cannot store. Input that is not JSON is wrapped as {"raw": "<text>"}.
func sanitizeJSON(b []byte) []byte {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		v = map[string]any{"raw": string(b)}
	}
	out, err := json.Marshal(v)
	if err != nil {
		return []byte(`{}`)
	}
	// encoding/json writes NUL as \u0000 and a backslash as \\, so \u0000
	// preceded by an even number of backslashes is a NUL escape.
	var buf []byte
	for i := 0; i < len(out); i++ {
		if out[i] == '\\' && i+1 < len(out) {
			if bytes.HasPrefix(out[i:], []byte(`\u0000`)) {
				buf = append(buf, `\ufffd`...)
				i += 5
				continue
			}
			buf = append(buf, out[i], out[i+1])
			i++
			continue
		}
		buf = append(buf, out[i])
	}
	return buf
}
