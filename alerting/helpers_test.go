package alerting

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/kafkautil"
	"github.com/stacklens/stacklens/internal/telemetry"
	"github.com/stacklens/stacklens/schema"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const topic = "analytics-alerts"

// fixture is one test's world: a migrated database, a Kafka broker, and
// in-process Slack, PagerDuty and SMTP receivers.
type fixture struct {
	t     testing.TB
	ctx   context.Context
	db    *pgxpool.Pool
	kafka *testenv.KafkaBroker
	slack *hook
	pd    *hook
	smtp  *smtpServer
	base  time.Time // start of the first test window (1min)
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	ctx := testenv.Context(t)
	pg := testenv.Postgres(t)
	db, err := pgxpool.New(ctx, pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	if _, err := schema.Up(ctx, db, schema.Options{Timescale: "off"}, nil); err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, ctx: ctx, db: db, kafka: testenv.Kafka(t, 1, topic),
		slack: newHook(t), pd: newHook(t), smtp: newSMTPServer(t, nil, false)}
	f.base = time.Now().UTC().Truncate(time.Minute).Add(-12 * time.Minute)
	// The seed's rules are disabled; tests add their own.
	f.exec(`UPDATE analytics_alert_rules SET enabled = false`)
	return f
}

func (f *fixture) exec(sql string, args ...any) {
	f.t.Helper()
	if _, err := f.db.Exec(f.ctx, sql, args...); err != nil {
		f.t.Fatalf("%s: %v", sql, err)
	}
}

func (f *fixture) int(sql string, args ...any) int {
	f.t.Helper()
	var n int
	if err := f.db.QueryRow(f.ctx, sql, args...).Scan(&n); err != nil {
		f.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// rule inserts a rule and returns its id.
func (f *fixture) rule(name, metric, op string, threshold float64, resolve *float64, forWindows int, severity string, channels ...string) int64 {
	f.t.Helper()
	var id int64
	if channels == nil {
		channels = []string{}
	}
	err := f.db.QueryRow(f.ctx, `INSERT INTO analytics_alert_rules (rule_name, metric_name, operator, threshold,
	resolve_threshold, for_windows, severity, notification_channels, "window")
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, '1min') RETURNING id`, name, metric, op, threshold, resolve, forWindows,
		severity, channels).Scan(&id)
	if err != nil {
		f.t.Fatal(err)
	}
	return id
}

// window writes the final 1min row of service's window i (from base) with
// the given error rate, as the projections would (version guard).
func (f *fixture) window(service string, i int, errorRate float64) {
	f.t.Helper()
	f.row(service, f.base.Add(time.Duration(i)*time.Minute), errorRate, 1)
}

func (f *fixture) row(service string, start time.Time, errorRate float64, version int64) {
	f.t.Helper()
	f.exec(`INSERT INTO analytics_metrics_1min (service, timestamp, count, error_count, error_rate,
	latency_p99_ms, final, version, updated_at)
VALUES ($1, $2, 1000, $3, $4, 120, true, $5, now())
ON CONFLICT (service, timestamp) DO UPDATE SET error_count = EXCLUDED.error_count,
	error_rate = EXCLUDED.error_rate, final = true, version = EXCLUDED.version, updated_at = now()
WHERE analytics_metrics_1min.version < EXCLUDED.version`, service, start, int64(errorRate*10), errorRate, version)
}

func (f *fixture) config() Config {
	return Config{
		Alerting: config.Alerting{
			EvalInterval:    100 * time.Millisecond,
			SlackWebhookURL: f.slack.srv.URL + "/services/T000/B000/XXXX",
			SMTPHost:        "127.0.0.1",
			SMTPPort:        f.smtp.port(),
			SMTPUser:        "alerts",
			SMTPPassword:    "s3cret",
			SMTPFrom:        "stacklens@example.com",
			SMTPTo:          []string{"oncall@example.com", "team@example.com"},
			SMTPTLS:         "none",
			PagerDutyKey:    "R0UTINGKEY",
			PagerDutyURL:    f.pd.srv.URL + "/v2/enqueue",
			DeliveryTimeout: 2 * time.Second,
		},
		Kafka:         config.Kafka{BootstrapServers: f.kafka.Brokers, OutputTopic: topic},
		SingleReplica: true,
	}
}

// engine builds an engine with fast test retries.
func (f *fixture) engine(cfg Config, deps Deps) *Engine {
	f.t.Helper()
	if deps.Pool == nil {
		deps.Pool = f.db
	}
	if deps.Log == nil {
		deps.Log = telemetry.Discard()
	}
	e, err := New(cfg, deps)
	if err != nil {
		f.t.Fatal(err)
	}
	e.retryBase, e.retryMax = 20*time.Millisecond, 200*time.Millisecond
	return e
}

// start runs e until the returned stop is called (or the test ends).
func (f *fixture) start(e *Engine) (stop func()) {
	ctx, cancel := context.WithCancel(f.ctx)
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					f.t.Errorf("Run: %v", err)
				}
			case <-time.After(20 * time.Second):
				f.t.Errorf("Run did not return")
			}
		})
	}
	f.t.Cleanup(stop)
	return stop
}

// waitCycles waits until e completed n more evaluation cycles.
func (f *fixture) waitCycles(e *Engine, n int64) {
	f.t.Helper()
	target := e.cycles.Load() + n
	testenv.Eventually(f.t, 10*time.Second, func() error {
		if c := e.cycles.Load(); c < target {
			return fmt.Errorf("%d cycles, want %d", c, target)
		}
		return nil
	})
}

// messages reads every committed alert message on the topic, as its
// consumers must: read_committed.
func (f *fixture) messages() []Event {
	f.t.Helper()
	var out []Event
	for _, m := range readCommitted(f.t, f.ctx, f.kafka.Brokers, topic) {
		var ev Event
		if err := json.Unmarshal(m.Value, &ev); err != nil {
			f.t.Fatal(err)
		}
		if string(m.Key) != ev.Fingerprint {
			f.t.Errorf("key %q, fingerprint %q", m.Key, ev.Fingerprint)
		}
		out = append(out, ev)
	}
	return out
}

// readCommitted returns the committed data records of every partition of
// topic up to its last stable offset, partition by partition.
func readCommitted(t testing.TB, ctx context.Context, brokers []string, topic string) []*kgo.Record {
	t.Helper()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	recs, err := kafkautil.ReadCommitted(rctx, brokers, topic, kgo.FetchMaxWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// waitAll waits until Kafka, Slack, email and PagerDuty have n, n, n and
// pd messages.
func (f *fixture) waitCounts(kafkaN, slackN, emailN, pdN int) {
	f.t.Helper()
	testenv.Eventually(f.t, 15*time.Second, func() error {
		k := len(f.messages())
		s, m, p := f.slack.count(), f.smtp.count(), f.pd.count()
		if k != kafkaN || s != slackN || m != emailN || p != pdN {
			return fmt.Errorf("kafka %d slack %d email %d pagerduty %d, want %d %d %d %d", k, s, m, p, kafkaN, slackN, emailN, pdN)
		}
		return nil
	})
}

// hook is an in-process webhook receiver (Slack, PagerDuty).
type hook struct {
	srv    *httptest.Server
	mu     sync.Mutex
	bodies []map[string]any
	fail   atomic.Int64 // answer this many more requests with 500
	hits   atomic.Int64
}

func newHook(t testing.TB) *hook {
	h := &hook{}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.hits.Add(1)
		if h.fail.Add(-1) >= 0 {
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		}
		h.fail.Store(0)
		b, _ := io.ReadAll(r.Body)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "bad json", http.StatusBadRequest)
			return
		}
		h.mu.Lock()
		h.bodies = append(h.bodies, m)
		h.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hook) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.bodies)
}

func (h *hook) get(i int) map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.bodies[i]
}

// smtpServer is a tiny in-process SMTP receiver (RFC 5321 subset:
// EHLO/HELO, STARTTLS, AUTH PLAIN, MAIL, RCPT, DATA, RSET, NOOP, QUIT).
type smtpServer struct {
	t        testing.TB
	ln       net.Listener
	tls      *tls.Config // nil: no STARTTLS
	implicit bool        // TLS from the first byte
	mu       sync.Mutex
	msgs     []smtpMsg
}

type smtpMsg struct {
	from string
	to   []string
	auth string
	tls  bool
	data string
}

func newSMTPServer(t testing.TB, tc *tls.Config, implicit bool) *smtpServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &smtpServer{t: t, ln: ln, tls: tc, implicit: implicit}
	if implicit {
		s.ln = tls.NewListener(ln, tc)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			go s.handle(c)
		}
	}()
	return s
}

func (s *smtpServer) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

func (s *smtpServer) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs)
}

func (s *smtpServer) get(i int) smtpMsg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.msgs[i]
}

func (s *smtpServer) handle(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	tp := textproto.NewConn(c)
	secure := s.implicit
	var cur smtpMsg
	_ = tp.PrintfLine("220 localhost ESMTP stacklens-test")
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO", "HELO":
			_ = tp.PrintfLine("250-localhost")
			if s.tls != nil && !secure {
				_ = tp.PrintfLine("250-STARTTLS")
			}
			_ = tp.PrintfLine("250-AUTH PLAIN")
			_ = tp.PrintfLine("250 8BITMIME")
		case "STARTTLS":
			if s.tls == nil || secure {
				_ = tp.PrintfLine("502 no")
				continue
			}
			_ = tp.PrintfLine("220 go ahead")
			tc := tls.Server(c, s.tls)
			if err := tc.Handshake(); err != nil {
				return
			}
			c, tp, secure = tc, textproto.NewConn(tc), true
		case "AUTH":
			mech, resp, _ := strings.Cut(arg, " ")
			b, err := base64.StdEncoding.DecodeString(resp)
			if !strings.EqualFold(mech, "PLAIN") || err != nil {
				_ = tp.PrintfLine("535 bad auth")
				continue
			}
			cur.auth = string(b)
			_ = tp.PrintfLine("235 ok")
		case "MAIL":
			cur.from = arg
			_ = tp.PrintfLine("250 ok")
		case "RCPT":
			cur.to = append(cur.to, arg)
			_ = tp.PrintfLine("250 ok")
		case "DATA":
			_ = tp.PrintfLine("354 go")
			b, err := tp.ReadDotBytes()
			if err != nil {
				return
			}
			cur.data, cur.tls = string(b), secure
			s.mu.Lock()
			s.msgs = append(s.msgs, cur)
			s.mu.Unlock()
			cur = smtpMsg{auth: cur.auth}
			_ = tp.PrintfLine("250 queued")
		case "RSET", "NOOP":
			_ = tp.PrintfLine("250 ok")
		case "QUIT":
			_ = tp.PrintfLine("221 bye")
			return
		default:
			_ = tp.PrintfLine("500 what")
		}
	}
}

// selfSigned returns a server TLS config for 127.0.0.1 and a pool that
// trusts it.
func selfSigned(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, pool
}
