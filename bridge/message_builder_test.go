package bridge

import (
	"encoding/base64"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/natsutil"
)

func TestMessageBuilder(t *testing.T) {
	now := time.Now()
	b := newMessageBuilder("in", 4, 16, event.Limits{MaxBytes: 2048, Horizon: 24 * time.Hour})
	valid := []byte(`{"timestamp":` + itoa(now.UnixMilli()) + `,"service":"a.b","level":"WARN","latency_ms":3}`)
	m, r := b.build(&kafka.Message{Offset: 9, Value: valid, Key: []byte("key 1"), Time: time.UnixMilli(1234)}, now)
	if r != "" || m.Subject != natsutil.EventSubject(event.Shard("a.b", 16), "a.b") || string(m.Data) != string(valid) {
		t.Fatalf("valid: %v %s %s", r, m.Subject, m.Data)
	}
	h := m.Header
	if h.Get(natsutil.HdrKafkaTopic) != "in" || h.Get(natsutil.HdrKafkaPartition) != "4" ||
		h.Get(natsutil.HdrKafkaOffset) != "9" || h.Get(natsutil.HdrKafkaKey) != "key 1" ||
		h.Get(natsutil.HdrKafkaTime) != "1234" || h.Get(HdrKafkaKeyEncoding) != "" {
		t.Fatalf("headers %v", h)
	}
	if m2, _ := b.build(&kafka.Message{Offset: 10, Value: valid}, now); m2.Subject != m.Subject || m2.Header.Get(natsutil.HdrKafkaKey) != "" {
		t.Fatalf("cached subject %s, key %v", m2.Subject, m2.Header)
	}

	big := []byte(`{"x":"` + strings.Repeat("y", 9000) + `"}`)
	m, r = b.build(&kafka.Message{Offset: 11, Value: big}, now)
	if r != event.ReasonTooLarge || m.Subject != "stacklens.dlq.bridge.too_large" || len(m.Data) != dlqMaxPayload ||
		m.Header.Get(natsutil.HdrOriginalSize) != itoa(int64(len(big))) || m.Header.Get(natsutil.HdrDLQStage) != "bridge" ||
		m.Header.Get(natsutil.HdrDLQReason) != "too_large" || !strings.Contains(m.Header.Get(natsutil.HdrDLQError), "too_large") {
		t.Fatalf("too large: %v %s %d %v", r, m.Subject, len(m.Data), m.Header)
	}
	m, r = b.build(&kafka.Message{Offset: 12, Value: []byte("{\"service\":\"x\n")}, now)
	if r != event.ReasonInvalidJSON || m.Header.Get(natsutil.HdrOriginalSize) != "" || strings.ContainsAny(m.Header.Get(natsutil.HdrDLQError), "\r\n") {
		t.Fatalf("invalid json: %v %v", r, m.Header)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestKeyHeader(t *testing.T) {
	for _, tc := range []struct {
		key      []byte
		want     string
		encoding string
		size     string
	}{
		{[]byte("user-42"), "user-42", "", ""},
		{[]byte("clé"), "clé", "", ""},
		{[]byte{}, "", "", ""},
		{[]byte("a\r\nb"), base64.StdEncoding.EncodeToString([]byte("a\r\nb")), "base64", ""},
		{[]byte(" padded"), base64.StdEncoding.EncodeToString([]byte(" padded")), "base64", ""},
		{[]byte{0xff, 0xfe}, base64.StdEncoding.EncodeToString([]byte{0xff, 0xfe}), "base64", ""},
		{[]byte(strings.Repeat("k", 3000)), strings.Repeat("k", maxKeyHeader), "", "3000"},
	} {
		h := map[string][]string{}
		setKeyHeader(h, tc.key)
		if h[natsutil.HdrKafkaKey][0] != tc.want || first(h[HdrKafkaKeyEncoding]) != tc.encoding || first(h[HdrKafkaKeySize]) != tc.size {
			t.Errorf("%q: %v", tc.key, h)
		}
	}
	if got := headerSafe("a\nb\x7fc"); got != "a b c" {
		t.Errorf("headerSafe: %q", got)
	}
	if got := headerSafe("fine"); got != "fine" {
		t.Errorf("headerSafe: %q", got)
	}
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

func TestKafkaLogger(t *testing.T) {
	var got error
	l := kafkaLogger{log: testLogger(t), onErr: func(err error) { got = err }}
	l.Printf("broker %d down", 3)
	if got == nil || got.Error() != "broker 3 down" {
		t.Fatalf("onErr got %v", got)
	}
	kafkaLogger{log: testLogger(t)}.Printf("no callback")
}
