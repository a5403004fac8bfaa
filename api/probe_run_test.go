package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/natsutil"
)

// syncBuffer is a log sink safe for the probe's goroutine.
type syncBuffer struct {
	mu sync.Mutex
	sb strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sb.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sb.String()
}

// TestPipelineProbeRun: Run samples every interval — new dead letters show
// up without any request — keeps the last numbers marked unavailable when
// NATS goes away, logs that once, and returns when its context ends.
func TestPipelineProbeRun(t *testing.T) {
	ns := testenv.NATS(t)
	nc := natsConnect(t, ns.URL)
	ctx := context.Background()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := natsutil.EnsureEventsStream(ctx, js, config.NATS{Shards: 2, Replicas: 1, EventsMaxAge: time.Hour, DLQMaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	probe, err := NewPipelineProbe(nc, PipelineProbeOptions{Windows: []string{"1min"}, Interval: 20 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if probe.PipelineStatus() != nil {
		t.Fatal("a status before the first sample")
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); probe.Run(rctx) }()
	total := func() (int64, string) {
		st := probe.PipelineStatus()
		if st == nil || st.DeadLetters == nil {
			return -1, ""
		}
		return st.DeadLetters.Total, st.Status
	}
	for i := 1; i <= 2; i++ {
		if _, err := js.Publish(ctx, natsutil.DLQSubject("bridge", "invalid_json"), []byte("x")); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 10*time.Second, func() error {
			if n, status := total(); n != int64(i) || status != "ok" {
				return fmt.Errorf("dead letters %d (%s), want %d", n, status, i)
			}
			return nil
		})
	}
	ns.Shutdown()
	testenv.Eventually(t, 15*time.Second, func() error {
		if n, status := total(); status != "unavailable" || n != 2 {
			return fmt.Errorf("status %q with %d dead letters, want unavailable with the last sample's 2", status, n)
		}
		return nil
	})
	testenv.Eventually(t, 5*time.Second, func() error {
		if !strings.Contains(logs.String(), "pipeline sample failed") {
			return errors.New("no warning logged")
		}
		return nil
	})
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	// Every failed sample since NATS went away (one per 20 ms) had the
	// same error: it is logged once, not per sample.
	if n := strings.Count(logs.String(), "pipeline sample failed"); n > 2 {
		t.Errorf("the same failure was logged %d times", n)
	}
}

// TestProgressFiguresCountRequests: the api's progress figures are the
// requests served, 5xx answers and rate-limited requests.
func TestProgressFiguresCountRequests(t *testing.T) {
	dsn, db, now := newDB(t)
	clock := time.Now()
	cfg := testConfig(dsn)
	cfg.API.RateLimit = 3
	srv, err := New(cfg, Deps{Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.closePools)
	f := &fixture{t: t, dsn: dsn, db: db, srv: srv, now: now}
	for range 5 {
		f.request("GET", "/metrics?limit=1", "", nil)
	}
	got := map[string]float64{}
	for _, fig := range srv.ProgressFigures() {
		got[fig.Name] = fig.Value
		if fig.Name == "in" && !fig.Total {
			t.Error("requests served is not a running total")
		}
	}
	if got["in"] < 3 || got["rate_limited"] != 2 || got["server_errors"] != 0 {
		t.Errorf("figures %v, want in ≥ 3, rate_limited 2, server_errors 0", got)
	}
	ws := srv.Windows()
	if len(ws) != 3 || ws[0].Name != "1min" {
		t.Fatalf("Windows() %v, want the default 1min, 5min, 1hour", ws)
	}
	ws[0].Name = "changed"
	if srv.Windows()[0].Name == "changed" {
		t.Error("Windows() hands out the server's own slice")
	}
}
