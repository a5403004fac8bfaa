package alerting

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/window"
)

func TestDueAndMissingWindows(t *testing.T) {
	w := window.MustParse("1min")
	t0 := time.Date(2026, 11, 29, 1, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		now   time.Duration // after t0
		grace time.Duration
		due   time.Duration // after t0
	}{
		{90 * time.Second, 30 * time.Second, 0},               // [01:00, 01:01) ended 30 s ago: over
		{89 * time.Second, 30 * time.Second, -time.Minute},    // not yet
		{2*time.Minute + 29*time.Second, 30 * time.Second, 0}, // [01:01, 01:02) ends + grace at 01:02:30
		{2*time.Minute + 30*time.Second, 30 * time.Second, time.Minute},
		{61 * time.Second, 0, 0},
	} {
		if got := DueWindow(w, t0.Add(c.now), c.grace); !got.Equal(t0.Add(c.due)) {
			t.Errorf("DueWindow(now=t0+%s, grace %s) = %s, want t0+%s", c.now, c.grace, got, c.due)
		}
	}
	for _, c := range []struct {
		last, due int
		want      int
	}{{0, 0, 0}, {0, 1, 1}, {0, 3, 3}, {5, 3, 0}, {3, 3, 0}} {
		if got := MissingWindows(t0.Add(time.Duration(c.last)*time.Minute), t0.Add(time.Duration(c.due)*time.Minute), time.Minute); got != c.want {
			t.Errorf("MissingWindows(%d, %d) = %d, want %d", c.last, c.due, got, c.want)
		}
	}
}

// TestEvaluateNoDataTimeline drives the no_data state machine along a fake
// clock: each step is (minutes since t0 of the service's newest row, -1 for
// none in the lookback; the clock in minutes since t0). The due window is
// computed from the clock as the engine does (grace 30 s).
func TestEvaluateNoDataTimeline(t *testing.T) {
	w := window.MustParse("1min")
	t0 := time.Date(2026, 11, 29, 1, 0, 0, 0, time.UTC)
	grace := 30 * time.Second
	type at struct {
		last int     // newest row's window, minutes after t0; -1: none
		now  float64 // clock, minutes after t0
	}
	cases := []struct {
		name    string
		n       int
		steps   []at
		want    string // per step: . none, F fire, R resolve
		firstAt int    // fire: the first missing window the alert id derives from
	}{
		// Sending every minute: the newest row is always the open window.
		{"steady service never fires", 2, []at{{0, 0.5}, {1, 1.5}, {2, 2.5}, {3, 3.5}, {4, 4.5}}, ".....", 0},
		// Last row at window 0; windows 1 and 2 are over at 03:30 (+grace).
		{"fires after N missing windows", 2, []at{{0, 1}, {0, 2.4}, {0, 2.6}, {0, 3.4}, {0, 3.6}, {0, 10}}, "....F.", 1},
		{"N=1 fires once one window is missing", 1, []at{{0, 1}, {0, 2.5}}, ".F", 1},
		// Returns with a row in the open window: resolves at once.
		{"resolves when data returns", 2, []at{{0, 3.5}, {0, 4}, {4, 4.2}, {5, 5.5}}, "F.R.", 1},
		// A late row for an old window shortens the gap: still N missing
		// keeps it firing, fewer resolves (as any rule: the condition no
		// longer holds).
		{"a late row leaving N missing keeps it firing", 2, []at{{0, 4.5}, {1, 5}, {1, 5.5}, {6, 6.2}}, "F..R", 1},
		{"a late row leaving fewer than N missing resolves", 3, []at{{0, 4.5}, {1, 5}}, "FR", 1},
		{"never seen in the lookback: no alert", 1, []at{{-1, 5}, {-1, 50}}, "..", 0},
		// Firing, then the last row ages out of the lookback: still firing.
		{"gone for good keeps firing", 2, []at{{0, 5}, {-1, 60}, {-1, 120}, {120, 120.3}}, "F..R", 1},
		// A new gap is a new alert (another first missing window).
		{"second outage is a new alert", 1, []at{{0, 2.5}, {2, 2.7}, {2, 4.5}}, "FRF", 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := Rule{ID: 9, Name: "quiet", Metric: MetricNoData, ForWindows: c.n, Window: "1min"}
			fp := Fingerprint(9, "svc")
			var st State
			var got strings.Builder
			var firedID string
			for _, s := range c.steps {
				var last time.Time
				if s.last >= 0 {
					last = t0.Add(time.Duration(s.last) * time.Minute)
				}
				now := t0.Add(time.Duration(s.now * float64(time.Minute)))
				step := EvaluateNoData(&r, fp, w.Size, st, last, DueWindow(w, now, grace))
				switch step.Transition {
				case Fire:
					got.WriteByte('F')
					if step.AlertID != step.Next.AlertID || !step.Next.Firing || !step.Changed {
						t.Errorf("fire step %+v", step)
					}
					firedID = step.AlertID
				case Resolve:
					got.WriteByte('R')
					if step.AlertID != st.AlertID || step.Next.Firing || step.Next.AlertID != "" {
						t.Errorf("resolve step %+v from %+v", step, st)
					}
				default:
					got.WriteByte('.')
					if step.Next.Firing != st.Firing || step.Next.AlertID != st.AlertID {
						t.Errorf("no transition but firing/id changed: %+v → %+v", st, step.Next)
					}
				}
				// Re-evaluating the same moment is a no-op (idempotent cycles).
				again := EvaluateNoData(&r, fp, w.Size, step.Next, last, DueWindow(w, now, grace))
				if again.Transition != None || again.Changed {
					t.Errorf("re-evaluation at %v: %+v", s, again)
				}
				st = step.Next
			}
			if got.String() != c.want {
				t.Fatalf("transitions %q, want %q", got.String(), c.want)
			}
			if strings.Contains(c.want, "F") {
				if want := AlertID(fp, t0.Add(time.Duration(c.firstAt)*time.Minute)); firedID != want {
					t.Fatalf("last alert id %s, want the one of first missing window %d (%s)", firedID, c.firstAt, want)
				}
			}
		})
	}
}

func TestNoDataRuleValidates(t *testing.T) {
	r := Rule{Name: "quiet", Metric: MetricNoData, Operator: ">", Severity: "warning", Window: "1min", ForWindows: 3}
	if err := r.Validate([]string{"1min"}); err != nil {
		t.Fatal(err)
	}
}

// TestNoDataRuleFiresAndResolvesOnce runs a no_data rule through the engine
// on PostgreSQL with a fake clock: a service that stops sending fires one
// alert (Kafka and Slack) after for_windows missing windows, a steady one
// does not, a silenced one is recorded but not sent, and the alert resolves
// once when the service's data returns; further cycles send nothing more.
func TestNoDataRuleFiresAndResolvesOnce(t *testing.T) {
	f := newFixture(t)
	var id int64
	if err := f.db.QueryRow(f.ctx, `INSERT INTO analytics_alert_rules (rule_name, metric_name, operator, threshold,
	for_windows, severity, notification_channels, "window") VALUES ('Quiet', 'no_data', '>', 0, 2, 'critical', '{slack}', '1min')
	RETURNING id`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	f.exec(`INSERT INTO analytics_alert_silences (service, starts_at, ends_at) VALUES ('muted', now() - interval '1 hour', now() + interval '1 hour')`)
	var clock atomic.Int64
	at := func(min float64) { clock.Store(f.base.Add(time.Duration(min * float64(time.Minute))).UnixNano()) }
	at(3.5) // windows 0..2 are over (grace 30 s)
	e := f.engine(f.config(), Deps{})
	e.now = func() time.Time { return time.Unix(0, clock.Load()) }
	for _, svc := range []string{"steady", "gone", "muted"} {
		for i := 0; i <= 2; i++ {
			f.window(svc, i, 0)
		}
	}
	f.start(e)
	f.waitCycles(e, 2)
	if n := f.int(`SELECT count(*) FROM analytics_alerts`); n != 0 {
		t.Fatalf("%d alerts while every service is current", n)
	}

	// One window missing (3): not yet.
	f.window("steady", 3, 0)
	at(4.5)
	f.waitCycles(e, 2)
	if n := f.int(`SELECT count(*) FROM analytics_alerts`); n != 0 {
		t.Fatalf("%d alerts after one missing window with for_windows=2", n)
	}
	// Two windows missing (3, 4) for gone and muted; steady keeps sending.
	f.window("steady", 4, 0)
	at(5.5)
	f.waitCounts(1, 1, 0, 0)
	fp := Fingerprint(id, "gone")
	m := f.messages()[0]
	wantID := AlertID(fp, f.base.Add(3*time.Minute))
	if m.State != "firing" || m.AlertID != wantID || m.Service != "gone" || m.Metric != MetricNoData ||
		*m.Value != 2 || *m.Threshold != 2 || !m.WindowStart.Equal(f.base.Add(3*time.Minute)) ||
		!strings.Contains(m.Message, "no data from service gone") {
		t.Fatalf("firing message %+v (want id %s)", m, wantID)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := f.int(`SELECT count(*) FROM analytics_alerts WHERE service = 'muted' AND message LIKE '%silenced%'`); n != 1 {
			return fmt.Errorf("%d silenced alerts for muted", n)
		}
		return nil
	})
	if n := f.int(`SELECT count(*) FROM analytics_alerts WHERE service = 'steady'`); n != 0 {
		t.Fatalf("steady service alerted")
	}

	// Still away, more windows pass: nothing new.
	f.window("steady", 5, 0)
	f.window("steady", 6, 0)
	at(7.5)
	f.waitCycles(e, 3)
	if n := f.int(`SELECT count(*) FROM analytics_alert_outbox`); n != 2 {
		t.Fatalf("%d outbox rows while still firing, want 2", n)
	}

	// gone comes back (a row in the open window 7): resolved once, within
	// the rescan interval although no window boundary passes.
	f.window("gone", 7, 0)
	at(7.5 + noDataRescan.Minutes() + 0.01)
	f.waitCounts(2, 2, 0, 0)
	r := f.messages()[1]
	if r.State != "resolved" || r.AlertID != wantID || r.ResolvedAt == nil {
		t.Fatalf("resolved message %+v", r)
	}
	f.waitCycles(e, 3)
	f.waitCounts(2, 2, 0, 0)
	if n := f.int(`SELECT count(*) FROM analytics_alerts WHERE status = 'resolved' AND service = 'gone'`); n != 1 {
		t.Fatalf("%d resolved alerts for gone", n)
	}
}
