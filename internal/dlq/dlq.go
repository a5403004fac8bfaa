// Package dlq inspects the dead letters in the event stream and
// re-injects fixed ones. A replay publishes the corrected event and a
// marker on stacklens.dlq.replayed.<seq> as one atomic batch whose marker
// must be the first message on its subject, so a dead letter is replayed
// at most once however often the command is run or retried — and, since the
// batch is atomic, exactly once when it succeeds.
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
	Seq       uint64
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

// List returns the dead letters matching f, oldest first.
func List(ctx context.Context, js jetstream.JetStream, f Filter) ([]Letter, error) {
	st, err := js.Stream(ctx, natsutil.StreamEvents)
	if err != nil {
		return nil, fmt.Errorf("dlq: %w", err)
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
	cc := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}}
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
			l.Replayed = replayed[l.Seq]
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

// replayedSeqs reads the replay markers (their subjects name the seq).
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
		Seq: seq, Time: ts, Stage: stage, Reason: reason,
		Error:     h.Get(natsutil.HdrDLQError),
		Topic:     h.Get(natsutil.HdrKafkaTopic),
		Partition: h.Get(natsutil.HdrKafkaPartition),
		Offset:    h.Get(natsutil.HdrKafkaOffset),
		Payload:   data,
	}
}

// Replay validates payload (the corrected event; nil replays the original
// payload as it is) against lim and publishes it to the event stream
// together with the dead letter's replay marker, atomically.
func Replay(ctx context.Context, js jetstream.JetStream, seq uint64, payload []byte, shards int, lim event.Limits, now time.Time) (uint64, error) {
	st, err := js.Stream(ctx, natsutil.StreamEvents)
	if err != nil {
		return 0, fmt.Errorf("dlq: %w", err)
	}
	raw, err := st.GetMsg(ctx, seq)
	if err != nil {
		return 0, fmt.Errorf("dlq: sequence %d: %w", seq, err)
	}
	if !strings.HasPrefix(raw.Subject, natsutil.DLQPrefix) || strings.HasPrefix(raw.Subject, markerPrefix) {
		return 0, fmt.Errorf("dlq: sequence %d is on %s: %w", seq, raw.Subject, ErrNotDeadLetter)
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
	msg.Header.Set("Dlq-Replay-Of", strconv.FormatUint(seq, 10))
	marker := nats.NewMsg(markerPrefix + strconv.FormatUint(seq, 10))
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
