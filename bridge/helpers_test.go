package bridge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/segmentio/kafka-go"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/natsutil"
	"github.com/stacklens/stacklens/internal/telemetry"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const testPartitions = 12

// setup is one test's Kafka topic, NATS server and bridge configuration.
type setup struct {
	t     testing.TB
	kafka *testenv.KafkaBroker
	nats  *testenv.NATSServer
	topic string
	group string
	env   map[string]string
}

func newSetup(t testing.TB) *setup {
	t.Helper()
	topic := "in_" + testenv.Name(t)
	s := &setup{t: t, topic: topic, group: "g_" + topic}
	s.kafka = testenv.Kafka(t, testPartitions, topic)
	s.nats = testenv.NATS(t)
	s.env = map[string]string{
		"KAFKA_BOOTSTRAP_SERVERS": strings.Join(s.kafka.Brokers, ","),
		"KAFKA_INPUT_TOPIC":       topic,
		"KAFKA_GROUP_ID":          s.group,
		"KAFKA_BATCH_SIZE":        "100",
		"KAFKA_BATCH_TIMEOUT_MS":  "5",
		"NATS_URL":                s.nats.URL,
		"MAX_EVENT_BYTES":         "2048",
		"LOG_LEVEL":               "DEBUG",
	}
	return s
}

func (s *setup) config() *config.Config { return testenv.Config(s.t, s.env) }

// testOptions are fast consumer-group timings for tests.
func testOptions(name string) Options {
	return Options{
		Name:              name,
		HeartbeatInterval: 200 * time.Millisecond,
		SessionTimeout:    6 * time.Second,
		RebalanceTimeout:  2 * time.Second,
		CommitInterval:    100 * time.Millisecond,
		MaxWait:           500 * time.Millisecond,
		PublishTimeout:    2 * time.Second,
		ShutdownGrace:     3 * time.Second,
		ProbeInterval:     500 * time.Millisecond,
	}
}

// runningBridge is a bridge run in-process by a test.
type runningBridge struct {
	cancel context.CancelFunc
	done   chan error
	health *telemetry.Health
}

func (s *setup) start(name string) *runningBridge {
	s.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	rb := &runningBridge{cancel: cancel, done: make(chan error, 1), health: telemetry.NewHealth()}
	d := Deps{Config: s.config(), Log: testLogger(s.t).With("bridge", name), Health: rb.health, Options: testOptions(name)}
	go func() { rb.done <- Run(ctx, d) }()
	s.t.Cleanup(func() { rb.stop(s.t) })
	return rb
}

func (rb *runningBridge) stop(t testing.TB) {
	t.Helper()
	if rb.cancel == nil {
		return
	}
	rb.cancel()
	rb.cancel = nil
	select {
	case err := <-rb.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(45 * time.Second):
		t.Errorf("Run did not return after cancel")
	}
}

func (rb *runningBridge) ready() error {
	st, ok := rb.health.Snapshot(context.Background())
	if !ok {
		return fmt.Errorf("not ready: %+v", st)
	}
	return nil
}

// testLogger logs to the test at WARN and above (DEBUG with -v and
// STACKLENS_TEST_DEBUG=1).
func testLogger(t testing.TB) *slog.Logger {
	lvl := slog.LevelWarn
	if os.Getenv("STACKLENS_TEST_DEBUG") != "" {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: lvl}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	defer func() { _ = recover() }() // a log line after the test ended
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// corpus generates input messages with unique ids: valid events and bad
// ones of every kind, with the reason each must be dead-lettered with.
type corpus struct {
	mu       sync.Mutex
	next     int
	expected map[string]event.Reason // id → "" (valid) or reason
	payload  map[string][]byte
}

func newCorpus() *corpus {
	return &corpus{expected: map[string]event.Reason{}, payload: map[string][]byte{}}
}

var badKinds = []struct {
	reason event.Reason
	make   func(id string, now time.Time) string
}{
	{event.ReasonInvalidJSON, func(id string, _ time.Time) string { return "not json " + id }},
	{event.ReasonMissingField, func(id string, now time.Time) string {
		return fmt.Sprintf(`{"timestamp":%q,"level":"info","latency_ms":1,"id":%q}`, now.Format(time.RFC3339Nano), id)
	}},
	{event.ReasonBadType, func(id string, now time.Time) string {
		return fmt.Sprintf(`{"timestamp":%q,"service":"s","level":"info","latency_ms":"1","id":%q}`, now.Format(time.RFC3339Nano), id)
	}},
	{event.ReasonOutOfRange, func(id string, now time.Time) string {
		return fmt.Sprintf(`{"timestamp":%q,"service":"s","level":"info","latency_ms":-1,"id":%q}`, now.Format(time.RFC3339Nano), id)
	}},
	{event.ReasonFutureTimestamp, func(id string, now time.Time) string {
		return fmt.Sprintf(`{"timestamp":%q,"service":"s","level":"info","latency_ms":1,"id":%q}`, now.Add(time.Hour).Format(time.RFC3339Nano), id)
	}},
	{event.ReasonTooLate, func(id string, now time.Time) string {
		return fmt.Sprintf(`{"timestamp":%d,"service":"s","level":"info","latency_ms":1,"id":%q}`, now.Add(-30*24*time.Hour).UnixMilli(), id)
	}},
	{event.ReasonBadService, func(id string, now time.Time) string { // a C1 control (NEL)
		return fmt.Sprintf(`{"timestamp":%q,"service":"a\u0085b","level":"info","latency_ms":1,"id":%q}`, now.Format(time.RFC3339Nano), id)
	}},
	{event.ReasonBadService, func(id string, now time.Time) string {
		return fmt.Sprintf(`{"timestamp":%q,"service":" s","level":"info","latency_ms":1,"id":%q}`, now.Format(time.RFC3339Nano), id)
	}},
	{event.ReasonOutOfRange, func(id string, now time.Time) string { // above event.MaxLatencyMS
		return fmt.Sprintf(`{"timestamp":%q,"service":"s","level":"info","latency_ms":1e300,"id":%q}`, now.Format(time.RFC3339Nano), id)
	}},
	{event.ReasonBadLevel, func(id string, now time.Time) string {
		return fmt.Sprintf(`{"timestamp":%q,"service":"s","level":"loud","latency_ms":1,"id":%q}`, now.Format("2006-01-02T15:04:05.000000"), id)
	}},
	{event.ReasonTooLarge, func(id string, now time.Time) string {
		return fmt.Sprintf(`{"id":%q,"pad":%q}`, id, strings.Repeat("x", 6000))
	}},
}

var services = []string{"checkout", "cart", "a.b", "a_b", "payments", "search", "auth", "éclair"}

// messages returns n messages; every badEvery-th one is bad (0: none).
func (c *corpus) messages(n, badEvery int) []kafka.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now().UTC()
	out := make([]kafka.Message, 0, n)
	for range n {
		c.next++
		id := "m-" + strconv.Itoa(c.next)
		var v string
		var r event.Reason
		if badEvery > 0 && c.next%badEvery == 0 {
			k := badKinds[(c.next/badEvery)%len(badKinds)]
			v, r = k.make(id, now), k.reason
		} else {
			svc := services[c.next%len(services)]
			v = fmt.Sprintf(`{"timestamp":%q,"service":%q,"level":"info","latency_ms":%d.5,"risk_score":0.1,"id":%q}`,
				now.Format(time.RFC3339Nano), svc, c.next%500, id)
		}
		c.expected[id] = r
		c.payload[id] = []byte(v)
		out = append(out, kafka.Message{Key: []byte("k" + strconv.Itoa(c.next%97)), Value: []byte(v)})
	}
	return out
}

func (s *setup) produce(msgs []kafka.Message) {
	s.t.Helper()
	s.kafka.Produce(s.t, s.topic, msgs...)
}

// highWaterMarks returns the end offset of every partition.
func (s *setup) highWaterMarks() map[int]int64 {
	s.t.Helper()
	out := map[int]int64{}
	for p := range testPartitions {
		conn, err := kafka.DialLeader(context.Background(), "tcp", s.kafka.Brokers[0], s.topic, p)
		if err != nil {
			s.t.Fatal(err)
		}
		last, err := conn.ReadLastOffset()
		_ = conn.Close()
		if err != nil {
			s.t.Fatal(err)
		}
		out[p] = last
	}
	return out
}

// caughtUp is nil once every partition's checkpoint is at its end.
func (s *setup) caughtUp(js jetstream.JetStream, hwm map[int]int64) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, natsutil.StreamEvents)
	if err != nil {
		return err
	}
	for p, end := range hwm {
		if end == 0 {
			continue
		}
		ck, err := readCheckpoint(ctx, st, natsutil.OffsetSubject(s.topic, p), s.topic, p)
		if err != nil {
			return err
		}
		if !ck.Found || ck.Offset != end-1 {
			return fmt.Errorf("partition %d: checkpoint %+v, want offset %d", p, ck, end-1)
		}
	}
	return nil
}

// waitCaughtUp waits until the stream holds every produced message.
func (s *setup) waitCaughtUp(js jetstream.JetStream, timeout time.Duration) {
	s.t.Helper()
	hwm := s.highWaterMarks()
	testenv.Eventually(s.t, timeout, func() error { return s.caughtUp(js, hwm) })
}

// storedMsg is one message read back from the stream.
type storedMsg struct {
	seq       uint64
	subject   string
	partition int
	offset    int64
	data      []byte
	hdr       map[string][]string
}

// readStream reads every message of the stream in order.
func readStream(t testing.TB, js jetstream.JetStream) []storedMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, natsutil.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	last := info.State.LastSeq
	var out []storedMsg
	if info.State.Msgs == 0 {
		return nil
	}
	cons, err := js.OrderedConsumer(ctx, natsutil.StreamEvents, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		mb, err := cons.Fetch(1000, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range mb.Messages() {
			md, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			sm := storedMsg{seq: md.Sequence.Stream, subject: m.Subject(), data: m.Data(), hdr: m.Headers()}
			sm.partition, _ = strconv.Atoi(m.Headers().Get(natsutil.HdrKafkaPartition))
			sm.offset, _ = strconv.ParseInt(m.Headers().Get(natsutil.HdrKafkaOffset), 10, 64)
			out = append(out, sm)
			if sm.seq >= last {
				return out
			}
		}
		if mb.Error() != nil && !errors.Is(mb.Error(), context.DeadlineExceeded) {
			t.Fatal(mb.Error())
		}
		if ctx.Err() != nil {
			t.Fatal("timeout reading the stream")
		}
	}
}

var idRE = regexp.MustCompile(`m-[0-9]+`)

// verifyExactlyOnce checks the stream against the corpus: every valid
// event once on its subject, every bad message once in the DLQ with its
// reason, each partition a gap-free increasing run of offsets in stream
// order, and the checkpoints at the ends.
func (s *setup) verifyExactlyOnce(js jetstream.JetStream, c *corpus) {
	s.t.Helper()
	msgs := readStream(s.t, js)
	seen := map[string]int{}
	lastOff := map[int]int64{}
	ckpt := map[int]int64{}
	shards := s.config().NATS.Shards
	var events, dead int
	for _, m := range msgs {
		switch {
		case strings.HasPrefix(m.subject, natsutil.OffsetsPrefix):
			ck, err := decodeCheckpoint(m.data)
			if err != nil {
				s.t.Fatalf("checkpoint %s: %v", m.subject, err)
			}
			ckpt[ck.Partition] = ck.Offset
			continue
		case strings.HasPrefix(m.subject, natsutil.EventsPrefix):
			events++
		case strings.HasPrefix(m.subject, natsutil.DLQPrefix):
			dead++
		default:
			s.t.Fatalf("unexpected subject %s", m.subject)
		}
		if m.hdr[natsutil.HdrKafkaTopic][0] != s.topic {
			s.t.Fatalf("seq %d: topic header %v", m.seq, m.hdr[natsutil.HdrKafkaTopic])
		}
		prev, ok := lastOff[m.partition]
		if !ok {
			prev = -1
		}
		if m.offset != prev+1 {
			s.t.Fatalf("partition %d: offset %d follows %d in the stream (seq %d): not a gap-free increasing run",
				m.partition, m.offset, prev, m.seq)
		}
		lastOff[m.partition] = m.offset
		id := idRE.FindString(string(m.data))
		if id == "" {
			s.t.Fatalf("seq %d: no id in %q", m.seq, m.data)
		}
		seen[id]++
		want, known := c.expected[id]
		if !known {
			s.t.Fatalf("seq %d: %s was never produced", m.seq, id)
		}
		if want == "" {
			ev, err := event.Decode(m.data, time.Now(), event.Limits{})
			if err != nil {
				s.t.Fatalf("seq %d: stored event does not decode: %v", m.seq, err)
			}
			if subj := natsutil.EventSubject(event.Shard(ev.Service, shards), ev.Service); subj != m.subject {
				s.t.Fatalf("seq %d: subject %s, want %s", m.seq, m.subject, subj)
			}
			if !bytes.Equal(m.data, c.payload[id]) {
				s.t.Fatalf("seq %d: payload changed", m.seq)
			}
		} else {
			if got := m.hdr[natsutil.HdrDLQReason]; len(got) != 1 || got[0] != string(want) {
				s.t.Fatalf("seq %d (%s): reason %v, want %s", m.seq, id, got, want)
			}
			if m.subject != natsutil.DLQSubject("bridge", want) || m.hdr[natsutil.HdrDLQStage][0] != "bridge" ||
				len(m.hdr[natsutil.HdrDLQError]) != 1 {
				s.t.Fatalf("seq %d: dead letter subject/headers %s %v", m.seq, m.subject, m.hdr)
			}
			if want == event.ReasonTooLarge {
				if len(m.data) != dlqMaxPayload || m.hdr[natsutil.HdrOriginalSize][0] != strconv.Itoa(len(c.payload[id])) {
					s.t.Fatalf("seq %d: too_large dead letter %d bytes, headers %v", m.seq, len(m.data), m.hdr)
				}
			} else if !bytes.Equal(m.data, c.payload[id]) {
				s.t.Fatalf("seq %d: dead letter payload changed", m.seq)
			}
		}
	}
	var lost, dup []string
	for id := range c.expected {
		switch seen[id] {
		case 0:
			lost = append(lost, id)
		case 1:
		default:
			dup = append(dup, id)
		}
	}
	sort.Strings(lost)
	sort.Strings(dup)
	if len(lost) > 0 || len(dup) > 0 {
		s.t.Fatalf("lost %d %v, duplicated %d %v", len(lost), head(lost), len(dup), head(dup))
	}
	for p, off := range lastOff {
		if ckpt[p] != off {
			s.t.Fatalf("partition %d: checkpoint %d, last forwarded offset %d", p, ckpt[p], off)
		}
	}
	s.t.Logf("stream: %d events, %d dead letters, %d checkpoints; lost 0, duplicated 0, unexpected 0",
		events, dead, len(ckpt))
}

func head(s []string) []string {
	if len(s) > 10 {
		return s[:10]
	}
	return s
}
