package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/natsutil"
)

// checkpointVersion is the format version of checkpoint payloads.
const checkpointVersion = 1

// Checkpoint is the payload of the last message of every batch, published
// on stacklens.offsets.<topic-token>.<partition>: the last Kafka offset the
// batch forwarded. The stream holds every offset of the partition up to and
// including Offset (as an event or a dead letter), and nothing after it.
type Checkpoint struct {
	V         int       `json:"v"`
	Topic     string    `json:"topic"`
	Partition int       `json:"partition"`
	Offset    int64     `json:"offset"`
	Count     int       `json:"count,omitempty"` // Kafka messages in the batch
	Time      time.Time `json:"time,omitzero"`   // when the batch was published
}

// encodeCheckpoint renders c as its JSON payload.
func encodeCheckpoint(c Checkpoint) []byte {
	c.V = checkpointVersion
	b, _ := json.Marshal(c) // cannot fail: plain fields only
	return b
}

// errBadCheckpoint marks a checkpoint payload that cannot be trusted.
var errBadCheckpoint = errors.New("bridge: bad checkpoint")

// decodeCheckpoint parses and validates a checkpoint payload.
func decodeCheckpoint(data []byte) (Checkpoint, error) {
	var raw struct {
		V         *int      `json:"v"`
		Topic     *string   `json:"topic"`
		Partition *int      `json:"partition"`
		Offset    *int64    `json:"offset"`
		Count     int       `json:"count"`
		Time      time.Time `json:"time"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&raw); err != nil {
		return Checkpoint{}, fmt.Errorf("%w: %v", errBadCheckpoint, err)
	}
	if dec.More() {
		return Checkpoint{}, fmt.Errorf("%w: trailing data", errBadCheckpoint)
	}
	switch {
	case raw.V == nil || raw.Topic == nil || raw.Partition == nil || raw.Offset == nil:
		return Checkpoint{}, fmt.Errorf("%w: v, topic, partition and offset are required", errBadCheckpoint)
	case *raw.V != checkpointVersion:
		return Checkpoint{}, fmt.Errorf("%w: unknown version %d", errBadCheckpoint, *raw.V)
	case *raw.Topic == "":
		return Checkpoint{}, fmt.Errorf("%w: empty topic", errBadCheckpoint)
	case *raw.Partition < 0 || *raw.Partition > 1<<31-1:
		return Checkpoint{}, fmt.Errorf("%w: partition %d out of range", errBadCheckpoint, *raw.Partition)
	case *raw.Offset < 0:
		return Checkpoint{}, fmt.Errorf("%w: negative offset %d", errBadCheckpoint, *raw.Offset)
	case raw.Count < 0:
		return Checkpoint{}, fmt.Errorf("%w: negative count %d", errBadCheckpoint, raw.Count)
	}
	return Checkpoint{V: *raw.V, Topic: *raw.Topic, Partition: *raw.Partition, Offset: *raw.Offset,
		Count: raw.Count, Time: raw.Time}, nil
}

// checkpointMsg builds the checkpoint message that closes a batch. It rolls
// the subject up (only the latest checkpoint per partition is kept) and is
// fenced by the caller with the expected last sequence of the subject.
func checkpointMsg(subject string, c Checkpoint) *nats.Msg {
	return &nats.Msg{
		Subject: subject,
		Data:    encodeCheckpoint(c),
		Header: nats.Header{
			natsutil.HdrKafkaTopic:     {c.Topic},
			natsutil.HdrKafkaPartition: {strconv.Itoa(c.Partition)},
			natsutil.HdrKafkaOffset:    {strconv.FormatInt(c.Offset, 10)},
			jetstream.MsgRollup:        {jetstream.MsgRollupSubject},
		},
	}
}

// storedCheckpoint is a checkpoint read back from the stream with its
// stream sequence (the fence of the next batch).
type storedCheckpoint struct {
	Checkpoint
	Seq   uint64
	Found bool
}

// checkpointReader reads the last message of a checkpoint subject.
type checkpointReader interface {
	GetLastMsgForSubject(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error)
}

// readCheckpoint returns the latest checkpoint of a partition; Found is
// false when the subject holds none (a partition never forwarded, or a
// checkpoint older than the stream's MaxAge).
func readCheckpoint(ctx context.Context, st checkpointReader, subject, topic string, partition int) (storedCheckpoint, error) {
	m, err := st.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return storedCheckpoint{}, nil
	}
	if err != nil {
		return storedCheckpoint{}, fmt.Errorf("read checkpoint %s: %w", subject, err)
	}
	c, err := decodeCheckpoint(m.Data)
	if err != nil {
		// Fall back on the header, which carries the same offset.
		off, herr := strconv.ParseInt(m.Header.Get(natsutil.HdrKafkaOffset), 10, 64)
		if herr != nil || off < 0 {
			return storedCheckpoint{}, fmt.Errorf("checkpoint %s seq %d: %w", subject, m.Sequence, err)
		}
		c = Checkpoint{V: checkpointVersion, Topic: topic, Partition: partition, Offset: off}
	}
	if c.Topic != topic || c.Partition != partition {
		return storedCheckpoint{}, fmt.Errorf("checkpoint %s seq %d is for %s/%d: %w",
			subject, m.Sequence, c.Topic, c.Partition, errBadCheckpoint)
	}
	return storedCheckpoint{Checkpoint: c, Seq: m.Sequence, Found: true}, nil
}
