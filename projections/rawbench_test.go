package projections

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/harness/loadgen"
	"github.com/stacklens/stacklens/internal/natsutil"
	"github.com/stacklens/stacklens/internal/window"
)

// TestBenchRawEvents (STACKLENS_BENCH=1) measures what a raw event costs
// in PostgreSQL (docs/PERFORMANCE.md, "Raw events in PostgreSQL"):
//
//   - bytes: loadgen events (as the bridge publishes them: same subject
//     and headers) are projected by the events projector; then the table,
//     each index and every column (pg_column_size) are divided by the rows
//     and set against the original message size;
//   - CPU: the events projector draining the stream (fetch, decode, COPY,
//     acks) — CPU of this process (projector and the in-process NATS
//     server; the profile, STACKLENS_BENCH_PROFILE=dir, splits them) and of
//     the PostgreSQL server (postmaster and its backends, /proc) — next to
//     the ceiling of the same run: bare pgx CopyFrom of metric-shaped rows
//     (the bench's "pgx CopyFrom" ceiling: the 21 columns of
//     analytics_metrics_1min, batches of 500, no indexes), measured the same way.
//
// STACKLENS_BENCH_EVENTS sets the number of events (default 100 000),
// STACKLENS_BENCH_TS=us truncates their timestamps to microseconds.
func TestBenchRawEvents(t *testing.T) {
	if os.Getenv("STACKLENS_BENCH") != "1" {
		t.Skip("set STACKLENS_BENCH=1 to measure")
	}
	total := 100_000
	if s := os.Getenv("STACKLENS_BENCH_EVENTS"); s != "" {
		total = must(strconv.Atoi(s))
	}
	h := newHarness(t, "", nil)
	pgPID := postmasterPID(t, h)
	if ddl := os.Getenv("STACKLENS_BENCH_DDL"); ddl != "" { // what-if for the schema
		if _, err := h.pool.Exec(h.ctx, ddl); err != nil {
			t.Fatal(err)
		}
		t.Logf("schema what-if: %s", ddl)
	}

	// The stream: loadgen events with the bridge's subject and headers.
	gen := loadgen.NewGenerator(7, 20, time.Now())
	// STACKLENS_BENCH_TS=us: timestamps at microseconds (loadgen writes
	// time.Now()'s nanoseconds, which the lean payload must keep).
	clock := time.Now
	if os.Getenv("STACKLENS_BENCH_TS") == "us" {
		clock = func() time.Time { return time.Now().Truncate(time.Microsecond) }
	}
	var msgBytes int64
	var lastSeq uint64
	for i := 0; i < total; {
		var futs []jetstream.PubAckFuture
		for j := 0; j < 1000 && i < total; i, j = i+1, j+1 {
			data, ev := gen.Next(nil, clock())
			m := nats.NewMsg(natsutil.EventSubject(event.Shard(ev.Service, 16), ev.Service))
			m.Data = data
			m.Header.Set(natsutil.HdrKafkaTopic, "stacklens-analytics")
			m.Header.Set(natsutil.HdrKafkaPartition, strconv.Itoa(i%12))
			m.Header.Set(natsutil.HdrKafkaOffset, strconv.Itoa(i/12))
			m.Header.Set(natsutil.HdrKafkaKey, ev.Service)
			m.Header.Set(natsutil.HdrKafkaTime, strconv.FormatInt(ev.Time.UnixMilli(), 10))
			msgBytes += int64(len(data))
			f, err := h.js.PublishMsgAsync(m)
			if err != nil {
				t.Fatal(err)
			}
			futs = append(futs, f)
		}
		for _, f := range futs {
			select {
			case a := <-f.Ok():
				lastSeq = max(lastSeq, a.Sequence)
			case err := <-f.Err():
				t.Fatal(err)
			case <-time.After(30 * time.Second):
				t.Fatal("publish timed out")
			}
		}
	}
	msgAvg := float64(msgBytes) / float64(total)

	// Ceiling: bare CopyFrom of metric-shaped rows, no indexes.
	if _, err := h.pool.Exec(h.ctx, `CREATE TABLE scratch_ceiling (LIKE analytics_metrics_1min INCLUDING DEFAULTS)`); err != nil {
		t.Fatal(err)
	}
	w := window.MustParse("1min")
	cols := strings.Split(strings.Join(strings.Fields(metricCols), ""), ",")
	r := rand.New(rand.NewPCG(1, 2))
	base := w.Start(time.Now()).Unix()
	mrows := make([][]any, total)
	for i := range mrows {
		a := RowOf(mkAgg(r, "service-"+strconv.Itoa(i%5000), w, base-int64(i/5000)*60, 1, true), w)
		var ravg, rmax *float64
		if a.RiskCount > 0 {
			ravg, rmax = &a.RiskScoreAvg, &a.RiskScoreMax
		}
		mrows[i] = []any{a.Service, a.Timestamp, a.Count, a.ErrorCount, a.WarningCount, a.ErrorRate,
			a.ThroughputPerSec, a.LatencyAvgMS, a.LatencyMinMS, a.LatencyMaxMS, a.LatencyP50MS,
			a.LatencyP95MS, a.LatencyP99MS, ravg, rmax, a.LatencySum, a.LatencySqSum, a.RiskSum,
			a.Final, a.Version, a.LastSeq, a.LatencyGood}
	}
	ceil := measure(t, pgPID, "ceiling", func() {
		for i := 0; i < total; i += 500 {
			b := mrows[i:min(i+500, total)]
			if _, err := h.pool.CopyFrom(h.ctx, pgx.Identifier{"scratch_ceiling"}, cols, pgx.CopyFromRows(b)); err != nil {
				t.Fatal(err)
			}
		}
	})

	// The events projector draining the stream.
	var stop func()
	proj := measure(t, pgPID, "events", func() {
		stop = h.start(Options{DisableMetrics: true, RetentionInterval: -1})
		deadline := time.Now().Add(10 * time.Minute)
		for {
			c, err := h.js.Consumer(h.ctx, natsutil.StreamEvents, "stacklens_projections_events")
			if err == nil {
				if info, err := c.Info(h.ctx); err == nil && info.AckFloor.Stream >= lastSeq {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatal("the projector did not drain the stream")
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	stop()
	var rows int64
	if err := h.pool.QueryRow(h.ctx, `SELECT count(*) FROM analytics_events`).Scan(&rows); err != nil || rows != int64(total) {
		t.Fatalf("%d rows (%v), want %d", rows, err, total)
	}

	// Bytes per row: table (main fork), each index, everything.
	if _, err := h.pool.Exec(h.ctx, `VACUUM ANALYZE analytics_events`); err != nil {
		t.Fatal(err)
	}
	var heap, all int64
	if err := h.pool.QueryRow(h.ctx, `SELECT pg_relation_size('analytics_events'), pg_total_relation_size('analytics_events')`).Scan(&heap, &all); err != nil {
		t.Fatal(err)
	}
	per := func(b int64) float64 { return float64(b) / float64(rows) }
	t.Logf("SUMMARY bytes: %d events, message %.1f B; table %.1f B/row; total with indexes %.1f B/row = %.2f × message",
		rows, msgAvg, per(heap), per(all), per(all)/msgAvg)
	idx, err := h.pool.Query(h.ctx, `SELECT c.relname, pg_relation_size(c.oid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
	    WHERE i.indrelid = 'analytics_events'::regclass ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	var name string
	var size int64
	if _, err := pgx.ForEachRow(idx, []any{&name, &size}, func() error {
		t.Logf("SUMMARY bytes: index %s %.1f B/row", name, per(size))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	colNames := strings1(t, h, `SELECT attname FROM pg_attribute WHERE attrelid = 'analytics_events'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`)
	var sel []string
	for _, c := range colNames {
		sel = append(sel, fmt.Sprintf(`round(avg(coalesce(pg_column_size(%s), 0)), 1)::text`, pgx.Identifier{c}.Sanitize()))
	}
	var tupAvg string
	var colAvg = make([]string, len(sel))
	dest := []any{&tupAvg}
	for i := range colAvg {
		dest = append(dest, &colAvg[i])
	}
	if err := h.pool.QueryRow(h.ctx, `SELECT round(avg(pg_column_size(e.*)), 1)::text, `+strings.Join(sel, ", ")+
		` FROM analytics_events e TABLESAMPLE SYSTEM (10)`).Scan(dest...); err != nil {
		t.Fatal(err)
	}
	var parts []string
	for i, c := range colNames {
		parts = append(parts, c+" "+colAvg[i])
	}
	t.Logf("SUMMARY bytes: row datum %s B (sample); columns: %s", tupAvg, strings.Join(parts, ", "))

	t.Logf("SUMMARY cpu: ceiling (CopyFrom, 21 cols, no indexes): %s", ceil.per(total))
	t.Logf("SUMMARY cpu: events projector: %s", proj.per(total))
	t.Logf("SUMMARY cpu: ratio (process+PostgreSQL CPU per event ÷ per ceiling row) %.2f; wall %.2f",
		(proj.proc+proj.pg).Seconds()/(ceil.proc+ceil.pg).Seconds(), proj.wall.Seconds()/ceil.wall.Seconds())
}

type usage struct{ proc, pg, wall time.Duration }

func (u usage) per(n int) string {
	m := float64(n) / 1e6
	return fmt.Sprintf("%.1f CPU-s per million (process %.1f, PostgreSQL %.1f), wall %.0f ns per row",
		(u.proc+u.pg).Seconds()/m, u.proc.Seconds()/m, u.pg.Seconds()/m, float64(u.wall.Nanoseconds())/float64(n))
}

// measure runs f and returns the CPU of this process (getrusage) and of
// the PostgreSQL server tree (/proc) it took; with STACKLENS_BENCH_PROFILE
// set, it also writes a CPU profile <dir>/<name>.pprof.
func measure(t *testing.T, pgPID int, name string, f func()) usage {
	t.Helper()
	if dir := os.Getenv("STACKLENS_BENCH_PROFILE"); dir != "" {
		fh, err := os.Create(filepath.Join(dir, name+".pprof"))
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		if err := pprof.StartCPUProfile(fh); err != nil {
			t.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	p0, g0, w0 := selfCPU(), treeCPU(pgPID), time.Now()
	f()
	return usage{proc: selfCPU() - p0, pg: treeCPU(pgPID) - g0, wall: time.Since(w0)}
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// postmasterPID is the parent of this test's backend: the shared test
// server (a local child process; with TEST_DATABASE_URL or docker the
// server's CPU cannot be read and is reported as 0).
func postmasterPID(t *testing.T, h *harness) int {
	var pid int
	if err := h.pool.QueryRow(h.ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	st, err := readStat(pid)
	if err != nil {
		t.Logf("PostgreSQL backend %d not readable (%v): server CPU not measured", pid, err)
		return 0
	}
	return st.ppid
}

// treeCPU is the CPU of pid (with its reaped children: the backends that
// exited) and of its live children (backends, walwriter, checkpointer, …).
func treeCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	root, err := readStat(pid)
	if err != nil {
		return 0
	}
	ticks := root.ticks + root.childTicks
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		c, _ := strconv.Atoi(filepath.Base(d))
		if st, err := readStat(c); err == nil && st.ppid == pid {
			ticks += st.ticks
		}
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}

type stat struct {
	ppid              int
	ticks, childTicks int64
}

func readStat(pid int) (stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return stat{}, err
	}
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+2:]))
	if i < 0 || len(f) < 15 {
		return stat{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	num := func(k int) int64 { v, _ := strconv.ParseInt(f[k], 10, 64); return v }
	return stat{ppid: int(num(1)), ticks: num(11) + num(12), childTicks: num(13) + num(14)}, nil
}

func strings1(t *testing.T, h *harness, sql string) []string {
	t.Helper()
	rows, err := h.pool.Query(context.WithoutCancel(h.ctx), sql)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}
