package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
)

// Produced is one message the workload wrote to Kafka: the ground truth.
type Produced struct {
	ID      uint64
	Payload []byte
	Valid   bool
	Reason  string // expected dead-letter reason when !Valid
	Service string
	Time    time.Time
	Latency float64 // exact: a multiple of 1/4 ms, unique per event
}

// Coord is a Kafka message's position.
type Coord struct {
	Partition int
	Offset    int64
}

// Workload describes what to produce.
type Workload struct {
	Events   int           // valid events
	Services int           // distinct services of the valid events
	Bad      int           // bad-input messages mixed in (corpus, round robin)
	Duration time.Duration // spread production over this long
	// MaxLateness: each event's time is now minus up to this much, so some
	// land in windows already final (corrections).
	MaxLateness time.Duration
	Seed        uint64
	// IDBase is added to message ids (several productions in one run).
	IDBase uint64
	// Dial, when set, makes the producer's connections (and Locate's).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Truth is everything produced, and where Kafka put it.
type Truth struct {
	Messages []*Produced
	byID     map[uint64]*Produced
	// Coords of each message in Kafka, filled by Locate.
	At    map[Coord]*Produced
	where map[uint64][]Coord
	// Dial is the workload's (Locate's connections).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// badCorpus makes bad-input message number id of kind k, and its reason.
func badCorpus(k int, id uint64, now time.Time) ([]byte, string) {
	ts := now.UTC().Format(time.RFC3339Nano)
	tid := strconv.FormatUint(id, 10)
	switch k % 8 {
	case 0:
		return []byte(`{"trace_id":"` + tid + `","service":"bad","level":`), "invalid_json"
	case 1:
		return []byte(`{"timestamp":"` + ts + `","level":"info","latency_ms":1,"trace_id":"` + tid + `"}`), "missing_field"
	case 2:
		return []byte(`{"timestamp":"` + ts + `","service":"bad","level":"info","latency_ms":-1,"trace_id":"` + tid + `"}`), "out_of_range"
	case 3:
		return []byte(`{"timestamp":"` + ts + `","service":"bad","level":"info","latency_ms":"fast","trace_id":"` + tid + `"}`), "bad_type"
	case 4:
		return []byte(`{"timestamp":"` + ts + `","service":"bad","level":"loud","latency_ms":1,"trace_id":"` + tid + `"}`), "bad_level"
	case 5:
		return []byte(`{"timestamp":"` + ts + `","service":"bad","level":"info","latency_ms":1,"trace_id":"` + tid + `","message":"` + strings.Repeat("x", 5000) + `"}`), "too_large"
	case 6:
		fut := now.Add(time.Hour).UTC().Format(time.RFC3339Nano)
		return []byte(`{"timestamp":"` + fut + `","service":"bad","level":"info","latency_ms":1,"trace_id":"` + tid + `"}`), "future_timestamp"
	default:
		return []byte(`{"timestamp":"yesterday","service":"bad","level":"info","latency_ms":1,"trace_id":"` + tid + `"}`), "bad_timestamp"
	}
}

var levels = []string{"info", "info", "info", "info", "debug", "warning", "error", "critical"}

// Produce writes the workload to Kafka at addr, returning the ground
// truth. It stops early (with what was produced) when ctx ends.
func Produce(ctx context.Context, addr string, w Workload) (*Truth, error) {
	rng := rand.New(rand.NewPCG(w.Seed, w.Seed^0x5bd1e995))
	total := w.Events + w.Bad
	// Interleave bad messages among the valid ones, reproducibly.
	kinds := make([]int, total) // -1 valid, else the corpus kind
	for i := range kinds {
		kinds[i] = -1
	}
	for i := 0; i < w.Bad; i++ {
		kinds[i] = i
	}
	rng.Shuffle(total, func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
	// Unique latencies: a random permutation of 1..Events quarter-millis.
	lat := rng.Perm(w.Events)

	tr := &Truth{byID: map[uint64]*Produced{}, Dial: w.Dial}
	wr := &kafka.Writer{
		Addr: kafka.TCP(addr), Topic: Topic, RequiredAcks: kafka.RequireAll,
		Balancer: &kafka.RoundRobin{}, BatchSize: 500, BatchTimeout: 5 * time.Millisecond,
		MaxAttempts: 1000, WriteBackoffMin: 50 * time.Millisecond, WriteBackoffMax: 500 * time.Millisecond,
	}
	if w.Dial != nil {
		// Closed here: Writer.Close leaves a transport it was given open,
		// and its pool would keep refreshing metadata through a dialer
		// whose hosts are gone once the test ends.
		t := &kafka.Transport{Dial: w.Dial}
		defer t.CloseIdleConnections()
		wr.Transport = t
	}
	defer wr.Close()
	const chunk = 250
	start := time.Now()
	vi := 0
	for i := 0; i < total; i += chunk {
		if ctx.Err() != nil {
			return tr, ctx.Err()
		}
		// Pace: chunk i is due at start + Duration*i/total.
		if d := time.Until(start.Add(time.Duration(float64(w.Duration) * float64(i) / float64(total)))); d > 0 {
			time.Sleep(d)
		}
		now := time.Now()
		var msgs []kafka.Message
		for j := i; j < min(i+chunk, total); j++ {
			id := w.IDBase + uint64(j+1)
			p := &Produced{ID: id}
			if kinds[j] >= 0 {
				p.Payload, p.Reason = badCorpus(kinds[j], id, now)
			} else {
				p.Valid = true
				p.Service = "svc-" + strconv.Itoa(rng.IntN(max(w.Services, 1)))
				p.Time = now.Add(-time.Duration(rng.Int64N(int64(w.MaxLateness) + 1))).UTC().Truncate(time.Microsecond)
				p.Latency = float64(lat[vi]+1) / 4
				vi++
				lvl := levels[rng.IntN(len(levels))]
				risk := float64(rng.IntN(1001)) / 1000
				p.Payload = fmt.Appendf(nil, `{"timestamp":"%s","service":%q,"level":"%s","latency_ms":%s,"risk_score":%s,"trace_id":"%d"}`,
					p.Time.Format(time.RFC3339Nano), p.Service, lvl,
					strconv.FormatFloat(p.Latency, 'f', -1, 64), strconv.FormatFloat(risk, 'f', -1, 64), id)
			}
			tr.Messages = append(tr.Messages, p)
			tr.byID[id] = p
			msgs = append(msgs, kafka.Message{Key: []byte(strconv.FormatUint(id, 10)), Value: p.Payload})
		}
		if err := wr.WriteMessages(ctx, msgs...); err != nil {
			return tr, fmt.Errorf("produce: %w", err)
		}
	}
	return tr, nil
}

// Merge adds the messages of o (produced with another IDBase) to tr.
func (tr *Truth) Merge(o *Truth) {
	for _, p := range o.Messages {
		tr.Messages = append(tr.Messages, p)
		tr.byID[p.ID] = p
	}
}

// Locate reads the input topic back and records where each produced
// message is (a producer retry could write one twice: both are kept).
// Messages it does not recognise are an error: nothing else writes there.
func (tr *Truth) Locate(ctx context.Context, addr string) error {
	tr.At = map[Coord]*Produced{}
	tr.where = map[uint64][]Coord{}
	for p := 0; p < Partitions; p++ {
		dialer := kafka.DefaultDialer
		if tr.Dial != nil {
			d := *kafka.DefaultDialer
			d.DialFunc = tr.Dial
			dialer = &d
		}
		conn, err := dialer.DialLeader(ctx, "tcp", addr, Topic, p)
		if err != nil {
			return err
		}
		last, err := conn.ReadLastOffset()
		_ = conn.Close()
		if err != nil {
			return err
		}
		if last == 0 {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{addr}, Topic: Topic, Partition: p, MinBytes: 1, MaxBytes: 8 << 20, MaxWait: 200 * time.Millisecond, Dialer: dialer})
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				_ = r.Close()
				return err
			}
			id, perr := strconv.ParseUint(string(m.Key), 10, 64)
			pr := tr.byID[id]
			if perr != nil || pr == nil || string(pr.Payload) != string(m.Value) {
				_ = r.Close()
				return fmt.Errorf("kafka %d/%d: a message the workload did not produce", p, m.Offset)
			}
			c := Coord{p, m.Offset}
			tr.At[c] = pr
			tr.where[id] = append(tr.where[id], c)
			if m.Offset >= last-1 {
				break
			}
		}
		_ = r.Close()
	}
	for _, pr := range tr.Messages {
		if len(tr.where[pr.ID]) == 0 {
			return errors.New("a produced message is not in Kafka")
		}
	}
	return nil
}
