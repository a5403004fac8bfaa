package alerting

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/faultpoint"
	"github.com/stacklens/stacklens/internal/harness/chaos"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/telemetry"
)

// onceEach fails unless every (alert_id, state) on Kafka (read_committed)
// appears exactly once, and returns how many there are.
func (f *fixture) onceEach() int {
	f.t.Helper()
	seen := map[string]int{}
	for _, m := range f.messages() {
		seen[m.AlertID+"/"+m.State]++
	}
	for k, n := range seen {
		if n != 1 {
			f.t.Errorf("%s on Kafka %d times, want once", k, n)
		}
	}
	return len(seen)
}

// waitKafkaSent waits until n kafka outbox rows are sent and n distinct
// (alert_id, state) messages are on Kafka.
func (f *fixture) waitKafkaSent(n int, within time.Duration) {
	f.t.Helper()
	testenv.Eventually(f.t, within, func() error {
		sent := f.int(`SELECT count(*) FROM analytics_alert_outbox WHERE channel = 'kafka' AND state = 'sent'`)
		seen := map[string]bool{}
		for _, m := range f.messages() {
			seen[m.AlertID+"/"+m.State] = true
		}
		if sent != n || len(seen) != n {
			return fmt.Errorf("%d kafka rows sent, %d distinct messages; want %d", sent, len(seen), n)
		}
		return nil
	})
}

// kafkaOnly is the fixture's configuration with Kafka as the only channel.
func (f *fixture) kafkaOnly() Config {
	cfg := f.config()
	cfg.Alerting = config.Alerting{EvalInterval: 100 * time.Millisecond, DeliveryTimeout: 2 * time.Second}
	return cfg
}

// TestHelperAlertingProcess is not a test: it is the engine process the
// crash tests start (re-executing the test binary) and kill. With
// ALERT_FAULT=<point> it kills itself with SIGKILL the first time the
// dispatcher reaches that point.
func TestHelperAlertingProcess(t *testing.T) {
	if os.Getenv("STACKLENS_ALERTING_HELPER") != "1" {
		t.Skip("helper process of the crash tests")
	}
	if p := os.Getenv("ALERT_FAULT"); p != "" {
		faultpoint.KillAt(p, 1, "")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	pool, err := pgxpool.New(ctx, os.Getenv("ALERT_DSN"))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	e, err := New(Config{
		Alerting:      config.Alerting{EvalInterval: 100 * time.Millisecond, DeliveryTimeout: 2 * time.Second},
		Kafka:         config.Kafka{BootstrapServers: strings.Split(os.Getenv("ALERT_BROKERS"), ","), OutputTopic: topic},
		SingleReplica: true,
	}, Deps{Pool: pool, Log: telemetry.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

// spawnEngine runs the engine in a child process that kills itself at
// fault and returns when it died.
func (f *fixture) spawnEngine(dsn, fault string) {
	f.t.Helper()
	args := []string{"-test.run=^TestHelperAlertingProcess$", "-test.count=1"}
	if fl := flag.Lookup("test.gocoverdir"); fl != nil && fl.Value.String() != "" {
		args = append(args, "-test.gocoverdir="+fl.Value.String())
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "STACKLENS_ALERTING_HELPER=1", "ALERT_FAULT="+fault, "ALERT_DSN="+dsn,
		"ALERT_BROKERS="+strings.Join(f.kafka.Brokers, ","))
	out := &testenv.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ProcessState.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			f.t.Fatalf("engine process: exit %v, want SIGKILL at %s:\n%s", err, fault, out.String())
		}
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		f.t.Fatalf("engine process did not reach %s:\n%s", fault, out.String())
	}
}

// TestKafkaCrashMidDeliveryDeliversOnce: an engine process is killed
// (SIGKILL) inside a Kafka delivery — after producing the batch but before
// the Kafka commit, or after the Kafka commit but before the outbox rows
// are marked sent — and the next engine delivers every firing and every
// resolution exactly once on Kafka (read_committed).
func TestKafkaCrashMidDeliveryDeliversOnce(t *testing.T) {
	for _, point := range []string{fpKafkaProduced, fpKafkaCommitted} {
		t.Run(point, func(t *testing.T) {
			f := newFixture(t)
			f.rule("Burst", "error_rate", ">", 20, nil, 1, "critical")
			const services = 5
			for i := range services {
				f.window(fmt.Sprintf("svc-%d", i), 0, 90)
			}
			f.spawnEngine(f.dbDSN(), point)
			if n := f.int(`SELECT count(*) FROM analytics_alert_outbox WHERE state = 'pending'`); n != services {
				t.Fatalf("%d pending rows after the crash, want %d", n, services)
			}
			b := f.engine(f.kafkaOnly(), Deps{})
			f.start(b)
			f.waitKafkaSent(services, 15*time.Second)
			for i := range services {
				f.window(fmt.Sprintf("svc-%d", i), 1, 1)
			}
			f.waitKafkaSent(2*services, 15*time.Second)
			f.waitCycles(b, 3)
			if n := f.onceEach(); n != 2*services {
				t.Errorf("%d distinct messages, want %d", n, 2*services)
			}
		})
	}
}

// dbDSN is the DSN of the fixture's database.
func (f *fixture) dbDSN() string { return f.db.Config().ConnString() }

// pauseAt makes the first dispatcher to reach point wait there until
// release is called; reached is closed when it got there.
func pauseAt(t *testing.T, point string) (reached <-chan struct{}, release func()) {
	r, rel := make(chan struct{}), make(chan struct{})
	var first sync.Once
	var relOnce sync.Once
	faultpoint.Set(func(p string) {
		if p != point {
			return
		}
		hit := false
		first.Do(func() { hit = true })
		if hit {
			close(r)
			<-rel
		}
	})
	release = func() { relOnce.Do(func() { close(rel) }) }
	t.Cleanup(func() {
		release()
		faultpoint.Set(nil)
	})
	return r, release
}

func waitClosed(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not happen", what)
	}
}

// TestKafkaZombieDispatcherIsFenced: dispatcher A stalls after producing
// its batch inside its Kafka transaction; once A's claim expires, B takes
// the rows over — its session fences A (epoch bump, A's open transaction
// aborted) — and delivers them. When A wakes up, its commit is refused:
// every alert is on Kafka exactly once.
func TestKafkaZombieDispatcherIsFenced(t *testing.T) {
	f := newFixture(t)
	f.rule("Burst", "error_rate", ">", 20, nil, 1, "critical")
	reached, release := pauseAt(t, fpKafkaProduced)
	a := f.engine(f.kafkaOnly(), Deps{})
	stopA := f.start(a)
	const services = 3
	for i := range services {
		f.window(fmt.Sprintf("svc-%d", i), 0, 90)
	}
	waitClosed(t, reached, "A producing its batch")
	if n := f.int(`SELECT count(*) FROM analytics_alert_outbox WHERE state = 'pending'`); n != services {
		t.Fatalf("%d pending rows while A delivers, want %d", n, services)
	}
	if n := len(f.messages()); n != 0 {
		t.Fatalf("%d messages visible while A's transaction is open, want 0", n)
	}
	fenced := kafkaFenced.Get()
	b := f.engine(f.kafkaOnly(), Deps{})
	f.start(b)
	// Within the claim's lifetime plus a few polls.
	f.waitKafkaSent(services, claimTTL("kafka", 2*time.Second)+10*time.Second)
	release()
	testenv.Eventually(t, 15*time.Second, func() error {
		if kafkaFenced.Get() == fenced {
			return errors.New("A's commit not refused yet")
		}
		return nil
	})
	stopA()
	f.waitCycles(b, 3)
	if n := f.onceEach(); n != services {
		t.Errorf("%d distinct messages, want %d", n, services)
	}
}

// TestDispatcherVanishedMidClaimIsTakenOver: dispatcher A's PostgreSQL
// connection goes silent (a TCP proxy blackholes it: no FIN, no RST, as
// when a host vanishes) while A's claim transaction is open. PostgreSQL
// ends A's session (idle_in_transaction_session_timeout), which releases
// the rows, and dispatcher B delivers them within seconds.
func TestDispatcherVanishedMidClaimIsTakenOver(t *testing.T) {
	f := newFixture(t)
	f.rule("Burst", "error_rate", ">", 20, nil, 1, "critical")
	cc := f.db.Config().ConnConfig
	link, err := chaos.NewLink("postgres", "", net.JoinHostPort(cc.Host, strconv.Itoa(int(cc.Port))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(link.Close)
	pc := f.db.Config()
	host, port, _ := net.SplitHostPort(link.Addr())
	p, _ := strconv.Atoi(port)
	pc.ConnConfig.Host, pc.ConnConfig.Port = host, uint16(p)
	viaLink, err := pgxpool.NewWithConfig(f.ctx, pc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(viaLink.Close)

	reached, release := pauseAt(t, fpClaimed)
	a := f.engine(f.kafkaOnly(), Deps{Pool: viaLink})
	a.idleInTx = time.Second
	stopA := f.start(a)
	const services = 3
	for i := range services {
		f.window(fmt.Sprintf("svc-%d", i), 0, 90)
	}
	waitClosed(t, reached, "A claiming")
	var pid int
	if err := f.db.QueryRow(f.ctx, `SELECT pid FROM pg_stat_activity
WHERE datname = current_database() AND state = 'idle in transaction' AND application_name = 'stacklens-alerting-dispatch'`).Scan(&pid); err != nil {
		t.Fatalf("A's open claim transaction: %v", err)
	}
	link.Set(chaos.Blackhole, 0, 0)
	release() // A goes on into the void
	began := time.Now()
	b := f.engine(f.kafkaOnly(), Deps{})
	f.start(b)
	f.waitKafkaSent(services, 15*time.Second)
	took := time.Since(began)
	testenv.Eventually(t, 10*time.Second, func() error {
		if n := f.int(`SELECT count(*) FROM pg_stat_activity WHERE pid = $1`, pid); n != 0 {
			return fmt.Errorf("A's session %d still on the server", pid)
		}
		return nil
	})
	t.Logf("B delivered A's rows %v after A vanished", took.Round(10*time.Millisecond))
	link.Heal()
	stopA()
	if n := f.onceEach(); n != services {
		t.Errorf("%d distinct messages, want %d", n, services)
	}
}

// TestLimitSessions: the engine's and the dispatchers' sessions carry the
// limits that let PostgreSQL end a session whose client went silent inside
// a transaction (the evaluator's row locks would otherwise block the next
// leader for as long as the dead TCP connection lives).
func TestLimitSessions(t *testing.T) {
	ctx := testenv.Context(t)
	pg := testenv.Postgres(t)
	cc, err := pgx.ParseConfig(pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	limitSessions(cc, "stacklens-alerting", 500*time.Millisecond, map[string]string{"lock_timeout": "2000"})
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for setting, want := range map[string]string{"application_name": "stacklens-alerting", "idle_in_transaction_session_timeout": "500ms",
		"tcp_keepalives_idle": "5", "tcp_keepalives_interval": "2", "tcp_keepalives_count": "3", "lock_timeout": "2s"} {
		var got string
		if err := conn.QueryRow(ctx, "SHOW "+setting).Scan(&got); err != nil || got != want {
			t.Errorf("%s = %q (%v), want %q", setting, got, err, want)
		}
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	// Silent inside the transaction: the server ends the session.
	watcher, err := pgx.Connect(ctx, pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.Close(ctx)
	testenv.Eventually(t, 10*time.Second, func() error {
		var n int
		if err := watcher.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE pid = $1`, pid).Scan(&n); err != nil {
			return err
		}
		if n != 0 {
			return fmt.Errorf("session %d still open", pid)
		}
		return nil
	})
}
