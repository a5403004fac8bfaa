package alerting

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/harness/testenv"
)

func testEvent() *Event {
	v, thr := 42.0, 20.0
	ws := time.Date(2026, 11, 29, 1, 0, 0, 0, time.UTC)
	return &Event{AlertID: "alr_x", Fingerprint: "fp", State: stateFiring, Rule: "R <&>", Service: "svc\r\nBcc: evil@x",
		Severity: "critical", Metric: "error_rate", Operator: ">", Value: &v, Threshold: &thr, Window: "1min",
		WindowStart: &ws, FiredAt: ws, EmittedAt: ws, Message: "line1\nline2"}
}

// TestEmailTransportSecurity: STARTTLS and implicit TLS with PLAIN auth
// against the in-process SMTP receiver; STARTTLS required but not offered
// is a permanent failure; an unreachable server is retried.
func TestEmailTransportSecurity(t *testing.T) {
	srvTLS, roots := selfSigned(t)
	ctx := testenv.Context(t)
	for _, mode := range []string{"starttls", "tls"} {
		s := newSMTPServer(t, srvTLS, mode == "tls")
		m, err := newEmail(config.Alerting{SMTPHost: "127.0.0.1", SMTPPort: s.port(), SMTPTLS: mode, SMTPUser: "u",
			SMTPPassword: "p", SMTPFrom: "a@example.com", SMTPTo: []string{"b@example.com"}, DeliveryTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		m.tls.RootCAs = roots
		if errs := m.send(ctx, []*Event{testEvent()}); errs[0] != nil {
			t.Fatalf("%s: %v", mode, errs[0])
		}
		got := s.get(0)
		if !got.tls || got.auth != "\x00u\x00p" || !strings.Contains(got.from, "a@example.com") {
			t.Errorf("%s: %+v", mode, got)
		}
		// (textproto's dot reader turns CRLF into LF.)
		headers, body, _ := strings.Cut(got.data, "\n\n")
		if strings.Contains(headers, "\nBcc:") || !strings.Contains(headers, "svc  Bcc") {
			t.Errorf("%s: header injection: %q", mode, headers)
		}
		if !strings.Contains(body, "line1\nline2") {
			t.Errorf("%s: body: %q", mode, body)
		}
	}
	plain := newSMTPServer(t, nil, false)
	m, err := newEmail(config.Alerting{SMTPHost: "127.0.0.1", SMTPPort: plain.port(), SMTPTLS: "starttls",
		SMTPFrom: "a@example.com", SMTPTo: []string{"b@example.com"}, DeliveryTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	errs := m.send(ctx, []*Event{testEvent(), testEvent()})
	if !isPermanent(errs[0]) {
		t.Errorf("STARTTLS not offered: %v", errs[0])
	}
	m.addr = deadAddr(t)
	errs = m.send(ctx, []*Event{testEvent(), testEvent()})
	if errs[0] == nil || isPermanent(errs[0]) || errs[1] == nil {
		t.Errorf("unreachable server: %v", errs)
	}
}

// TestWebhookStatuses: 2xx delivered, 429/5xx retried, other 4xx permanent;
// redirects are not followed; the URL is not echoed in errors.
func TestWebhookStatuses(t *testing.T) {
	ctx := testenv.Context(t)
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if status == http.StatusFound {
			http.Redirect(w, r, "http://169.254.169.254/", status)
			return
		}
		w.WriteHeader(status)
	}))
	defer srv.Close()
	s, err := newSlack(srv.URL+"/secret-path", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, c := range []struct {
		status    int
		ok, perm  bool
		checkText bool
	}{{200, true, false, true}, {204, true, false, false}, {429, false, false, false}, {503, false, false, false},
		{400, false, true, false}, {404, false, true, false}, {302, false, true, false}} {
		status = c.status
		err := s.send(ctx, []*Event{testEvent()})[0]
		if (err == nil) != c.ok || (err != nil && isPermanent(err) != c.perm) {
			t.Errorf("status %d: %v", c.status, err)
		}
	}
	srv.Close()
	errs := s.send(ctx, []*Event{testEvent(), testEvent()})
	if errs[0] == nil || isPermanent(errs[0]) || strings.Contains(errs[0].Error(), "secret-path") || errs[1] == nil {
		t.Errorf("down: %v", errs)
	}
	if txt := slackText(testEvent()); !strings.Contains(txt, "R &lt;&amp;&gt;") || !strings.Contains(txt, "FIRING") {
		t.Errorf("slack text %q", txt)
	}
	p, err := newPagerDuty("", "key", time.Second)
	if err != nil || p.url != "https://events.pagerduty.com/v2/enqueue" {
		t.Fatal(err)
	}
	ev := testEvent()
	ev.State = stateResolved
	if b := pdEvent("k", ev); b["event_action"] != "resolve" || b["payload"] != nil || b["dedup_key"] != "fp" {
		t.Errorf("pd resolve %v", b)
	}
	p.url = deadAddrURL(t)
	if errs := p.send(ctx, []*Event{ev, ev}); errs[0] == nil || errs[1] == nil {
		t.Errorf("pd down: %v", errs)
	}
}

func deadAddrURL(t *testing.T) string { return "http://" + deadAddr(t) + "/" }

// TestConfigErrors: bad configuration fails New with the variable named.
func TestConfigErrors(t *testing.T) {
	ok := Config{
		Alerting:      config.Alerting{EvalInterval: 500 * time.Millisecond, DeliveryTimeout: 10 * time.Second},
		Kafka:         config.Kafka{BootstrapServers: []string{"127.0.0.1:1"}, OutputTopic: "analytics-alerts"},
		SingleReplica: true,
	}
	if _, err := New(ok, Deps{}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	_ = os.WriteFile(notPEM, []byte("nope"), 0o600)
	cases := map[string]func(c *Config){
		"KAFKA_BOOTSTRAP_SERVERS": func(c *Config) { c.Kafka.BootstrapServers = nil },
		// Zero values are refused, not replaced by a second default.
		"ALERT_EVAL_INTERVAL":    func(c *Config) { c.Alerting.EvalInterval = 0 },
		"ALERT_DELIVERY_TIMEOUT": func(c *Config) { c.Alerting.DeliveryTimeout = 0 },
		"KAFKA_OUTPUT_TOPIC":     func(c *Config) { c.Kafka.OutputTopic = "" },
		"NATS":                   func(c *Config) { c.SingleReplica = false },
		"SLACK_WEBHOOK_URL":      func(c *Config) { c.Alerting.SlackWebhookURL = "ftp://x" },
		"PAGERDUTY_URL":          func(c *Config) { c.Alerting.PagerDutyKey, c.Alerting.PagerDutyURL = "k", "::" },
		"SMTP_TLS": func(c *Config) {
			c.Alerting.SMTPHost, c.Alerting.SMTPTo, c.Alerting.SMTPTLS = "h", []string{"a@b"}, "ssl"
		},
		"SMTP_TO": func(c *Config) {
			c.Alerting.SMTPHost, c.Alerting.SMTPFrom, c.Alerting.SMTPTo = "h", "a@b", []string{"x\r\n@y"}
		},
		"KAFKA_SASL_MECHANISM": func(c *Config) { c.Kafka.SASLMechanism = "GSSAPI" },
		"KAFKA_SASL_USERNAME":  func(c *Config) { c.Kafka.SASLMechanism = "SCRAM-SHA-256" },
		"KAFKA_TLS_CA_FILE":    func(c *Config) { c.Kafka.TLS, c.Kafka.TLSCAFile = true, filepath.Join(dir, "missing") },
		"KAFKA_TLS_CA_FILE ":   func(c *Config) { c.Kafka.TLS, c.Kafka.TLSCAFile = true, notPEM },
		"KAFKA_TLS_CERT_FILE":  func(c *Config) { c.Kafka.TLS, c.Kafka.TLSCertFile = true, notPEM },
	}
	for want, mut := range cases {
		c := ok
		mut(&c)
		_, err := New(c, Deps{})
		if err == nil || !strings.Contains(err.Error(), strings.TrimSpace(want)) {
			t.Errorf("%s: %v", want, err)
		}
	}
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-512"} {
		c := ok
		c.Kafka.SASLMechanism, c.Kafka.SASLUsername, c.Kafka.TLS = mech, "u", true
		if _, err := New(c, Deps{}); err != nil {
			t.Errorf("%s: %v", mech, err)
		}
	}
}

// TestPermanentFailuresAreRecorded: a webhook refusing the payload (4xx)
// and a row for a channel this process has no configuration for are
// marked failed with the error — kept in the outbox, not retried forever.
func TestPermanentFailuresAreRecorded(t *testing.T) {
	f := newFixture(t)
	f.rule("Burst", "error_rate", ">", 20, nil, 1, "warning", "slack")
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "invalid_payload", http.StatusBadRequest)
	}))
	defer bad.Close()
	cfg := f.config()
	cfg.Alerting.SlackWebhookURL = bad.URL
	cfg.Alerting.SMTPHost = "" // email not configured here
	e := f.engine(cfg, Deps{})
	f.start(e)
	f.window("checkout", 0, 90)
	// An email row left by a replica that had email configured.
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := f.int(`SELECT count(*) FROM analytics_alerts`); n != 1 {
			return fmt.Errorf("%d alerts", n)
		}
		return nil
	})
	f.exec(`INSERT INTO analytics_alert_outbox (alert_id, channel, transition, payload)
SELECT alert_id, 'email', 'firing', '{}' FROM analytics_alerts`)
	f.exec(`INSERT INTO analytics_alert_outbox (alert_id, channel, transition, payload)
SELECT alert_id, 'email', 'acknowledged', '"not an object"' FROM analytics_alerts`)
	e.kick()
	testenv.Eventually(t, 10*time.Second, func() error {
		n := f.int(`SELECT count(*) FROM analytics_alert_outbox WHERE state = 'failed' AND last_error <> ''`)
		if n != 3 {
			return fmt.Errorf("%d failed rows", n)
		}
		return nil
	})
	var lastErr string
	_ = f.db.QueryRow(f.ctx, `SELECT last_error FROM analytics_alert_outbox WHERE channel = 'slack'`).Scan(&lastErr)
	if !strings.Contains(lastErr, "400") {
		t.Errorf("slack last_error %q", lastErr)
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := len(f.messages()); n != 1 {
			return fmt.Errorf("%d kafka messages, want 1", n)
		}
		return nil
	})
}

func TestBackoff(t *testing.T) {
	e := &Engine{retryBase: time.Second, retryMax: time.Minute}
	prev := time.Duration(0)
	for a := 1; a <= 12; a++ {
		d := e.backoff(a)
		if d < 800*time.Millisecond || d > 72*time.Second {
			t.Fatalf("attempt %d: %v", a, d)
		}
		if a <= 5 && d < prev/2 {
			t.Fatalf("attempt %d: %v after %v", a, d, prev)
		}
		prev = d
	}
	if !errors.Is(permanent(context.Canceled), context.Canceled) || truncate("abc", 2) != "ab" {
		t.Fatal("helpers")
	}
}
