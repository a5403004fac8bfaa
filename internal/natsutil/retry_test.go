package natsutil

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/telemetry"
)

// TestProvisionWithRetry: a provisioning step that fails while NATS is
// unavailable is retried, each failure reported; ErrShardsChanged is
// permanent; an ended context stops the retries.
func TestProvisionWithRetry(t *testing.T) {
	log := telemetry.Discard()
	ctx := context.Background()
	calls := 0
	var reported []error
	err := ProvisionWithRetry(ctx, log, func(context.Context) error {
		calls++
		if calls < 3 {
			return fmt.Errorf("no responders (attempt %d)", calls)
		}
		return nil
	}, func(err error) { reported = append(reported, err) })
	if err != nil || calls != 3 || len(reported) != 2 {
		t.Fatalf("err %v after %d calls, %d failures reported; want nil, 3, 2", err, calls, len(reported))
	}

	calls = 0
	err = ProvisionWithRetry(ctx, log, func(context.Context) error {
		calls++
		return fmt.Errorf("stream has 8 shards: %w", ErrShardsChanged)
	}, nil)
	if !errors.Is(err, ErrShardsChanged) || calls != 1 {
		t.Fatalf("a changed SHARDS: err %v after %d calls; want ErrShardsChanged after 1", err, calls)
	}

	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	err = ProvisionWithRetry(cctx, log, func(context.Context) error { return errors.New("down") }, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("an ended context: err %v, want context.DeadlineExceeded", err)
	}
}

// TestDialListWithSpaces: NATS_URL is a comma-separated list and may carry
// spaces after the commas; Dial returns at once and connects in the
// background, also when the first server of the list is down.
func TestDialListWithSpaces(t *testing.T) {
	ns := testenv.NATS(t)
	nc, err := Dial(config.NATS{URL: "nats://127.0.0.1:1, " + ns.URL}, "dial-test", telemetry.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	testenv.Eventually(t, 10*time.Second, func() error {
		if !nc.IsConnected() {
			return errors.New("not connected yet")
		}
		return nil
	})
	if _, err := Dial(config.NATS{URL: "nats://127.0.0.1:1", TLSCAFile: "/nonexistent/ca.pem"}, "x", telemetry.Discard()); err == nil {
		t.Fatal("Dial with an unreadable CA file succeeded")
	}
}

// TestEnsureDLQStreamConcurrently: several roles provisioning at once all
// get the one STACKLENS_DLQ.
func TestEnsureDLQStreamConcurrently(t *testing.T) {
	ns := testenv.NATS(t)
	js := ns.JetStream(t)
	ctx := testenv.Context(t)
	c := config.NATS{Replicas: 1, Shards: 4, EventsMaxAge: time.Hour, DLQMaxAge: 2 * time.Hour}
	if _, err := EnsureEventsStream(ctx, js, c); err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(ctx, StreamDLQ); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for range 6 {
		wg.Go(func() {
			_, err := EnsureDLQStream(ctx, js, c)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	st, err := js.Stream(ctx, StreamDLQ)
	if err != nil || st.CachedInfo().Config.MaxAge != 2*time.Hour {
		t.Fatalf("%s after concurrent provisioning: %v", StreamDLQ, err)
	}
	// With the server gone, the error names the stream.
	ns.Shutdown()
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := EnsureDLQStream(sctx, js, c); err == nil || !strings.Contains(err.Error(), StreamDLQ) {
		t.Fatalf("server down: err %v, want an error naming %s", err, StreamDLQ)
	}
}

// TestEnsureEventsStreamReportsDLQFailure: when STACKLENS_DLQ cannot be
// created, provisioning fails naming it (no dead letter is written while
// nothing would keep it for DLQ_MAX_AGE).
func TestEnsureEventsStreamReportsDLQFailure(t *testing.T) {
	ns := testenv.NATS(t)
	js := ns.JetStream(t)
	ctx := testenv.Context(t)
	c := config.NATS{Replicas: 1, Shards: 4, EventsMaxAge: time.Hour, DLQMaxAge: -time.Hour}
	_, err := EnsureEventsStream(ctx, js, c)
	if err == nil || !strings.Contains(err.Error(), StreamDLQ) {
		t.Fatalf("err %v, want a create error naming %s", err, StreamDLQ)
	}
}
