package dlq

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/embedded"
	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/natsutil"
)

var testNow = time.Date(2026, 11, 29, 1, 1, 0, 0, time.UTC)

const fixedEvent = `{"timestamp":"2026-11-29T01:00:00Z","service":"checkout","level":"info","latency_ms":12.5}`

func TestCommandsWithoutTheEventStream(t *testing.T) {
	js := testenv.NATS(t).JetStream(t)
	ctx := testenv.Context(t)
	if got, err := List(ctx, js, Filter{}); !errors.Is(err, jetstream.ErrStreamNotFound) || got != nil {
		t.Errorf("list: %v, %v; want the missing stream", got, err)
	}
	if _, err := Replay(ctx, js, 1, []byte(fixedEvent), 4, event.Limits{}, testNow); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("replay: %v; want the missing stream", err)
	}
}

func TestListRejectsBadFilters(t *testing.T) {
	js, _ := setup(t)
	ctx := testenv.Context(t)
	for _, f := range []Filter{
		{Stage: "bad stage"},
		{Reason: "a>b"},
		{Stage: "bridge", Reason: "x y"},
	} {
		if got, err := List(ctx, js, f); err == nil || !strings.HasPrefix(err.Error(), "dlq: ") {
			t.Errorf("%+v: %d letters, %v; want an error", f, len(got), err)
		}
	}
	// The good letters are still there.
	if got, err := List(ctx, js, Filter{Stage: "bridge"}); err != nil || len(got) != 3 {
		t.Errorf("after bad filters: %d letters, %v", len(got), err)
	}
}

// dropAfterLookup closes the NATS connection right after the stream lookup
// succeeded: the connection is lost in the middle of the command.
type dropAfterLookup struct {
	jetstream.JetStream
	nc *nats.Conn
}

func (d dropAfterLookup) Stream(ctx context.Context, name string) (jetstream.Stream, error) {
	st, err := d.JetStream.Stream(ctx, name)
	d.nc.Close()
	return st, err
}

func TestListFailsWhenTheConnectionDrops(t *testing.T) {
	srv := testenv.NATS(t)
	ctx := testenv.Context(t)
	nc := srv.Conn(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := natsutil.EnsureEventsStream(ctx, js, config.NATS{Replicas: 1, Shards: 4, EventsMaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, natsutil.DLQSubject("bridge", event.ReasonInvalidJSON), []byte("{")); err != nil {
		t.Fatal(err)
	}
	got, err := List(ctx, dropAfterLookup{js, nc}, Filter{})
	if !errors.Is(err, nats.ErrConnectionClosed) || got != nil {
		t.Errorf("list over a dropped connection: %v, %v", got, err)
	}
}

func TestListReportsRefusedFetch(t *testing.T) {
	// An operator limited pull batches below what List asks for: the
	// server refuses the fetch, and List must say so, not return nothing.
	port, err := embedded.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: port, NoSigs: true,
		JetStream: true, StoreDir: t.TempDir(),
		JetStreamLimits: server.JSLimitOpts{MaxRequestBatch: 10},
	})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testenv.Context(t)
	if _, err := natsutil.EnsureEventsStream(ctx, js, config.NATS{Replicas: 1, Shards: 4, EventsMaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, natsutil.DLQSubject("bridge", event.ReasonInvalidJSON), []byte("{")); err != nil {
		t.Fatal(err)
	}
	got, err := List(ctx, js, Filter{})
	if err == nil || !strings.Contains(err.Error(), "MaxRequestBatch") {
		t.Errorf("list against a server limiting batches to 10: %d letters, %v", len(got), err)
	}
}

func TestReplayReportsPublishFailure(t *testing.T) {
	js := testenv.NATS(t).JetStream(t)
	ctx := testenv.Context(t)
	// A stream provisioned without atomic batch publishing (e.g. by an older
	// version or by hand) cannot take a replay.
	cfg := natsutil.EventsStreamConfig(config.NATS{Replicas: 1, Shards: 4, EventsMaxAge: time.Hour})
	cfg.AllowAtomicPublish = false
	st, err := js.CreateStream(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := natsutil.EnsureDLQStream(ctx, js, config.NATS{Replicas: 1, DLQMaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, natsutil.DLQSubject("bridge", event.ReasonMissingField), []byte(`{"service":"checkout"}`)); err != nil {
		t.Fatal(err)
	}
	_, err = Replay(ctx, js, 1, []byte(fixedEvent), 4, event.Limits{}, testNow)
	if err == nil || errors.Is(err, ErrAlreadyReplayed) || !strings.HasPrefix(err.Error(), "dlq: replay ") {
		t.Fatalf("replay into a stream without atomic publish: %v", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Errorf("a failed replay left %d messages, want only the dead letter", info.State.Msgs)
	}
	letters, err := List(ctx, js, Filter{})
	if err != nil || len(letters) != 1 || letters[0].Replayed {
		t.Errorf("after the failed replay: %+v, %v", letters, err)
	}
}

// TestDeadLetterOutlivesEventStream: dead letters live for DLQ_MAX_AGE in
// STACKLENS_DLQ, not for the event stream's max age. The event stream here
// keeps messages for one second (below the configuration minimum, built by
// hand); after they expired there, the dead letter is still listed and
// replayable, a second replay is still refused although the replay marker
// expired from the event stream too, and the copy goes at DLQ_MAX_AGE.
// Before STACKLENS_DLQ, List and Replay read the event stream and found
// nothing once it expired.
func TestDeadLetterOutlivesEventStream(t *testing.T) {
	js := testenv.NATS(t).JetStream(t)
	ctx := testenv.Context(t)
	nc := config.NATS{Replicas: 1, Shards: 4, EventsMaxAge: time.Second, DLQMaxAge: 6 * time.Second}
	cfg := natsutil.EventsStreamConfig(nc)
	cfg.Duplicates = 500 * time.Millisecond // must not exceed MaxAge
	est, err := js.CreateStream(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := natsutil.EnsureDLQStream(ctx, js, nc)
	if err != nil {
		t.Fatal(err)
	}
	if got := dst.CachedInfo().Config; got.MaxAge != nc.DLQMaxAge || len(got.Sources) != 1 ||
		got.Sources[0].Name != natsutil.StreamEvents || got.Sources[0].FilterSubject != natsutil.DLQPrefix+">" || len(got.Subjects) != 0 {
		t.Fatalf("%s config: %+v", natsutil.StreamDLQ, got)
	}
	m := nats.NewMsg(natsutil.DLQSubject("bridge", event.ReasonMissingField))
	m.Data = []byte(`{"service":"checkout"}`)
	m.Header.Set(natsutil.HdrKafkaOffset, "42")
	ack, err := js.PublishMsg(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	expired := func() error {
		info, err := est.Info(ctx)
		if err != nil {
			return err
		}
		if info.State.Msgs != 0 {
			return fmt.Errorf("%d messages still in the event stream", info.State.Msgs)
		}
		return nil
	}
	testenv.Eventually(t, 10*time.Second, expired)
	letters, err := List(ctx, js, Filter{})
	if err != nil || len(letters) != 1 || letters[0].EventSeq != ack.Sequence || letters[0].Offset != "42" || letters[0].Replayed {
		t.Fatalf("after the event stream expired: %+v %v", letters, err)
	}
	if _, err := Replay(ctx, js, letters[0].Seq, []byte(fixedEvent), 4, event.Limits{}, testNow); err != nil {
		t.Fatalf("replay after the event stream expired: %v", err)
	}
	testenv.Eventually(t, 10*time.Second, expired) // the replay and its marker expire there too
	if _, err := Replay(ctx, js, letters[0].Seq, []byte(fixedEvent), 4, event.Limits{}, testNow); !errors.Is(err, ErrAlreadyReplayed) {
		t.Fatalf("second replay after the marker expired from the event stream: %v", err)
	}
	if letters, err := List(ctx, js, Filter{}); err != nil || len(letters) != 1 || !letters[0].Replayed {
		t.Fatalf("after the replay: %+v %v", letters, err)
	}
	// DLQ_MAX_AGE still ends it.
	testenv.Eventually(t, 15*time.Second, func() error {
		info, err := dst.Info(ctx)
		if err != nil {
			return err
		}
		if info.State.Msgs != 0 {
			return fmt.Errorf("%d messages still in %s", info.State.Msgs, natsutil.StreamDLQ)
		}
		return nil
	})
}
