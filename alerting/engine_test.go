package alerting

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/telemetry"
)

func ptr[T any](v T) *T { return &v }

// TestErrorBurstFiresAndResolvesOnce: an error burst for one service fires
// exactly one alert on every channel (after `for` = 2 windows), a value
// between the resolve threshold and the threshold keeps it firing, and the
// recovery resolves it once on every channel. Re-reads and corrections of
// evaluated windows do not fire again.
func TestErrorBurstFiresAndResolvesOnce(t *testing.T) {
	f := newFixture(t)
	ruleID := f.rule("Burst", "error_rate", ">", 20, ptr(10.0), 2, "critical", "slack", "email", "pagerduty")
	e := f.engine(f.config(), Deps{})
	f.start(e)

	f.window("checkout", 0, 1)
	f.window("other", 0, 50) // another service: one breaching window, for=2 → nothing
	f.window("checkout", 1, 30)
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := f.int(`SELECT coalesce(max(consecutive), 0) FROM analytics_alert_state WHERE service = 'checkout'`); n != 1 {
			return fmt.Errorf("consecutive %d", n)
		}
		return nil
	})
	f.waitCycles(e, 2)
	if n := f.int(`SELECT count(*) FROM analytics_alerts`); n != 0 {
		t.Fatalf("%d alerts after one breaching window with for=2", n)
	}
	f.window("checkout", 2, 35)
	f.waitCounts(1, 1, 1, 1)

	fp := Fingerprint(ruleID, "checkout")
	msgs := f.messages()
	m := msgs[0]
	wantID := AlertID(fp, f.base.Add(time.Minute))
	if m.State != "firing" || m.AlertID != wantID || m.Fingerprint != fp || m.Service != "checkout" ||
		m.Rule != "Burst" || m.Severity != "critical" || m.Metric != "error_rate" || *m.Value != 35 ||
		*m.Threshold != 20 || m.Window != "1min" || !m.WindowStart.Equal(f.base.Add(2*time.Minute)) || m.FiredAt.IsZero() {
		t.Fatalf("firing message %+v (want id %s)", m, wantID)
	}
	var status string
	var ruleRef int64
	if err := f.db.QueryRow(f.ctx, `SELECT status, rule_id FROM analytics_alerts WHERE alert_id = $1`, wantID).Scan(&status, &ruleRef); err != nil || status != "active" || ruleRef != ruleID {
		t.Fatalf("alert row: %v %s %d", err, status, ruleRef)
	}
	if txt := f.slack.get(0)["text"].(string); !strings.Contains(txt, "FIRING") || !strings.Contains(txt, "checkout") {
		t.Errorf("slack text %q", txt)
	}
	pd := f.pd.get(0)
	if pd["event_action"] != "trigger" || pd["dedup_key"] != fp || pd["routing_key"] != "R0UTINGKEY" {
		t.Errorf("pagerduty %v", pd)
	}
	payload := pd["payload"].(map[string]any)
	if payload["severity"] != "critical" || payload["source"] != "checkout" || payload["summary"] == "" {
		t.Errorf("pagerduty payload %v", payload)
	}
	mail := f.smtp.get(0)
	if !strings.Contains(mail.data, "Subject: [FIRING critical] Burst - checkout") || len(mail.to) != 2 ||
		mail.auth != "\x00alerts\x00s3cret" || !strings.Contains(mail.data, wantID) {
		t.Errorf("mail %+v", mail)
	}

	// Corrections of evaluated windows (version rises) and a still
	// breaching window: no second alert.
	f.row("checkout", f.base.Add(1*time.Minute), 40, 2)
	f.row("checkout", f.base.Add(2*time.Minute), 45, 2)
	f.window("checkout", 3, 50)
	// Hysteresis: 15 is below the threshold but above the resolve threshold.
	f.window("checkout", 4, 15)
	f.waitCycles(e, 3)
	if n := f.int(`SELECT count(*) FROM analytics_alert_outbox`); n != 4 {
		t.Fatalf("%d outbox rows while firing, want 4", n)
	}
	f.window("checkout", 5, 9)
	f.waitCounts(2, 2, 2, 2)
	r := f.messages()[1]
	if r.State != "resolved" || r.AlertID != wantID || r.ResolvedAt == nil || *r.Value != 9 ||
		!r.WindowStart.Equal(f.base.Add(5*time.Minute)) {
		t.Fatalf("resolved message %+v", r)
	}
	if pd := f.pd.get(1); pd["event_action"] != "resolve" || pd["dedup_key"] != fp {
		t.Errorf("pagerduty resolve %v", pd)
	}
	if !strings.Contains(f.smtp.get(1).data, "[RESOLVED critical]") {
		t.Errorf("resolved mail %q", f.smtp.get(1).data)
	}
	if n := f.int(`SELECT count(*) FROM analytics_alert_outbox WHERE state = 'sent' AND attempts = 1`); n != 8 {
		t.Errorf("%d outbox rows sent once, want 8", n)
	}
	if n := f.int(`SELECT count(*) FROM analytics_alerts WHERE status = 'resolved' AND resolved_at IS NOT NULL`); n != 1 {
		t.Errorf("%d resolved alerts", n)
	}

	// A new burst is a new alert (new id) on the same fingerprint.
	f.window("checkout", 6, 30)
	f.window("checkout", 7, 30)
	f.waitCounts(3, 3, 3, 3)
	if m := f.messages()[2]; m.State != "firing" || m.AlertID == wantID || m.AlertID != AlertID(fp, f.base.Add(6*time.Minute)) {
		t.Errorf("second firing %+v", m)
	}
}

// TestSilencedAlertSendsNothing: an alert fired during a matching silence
// is recorded but nothing is sent, neither firing nor resolved; other
// services are still notified.
func TestSilencedAlertSendsNothing(t *testing.T) {
	f := newFixture(t)
	f.rule("Errors", "error_rate", ">=", 5, nil, 1, "warning", "slack", "email", "pagerduty")
	f.exec(`INSERT INTO analytics_alert_silences (rule_name, service, ends_at, comment)
VALUES ('Errors', 'quiet', now() + interval '1 hour', 'maintenance')`)
	// Non-matching silences: another severity, an expired one, a future one.
	f.exec(`INSERT INTO analytics_alert_silences (service, severity, ends_at) VALUES ('loud', 'critical', now() + interval '1 hour')`)
	f.exec(`INSERT INTO analytics_alert_silences (service, starts_at, ends_at) VALUES ('loud', now() - interval '2 hour', now() - interval '1 hour')`)
	f.exec(`INSERT INTO analytics_alert_silences (service, starts_at, ends_at) VALUES ('loud', now() + interval '1 hour', now() + interval '2 hour')`)
	cfg := f.config()
	cfg.Horizon = time.Hour
	e := f.engine(cfg, Deps{})
	f.start(e)
	e.SilencesChanged(f.ctx, 1, "created")
	f.window("quiet", 0, 50)
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := f.int(`SELECT count(*) FROM analytics_alerts WHERE service = 'quiet' AND message LIKE '%silenced%'`); n != 1 {
			return fmt.Errorf("%d silenced alerts recorded", n)
		}
		return nil
	})
	f.window("quiet", 1, 0)
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := f.int(`SELECT count(*) FROM analytics_alerts WHERE service = 'quiet' AND status = 'resolved'`); n != 1 {
			return fmt.Errorf("%d resolved", n)
		}
		return nil
	})
	f.window("loud", 1, 50) // pagerduty is not in the channels: PD gets nothing? it is listed → 1
	f.waitCounts(1, 1, 1, 1)
	if n := f.int(`SELECT count(*) FROM analytics_alert_outbox o JOIN analytics_alerts a USING (alert_id) WHERE a.service = 'quiet'`); n != 0 {
		t.Errorf("%d outbox rows for the silenced alert", n)
	}
	if m := f.messages()[0]; m.Service != "loud" {
		t.Errorf("message for %s", m.Service)
	}
}

// TestChannelsFollowRuleAndConfig: a rule without channels goes to Kafka
// only; an unconfigured channel is skipped.
func TestChannelsFollowRuleAndConfig(t *testing.T) {
	f := newFixture(t)
	f.rule("KafkaOnly", "latency_p99_ms", ">", 100, nil, 1, "info")
	f.rule("SlackAndPD", "count", "==", 1000, nil, 1, "warning", "slack", "pagerduty")
	cfg := f.config()
	cfg.Alerting.PagerDutyKey = "" // PagerDuty not configured
	e := f.engine(cfg, Deps{})
	f.start(e)
	f.window("api", 0, 0)
	f.waitCounts(2, 1, 0, 0)
	if n := f.int(`SELECT count(*) FROM analytics_alert_outbox WHERE channel = 'pagerduty'`); n != 0 {
		t.Errorf("%d pagerduty rows without PagerDuty configured", n)
	}
}

// TestCrashAfterOutboxWriteDeliversOnceAfterRestart: the engine stops
// between the alert transaction and delivery; the next engine delivers
// every row exactly once and does not fire again.
func TestCrashAfterOutboxWriteDeliversOnceAfterRestart(t *testing.T) {
	f := newFixture(t)
	f.rule("Burst", "error_rate", ">", 20, nil, 1, "critical", "slack", "email", "pagerduty")
	a := f.engine(f.config(), Deps{})
	a.dispatchOff = true
	ctx, cancel := context.WithCancel(f.ctx)
	a.afterCommit = cancel // "crash" right after the commit
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	f.window("checkout", 0, 90)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("engine did not stop")
	}
	if n := f.int(`SELECT count(*) FROM analytics_alert_outbox WHERE state = 'pending' AND attempts = 0`); n != 4 {
		t.Fatalf("%d pending outbox rows, want 4", n)
	}
	if len(f.messages()) != 0 || f.slack.count() != 0 {
		t.Fatal("delivered before the restart")
	}
	b := f.engine(f.config(), Deps{})
	f.start(b)
	f.waitCounts(1, 1, 1, 1)
	f.window("checkout", 1, 95) // still firing: nothing new
	f.waitCycles(b, 3)
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := f.int(`SELECT count(*) FROM analytics_alert_outbox WHERE state = 'sent'`); n != 4 {
			return fmt.Errorf("%d sent", n)
		}
		return nil
	})
	f.waitCounts(1, 1, 1, 1)
	if n := f.int(`SELECT count(*) FROM analytics_alerts`); n != 1 {
		t.Errorf("%d alerts", n)
	}
}

// TestDeliveryRetriesUntilReceiversRecover: Kafka unreachable and a
// webhook answering 500 — the rows stay pending with attempts and errors
// recorded, and are delivered once the receivers are back.
func TestDeliveryRetriesUntilReceiversRecover(t *testing.T) {
	f := newFixture(t)
	f.rule("Burst", "error_rate", ">", 20, nil, 1, "critical", "slack", "pagerduty")
	f.slack.fail.Store(3)
	f.pd.fail.Store(1 << 30) // PagerDuty down until further notice
	cfg := f.config()
	cfg.Kafka.BootstrapServers = []string{deadAddr(t)}
	a := f.engine(cfg, Deps{})
	stop := f.start(a)
	f.window("checkout", 0, 90)
	f.waitCounts(0, 1, 0, 0) // Slack delivered after 3 failures
	testenv.Eventually(t, 15*time.Second, func() error {
		if n := f.int(`SELECT count(*) FROM analytics_alert_outbox WHERE channel IN ('kafka', 'pagerduty')
	AND state = 'pending' AND attempts >= 2 AND last_error <> ''`); n != 2 {
			return fmt.Errorf("%d failing rows", n)
		}
		return nil
	})
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := f.int(`SELECT coalesce(max(attempts), 0) FROM analytics_alert_outbox WHERE channel = 'slack' AND state = 'sent'`); n != 4 {
			return fmt.Errorf("slack attempts %d, want 4", n)
		}
		return nil
	})
	stop()
	f.pd.fail.Store(0)
	b := f.engine(f.config(), Deps{}) // Kafka back (the engine restarted with a working broker)
	f.start(b)
	f.waitCounts(1, 1, 0, 1)
	if n := f.int(`SELECT count(*) FROM analytics_alert_outbox WHERE state = 'sent' AND attempts >= 2`); n < 2 {
		t.Errorf("%d rows sent after retries", n)
	}
}

// TestRuleDeletedResolvesOpenAlert: deleting a rule resolves its open
// alert (resolved notification to the channels that got the firing).
func TestRuleDeletedResolvesOpenAlert(t *testing.T) {
	f := newFixture(t)
	id := f.rule("Burst", "error_rate", ">", 20, nil, 1, "warning", "slack")
	e := f.engine(f.config(), Deps{})
	f.start(e)
	f.window("checkout", 0, 90)
	f.waitCounts(1, 1, 0, 0)
	f.exec(`DELETE FROM analytics_alert_rules WHERE id = $1`, id)
	e.RulesChanged(f.ctx, id, "deleted")
	f.waitCounts(2, 2, 0, 0)
	if m := f.messages()[1]; m.State != "resolved" || !strings.Contains(m.Message, "rule deleted") || m.Value != nil {
		t.Errorf("resolved %+v", m)
	}
	if n := f.int(`SELECT count(*) FROM analytics_alert_state WHERE fingerprint NOT LIKE 'cursor:%'`); n != 0 {
		t.Errorf("%d states left", n)
	}
}

// TestAcknowledgeEnqueuesKafkaAndPagerDuty: the API's acknowledge hook.
func TestAcknowledgeEnqueuesKafkaAndPagerDuty(t *testing.T) {
	f := newFixture(t)
	f.rule("Burst", "error_rate", ">", 20, nil, 1, "critical", "slack", "pagerduty")
	e := f.engine(f.config(), Deps{})
	f.start(e)
	f.window("checkout", 0, 90)
	f.waitCounts(1, 1, 0, 1)
	id := f.messages()[0].AlertID
	tx, err := f.db.Begin(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(f.ctx, `UPDATE analytics_alerts SET status = 'acknowledged', acknowledged_at = now(),
	acknowledged_by = 'alice' WHERE alert_id = $1`, id); err != nil {
		t.Fatal(err)
	}
	if err := e.OnAcknowledge(f.ctx, tx, id); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(f.ctx); err != nil {
		t.Fatal(err)
	}
	f.waitCounts(2, 1, 0, 2)
	if m := f.messages()[1]; m.State != "acknowledged" || m.AcknowledgedBy == nil || *m.AcknowledgedBy != "alice" {
		t.Errorf("ack message %+v", m)
	}
	if pd := f.pd.get(1); pd["event_action"] != "acknowledge" {
		t.Errorf("pagerduty %v", pd)
	}
	// Acknowledged alerts stay open until resolved.
	f.window("checkout", 1, 0)
	f.waitCounts(3, 2, 0, 3)
	tx, err = f.db.Begin(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(f.ctx) //nolint:errcheck
	if err := e.OnAcknowledge(f.ctx, tx, "nope"); err == nil {
		t.Error("acknowledging an unknown alert succeeded")
	}
}

// deadAddr is an address nothing listens on.
func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// TestPagedReadsSameTransaction: more final rows than a page, all written
// by one transaction (one updated_at), are all evaluated.
func TestPagedReadsSameTransaction(t *testing.T) {
	old := rowLimit
	rowLimit = 2
	t.Cleanup(func() { rowLimit = old })
	f := newFixture(t)
	f.rule("Busy", "count", ">=", 1000, nil, 1, "info")
	e := f.engine(f.config(), Deps{})
	f.start(e)
	f.exec(`INSERT INTO analytics_metrics_1min (service, timestamp, count, final, version)
SELECT 'svc-' || i, $1, 1000, true, 1 FROM generate_series(1, 7) i`, f.base)
	f.waitCounts(7, 0, 0, 0)
}

// TestStateLostDoesNotRefire: with analytics_alert_state wiped, the
// windows are evaluated again: the same alert_id is derived and nothing is
// sent twice; an open alert of the fingerprint with another id is adopted
// and resolved later.
func TestStateLostDoesNotRefire(t *testing.T) {
	f := newFixture(t)
	id := f.rule("Burst", "error_rate", ">", 20, nil, 1, "critical", "slack")
	a := f.engine(f.config(), Deps{})
	stop := f.start(a)
	f.window("checkout", 0, 90)
	f.waitCounts(1, 1, 0, 0)
	stop()
	f.exec(`DELETE FROM analytics_alert_state`)
	// An open alert for another service that the state does not know.
	f.exec(`INSERT INTO analytics_alerts (alert_id, fingerprint, rule_id, rule_name, service, severity, metric_name)
VALUES ('manual', $1, $2, 'Burst', 'web', 'critical', 'error_rate')`, Fingerprint(id, "web"), id)
	b := f.engine(f.config(), Deps{})
	f.start(b)
	f.window("web", 1, 90)
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := f.int(`SELECT count(*) FROM analytics_alert_state WHERE firing AND alert_id = 'manual'`); n != 1 {
			return fmt.Errorf("open alert not adopted")
		}
		return nil
	})
	f.window("web", 2, 0)
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := f.int(`SELECT count(*) FROM analytics_alerts WHERE alert_id = 'manual' AND status = 'resolved'`); n != 1 {
			return fmt.Errorf("adopted alert not resolved")
		}
		return nil
	})
	f.waitCycles(b, 2)
	f.waitCounts(1, 1, 0, 0)
	if n := f.int(`SELECT count(*) FROM analytics_alerts`); n != 2 {
		t.Errorf("%d alerts, want 2", n)
	}
}

// TestRunOwnsPool: the package-level Run opens its own pool from
// Config.DB and returns nil when cancelled.
func TestRunOwnsPool(t *testing.T) {
	f := newFixture(t)
	f.rule("Burst", "error_rate", ">", 20, nil, 1, "critical")
	cfg := f.config()
	cfg.DB.URL = f.db.Config().ConnString()
	ctx, cancel := context.WithCancel(f.ctx)
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, Deps{Log: nil}) }()
	f.window("checkout", 0, 90)
	f.waitCounts(1, 0, 0, 0)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	cfg.Kafka.BootstrapServers = nil
	if err := Run(f.ctx, cfg, Deps{}); err == nil {
		t.Fatal("Run without brokers succeeded")
	}
	cfg = f.config()
	cfg.DB.URL = "postgres://%zz"
	if err := Run(f.ctx, cfg, Deps{}); err == nil {
		t.Fatal("Run with a bad DSN succeeded")
	}
}

// TestRecoversFromDatabaseErrors: evaluation fails while a table is
// missing (reported unhealthy) and catches up once it is back.
func TestRecoversFromDatabaseErrors(t *testing.T) {
	f := newFixture(t)
	f.rule("Burst", "error_rate", ">", 20, nil, 1, "critical")
	health := telemetry.NewHealth()
	e := f.engine(f.config(), Deps{Health: health})
	f.start(e)
	f.waitCycles(e, 1)
	f.exec(`ALTER TABLE analytics_alert_silences RENAME TO silences_away`)
	f.window("checkout", 0, 90)
	testenv.Eventually(t, 10*time.Second, func() error {
		st, ok := health.Snapshot(f.ctx)
		if ok || st["alerting"].OK {
			return fmt.Errorf("healthy: %+v", st)
		}
		return nil
	})
	if len(f.messages()) != 0 {
		t.Fatal("alert while the silences are unreadable")
	}
	f.exec(`ALTER TABLE silences_away RENAME TO analytics_alert_silences`)
	f.waitCounts(1, 0, 0, 0)
	testenv.Eventually(t, 10*time.Second, func() error {
		if _, ok := health.Snapshot(f.ctx); !ok {
			return fmt.Errorf("still unhealthy")
		}
		return nil
	})
}

// TestKafkaOutageWhileRunning: the broker refuses produce requests (the
// connection is dropped) while the engine runs; the alert stays pending with
// attempts and errors recorded and is delivered exactly once when Kafka
// recovers, without a restart.
func TestKafkaOutageWhileRunning(t *testing.T) {
	f := newFixture(t)
	if f.kafka.Cluster == nil {
		t.Skip("needs the in-process broker")
	}
	var down atomic.Bool
	down.Store(true)
	var refused atomic.Int64
	f.kafka.Cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		f.kafka.Cluster.KeepControl()
		if down.Load() {
			refused.Add(1)
			return nil, errors.New("broker down"), true
		}
		return nil, nil, false
	})
	f.rule("Burst", "error_rate", ">", 20, nil, 1, "critical", "slack")
	e := f.engine(f.config(), Deps{})
	f.start(e)
	f.window("checkout", 0, 90)
	testenv.Eventually(t, 15*time.Second, func() error {
		if n := f.int(`SELECT count(*) FROM analytics_alert_outbox WHERE channel = 'kafka' AND state = 'pending'
	AND attempts >= 3 AND last_error <> ''`); n != 1 {
			return fmt.Errorf("kafka row not retried yet (%d produce requests refused)", refused.Load())
		}
		return nil
	})
	f.waitCounts(0, 1, 0, 0) // the other channels are independent
	var lastErr string
	_ = f.db.QueryRow(f.ctx, `SELECT last_error FROM analytics_alert_outbox WHERE channel = 'kafka'`).Scan(&lastErr)
	t.Logf("kafka last_error while down: %s", lastErr)
	down.Store(false)
	f.waitCounts(1, 1, 0, 0)
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := f.int(`SELECT count(*) FROM analytics_alert_outbox WHERE channel = 'kafka' AND state = 'sent' AND attempts >= 3`); n != 1 {
			return fmt.Errorf("kafka row not recorded as sent")
		}
		return nil
	})
}
