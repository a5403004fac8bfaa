package dlq

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/natsutil"
)

func setup(t *testing.T) (jetstream.JetStream, []uint64) {
	t.Helper()
	return setupJS(t, testenv.NATS(t).JetStream(t))
}

// setupJS provisions the streams through js and writes the dead letters.
func setupJS(t *testing.T, js jetstream.JetStream) (jetstream.JetStream, []uint64) {
	t.Helper()
	ctx := testenv.Context(t)
	if _, err := natsutil.EnsureEventsStream(ctx, js, config.NATS{Replicas: 1, Shards: 4, EventsMaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	letters := []struct {
		reason event.Reason
		data   string
	}{
		{event.ReasonInvalidJSON, `{"service":`},
		{event.ReasonMissingField, `{"timestamp":"2026-11-29T01:00:00Z","service":"checkout","level":"info"}`},
		{event.ReasonOutOfRange, `{"timestamp":"2026-11-29T01:00:00Z","service":"search","level":"info","latency_ms":-5}`},
	}
	for i, l := range letters {
		m := nats.NewMsg(natsutil.DLQSubject("bridge", l.reason))
		m.Data = []byte(l.data)
		m.Header.Set(natsutil.HdrDLQReason, string(l.reason))
		m.Header.Set(natsutil.HdrDLQError, "bad "+string(l.reason))
		m.Header.Set(natsutil.HdrKafkaTopic, "stacklens-analytics")
		m.Header.Set(natsutil.HdrKafkaPartition, "3")
		m.Header.Set(natsutil.HdrKafkaOffset, strconv.Itoa(100+i))
		ack, err := js.PublishMsg(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, ack.Sequence)
	}
	// An event in between must never be listed.
	if _, err := js.Publish(ctx, natsutil.EventSubject(1, "checkout"), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	return js, seqs
}

func TestListFiltersAndDecodesDeadLetters(t *testing.T) {
	js, seqs := setup(t)
	ctx := testenv.Context(t)
	all, err := List(ctx, js, Filter{})
	if err != nil || len(all) != 3 {
		t.Fatalf("list: %d letters, %v", len(all), err)
	}
	l := all[1]
	if l.EventSeq != seqs[1] || l.Seq == 0 || l.Stage != "bridge" || l.Reason != "missing_field" || l.Error != "bad missing_field" ||
		l.Topic != "stacklens-analytics" || l.Partition != "3" || l.Offset != "101" || l.Replayed || l.Time.IsZero() {
		t.Errorf("letter %+v", l)
	}
	for _, tc := range []struct {
		f    Filter
		want int
	}{
		{Filter{Reason: "out_of_range"}, 1},
		{Filter{Stage: "bridge"}, 3},
		{Filter{Stage: "bridge", Reason: "invalid_json"}, 1},
		{Filter{Stage: "processor"}, 0},
		{Filter{Limit: 2}, 2},
		{Filter{FromSeq: all[2].Seq}, 1},
		{Filter{Since: time.Now().Add(time.Hour)}, 0},
	} {
		got, err := List(ctx, js, tc.f)
		if err != nil || len(got) != tc.want {
			t.Errorf("%+v: %d letters (%v), want %d", tc.f, len(got), err, tc.want)
		}
	}
}

func TestReplayIsAtMostOnceAndValidated(t *testing.T) {
	js, seqs := setup(t)
	ctx := testenv.Context(t)
	now := time.Date(2026, 11, 29, 1, 1, 0, 0, time.UTC)
	lim := event.Limits{}
	letters, err := List(ctx, js, Filter{})
	if err != nil || len(letters) != 3 {
		t.Fatalf("list: %v %v", letters, err)
	}
	dseq := letters[1].Seq // Replay takes the STACKLENS_DLQ sequence

	// Replaying the broken original is refused with the reason.
	if _, err := Replay(ctx, js, dseq, nil, 4, lim, now); err == nil {
		t.Fatal("an invalid payload was replayed")
	}
	fixed := []byte(`{"timestamp":"2026-11-29T01:00:00Z","service":"checkout","level":"info","latency_ms":12.5}`)
	evSeq, err := Replay(ctx, js, dseq, fixed, 4, lim, now)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := js.Stream(ctx, natsutil.StreamEvents)
	m, err := st.GetMsg(ctx, evSeq)
	if err != nil || m.Subject != natsutil.EventSubject(event.Shard("checkout", 4), "checkout") || string(m.Data) != string(fixed) ||
		m.Header.Get(natsutil.HdrKafkaOffset) != "101" || m.Header.Get("Dlq-Replay-Of") != strconv.FormatUint(seqs[1], 10) {
		t.Fatalf("replayed message %+v %v", m, err)
	}
	// A second replay — a retry, or an operator running it twice — is refused
	// and appends nothing.
	before, _ := st.Info(ctx)
	if _, err := Replay(ctx, js, dseq, fixed, 4, lim, now); !errors.Is(err, ErrAlreadyReplayed) {
		t.Fatalf("second replay: %v", err)
	}
	after, _ := st.Info(ctx)
	if after.State.Msgs != before.State.Msgs {
		t.Fatalf("a refused replay appended %d messages", after.State.Msgs-before.State.Msgs)
	}
	got, _ := List(ctx, js, Filter{})
	if len(got) != 3 || !got[1].Replayed || got[0].Replayed {
		t.Errorf("replayed flags: %+v", got)
	}
	dst, _ := js.Stream(ctx, natsutil.StreamDLQ)
	marker, err := dst.GetLastMsgForSubject(ctx, markerPrefix+">")
	if err != nil || marker.Subject != markerPrefix+strconv.FormatUint(seqs[1], 10) {
		t.Fatalf("marker copy in %s: %+v %v", natsutil.StreamDLQ, marker, err)
	}
	if _, err := Replay(ctx, js, marker.Sequence, nil, 4, lim, now); !errors.Is(err, ErrNotDeadLetter) {
		t.Errorf("replay of a marker: %v", err)
	}
	if _, err := Replay(ctx, js, 999999, nil, 4, lim, now); err == nil {
		t.Error("replay of a missing sequence")
	}
}
