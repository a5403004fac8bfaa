package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stacklens/stacklens/internal/harness/testenv"
)

// fakeVersions is a versioner the test moves by hand.
type fakeVersions struct {
	v        uint64
	followed bool
}

func (f *fakeVersions) version(string) (uint64, bool) { return f.v, f.followed }

// TestCoalescerFollowsVersions: with changes set, a finished answer is
// reused while the version is the one its read began at, never while
// changes are not followed, and never past the age bound.
func TestCoalescerFollowsVersions(t *testing.T) {
	now := time.Unix(1000, 0)
	vs := &fakeVersions{v: 7, followed: true}
	co := newCoalescer(10*time.Second, func() time.Time { return now })
	co.changes = vs
	n := 0
	get := func() string {
		b, err := co.do("k", "t", func() ([]byte, error) { n++; return []byte(fmt.Sprint(n)), nil })
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	steps := []struct {
		name string
		move func()
		want string
	}{
		{"first read", func() {}, "1"},
		{"same version: reused", func() { now = now.Add(9 * time.Second) }, "1"},
		{"version moved: read again", func() { vs.v++ }, "2"},
		{"reused again", func() {}, "2"},
		{"age bound reached", func() { now = now.Add(10 * time.Second) }, "3"},
		{"not followed: read", func() { vs.followed = false }, "4"},
		{"not followed: read, not kept", func() {}, "5"},
		{"followed again, same version: the unfollowed read was not kept", func() { vs.followed = true }, "6"},
		{"kept now", func() {}, "6"},
	}
	for _, s := range steps {
		s.move()
		if got := get(); got != s.want {
			t.Fatalf("%s: answer %s, want %s", s.name, got, s.want)
		}
	}
	// A read that began before the version moved is not reused after it,
	// even though it finished later.
	vs.v++
	b, _ := co.do("slow", "t", func() ([]byte, error) { vs.v++; return []byte("old"), nil })
	if string(b) != "old" {
		t.Fatal(string(b))
	}
	b, _ = co.do("slow", "t", func() ([]byte, error) { return []byte("new"), nil })
	if string(b) != "new" {
		t.Fatalf("an answer read across a change was reused: %s", b)
	}
}

// TestChangeWatchDown: a watch that cannot connect follows nothing, so
// nothing is reused, and it stops with its context.
func TestChangeWatchDown(t *testing.T) {
	attempts := make(chan struct{}, 100)
	w := newChangeWatch(func(context.Context) (*pgx.Conn, error) {
		attempts <- struct{}{}
		return nil, errors.New("connection refused")
	}, []string{"t"}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.run(ctx) }()
	<-attempts
	<-attempts // it retries
	if _, followed := w.version("t"); followed {
		t.Fatal("followed without a connection")
	}
	cancel()
	<-done
}

// TestAnswersFollowChanges: with API_CACHE_MAX_AGE set, a /metrics,
// /health-status or /alerts answer is reused until the table it reads
// changes, and not after: PostgreSQL's notification at commit, through
// the API's LISTEN connection, drops it. A change made with the trigger
// disabled is invisible to the cache, which shows that answers are in fact
// reused; a change of another table leaves them be; an acknowledgement
// through the replica is visible to its next read; losing the LISTEN
// connection drops every answer read before.
func TestAnswersFollowChanges(t *testing.T) {
	f := newFixture(t, func(c *Config) { withCreds(c); c.API.CacheMaxAge = time.Hour })
	get := func(target string) string { return string(f.mustGetAs(target, bearer(readerKey))) }
	ctx := context.Background()
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := f.db.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	// quietly runs sql on table with the change trigger disabled: no
	// notification.
	quietly := func(table, sql string, args ...any) {
		t.Helper()
		exec(`ALTER TABLE ` + table + ` DISABLE TRIGGER stacklens_notify_change`)
		exec(sql, args...)
		exec(`ALTER TABLE ` + table + ` ENABLE TRIGGER stacklens_notify_change`)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- f.srv.Serve(sctx, ln) }()
	defer func() { cancel(); <-done }()
	w := f.srv.watch
	following := func() {
		t.Helper()
		testenv.Eventually(t, 5*time.Second, func() error {
			if _, ok := w.version(alertsTable); !ok {
				return errors.New("not following changes yet")
			}
			return nil
		})
	}
	// notified runs sql, which changes table, and waits for the
	// notification.
	notified := func(table, sql string, args ...any) {
		t.Helper()
		v0, _ := w.version(table)
		exec(sql, args...)
		testenv.Eventually(t, 5*time.Second, func() error {
			if v, _ := w.version(table); v == v0 {
				return errors.New("no notification of " + table + " yet")
			}
			return nil
		})
	}
	following()
	if _, ok := w.version("analytics_metrics_7min"); ok {
		t.Fatal("a table the replica does not serve is followed")
	}

	const (
		metrics1m = "/metrics?window=1min&service=checkout&limit=1"
		active    = "/alerts?status=active"
		bump      = `UPDATE analytics_metrics_1min SET count = count + $1, latency_p99_ms = latency_p99_ms + $1 WHERE service = 'checkout'
			AND timestamp = (SELECT max(timestamp) FROM analytics_metrics_1min WHERE service = 'checkout')`
		newAlert = `INSERT INTO analytics_alerts (alert_id, fingerprint, rule_name, service, severity,
			status, metric_name, value, threshold, "window", window_start, message, fired_at)
			VALUES ('cache-test', 'cache-fp', 'r', 'checkout', 'critical', 'active', 'error_rate', 50, 5, '1min', now(), 'm', now())`
	)
	count := func(body string) int {
		_, rest, _ := strings.Cut(body, `"count":`)
		_, rest, _ = strings.Cut(rest, `"count":`) // the row's, after the response's
		v, _, _ := strings.Cut(rest, ",")
		return mustInt(t, v)
	}
	first, health, alerts := count(get(metrics1m)), get("/health-status"), get(active)
	metrics5m := get("/metrics?window=5min&limit=3")

	// Unnotified changes stay unseen: the answers are reused.
	quietly("analytics_metrics_1min", bump, 1000)
	quietly("analytics_alerts", newAlert)
	if got := count(get(metrics1m)); got != first {
		t.Fatalf("count %d after an unnotified change, want the reused %d", got, first)
	}
	if get("/health-status") != health || get(active) != alerts {
		t.Fatal("/health-status or /alerts not reused")
	}

	// A notified change of the 1-minute table: its readers read again,
	// the others are left be.
	notified("analytics_metrics_1min", bump, 1)
	if got := count(get(metrics1m)); got != first+1001 {
		t.Fatalf("count %d after a notified change, want %d", got, first+1001)
	}
	if get("/health-status") == health {
		t.Fatal("/health-status reused after its table changed")
	}
	if get(active) != alerts || get("/metrics?window=5min&limit=3") != metrics5m {
		t.Fatal("answers of other tables dropped by a change of analytics_metrics_1min")
	}

	// /alerts: seen once analytics_alerts is notified; an acknowledgement
	// through this replica at once, without waiting for its notification.
	notified("analytics_alerts", `UPDATE analytics_alerts SET message = 'm2' WHERE alert_id = 'cache-test'`)
	got := get(active)
	if !strings.Contains(got, "cache-test") {
		t.Fatalf("new alert not listed after its notification: %s", got)
	}
	var id int64
	if err := f.db.QueryRow(ctx, `SELECT id FROM analytics_alerts WHERE alert_id = 'cache-test'`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	exec(`ALTER TABLE analytics_alerts DISABLE TRIGGER stacklens_notify_change`)
	resp, body := f.request("POST", fmt.Sprintf("/alerts/%d/acknowledge", id), "", bearer(adminKey))
	exec(`ALTER TABLE analytics_alerts ENABLE TRIGGER stacklens_notify_change`)
	if resp.StatusCode != 200 {
		t.Fatalf("acknowledge: %d %s", resp.StatusCode, body)
	}
	if got := get(active); strings.Contains(got, "cache-test") {
		t.Fatalf("acknowledged alert still listed as active by the replica that acknowledged it: %s", got)
	}

	// Losing the LISTEN connection drops what was read before it.
	get(metrics1m)
	v0, _ := w.version("analytics_metrics_1min")
	exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE application_name = 'stacklens-api-changes' AND datname = current_database()`)
	testenv.Eventually(t, 5*time.Second, func() error {
		if v, ok := w.version("analytics_metrics_1min"); !ok || v < v0+2 { // down, up
			return fmt.Errorf("version %d (followed %v): not reconnected yet", v, ok)
		}
		return nil
	})
	following()
	quietly("analytics_metrics_1min", bump, 5)
	if got := count(get(metrics1m)); got != first+1006 {
		t.Fatalf("count %d after the watch reconnected, want %d: an answer from before was reused", got, first+1006)
	}
}

func mustInt(t *testing.T, s string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	return n
}
