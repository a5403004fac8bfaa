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

func (f *fakeVersions) version() (uint64, bool) { return f.v, f.followed }

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
		b, err := co.do("k", func() ([]byte, error) { n++; return []byte(fmt.Sprint(n)), nil })
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
	b, _ := co.do("slow", func() ([]byte, error) { vs.v++; return []byte("old"), nil })
	if string(b) != "old" {
		t.Fatal(string(b))
	}
	b, _ = co.do("slow", func() ([]byte, error) { return []byte("new"), nil })
	if string(b) != "new" {
		t.Fatalf("an answer read across a change was reused: %s", b)
	}
}

// TestMetricsWatchDown: a watch that cannot connect follows nothing, so
// nothing is reused, and it stops with its context.
func TestMetricsWatchDown(t *testing.T) {
	attempts := make(chan struct{}, 100)
	w := newChangeWatch(func(context.Context) (*pgx.Conn, error) {
		attempts <- struct{}{}
		return nil, errors.New("connection refused")
	}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.run(ctx) }()
	<-attempts
	<-attempts // it retries
	if _, followed := w.version(); followed {
		t.Fatal("followed without a connection")
	}
	cancel()
	<-done
}

// TestAnswersFollowChanges: with API_CACHE_MAX_AGE set, a /metrics,
// /health-status or /alerts answer is reused until a table it reads
// changes, and not after: PostgreSQL's notification at commit, through
// the API's LISTEN connection, drops it. A change made with the trigger
// disabled is invisible to the cache, which shows that answers are in fact
// reused; losing the LISTEN connection drops every answer read before,
// and an acknowledgement through the replica is visible to its next read.
func TestAnswersFollowChanges(t *testing.T) {
	f := newFixture(t, func(c *Config) { withCreds(c); c.API.CacheMaxAge = time.Hour })
	get := func(target string) []byte { return f.mustGetAs(target, bearer(readerKey)) }
	ctx := context.Background()
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
			if _, ok := w.version(); !ok {
				return errors.New("not following metrics changes yet")
			}
			return nil
		})
	}
	following()

	const target = "/metrics?window=1min&service=checkout&limit=1"
	count := func(body []byte) string {
		_, rest, _ := strings.Cut(string(body), `"count":`)
		_, rest, _ = strings.Cut(rest, `"count":`) // the row's, after the response's
		v, _, _ := strings.Cut(rest, ",")
		return v
	}
	// quietly changes the newest checkout row with the trigger disabled:
	// no notification.
	quietly := func(delta int) {
		t.Helper()
		if _, err := f.db.Exec(ctx, `ALTER TABLE analytics_metrics_1min DISABLE TRIGGER stacklens_notify_change`); err != nil {
			t.Fatal(err)
		}
		set(t, f, delta)
		if _, err := f.db.Exec(ctx, `ALTER TABLE analytics_metrics_1min ENABLE TRIGGER stacklens_notify_change`); err != nil {
			t.Fatal(err)
		}
	}
	first := count(get(target))
	health := string(get("/health-status"))
	quietly(1000)
	if got := count(get(target)); got != first {
		t.Fatalf("count %s after an unnotified change, want the reused %s", got, first)
	}
	if got := string(get("/health-status")); got != health {
		t.Fatal("/health-status not reused")
	}

	// A notified change: the first read after the notification is fresh.
	v0, _ := w.version()
	set(t, f, 1)
	testenv.Eventually(t, 5*time.Second, func() error {
		if v, _ := w.version(); v == v0 {
			return errors.New("no notification yet")
		}
		return nil
	})
	second := count(get(target))
	if want := fmt.Sprint(mustInt(t, first) + 1001); second != want {
		t.Fatalf("count %s after a notified change, want %s", second, want)
	}

	// /alerts: an alert written elsewhere (the alert engine) is seen once
	// notified; an acknowledgement through this replica at once.
	alerts := string(get("/alerts?status=active"))
	v0, _ = w.version()
	var id int64
	if err := f.db.QueryRow(ctx, `INSERT INTO analytics_alerts (alert_id, fingerprint, rule_name, service, severity,
		status, metric_name, value, threshold, "window", window_start, message, fired_at)
		VALUES ('cache-test', 'cache-fp', 'r', 'checkout', 'critical', 'active', 'error_rate', 50, 5, '1min', now(), 'm', now())
		RETURNING id`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if v, _ := w.version(); v == v0 {
			return errors.New("no notification yet")
		}
		return nil
	})
	if got := string(get("/alerts?status=active")); got == alerts || !strings.Contains(got, "cache-test") {
		t.Fatalf("new alert not listed after its notification: %s", got)
	}
	if _, err := f.db.Exec(ctx, `ALTER TABLE analytics_alerts DISABLE TRIGGER stacklens_notify_change`); err != nil {
		t.Fatal(err)
	}
	resp, body := f.request("POST", fmt.Sprintf("/alerts/%d/acknowledge", id), "", bearer(adminKey))
	if resp.StatusCode != 200 {
		t.Fatalf("acknowledge: %d %s", resp.StatusCode, body)
	}
	if _, err := f.db.Exec(ctx, `ALTER TABLE analytics_alerts ENABLE TRIGGER stacklens_notify_change`); err != nil {
		t.Fatal(err)
	}
	if got := string(get("/alerts?status=active")); strings.Contains(got, "cache-test") {
		t.Fatalf("acknowledged alert still listed as active by the replica that acknowledged it: %s", got)
	}

	// Losing the LISTEN connection drops what was read before it.
	get(target)
	if _, err := f.db.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE application_name = 'stacklens-api-changes' AND datname = current_database()`); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, func() error {
		if v, ok := w.version(); !ok || v < v0+3 { // notification, down, up
			return fmt.Errorf("version %d (followed %v): not reconnected yet", v, ok)
		}
		return nil
	})
	following()
	quietly(5)
	if got, want := count(get(target)), fmt.Sprint(mustInt(t, first)+1006); got != want {
		t.Fatalf("count %s after the watch reconnected, want %s: an answer from before was reused", got, want)
	}
}

// set adds delta to the count of checkout's newest 1-minute row.
func set(t *testing.T, f *fixture, delta int) {
	t.Helper()
	if _, err := f.db.Exec(context.Background(), `UPDATE analytics_metrics_1min SET count = count + $1
		WHERE service = 'checkout' AND timestamp = (SELECT max(timestamp) FROM analytics_metrics_1min WHERE service = 'checkout')`, delta); err != nil {
		t.Fatal(err)
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
