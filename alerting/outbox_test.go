package alerting

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stacklens/stacklens/internal/window"
)

// TestCorruptBurnAlertEntryFailsTheTransaction: an alert row whose
// slo_burn_alert is not an entry (written by hand) cannot be acknowledged
// or resolved — the error names the column — and nothing is enqueued.
func TestCorruptBurnAlertEntryFailsTheTransaction(t *testing.T) {
	f := newFixture(t)
	f.exec(`INSERT INTO analytics_alerts (alert_id, fingerprint, rule_name, service, severity, metric_name, slo_burn_alert)
VALUES ('alr_bad', 'fp_bad', 'shop availability', 'shop', 'critical', 'burn_rate', '{"severity":"page","long":5}')`)
	tx, err := f.db.Begin(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := EnqueueAcknowledged(f.ctx, tx, "alr_bad"); err == nil || !strings.HasPrefix(err.Error(), "acknowledge alr_bad: slo_burn_alert: ") {
		t.Errorf("acknowledge: %v", err)
	}
	_ = tx.Rollback(f.ctx)
	tx, err = f.db.Begin(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ev, n, err := resolve(f.ctx, tx, nil, "alr_bad", nil, nil, time.Now().UTC(), "test"); err == nil ||
		!strings.HasPrefix(err.Error(), "resolve alert: slo_burn_alert: ") || ev != nil || n != 0 {
		t.Errorf("resolve: %v, %d, %v", ev, n, err)
	}
	_ = tx.Rollback(f.ctx)
	if n := f.int(`SELECT count(*) FROM analytics_alerts WHERE alert_id = 'alr_bad' AND status = 'active'`); n != 1 {
		t.Errorf("the alert is no longer active (%d)", n)
	}
	if n := f.int(`SELECT count(*) FROM analytics_alert_outbox`); n != 0 {
		t.Errorf("%d outbox rows", n)
	}
}

// TestAcknowledgeAndRefire: an acknowledgement goes to Kafka and PagerDuty
// only (the channels that track alert state), stamped now when the row has
// no acknowledgement time yet; firing an episode again after it resolved
// (a re-evaluation of the same windows) adds neither an alert nor outbox
// rows.
func TestAcknowledgeAndRefire(t *testing.T) {
	f := newFixture(t)
	now := time.Now().UTC().Truncate(time.Second)
	ev := &Event{AlertID: "alr_a", Fingerprint: "fp_a", State: stateFiring, Rule: "r", Service: "svc", Severity: "critical",
		Metric: "error_rate", Window: "1min", FiredAt: now, EmittedAt: now}
	tx, err := f.db.Begin(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if id, isNew, n, err := fire(f.ctx, tx, ev, []string{"kafka", "slack", "email", "pagerduty"}); err != nil || id != "alr_a" || !isNew || n != 4 {
		t.Fatalf("fire: %s %v %d %v", id, isNew, n, err)
	}
	before := time.Now().UTC()
	if err := EnqueueAcknowledged(f.ctx, tx, "alr_a"); err != nil {
		t.Fatal(err)
	}
	after := time.Now().UTC()
	if err := tx.Commit(f.ctx); err != nil {
		t.Fatal(err)
	}
	rows, err := f.db.Query(f.ctx, `SELECT channel, payload FROM analytics_alert_outbox WHERE transition = 'acknowledged' ORDER BY channel`)
	if err != nil {
		t.Fatal(err)
	}
	var chans []string
	for rows.Next() {
		var ch string
		var payload []byte
		if err := rows.Scan(&ch, &payload); err != nil {
			t.Fatal(err)
		}
		chans = append(chans, ch)
		var got Event
		if err := json.Unmarshal(payload, &got); err != nil {
			t.Fatal(err)
		}
		if got.State != stateAcknowledged || got.AcknowledgedAt == nil || got.AcknowledgedAt.Before(before) || got.AcknowledgedAt.After(after) {
			t.Errorf("%s acknowledgement %+v, acknowledged at %v, want in [%v, %v]", ch, got, got.AcknowledgedAt, before, after)
		}
	}
	if rows.Err() != nil || strings.Join(chans, ",") != "kafka,pagerduty" {
		t.Fatalf("acknowledged on %v (%v)", chans, rows.Err())
	}

	tx, err = f.db.Begin(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r, _, err := resolve(f.ctx, tx, nil, "alr_a", nil, nil, now.Add(time.Minute), "test"); err != nil || r == nil {
		t.Fatalf("resolve: %v %v", r, err)
	}
	outbox := f.int(`SELECT count(*) FROM analytics_alert_outbox`)
	if id, isNew, n, err := fire(f.ctx, tx, ev, []string{"kafka", "slack"}); err != nil || id != "alr_a" || isNew || n != 0 {
		t.Fatalf("fire again: %s %v %d %v", id, isNew, n, err)
	}
	if err := tx.Commit(f.ctx); err != nil {
		t.Fatal(err)
	}
	if n := f.int(`SELECT count(*) FROM analytics_alerts`); n != 1 {
		t.Errorf("%d alert rows", n)
	}
	if n := f.int(`SELECT count(*) FROM analytics_alert_outbox WHERE transition = 'firing'`); n != 4 {
		t.Errorf("%d firing outbox rows, want the first 4", n)
	}
	if n := f.int(`SELECT count(*) FROM analytics_alert_outbox`); n < outbox {
		t.Errorf("outbox shrank")
	}
}

// TestNoDataForgetsACountWithoutRows: a count of missing windows is reset
// (and saved) when the service has no row left in the lookback and the
// rule is not firing: such a service was never seen and cannot fire.
func TestNoDataForgetsACountWithoutRows(t *testing.T) {
	r := &Rule{ForWindows: 3}
	due := time.Date(2026, 11, 29, 2, 0, 0, 0, time.UTC)
	s := EvaluateNoData(r, "fp", window.MustParse("1min").Size, State{Consecutive: 2}, time.Time{}, due)
	if !s.Changed || s.Transition != None || s.Next.Consecutive != 0 || s.Next.Firing || !s.Next.LastWindow.Equal(due) || s.AlertID != "" {
		t.Fatalf("step %+v", s)
	}
	// Nothing counted: nothing to save.
	if s := EvaluateNoData(r, "fp", time.Minute, State{}, time.Time{}, due); s.Changed || s.Next.Consecutive != 0 {
		t.Fatalf("step from zero %+v", s)
	}
}
