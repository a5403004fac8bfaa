package bridge

import (
	"encoding/base64"
	"errors"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/segmentio/kafka-go"

	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/natsutil"
)

const (
	// dlqStage is the <stage> token of the bridge's dead-letter subjects.
	dlqStage = "bridge"
	// dlqMaxPayload bounds the payload of an oversized dead letter; the
	// original length is kept in Dlq-Original-Size.
	dlqMaxPayload = 4 << 10
	// maxKeyHeader bounds the Kafka key carried in a header.
	maxKeyHeader = 1 << 10

	// HdrKafkaKeyEncoding is "base64" when Kafka-Key holds the key in
	// standard base64 because the raw key is not header-safe text.
	HdrKafkaKeyEncoding = "Kafka-Key-Encoding"
	// HdrKafkaKeySize is set to the key's length when Kafka-Key holds only
	// its first 1 KiB.
	HdrKafkaKeySize = "Kafka-Key-Size"
)

// messageBuilder turns Kafka messages of one partition into stream
// messages. It caches event subjects per service and shares the constant
// header values between messages.
type messageBuilder struct {
	topicHdr []string
	partHdr  []string
	stageHdr []string
	shards   int
	limits   event.Limits
	subjects map[string]string // service → event subject
}

func newMessageBuilder(topic string, partition, shards int, lim event.Limits) *messageBuilder {
	return &messageBuilder{
		topicHdr: []string{topic},
		partHdr:  []string{strconv.Itoa(partition)},
		stageHdr: []string{dlqStage},
		shards:   shards,
		limits:   lim,
		subjects: map[string]string{},
	}
}

// build validates m and returns its stream message: the event on its
// shard's subject, or a dead letter with the reason. reason is "" for a
// valid event.
func (b *messageBuilder) build(m *kafka.Message, now time.Time) (*nats.Msg, event.Reason) {
	h := nats.Header{
		natsutil.HdrKafkaTopic:     b.topicHdr,
		natsutil.HdrKafkaPartition: b.partHdr,
		natsutil.HdrKafkaOffset:    {strconv.FormatInt(m.Offset, 10)},
	}
	if !m.Time.IsZero() {
		h[natsutil.HdrKafkaTime] = []string{strconv.FormatInt(m.Time.UnixMilli(), 10)}
	}
	if m.Key != nil {
		setKeyHeader(h, m.Key)
	}
	ev, err := event.Decode(m.Value, now, b.limits)
	if err == nil {
		return &nats.Msg{Subject: b.subject(ev.Service), Data: m.Value, Header: h}, ""
	}
	var de *event.DecodeError
	if !errors.As(err, &de) { // Decode documents only *DecodeError
		de = &event.DecodeError{Reason: event.ReasonInvalidJSON, Msg: err.Error()}
	}
	h[natsutil.HdrDLQReason] = []string{string(de.Reason)}
	h[natsutil.HdrDLQError] = []string{headerSafe(de.Error())}
	h[natsutil.HdrDLQStage] = b.stageHdr
	data := m.Value
	if len(data) > dlqMaxPayload && de.Reason == event.ReasonTooLarge {
		h[natsutil.HdrOriginalSize] = []string{strconv.Itoa(len(data))}
		data = data[:dlqMaxPayload]
	}
	return &nats.Msg{Subject: natsutil.DLQSubject(dlqStage, de.Reason), Data: data, Header: h}, de.Reason
}

func (b *messageBuilder) subject(service string) string {
	if s, ok := b.subjects[service]; ok {
		return s
	}
	if len(b.subjects) >= 16384 {
		clear(b.subjects)
	}
	s := natsutil.EventSubject(event.Shard(service, b.shards), service)
	b.subjects[service] = s
	return s
}

// setKeyHeader carries a Kafka key in Kafka-Key: verbatim when it is
// printable UTF-8, else base64 (Kafka-Key-Encoding: base64); keys longer
// than 1 KiB are cut (Kafka-Key-Size: the full length).
func setKeyHeader(h nats.Header, key []byte) {
	k := key
	if len(k) > maxKeyHeader {
		h[HdrKafkaKeySize] = []string{strconv.Itoa(len(k))}
		k = k[:maxKeyHeader]
	}
	if isHeaderText(k) {
		h[natsutil.HdrKafkaKey] = []string{string(k)}
		return
	}
	h[natsutil.HdrKafkaKey] = []string{base64.StdEncoding.EncodeToString(k)}
	h[HdrKafkaKeyEncoding] = []string{"base64"}
}

// isHeaderText reports whether b is valid UTF-8 without control
// characters and without leading or trailing spaces (which header parsing
// would trim).
func isHeaderText(b []byte) bool {
	if len(b) > 0 && (b[0] == ' ' || b[len(b)-1] == ' ') {
		return false
	}
	for _, c := range b {
		if c < 0x20 || c == 0x7f {
			return false
		}
	}
	return utf8.Valid(b)
}

// headerSafe replaces control characters so s can be a header value.
func headerSafe(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			out := []byte(s)
			for j := i; j < len(out); j++ {
				if out[j] < 0x20 || out[j] == 0x7f {
					out[j] = ' '
				}
			}
			return string(out)
		}
	}
	return s
}
