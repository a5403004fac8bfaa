package bridge

import (
	"context"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stacklens/stacklens/internal/embedded"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/natsutil"
)

func TestRunConfigErrors(t *testing.T) {
	if err := Run(context.Background(), Deps{}); err == nil {
		t.Error("no config accepted")
	}
	cfg := testenv.Config(t, map[string]string{})
	cfg.Kafka.SASLMechanism = "GSSAPI"
	if err := Run(context.Background(), Deps{Config: cfg}); err == nil {
		t.Error("bad SASL mechanism accepted")
	}
	cfg = testenv.Config(t, map[string]string{})
	cfg.Kafka.Linger = 0
	if err := Run(context.Background(), Deps{Config: cfg}); err == nil || !strings.Contains(err.Error(), "KAFKA_LINGER") {
		t.Errorf("zero KAFKA_LINGER: %v", err)
	}
}

// TestRunShardsChanged: a stream created with another SHARDS value is
// refused, not rewritten.
func TestRunShardsChanged(t *testing.T) {
	s := newSetup(t)
	js := s.nats.JetStream(t)
	c := s.config()
	c.NATS.Shards = 8
	if _, err := natsutil.EnsureEventsStream(context.Background(), js, c.NATS); err != nil {
		t.Fatal(err)
	}
	err := Run(testenv.Context(t), Deps{Config: s.config(), Log: testLogger(t), Options: testOptions("a")})
	if !errors.Is(err, natsutil.ErrShardsChanged) {
		t.Fatalf("got %v", err)
	}
}

// TestRunStartsWithoutNATS: the bridge waits for NATS, reports not ready,
// then provisions the stream and forwards once NATS is there.
func TestRunStartsWithoutNATS(t *testing.T) {
	s := newSetup(t)
	u, _ := url.Parse(s.nats.URL)
	port, _ := strconv.Atoi(u.Port())
	s.nats.Shutdown()
	c := newCorpus()
	s.produce(c.messages(300, 10))
	rb := s.start("a")
	testenv.Eventually(t, 5*time.Second, func() error {
		st, _ := rb.health.Snapshot(context.Background())
		if h, ok := st[HealthName]; !ok || h.OK {
			return errors.New("no not-ready state yet")
		}
		return nil
	})
	srv, err := embedded.StartNATS(embedded.NATSOptions{Port: port, StoreDir: s.nats.StoreDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	js := s.nats.JetStream(t)
	s.waitCaughtUp(js, 30*time.Second)
	testenv.Eventually(t, 10*time.Second, rb.ready)
	rb.stop(t)
	s.verifyExactlyOnce(js, c)
}

// TestRunCancelledWhileConnecting returns nil when stopped before NATS
// was ever reached.
func TestRunCancelledWhileConnecting(t *testing.T) {
	cfg := testenv.Config(t, map[string]string{"NATS_URL": "nats://127.0.0.1:1"})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := Run(ctx, Deps{Config: cfg, Log: testLogger(t)}); err != nil {
		t.Fatal(err)
	}
}
