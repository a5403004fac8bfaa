package projections

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/window"
)

// TestRetention: the projections run analytics_archive_old_data() at start
// and then periodically; it removes what is older than RETENTION_HOT (raw
// events), RETENTION_WARM (1min) and RETENTION_COLD (5min, 1hour) and
// nothing else.
func TestRetention(t *testing.T) {
	h := newHarness(t, "", nil)
	insert := func(age time.Duration) {
		t.Helper()
		ts := time.Now().Add(-age)
		if _, err := h.pool.Exec(h.ctx, `INSERT INTO analytics_events (stream_seq, timestamp, service, level, latency_ms)
			VALUES ((SELECT coalesce(max(stream_seq), 0) + 1 FROM analytics_events), $1, 's', 'info', 1)`, ts); err != nil {
			t.Fatal(err)
		}
		for _, table := range []string{"analytics_metrics_1min", "analytics_metrics_5min", "analytics_metrics_1hour"} {
			if _, err := h.pool.Exec(h.ctx, `INSERT INTO `+table+` (service, timestamp) VALUES ('s', $1)`, ts.Truncate(time.Hour)); err != nil {
				t.Fatal(err)
			}
		}
	}
	day := 24 * time.Hour
	insert(2 * day)  // past hot (1 day): event goes
	insert(10 * day) // past warm (7 days): 1min goes too
	insert(40 * day) // past cold (30 days): everything goes
	insert(time.Hour)
	counts := func() map[string]int {
		out := map[string]int{}
		for _, table := range []string{"analytics_events", "analytics_metrics_1min", "analytics_metrics_5min", "analytics_metrics_1hour"} {
			var n int
			if err := h.pool.QueryRow(h.ctx, `SELECT count(*) FROM `+table).Scan(&n); err != nil {
				t.Fatal(err)
			}
			out[table] = n
		}
		return out
	}
	h.start(Options{DisableEvents: true, DisableMetrics: true, RetentionInterval: 100 * time.Millisecond})
	want := map[string]int{"analytics_events": 1, "analytics_metrics_1min": 2, "analytics_metrics_5min": 3, "analytics_metrics_1hour": 3}
	testenv.Eventually(t, 10*time.Second, func() error {
		got := counts()
		for k, v := range want {
			if got[k] != v {
				return errorString(k + " not trimmed yet")
			}
		}
		return nil
	})
	// Direct call, and a second run later that finds the new old row.
	insert(3 * day)
	testenv.Eventually(t, 10*time.Second, func() error {
		if counts()["analytics_events"] != 1 {
			return errorString("periodic run did not happen")
		}
		return nil
	})
	removed, err := ArchiveOldData(h.ctx, h.pool)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 8 {
		t.Fatalf("removed: %+v", removed)
	}
}

// TestRunErrors: bad dependencies fail fast with a clear error.
func TestRunErrors(t *testing.T) {
	ctx := testenv.Context(t)
	if err := Run(ctx, Deps{}); err == nil {
		t.Error("no configuration: want an error")
	}
	cfg := testenv.Config(t, map[string]string{"AGGREGATION_WINDOWS": "1min"})
	cfg.Pipeline.WindowList = nil // as if Validate was never called
	if err := Run(ctx, Deps{Config: cfg}); !errors.Is(err, config.ErrNotValidated) {
		t.Errorf("unvalidated windows: %v, want ErrNotValidated", err)
	}
	cfg = testenv.Config(t, map[string]string{"NATS_URL": "nats://127.0.0.1:1"})
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := Run(cctx, Deps{Config: cfg}); err == nil {
		t.Error("NATS unreachable: want an error when ctx ends")
	}
	// A zero DB_POOL_MAX is refused, not replaced by pgx's default.
	if _, err := OpenPool(ctx, "postgres://127.0.0.1:1/x", 1, 0); err == nil || !strings.Contains(err.Error(), "DB_POOL_MAX") {
		t.Errorf("zero DB_POOL_MAX: %v", err)
	}
	if _, err := OpenPool(ctx, "postgres://%zz", 1, 2); err == nil {
		t.Error("bad DSN: want an error")
	}
	if _, err := MetricsTable(window.Window{Name: "1 min"}); err == nil {
		t.Error("bad window name: want an error")
	}
}

// TestAsWriterRole: the projections need no more than stacklens_writer's
// rights (upserts, the staging table, COPY, retention).
func TestAsWriterRole(t *testing.T) {
	h := newHarness(t, "", nil)
	sep := "?"
	if strings.Contains(h.dsn, "?") {
		sep = "&"
	}
	pool, err := OpenPool(h.ctx, h.dsn+sep+"options="+strings.ReplaceAll(url.QueryEscape("-c role=stacklens_writer"), "+", "%20"), 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var role string
	if err := pool.QueryRow(h.ctx, `SELECT current_user`).Scan(&role); err != nil || role != "stacklens_writer" {
		t.Fatalf("current_user %q, %v", role, err)
	}
	wr := NewWriter(pool)
	w := h.wins[0]
	a := mkAgg(rand.New(rand.NewPCG(1, 1)), "writer", w, w.Start(time.Now()).Unix(), 3, true)
	if _, err := wr.UpsertMetrics(h.ctx, w, []MetricRow{RowOf(a, w)}); err != nil {
		t.Fatal(err)
	}
	a.Version++
	if n, err := wr.UpsertMetrics(h.ctx, w, []MetricRow{RowOf(a, w)}); err != nil || n != 1 {
		t.Fatal(n, err)
	}
	ev := []EventRow{{Seq: 1, Time: time.Now(), Service: "writer", Level: "info", LatencyMS: 1, Payload: []byte(`{}`)}}
	for range 2 { // fast path, then the staging path
		if _, err := wr.InsertEvents(h.ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ArchiveOldData(h.ctx, pool); err != nil {
		t.Fatal(err)
	}
}
