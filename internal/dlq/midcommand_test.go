package dlq

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/natsutil"
)

// dropAt closes the NATS connection just before the stream call named at
// ("<stream>.<method>", Info with a subject filter as "<stream>.Info(filter)")
// and, for "<stream>.OrderedConsumer", just after it: the connection is lost
// at exactly that step of the command.
type dropAt struct {
	jetstream.JetStream
	nc *nats.Conn
	at string
}

func (d dropAt) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	st, err := d.JetStream.Stream(ctx, name)
	if err != nil {
		return nil, err
	}
	return dropStream{st, d, name}, nil
}

type dropStream struct {
	jetstream.Stream
	d    dropAt
	name string
}

func (s dropStream) hit(method string) {
	if s.d.at == s.name+"."+method {
		s.d.nc.Close()
	}
}

func (s dropStream) Info(ctx context.Context, opts ...jetstream.StreamInfoOpt) (*jetstream.StreamInfo, error) {
	if len(opts) > 0 {
		s.hit("Info(filter)")
	} else {
		s.hit("Info")
	}
	return s.Stream.Info(ctx, opts...)
}

func (s dropStream) GetMsg(ctx context.Context, seq uint64, opts ...jetstream.GetMsgOpt) (*jetstream.RawStreamMsg, error) {
	s.hit("GetMsg")
	return s.Stream.GetMsg(ctx, seq, opts...)
}

func (s dropStream) GetLastMsgForSubject(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error) {
	s.hit("GetLastMsgForSubject")
	return s.Stream.GetLastMsgForSubject(ctx, subject)
}

func (s dropStream) OrderedConsumer(ctx context.Context, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error) {
	c, err := s.Stream.OrderedConsumer(ctx, cfg)
	s.hit("OrderedConsumer")
	return c, err
}

// TestConnectionLostMidCommand: wherever the connection drops, List and
// Replay fail with the connection error wrapped in "dlq: " — never a
// partial list reported as complete — and a failed Replay appends nothing.
func TestConnectionLostMidCommand(t *testing.T) {
	dlqs, evs := natsutil.StreamDLQ+".", natsutil.StreamEvents+"."
	for _, tc := range []struct {
		cmd, at string
	}{
		{"list", evs + "GetLastMsgForSubject"}, // the newest dead letter, for the catch-up
		{"list", dlqs + "Info"},                // the catch-up's progress
		{"list", dlqs + "GetMsg"},              // the copy it last made
		{"list", dlqs + "Info(filter)"},        // the replay markers
		{"list", dlqs + "OrderedConsumer"},     // the first fetch
		{"replay", dlqs + "Info"},
		{"replay", dlqs + "GetLastMsgForSubject"}, // the marker check
	} {
		t.Run(tc.cmd+" "+tc.at, func(t *testing.T) {
			srv := testenv.NATS(t)
			ctx := testenv.Context(t)
			js, _ := setupJS(t, srv.JetStream(t))
			letters, err := List(ctx, js, Filter{})
			if err != nil || len(letters) != 3 {
				t.Fatalf("list before the fault: %d letters, %v", len(letters), err)
			}
			before := eventsMsgs(t, ctx, js)

			nc := srv.Conn(t)
			ljs, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			faulty := dropAt{ljs, nc, tc.at}
			switch tc.cmd {
			case "list":
				got, err := List(ctx, faulty, Filter{})
				if !errors.Is(err, nats.ErrConnectionClosed) || !strings.HasPrefix(err.Error(), "dlq: ") || got != nil {
					t.Fatalf("list: %d letters, %v; want dlq: ... connection closed", len(got), err)
				}
			case "replay":
				_, err := Replay(ctx, faulty, letters[1].Seq, []byte(fixedEvent), 4, event.Limits{}, testNow)
				if !errors.Is(err, nats.ErrConnectionClosed) || !strings.HasPrefix(err.Error(), "dlq: ") {
					t.Fatalf("replay: %v; want dlq: ... connection closed", err)
				}
				if after := eventsMsgs(t, ctx, js); after != before {
					t.Fatalf("a failed replay appended %d messages", after-before)
				}
				if got, err := List(ctx, js, Filter{}); err != nil || got[1].Replayed {
					t.Fatalf("after the failed replay: %+v, %v", got, err)
				}
			}
		})
	}
}

func eventsMsgs(t *testing.T, ctx context.Context, js jetstream.JetStream) uint64 {
	t.Helper()
	st, err := js.Stream(ctx, natsutil.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// TestCatchUpHonoursTheContext: waiting for a stalled STACKLENS_DLQ ends
// with the caller's deadline when that comes before CatchUpTimeout.
func TestCatchUpHonoursTheContext(t *testing.T) {
	js, _ := setup(t)
	if err := js.DeleteStream(testenv.Context(t), natsutil.StreamDLQ); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(testenv.Context(t), jetstream.StreamConfig{Name: natsutil.StreamDLQ, Subjects: []string{"unrelated.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(testenv.Context(t), "unrelated.x", []byte("x")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(testenv.Context(t), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := List(ctx, js, Filter{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("list with a stalled %s and a 300ms deadline: %v", natsutil.StreamDLQ, err)
	}
	if d := time.Since(start); d > CatchUpTimeout/2 {
		t.Fatalf("returned after %v, not at the caller's deadline", d)
	}
}

// TestReplayRefusesLettersNotCopiedFromTheEventStream: a dead letter in
// STACKLENS_DLQ that did not come from the event stream (a layout where it
// was published there directly) has no event-stream sequence to key the
// replay marker on, so it cannot be replayed at most once: it is refused.
func TestReplayRefusesLettersNotCopiedFromTheEventStream(t *testing.T) {
	js := testenv.NATS(t).JetStream(t)
	ctx := testenv.Context(t)
	cfg := natsutil.EventsStreamConfig(config.NATS{Replicas: 1, Shards: 4, EventsMaxAge: time.Hour})
	var subjects []string
	for _, s := range cfg.Subjects {
		if !strings.HasPrefix(s, natsutil.DLQPrefix) {
			subjects = append(subjects, s)
		}
	}
	cfg.Subjects = subjects
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: natsutil.StreamDLQ, Subjects: []string{natsutil.DLQPrefix + ">"}}); err != nil {
		t.Fatal(err)
	}
	ack, err := js.Publish(ctx, natsutil.DLQSubject("bridge", event.ReasonMissingField), []byte(`{"service":"checkout"}`))
	if err != nil {
		t.Fatal(err)
	}
	letters, err := List(ctx, js, Filter{})
	if err != nil || len(letters) != 1 || letters[0].Seq != ack.Sequence || letters[0].EventSeq != 0 {
		t.Fatalf("list: %+v, %v", letters, err)
	}
	before := eventsMsgs(t, ctx, js)
	if _, err := Replay(ctx, js, ack.Sequence, []byte(fixedEvent), 4, event.Limits{}, testNow); !errors.Is(err, ErrNotDeadLetter) {
		t.Fatalf("replay of a letter with no event-stream sequence: %v", err)
	}
	if after := eventsMsgs(t, ctx, js); after != before {
		t.Fatalf("the refused replay appended %d messages", after-before)
	}
}

// TestEventStreamMarkerRefusesReplayWithoutItsCopy: the replay marker in the
// event stream refuses a second replay by itself when its copy in
// STACKLENS_DLQ is gone (purged by an operator): the atomic batch fails on
// the marker's expected last subject sequence and appends nothing.
func TestEventStreamMarkerRefusesReplayWithoutItsCopy(t *testing.T) {
	js, _ := setup(t)
	ctx := testenv.Context(t)
	letters, err := List(ctx, js, Filter{})
	if err != nil || len(letters) != 3 {
		t.Fatalf("list: %d letters, %v", len(letters), err)
	}
	if _, err := Replay(ctx, js, letters[0].Seq, []byte(fixedEvent), 4, event.Limits{}, testNow); err != nil {
		t.Fatal(err)
	}
	dst, err := js.Stream(ctx, natsutil.StreamDLQ)
	if err != nil {
		t.Fatal(err)
	}
	// The copy is made asynchronously: wait for it before purging it.
	testenv.Eventually(t, 10*time.Second, func() error {
		_, err := dst.GetLastMsgForSubject(ctx, markerPrefix+">")
		return err
	})
	if err := dst.Purge(ctx, jetstream.WithPurgeSubject(markerPrefix+">")); err != nil {
		t.Fatal(err)
	}
	// A new dead letter lets the catch-up see STACKLENS_DLQ current again.
	if _, err := js.Publish(ctx, natsutil.DLQSubject("bridge", event.ReasonInvalidJSON), []byte("{")); err != nil {
		t.Fatal(err)
	}
	before := eventsMsgs(t, ctx, js)
	if _, err := Replay(ctx, js, letters[0].Seq, []byte(fixedEvent), 4, event.Limits{}, testNow); !errors.Is(err, ErrAlreadyReplayed) {
		t.Fatalf("second replay with the marker copy purged: %v", err)
	}
	if after := eventsMsgs(t, ctx, js); after != before {
		t.Fatalf("the refused replay appended %d messages", after-before)
	}
}
