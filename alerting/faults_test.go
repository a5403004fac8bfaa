package alerting

import (
	"encoding/json"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/lease"
	"github.com/stacklens/stacklens/internal/natsutil"
	"github.com/stacklens/stacklens/internal/telemetry"
)

// refuse makes PostgreSQL refuse the given operations on a table (a
// trigger raising an exception); the returned func lifts it.
func (f *fixture) refuse(table, ops string) (lift func()) {
	f.t.Helper()
	fn := "refuse_" + table
	f.exec(`CREATE FUNCTION ` + fn + `() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'injected fault on %', TG_TABLE_NAME; END $$`)
	f.exec(`CREATE TRIGGER ` + fn + ` BEFORE ` + ops + ` ON ` + table + ` FOR EACH ROW EXECUTE FUNCTION ` + fn + `()`)
	return func() {
		f.exec(`DROP TRIGGER ` + fn + ` ON ` + table)
		f.exec(`DROP FUNCTION ` + fn + `()`)
	}
}

// rename makes a table disappear; the returned func brings it back.
func (f *fixture) rename(table string) (restore func()) {
	f.t.Helper()
	f.exec(`ALTER TABLE ` + table + ` RENAME TO ` + table + `_away`)
	return func() { f.exec(`ALTER TABLE ` + table + `_away RENAME TO ` + table) }
}

func (f *fixture) waitHealthy(health *telemetry.Health, want bool) {
	f.t.Helper()
	testenv.Eventually(f.t, 15*time.Second, func() error {
		st, ok := health.Snapshot(f.ctx)
		if ok != want {
			return fmt.Errorf("healthy %v, want %v: %+v", ok, want, st)
		}
		return nil
	})
}

// TestDatabaseFaultsAtEveryStep: whichever step of an evaluation cycle the
// database fails — reading the state, the rules, the windows, the open
// alerts; writing the alert, its outbox rows, the state; resolving — the
// engine reports unhealthy, notifies nothing, and once the fault is gone
// fires (and resolves) exactly once.
func TestDatabaseFaultsAtEveryStep(t *testing.T) {
	cases := []struct {
		name     string
		resolve  bool // the fault hits the resolution of a fired alert
		preStart bool // in place (after the breaching window) before the engine starts
		fault    func(f *fixture) func()
	}{
		{"state unreadable", false, true, func(f *fixture) func() { return f.rename("analytics_alert_state") }},
		{"rules unreadable", false, false, func(f *fixture) func() { return f.rename("analytics_alert_rules") }},
		{"windows unreadable", false, true, func(f *fixture) func() { return f.rename("analytics_metrics_1min") }},
		{"alerts unreadable", false, false, func(f *fixture) func() { return f.rename("analytics_alerts") }},
		{"outbox unreadable", false, false, func(f *fixture) func() { return f.rename("analytics_alert_outbox") }},
		{"alert insert refused", false, false, func(f *fixture) func() { return f.refuse("analytics_alerts", "INSERT") }},
		{"outbox insert refused", false, false, func(f *fixture) func() { return f.refuse("analytics_alert_outbox", "INSERT") }},
		{"state write refused", false, false, func(f *fixture) func() { return f.refuse("analytics_alert_state", "INSERT OR UPDATE") }},
		{"resolve refused", true, false, func(f *fixture) func() { return f.refuse("analytics_alerts", "UPDATE") }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			f.rule("Burst", "error_rate", ">", 20, nil, 1, "critical")
			health := telemetry.NewHealth()
			e := f.engine(f.config(), Deps{Health: health})
			var lift func()
			if c.preStart {
				f.window("checkout", 0, 90)
				lift = c.fault(f)
			}
			f.start(e)
			f.waitCycles(e, 1)
			switch {
			case c.resolve:
				f.window("checkout", 0, 90)
				f.waitCounts(1, 0, 0, 0)
				lift = c.fault(f)
				f.window("checkout", 1, 1)
			case !c.preStart:
				lift = c.fault(f)
				f.window("checkout", 0, 90)
			}
			f.waitHealthy(health, false)
			want := 0
			if c.resolve {
				want = 1
			}
			if n := len(f.messages()); n != want {
				t.Fatalf("%d messages during the fault, want %d", n, want)
			}
			lift()
			f.waitCounts(want+1, 0, 0, 0)
			f.waitHealthy(health, true)
			msgs := f.messages()
			if last := msgs[len(msgs)-1]; (c.resolve && last.State != "resolved") || (!c.resolve && last.State != "firing") {
				t.Errorf("last message %+v", last)
			}
		})
	}
}

// TestDispatchRecordRefused: a delivery succeeds but PostgreSQL refuses
// to mark the row sent. Kafka stays exactly once — the next session
// keeps trying to mark the rows of the committed transaction and sends
// nothing again — while Slack is at least once: re-sent each time its
// claim expires. Once the fault is gone both rows are marked sent and
// delivery stops.
func TestDispatchRecordRefused(t *testing.T) {
	f := newFixture(t)
	f.rule("Burst", "error_rate", ">", 20, nil, 1, "critical", "slack")
	e := f.engine(f.config(), Deps{})
	f.exec(`CREATE FUNCTION refuse_sent() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'injected fault: cannot mark sent'; END $$`)
	f.exec(`CREATE TRIGGER refuse_sent BEFORE UPDATE ON analytics_alert_outbox FOR EACH ROW
WHEN (NEW.state = 'sent') EXECUTE FUNCTION refuse_sent()`)
	f.start(e)
	f.window("checkout", 0, 90)
	// A Slack claim lasts 21 × ALERT_DELIVERY_TIMEOUT; expire it rather
	// than wait it out.
	testenv.Eventually(t, 20*time.Second, func() error {
		if n := f.slack.count(); n < 2 {
			f.exec(`UPDATE analytics_alert_outbox SET next_attempt_at = now() WHERE channel = 'slack' AND state = 'pending'`)
			return fmt.Errorf("%d slack deliveries", n)
		}
		return nil
	})
	if n := len(f.messages()); n != 1 {
		t.Errorf("%d kafka messages while the outcome cannot be recorded, want 1", n)
	}
	if n := f.int(`SELECT count(*) FROM analytics_alert_outbox WHERE state = 'pending'`); n != 2 {
		t.Fatalf("%d pending outbox rows, want 2", n)
	}
	f.exec(`DROP TRIGGER refuse_sent ON analytics_alert_outbox`)
	testenv.Eventually(t, 15*time.Second, func() error {
		if n := f.int(`SELECT count(*) FROM analytics_alert_outbox WHERE state = 'sent'`); n != 2 {
			// The Slack row waits out its last claim otherwise.
			f.exec(`UPDATE analytics_alert_outbox SET next_attempt_at = now() WHERE channel = 'slack' AND state = 'pending'`)
			return fmt.Errorf("%d sent outbox rows", n)
		}
		return nil
	})
	sent := f.slack.count()
	f.waitCycles(e, 3)
	if n := f.slack.count(); n != sent {
		t.Errorf("%d slack deliveries after the outcome was recorded, want %d", n, sent)
	}
	msgs := f.messages()
	if len(msgs) != 1 || msgs[0].State != "firing" || msgs[0].Service != "checkout" {
		t.Errorf("kafka messages %+v, want one firing", msgs)
	}
}

// serveSMTP runs a test SMTP receiver on a free port; handle talks to
// each connection, which has a 10 s deadline and is closed after it.
func serveSMTP(t *testing.T, handle func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// refusingSMTP is an SMTP receiver that answers every command with 250
// except the one named (or the greeting, "220"), which it answers with
// code; "hang" never greets.
func refusingSMTP(t *testing.T, verb string, code int) string {
	t.Helper()
	return serveSMTP(t, func(c net.Conn) {
		if verb == "hang" {
			_, _ = c.Read(make([]byte, 1))
			return
		}
		tp := textproto.NewConn(c)
		reply := func(v string, ok string) {
			if v == verb {
				_ = tp.PrintfLine("%d refused by test at %s", code, v)
			} else {
				_ = tp.PrintfLine("%s", ok)
			}
		}
		reply("220", "220 localhost ESMTP")
		if verb == "220" {
			return
		}
		for {
			line, err := tp.ReadLine()
			if err != nil {
				return
			}
			v, _, _ := strings.Cut(line, " ")
			v = strings.ToUpper(v)
			switch v {
			case "EHLO":
				_ = tp.PrintfLine("250-localhost")
				_ = tp.PrintfLine("250-STARTTLS")
				_ = tp.PrintfLine("250 AUTH PLAIN")
			case "STARTTLS":
				reply(v, "220 go ahead") // then no handshake
			case "AUTH":
				reply(v, "235 ok")
			case "DATA":
				if verb == "DATA" {
					reply(v, "")
					continue
				}
				_ = tp.PrintfLine("354 go")
				if _, err := tp.ReadDotBytes(); err != nil {
					return
				}
				reply(".", "250 queued")
			case "QUIT":
				_ = tp.PrintfLine("221 bye")
				return
			default:
				reply(v, "250 ok")
			}
		}
	})
}

// TestEmailRefusals: an SMTP server that refuses at any step of the
// dialogue (or never answers) is a failed delivery — retried, not
// permanent — carrying the server's reply.
func TestEmailRefusals(t *testing.T) {
	ctx := testenv.Context(t)
	for _, c := range []struct {
		verb, mode string
		code       int
	}{
		{"220", "none", 554},
		{"EHLO", "none", 421}, // and HELO, which net/smtp falls back on
		{"STARTTLS", "starttls", 454},
		{"AUTH", "none", 454},
		{"MAIL", "none", 451},
		{"RCPT", "none", 450},
		{"DATA", "none", 451},
		{".", "none", 452},
		{"hang", "none", 0},
	} {
		addr := refusingSMTP(t, c.verb, c.code)
		if c.verb == "EHLO" {
			addr = refusingHello(t)
		}
		m, err := newEmail(config.Alerting{SMTPHost: "127.0.0.1", SMTPPort: 25, SMTPTLS: c.mode, SMTPUser: "u", SMTPPassword: "p",
			SMTPFrom: "a@example.com", SMTPTo: []string{"b@example.com"}, DeliveryTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		m.addr = addr
		began := time.Now()
		errs := m.send(ctx, []*Event{testEvent()})
		err = errs[0]
		switch {
		case err == nil:
			t.Errorf("%s refused: delivered", c.verb)
		case isPermanent(err):
			t.Errorf("%s refused: permanent %v", c.verb, err)
		case c.code != 0 && !strings.Contains(err.Error(), fmt.Sprint(c.code)):
			t.Errorf("%s refused: %v", c.verb, err)
		}
		if took := time.Since(began); took > 5*time.Second {
			t.Errorf("%s: took %v with a 1s delivery timeout", c.verb, took)
		}
	}
}

// refusingHello refuses EHLO and HELO.
func refusingHello(t *testing.T) string {
	t.Helper()
	return serveSMTP(t, func(c net.Conn) {
		tp := textproto.NewConn(c)
		_ = tp.PrintfLine("220 localhost ESMTP")
		for {
			line, err := tp.ReadLine()
			if err != nil {
				return
			}
			if v, _, _ := strings.Cut(line, " "); strings.EqualFold(v, "QUIT") {
				_ = tp.PrintfLine("221 bye")
				return
			}
			_ = tp.PrintfLine("421 refused by test")
		}
	})
}

// TestLeaseTakenOverStopsEvaluation: the leader renews its lease; when
// another replica's lease replaces it, the leader stops evaluating at the
// next renewal and does not take a live lease back; once the lease is
// free again it leads and alerts.
func TestLeaseTakenOverStopsEvaluation(t *testing.T) {
	f := newFixture(t)
	f.rule("Burst", "error_rate", ">", 20, nil, 1, "critical")
	ns := testenv.NATS(t)
	cfg := f.config()
	cfg.SingleReplica = false
	cfg.LeaseTTL = 900 * time.Millisecond
	e := f.engine(cfg, Deps{NATS: ns.Conn(t)})
	f.start(e)
	testenv.Eventually(t, 10*time.Second, func() error {
		if !e.IsLeader() {
			return fmt.Errorf("not leading")
		}
		return nil
	})
	kv, err := ns.JetStream(t).KeyValue(f.ctx, natsutil.AlertingBucket)
	if err != nil {
		t.Fatal(err)
	}
	first, err := kv.Get(f.ctx, leaseKey)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		cur, err := kv.Get(f.ctx, leaseKey)
		if err != nil {
			return err
		}
		if cur.Revision() == first.Revision() {
			return fmt.Errorf("lease not renewed")
		}
		return nil
	})
	if !e.IsLeader() {
		t.Fatal("stopped leading while renewing")
	}
	b, _ := json.Marshal(lease.Value{Owner: "intruder", Epoch: 7, Expires: time.Now().Add(time.Hour)})
	if _, err := kv.Put(f.ctx, leaseKey, b); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if e.IsLeader() {
			return fmt.Errorf("still leading")
		}
		return nil
	})
	if cur, err := kv.Get(f.ctx, leaseKey); err != nil || !strings.Contains(string(cur.Value()), "intruder") {
		t.Fatalf("the intruder's live lease was overwritten: %v", err)
	}
	f.window("checkout", 0, 90)
	if err := kv.Delete(f.ctx, leaseKey); err != nil {
		t.Fatal(err)
	}
	f.waitCounts(1, 0, 0, 0)
	if !e.IsLeader() {
		t.Error("alerted without leading")
	}
}
