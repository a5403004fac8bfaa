package bridge

import (
	"context"
	"errors"
	"net/url"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stacklens/stacklens/internal/dlq"
	"github.com/stacklens/stacklens/internal/embedded"
	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/natsutil"
)

// anyCheckpoint is nil once some partition has a checkpoint and not all
// are at their end (the bridge is mid-stream).
func (s *setup) anyCheckpoint(t *testing.T) func() error {
	js := s.nats.JetStream(t)
	return func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		st, err := js.Stream(ctx, natsutil.StreamEvents)
		if err != nil {
			return err
		}
		for p := range testPartitions {
			ck, err := readCheckpoint(ctx, st, natsutil.OffsetSubject(s.topic, p), s.topic, p)
			if err == nil && ck.Found {
				return nil
			}
		}
		return errors.New("no checkpoint yet")
	}
}

// TestNATSRestartMidStream restarts the NATS server while the bridge
// forwards: it reconnects and catches up, nothing lost or duplicated.
func TestNATSRestartMidStream(t *testing.T) {
	s := newSetup(t)
	c := newCorpus()
	s.produce(c.messages(4000, 10))
	rb := s.start("a")
	testenv.Eventually(t, 30*time.Second, s.anyCheckpoint(t))
	s.nats.Restart()
	s.produce(c.messages(2000, 10))
	js := s.nats.JetStream(t)
	s.waitCaughtUp(js, 60*time.Second)
	testenv.Eventually(t, 10*time.Second, rb.ready)
	rb.stop(t)
	s.verifyExactlyOnce(js, c)
}

// TestNATSDown stops NATS for a while (5 s; 30 s with
// STACKLENS_LONG_TESTS=1) under load: the bridge reports not ready, stops
// fetching (bounded memory), and catches up once the server is back on
// the same port and store.
func TestNATSDown(t *testing.T) {
	down := 5 * time.Second
	if os.Getenv("STACKLENS_LONG_TESTS") == "1" {
		down = 30 * time.Second
	}
	s := newSetup(t)
	c := newCorpus()
	s.produce(c.messages(1000, 10))
	rb := s.start("a")
	js := s.nats.JetStream(t)
	s.waitCaughtUp(js, 60*time.Second)
	testenv.Eventually(t, 10*time.Second, rb.ready)

	u, err := url.Parse(s.nats.URL)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(u.Port())
	s.nats.Shutdown()
	consumed0 := consumedTotal.Get()
	s.produce(c.messages(3000, 10))
	testenv.Eventually(t, 5*time.Second, func() error {
		if rb.ready() == nil {
			return errors.New("still ready")
		}
		return nil
	})
	deadline := time.Now().Add(down)
	for time.Now().Before(deadline) { // the outage: poll readiness meanwhile
		if rb.ready() == nil {
			t.Fatal("ready while NATS is down")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Fetching paused: at most one batch per partition was taken in.
	if got, limit := consumedTotal.Get()-consumed0, uint64(testPartitions*100); got > limit {
		t.Fatalf("consumed %d messages while NATS was down, more than %d", got, limit)
	}
	srv, err := embedded.StartNATS(embedded.NATSOptions{Port: port, StoreDir: s.nats.StoreDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	s.waitCaughtUp(js, 60*time.Second)
	testenv.Eventually(t, 15*time.Second, rb.ready)
	rb.stop(t)
	s.verifyExactlyOnce(js, c)
}

// TestDeadLettersKeptExactlyOnceInDLQStream: every dead letter the bridge
// writes (in its atomic batches, into STACKLENS_EVENTS) is copied into
// STACKLENS_DLQ — max age DLQ_MAX_AGE — exactly once, across a NATS
// restart in mid-stream and another one after it, and `dlq list` reads it
// there. Before, nothing kept dead letters past EVENTS_MAX_AGE.
func TestDeadLettersKeptExactlyOnceInDLQStream(t *testing.T) {
	s := newSetup(t)
	s.env["DLQ_MAX_AGE"] = "3h"
	c := newCorpus()
	s.produce(c.messages(3000, 10))
	rb := s.start("a")
	testenv.Eventually(t, 30*time.Second, s.anyCheckpoint(t))
	s.nats.Restart()
	s.produce(c.messages(1500, 10))
	js := s.nats.JetStream(t)
	s.waitCaughtUp(js, 60*time.Second)
	testenv.Eventually(t, 10*time.Second, rb.ready)
	rb.stop(t)
	s.verifyExactlyOnce(js, c)

	ctx := testenv.Context(t)
	check := func(extra int) {
		t.Helper()
		letters, err := dlq.List(ctx, js, dlq.Filter{}) // waits for the copies to catch up
		if err != nil {
			t.Fatal(err)
		}
		perID, perSeq := map[string]int{}, map[uint64]int{}
		for _, l := range letters {
			perSeq[l.EventSeq]++
			if id := idRE.FindString(string(l.Payload)); id != "" {
				perID[id]++
			}
		}
		var bad, dup int
		for id, r := range c.expected {
			if r == "" {
				continue
			}
			bad++
			if perID[id] != 1 {
				dup++
				if dup < 5 {
					t.Errorf("dead letter %s (%s) is %d times in %s", id, r, perID[id], natsutil.StreamDLQ)
				}
			}
		}
		if len(letters) != bad+extra || len(perSeq) != len(letters) || perSeq[0] != 0 {
			t.Fatalf("%s holds %d dead letters (%d distinct originals), want %d", natsutil.StreamDLQ, len(letters), len(perSeq), bad+extra)
		}
		t.Logf("%s: %d dead letters, each once", natsutil.StreamDLQ, len(letters))
	}
	check(0)
	dst, err := js.Stream(ctx, natsutil.StreamDLQ)
	if err != nil {
		t.Fatal(err)
	}
	if got := dst.CachedInfo().Config.MaxAge; got != 3*time.Hour {
		t.Errorf("%s max age %v, want DLQ_MAX_AGE 3h", natsutil.StreamDLQ, got)
	}

	// After another restart the source resumes where it was: one new dead
	// letter is copied, nothing is copied twice.
	s.nats.Restart()
	js = s.nats.JetStream(t)
	if _, err := js.Publish(ctx, natsutil.DLQSubject("processor", event.ReasonTooLate), []byte(`{"late":true}`)); err != nil {
		t.Fatal(err)
	}
	check(1)
}
