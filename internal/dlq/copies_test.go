package dlq

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/natsutil"
)

func TestSourceSeq(t *testing.T) {
	for _, c := range []struct {
		header string
		want   uint64
	}{
		{natsutil.StreamEvents + " 42 stacklens.dlq.> >", 42},
		{natsutil.StreamEvents + " 7", 7},
		{"OTHER_STREAM 42 x >", 0}, // a copy from elsewhere
		{natsutil.StreamEvents, 0}, // no sequence
		{natsutil.StreamEvents + " nope", 0},
		{"", 0},
	} {
		h := nats.Header{}
		if c.header != "" {
			h.Set(streamSourceHeader, c.header)
		}
		if got := sourceSeq(h); got != c.want {
			t.Errorf("sourceSeq(%q) = %d, want %d", c.header, got, c.want)
		}
	}
}

// TestCatchUpTimesOut: when STACKLENS_DLQ does not copy the event stream's
// dead letters (its source gone), List and Replay say so after
// CatchUpTimeout instead of listing a stale copy.
func TestCatchUpTimesOut(t *testing.T) {
	js, _ := setup(t)
	ctx := testenv.Context(t)
	defer func(d time.Duration) { CatchUpTimeout = d }(CatchUpTimeout)
	CatchUpTimeout = 300 * time.Millisecond
	if _, err := List(ctx, js, Filter{}); err != nil {
		t.Fatal(err)
	}
	// A stream of that name that sources nothing: the newest dead letter
	// never arrives.
	if err := js.DeleteStream(ctx, natsutil.StreamDLQ); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: natsutil.StreamDLQ, Subjects: []string{"unrelated.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "unrelated.x", []byte("x")); err != nil {
		t.Fatal(err)
	}
	for name, call := range map[string]func() error{
		"list":   func() error { _, err := List(ctx, js, Filter{}); return err },
		"replay": func() error { _, err := Replay(ctx, js, 1, nil, 4, event.Limits{}, time.Now()); return err },
	} {
		if err := call(); err == nil || !strings.Contains(err.Error(), "has not copied") {
			t.Errorf("%s with a stalled %s: %v", name, natsutil.StreamDLQ, err)
		}
	}
}

// TestMissingStreams: without STACKLENS_DLQ, or without the event stream it
// copies from, List and Replay fail naming what is missing.
func TestMissingStreams(t *testing.T) {
	for _, missing := range []string{natsutil.StreamDLQ, natsutil.StreamEvents} {
		t.Run(missing, func(t *testing.T) {
			js, _ := setup(t)
			ctx := testenv.Context(t)
			if _, err := List(ctx, js, Filter{}); err != nil {
				t.Fatal(err)
			}
			if err := js.DeleteStream(ctx, missing); err != nil {
				t.Fatal(err)
			}
			if _, err := List(ctx, js, Filter{}); !errors.Is(err, jetstream.ErrStreamNotFound) {
				t.Errorf("list without %s: %v", missing, err)
			}
			if _, err := Replay(ctx, js, 1, nil, 4, event.Limits{}, time.Now()); !errors.Is(err, jetstream.ErrStreamNotFound) {
				t.Errorf("replay without %s: %v", missing, err)
			}
		})
	}
}

// TestConcurrentReplaysLandOnce: operators (or retries) replaying the same
// dead letter at once: exactly one replay lands, the others are refused as
// already replayed, and the event stream gains exactly one event.
func TestConcurrentReplaysLandOnce(t *testing.T) {
	js, _ := setup(t)
	ctx := testenv.Context(t)
	letters, err := List(ctx, js, Filter{})
	if err != nil || len(letters) != 3 {
		t.Fatalf("list: %v %v", letters, err)
	}
	st, _ := js.Stream(ctx, natsutil.StreamEvents)
	events := func() uint64 { // messages on event subjects
		t.Helper()
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(natsutil.EventsPrefix+">"))
		if err != nil {
			t.Fatal(err)
		}
		var n uint64
		for _, c := range info.State.Subjects {
			n += c
		}
		return n
	}
	before := events()
	fixed := []byte(`{"timestamp":"2026-11-29T01:00:00Z","service":"checkout","level":"info","latency_ms":1}`)
	now := time.Date(2026, 11, 29, 1, 1, 0, 0, time.UTC)
	const n = 6
	errs := make(chan error, n)
	start := make(chan struct{})
	for range n {
		go func() {
			<-start
			_, err := Replay(ctx, js, letters[2].Seq, fixed, 4, event.Limits{}, now)
			errs <- err
		}()
	}
	close(start)
	landed := 0
	for range n {
		switch err := <-errs; {
		case err == nil:
			landed++
		case !errors.Is(err, ErrAlreadyReplayed):
			t.Errorf("concurrent replay: %v, want nil or ErrAlreadyReplayed", err)
		}
	}
	if after := events(); landed != 1 || after != before+1 {
		t.Fatalf("%d replays landed, %d events added; want 1 and 1", landed, after-before)
	}
}
