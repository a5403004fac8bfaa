// Package dlq inspects the dead letters and re-injects fixed ones.
//
// Dead letters are written to the event stream STACKLENS_EVENTS (in the
// writers' atomic batches) and copied by the server into STACKLENS_DLQ,
// which keeps them for DLQ_MAX_AGE (docs/bridge.md). This package reads
// them from STACKLENS_DLQ: a Letter's Seq is its sequence there, EventSeq
// the original's in the event stream.
//
// A replay publishes the corrected event and a marker on
// stacklens.dlq.replayed.<event-seq> to the event stream as one atomic
// batch whose marker must be the first message on its subject; the marker
// is copied to STACKLENS_DLQ like the dead letters, where it outlives the
// event stream's retention and is checked first. So a dead letter is
// replayed at most once however often the command is run or retried — and,
// since the batch is atomic, exactly once when it succeeds.
package dlq

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/natsutil"
)

// ReplayedStage is the stage token of replay markers; List skips them.
const ReplayedStage = "replayed"

// Letter is one dead letter.
type Letter struct {
	Seq       uint64 // in STACKLENS_DLQ: what Replay takes
	EventSeq  uint64 // of the original in STACKLENS_EVENTS (0: unknown)
	Time      time.Time
	Stage     string
	Reason    string
	Error     string
	Topic     string
	Partition string
	Offset    string
	Payload   []byte
	Replayed  bool
}

// Filter selects dead letters.
type Filter struct {
	Reason  string    // "" for all
	Stage   string    // "" for all
	Since   time.Time // zero for the whole stream
	Limit   int       // 0: no limit
	FromSeq uint64    // start here (0: beginning, or Since)
}

// ErrAlreadyReplayed means the dead letter was replayed before.
var ErrAlreadyReplayed = errors.New("dead letter already replayed")

// ErrNotDeadLetter means the sequence is not a dead letter.
var ErrNotDeadLetter = errors.New("not a dead letter")

// CatchUpTimeout bounds how long List and Replay wait for STACKLENS_DLQ to
// copy the dead letters already in the event stream (normally milliseconds).
var CatchUpTimeout = 10 * time.Second

// List returns the dead letters matching f, oldest first. FromSeq is a
// STACKLENS_DLQ sequence.
func List(ctx context.Context, js jetstream.JetStream, f Filter) ([]Letter, error) {
	st, err := caughtUp(ctx, js)
	if err != nil {
		return nil, err
	}
	subject := natsutil.DLQPrefix + ">"
	switch {
	case f.Stage != "" && f.Reason != "":
		subject = natsutil.DLQPrefix + f.Stage + "." + f.Reason
	case f.Stage != "":
		subject = natsutil.DLQPrefix + f.Stage + ".*"
	case f.Reason != "":
		subject = natsutil.DLQPrefix + "*." + f.Reason
	}
	replayed, err := replayedSeqs(ctx, st)
	if err != nil {
		return nil, err
	}
	// Each fetch of an ordered consumer recreates its server consumer,
	// retrying without end by default (and without the context): with the
	// connection lost, List would never return.
	cc := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}, MaxResetAttempts: 3}
	switch {
	case f.FromSeq > 0:
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, f.FromSeq
	case !f.Since.IsZero():
		cc.DeliverPolicy, cc.OptStartTime = jetstream.DeliverByStartTimePolicy, &f.Since
	}
	cons, err := st.OrderedConsumer(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("dlq: %w", err)
	}
	var out []Letter
	for {
		if f.Limit > 0 && len(out) >= f.Limit {
			return out, nil
		}
		batch, err := cons.FetchNoWait(500)
		if err != nil {
			return nil, fmt.Errorf("dlq: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				return nil, fmt.Errorf("dlq: %w", err)
			}
			l := fromMsg(m.Subject(), m.Headers(), m.Data(), meta.Sequence.Stream, meta.Timestamp)
			if l.Stage == ReplayedStage {
				continue
			}
			l.Replayed = replayed[l.EventSeq]
			if f.Limit == 0 || len(out) < f.Limit {
				out = append(out, l)
			}
		}
		if err := batch.Error(); err != nil {
			return nil, fmt.Errorf("dlq: %w", err)
		}
		if n == 0 {
			return out, nil
		}
	}
}

// replayedSeqs reads the replay markers copied to STACKLENS_DLQ (their
// subjects name the original's event-stream sequence).
func replayedSeqs(ctx context.Context, st jetstream.Stream) (map[uint64]bool, error) {
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(markerPrefix+">"))
	if err != nil {
		return nil, fmt.Errorf("dlq: %w", err)
	}
	out := make(map[uint64]bool, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		if seq, err := strconv.ParseUint(strings.TrimPrefix(subj, markerPrefix), 10, 64); err == nil {
			out[seq] = true
		}
	}
	return out, nil
}

const markerPrefix = natsutil.DLQPrefix + ReplayedStage + "."

func fromMsg(subject string, h nats.Header, data []byte, seq uint64, ts time.Time) Letter {
	rest := strings.TrimPrefix(subject, natsutil.DLQPrefix)
	stage, reason, _ := strings.Cut(rest, ".")
	return Letter{
		Seq: seq, EventSeq: sourceSeq(h), Time: ts, Stage: stage, Reason: reason,
		Error:     h.Get(natsutil.HdrDLQError),
		Topic:     h.Get(natsutil.HdrKafkaTopic),
		Partition: h.Get(natsutil.HdrKafkaPartition),
		Offset:    h.Get(natsutil.HdrKafkaOffset),
		Payload:   data,
	}
}

// streamSourceHeader is set by the server on every message a stream source
// copies (nats-server's JSStreamSource).
const streamSourceHeader = "Nats-Stream-Source"

// sourceSeq is the event-stream sequence of a copy made by the stream
// source, from the header the server adds to every copy
// ("<stream> <seq> <filter> <transform>"; the server reads it back the same
// way after a restart). 0 when absent or not from STACKLENS_EVENTS.
func sourceSeq(h nats.Header) uint64 {
	f := strings.Fields(h.Get(streamSourceHeader))
	if len(f) < 2 || f[0] != natsutil.StreamEvents {
		return 0
	}
	seq, _ := strconv.ParseUint(f[1], 10, 64)
	return seq
}

// caughtUp returns STACKLENS_DLQ once it holds a copy of the newest dead
// letter (or marker) of the event stream, so a dead letter written just
// before is listed and replayable.
func caughtUp(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, error) {
	dst, err := js.Stream(ctx, natsutil.StreamDLQ)
	if err != nil {
		return nil, fmt.Errorf("dlq: %w", err)
	}
	est, err := js.Stream(ctx, natsutil.StreamEvents)
	if err != nil {
		return nil, fmt.Errorf("dlq: %w", err)
	}
	newest, err := est.GetLastMsgForSubject(ctx, natsutil.DLQPrefix+">")
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return dst, nil // none left in the event stream
	case err != nil:
		return nil, fmt.Errorf("dlq: newest dead letter of %s: %w", natsutil.StreamEvents, err)
	}
	deadline := time.Now().Add(CatchUpTimeout)
	for wait := 5 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
		info, err := dst.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("dlq: %w", err)
		}
		if info.State.LastSeq > 0 {
			last, err := dst.GetMsg(ctx, info.State.LastSeq)
			if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
				return nil, fmt.Errorf("dlq: %w", err)
			}
			if err == nil && sourceSeq(last.Header) >= newest.Sequence {
				return dst, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("dlq: %s has not copied dead letter %d of %s within %v (is its source running? see docs/RUNBOOK.md)",
				natsutil.StreamDLQ, newest.Sequence, natsutil.StreamEvents, CatchUpTimeout)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// Replay validates payload (the corrected event; nil replays the original
// payload as it is) against lim and publishes it to the event stream
// together with the dead letter's replay marker, atomically. seq is the
// dead letter's STACKLENS_DLQ sequence (Letter.Seq); the returned sequence
// is the event's in STACKLENS_EVENTS.
func Replay(ctx context.Context, js jetstream.JetStream, seq uint64, payload []byte, shards int, lim event.Limits, now time.Time) (uint64, error) {
	dst, err := caughtUp(ctx, js)
	if err != nil {
		return 0, err
	}
	raw, err := dst.GetMsg(ctx, seq)
	if err != nil {
		return 0, fmt.Errorf("dlq: sequence %d of %s: %w", seq, natsutil.StreamDLQ, err)
	}
	if !strings.HasPrefix(raw.Subject, natsutil.DLQPrefix) || strings.HasPrefix(raw.Subject, markerPrefix) {
		return 0, fmt.Errorf("dlq: sequence %d is on %s: %w", seq, raw.Subject, ErrNotDeadLetter)
	}
	orig := sourceSeq(raw.Header)
	if orig == 0 {
		return 0, fmt.Errorf("dlq: sequence %d of %s is not a copy from %s: %w", seq, natsutil.StreamDLQ, natsutil.StreamEvents, ErrNotDeadLetter)
	}
	// The marker in the event stream expires with EVENTS_MAX_AGE; its copy
	// here lives as long as the dead letter.
	if _, err := dst.GetLastMsgForSubject(ctx, markerPrefix+strconv.FormatUint(orig, 10)); err == nil {
		return 0, fmt.Errorf("dlq: sequence %d: %w", seq, ErrAlreadyReplayed)
	} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, fmt.Errorf("dlq: sequence %d: %w", seq, err)
	}
	if payload == nil {
		payload = raw.Data
	}
	ev, err := event.Decode(payload, now, lim)
	if err != nil {
		return 0, fmt.Errorf("dlq: the replacement is still invalid: %w", err)
	}
	msg := nats.NewMsg(natsutil.EventSubject(event.Shard(ev.Service, shards), ev.Service))
	msg.Data = payload
	for _, k := range []string{natsutil.HdrKafkaTopic, natsutil.HdrKafkaPartition, natsutil.HdrKafkaOffset, natsutil.HdrKafkaKey, natsutil.HdrKafkaTime} {
		if v := raw.Header.Get(k); v != "" {
			msg.Header.Set(k, v)
		}
	}
	msg.Header.Set("Dlq-Replay-Of", strconv.FormatUint(orig, 10))
	marker := nats.NewMsg(markerPrefix + strconv.FormatUint(orig, 10))
	marker.Data = []byte(now.UTC().Format(time.RFC3339Nano))
	// The marker must be the first message on its subject.
	marker.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
	ack, err := jetstreamext.PublishMsgBatch(ctx, js, []*nats.Msg{msg, marker})
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			return 0, fmt.Errorf("dlq: sequence %d: %w", seq, ErrAlreadyReplayed)
		}
		if strings.Contains(err.Error(), "wrong last sequence") {
			return 0, fmt.Errorf("dlq: sequence %d: %w", seq, ErrAlreadyReplayed)
		}
		return 0, fmt.Errorf("dlq: replay %d: %w", seq, err)
	}
	return ack.Sequence - 1, nil
}
