package chaos

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/agg"
	"github.com/stacklens/stacklens/internal/natsutil"
)

// Windows checked, with their length in seconds.
var Windows = []struct {
	Name string
	Secs int64
}{{"1min", 60}, {"5min", 300}, {"1hour", 3600}}

// overflowPrefix is the processors' per-shard overflow service.
const overflowPrefix = "_overflow-"

// Result is one check of the invariants (docs/ARCHITECTURE.md §8).
type Result struct {
	Produced, Valid, Bad int // messages in Kafka

	// I2/I3 at the message level (stream vs Kafka).
	MsgLost, MsgDup, MsgUnexpected, WrongReason int
	// I1 at the aggregate level: events missing from / counted twice in
	// the KV aggregates, and aggregates of things never produced; the
	// worst window counts. SumMismatch: keys whose count is right but
	// whose Σlatency or Σlatency² is not.
	AggLost, AggDup, AggUnexpected, SumMismatch int
	// I4: PostgreSQL rows differing from KV, and analytics_events rows
	// missing, doubled or unexpected.
	RowDiff, EvLost, EvDup, EvUnexpected int
	OverflowKeys                         int

	Problems []string
}

// OK reports whether every invariant holds.
func (r *Result) OK() bool {
	return r.MsgLost+r.MsgDup+r.MsgUnexpected+r.WrongReason+r.AggLost+r.AggDup+r.AggUnexpected+
		r.SumMismatch+r.RowDiff+r.EvLost+r.EvDup+r.EvUnexpected == 0
}

// Lost, Duplicated and Unexpected summarise the result for the table.
func (r *Result) Lost() int       { return r.MsgLost + r.AggLost + r.EvLost }
func (r *Result) Duplicated() int { return r.MsgDup + r.AggDup + r.EvDup }
func (r *Result) Unexpected() int {
	return r.MsgUnexpected + r.WrongReason + r.AggUnexpected + r.SumMismatch + r.RowDiff + r.EvUnexpected
}

func (r *Result) String() string {
	return fmt.Sprintf("produced=%d valid=%d bad=%d | msg lost=%d dup=%d unexpected=%d wrong_reason=%d | agg lost=%d dup=%d unexpected=%d sum_mismatch=%d | pg row_diff=%d events lost=%d dup=%d unexpected=%d | overflow_keys=%d",
		r.Produced, r.Valid, r.Bad, r.MsgLost, r.MsgDup, r.MsgUnexpected, r.WrongReason,
		r.AggLost, r.AggDup, r.AggUnexpected, r.SumMismatch, r.RowDiff, r.EvLost, r.EvDup, r.EvUnexpected, r.OverflowKeys)
}

func (r *Result) problem(format string, args ...any) {
	if len(r.Problems) < 20 {
		r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
	}
}

type sums struct {
	Count      uint64
	Lat, LatSq float64
	Version    uint64
}

func (s *sums) add(o sums) {
	s.Count += o.Count
	s.Lat += o.Lat
	s.LatSq += o.LatSq
	s.Version += o.Version
}

type aggKey struct {
	Service string
	Start   int64
}

// Checker reads the pipeline's state and compares it with the truth.
type Checker struct {
	NATSURL string
	PGDSN   string
	Truth   *Truth
	// Dial, when set, makes the checker's connections (from a host of a
	// partition test's network).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// PassTimeout bounds one Check (default 30 s).
	PassTimeout time.Duration
}

// natsDialer adapts a dial function to nats.CustomDialer.
type natsDialer func(ctx context.Context, network, addr string) (net.Conn, error)

func (d natsDialer) Dial(network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return d(ctx, network, addr)
}

// streamMsg is what the checker keeps of one stream message.
type streamMsg struct {
	seq    uint64
	dlq    bool
	reason string
	coord  Coord
	ok     bool // has Kafka coordinates
	data   []byte
}

// Check runs every invariant once.
func (c *Checker) Check(ctx context.Context) (*Result, error) {
	// A pass is bounded: JetStream API requests wait as long as their
	// context allows, and one lost in a cluster that is still recovering
	// from a partition must fail the pass, not hang the poll.
	pass := c.PassTimeout
	if pass <= 0 {
		pass = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, pass)
	defer cancel()
	opts := []nats.Option{nats.Timeout(5 * time.Second)}
	if c.Dial != nil {
		opts = append(opts, nats.SetCustomDialer(natsDialer(c.Dial)))
	}
	nc, err := nats.Connect(c.NATSURL, opts...)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	r := &Result{Produced: len(c.Truth.At)}
	msgs, err := readStream(ctx, js)
	// An ephemeral consumer's first requests can find no responder while
	// its interest is still propagating through a cluster: retry those.
	for i := 0; i < 10 && err != nil && isNoResponders(err) && ctx.Err() == nil; i++ {
		time.Sleep(200 * time.Millisecond)
		msgs, err = readStream(ctx, js)
	}
	if err != nil {
		return nil, fmt.Errorf("read stream: %w", err)
	}

	// I2 / I3 on messages.
	evAt := map[Coord]int{}
	dlqAt := map[Coord][]string{}
	validSeqs := map[uint64]bool{}
	for _, m := range msgs {
		pr := c.Truth.At[m.coord]
		if !m.ok || pr == nil {
			r.MsgUnexpected++
			r.problem("stream seq %d: no known Kafka coordinates (%v)", m.seq, m.coord)
			continue
		}
		if m.dlq {
			dlqAt[m.coord] = append(dlqAt[m.coord], m.reason)
			if !strings.HasPrefix(string(pr.Payload), string(m.data[:min(len(m.data), 64)])) {
				r.MsgUnexpected++
				r.problem("dead letter seq %d at %v: payload differs from the produced one", m.seq, m.coord)
			}
			continue
		}
		evAt[m.coord]++
		validSeqs[m.seq] = true
		if string(pr.Payload) != string(m.data) {
			r.MsgUnexpected++
			r.problem("event seq %d at %v: payload differs from the produced one", m.seq, m.coord)
		}
	}
	expected := map[string]map[aggKey]*sums{}
	for _, w := range Windows {
		expected[w.Name] = map[aggKey]*sums{}
	}
	for coord, pr := range c.Truth.At {
		nEv, dl := evAt[coord], dlqAt[coord]
		if pr.Valid {
			r.Valid++
			for _, w := range Windows {
				k := aggKey{pr.Service, floorDiv(pr.Time.Unix(), w.Secs) * w.Secs}
				s := expected[w.Name][k]
				if s == nil {
					s = &sums{}
					expected[w.Name][k] = s
				}
				s.add(sums{Count: 1, Lat: pr.Latency, LatSq: pr.Latency * pr.Latency})
			}
		} else {
			r.Bad++
		}
		switch n := nEv + len(dl); {
		case n == 0:
			r.MsgLost++
			r.problem("kafka %v (id %d, valid=%v): not in the stream", coord, pr.ID, pr.Valid)
		case n > 1:
			r.MsgDup += n - 1
			r.problem("kafka %v (id %d): %d times in the stream (%d events, dead letters %v)", coord, pr.ID, n, nEv, dl)
		}
		if pr.Valid && len(dl) > 0 {
			r.WrongReason++
			r.problem("kafka %v (id %d): valid event dead-lettered %v", coord, pr.ID, dl)
		}
		if !pr.Valid {
			if nEv > 0 {
				r.MsgUnexpected++
				r.problem("kafka %v (id %d): bad input accepted as an event", coord, pr.ID)
			}
			for _, reason := range dl {
				if reason != pr.Reason {
					r.WrongReason++
					r.problem("kafka %v (id %d): dead letter reason %q, want %q", coord, pr.ID, reason, pr.Reason)
				}
			}
		}
	}

	// I1: KV aggregates vs the truth.
	kvs := map[string]map[aggKey]*sums{}
	for _, w := range Windows {
		kv, err := readKV(ctx, js, natsutil.AggBucket(w.Name))
		if err != nil {
			return nil, fmt.Errorf("read KV %s: %w", w.Name, err)
		}
		kvs[w.Name] = kv
		exp := expected[w.Name]
		var lost, dup, unexp int
		overflow := map[int64]*sums{} // merged _overflow-* of each bucket
		for k, s := range kv {
			if strings.HasPrefix(k.Service, overflowPrefix) {
				r.OverflowKeys++
				o := overflow[k.Start]
				if o == nil {
					o = &sums{}
					overflow[k.Start] = o
				}
				o.add(*s)
				continue
			}
			e := exp[k]
			if e == nil {
				unexp += int(s.Count)
				r.problem("KV %s %v: aggregate of nothing produced (count %d)", w.Name, k, s.Count)
				continue
			}
			lost, dup = compareSums(r, "KV "+w.Name, k, *e, *s, lost, dup)
		}
		missing := map[int64]*sums{} // expected keys without their own KV key
		for k, e := range exp {
			if kv[k] == nil {
				m := missing[k.Start]
				if m == nil {
					m = &sums{}
					missing[k.Start] = m
				}
				m.add(*e)
			}
		}
		for start, m := range missing {
			o := overflow[start]
			if o == nil {
				o = &sums{}
			}
			lost, dup = compareSums(r, "KV "+w.Name+" overflow", aggKey{"_overflow", start}, *m, *o, lost, dup)
		}
		for start, o := range overflow {
			if missing[start] == nil && o.Count > 0 {
				unexp += int(o.Count)
				r.problem("KV %s: overflow at %d holds %d events, none expected there", w.Name, start, o.Count)
			}
		}
		r.AggLost, r.AggDup, r.AggUnexpected = max(r.AggLost, lost), max(r.AggDup, dup), max(r.AggUnexpected, unexp)
	}

	// I4: PostgreSQL vs KV.
	if err := c.checkPG(ctx, r, kvs, validSeqs); err != nil {
		return nil, fmt.Errorf("read PostgreSQL: %w", err)
	}
	return r, nil
}

func compareSums(r *Result, where string, k aggKey, want, got sums, lost, dup int) (int, int) {
	switch {
	case got.Count < want.Count:
		lost += int(want.Count - got.Count)
		r.problem("%s %v: count %d, want %d", where, k, got.Count, want.Count)
	case got.Count > want.Count:
		dup += int(got.Count - want.Count)
		r.problem("%s %v: count %d, want %d", where, k, got.Count, want.Count)
	case got.Lat != want.Lat || got.LatSq != want.LatSq:
		r.SumMismatch++
		r.problem("%s %v: Σlatency %v Σlatency² %v, want %v %v", where, k, got.Lat, got.LatSq, want.Lat, want.LatSq)
	}
	return lost, dup
}

func (c *Checker) checkPG(ctx context.Context, r *Result, kvs map[string]map[aggKey]*sums, validSeqs map[uint64]bool) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	pcfg, err := pgx.ParseConfig(c.PGDSN)
	if err != nil {
		return err
	}
	if c.Dial != nil {
		pcfg.DialFunc = c.Dial
	}
	db, err := pgx.ConnectConfig(cctx, pcfg)
	if err != nil {
		return err
	}
	defer db.Close(ctx)
	for _, w := range Windows {
		want := map[aggKey]sums{}
		for k, s := range kvs[w.Name] {
			if strings.HasPrefix(k.Service, overflowPrefix) {
				o := want[aggKey{"_overflow", k.Start}]
				o.add(*s)
				want[aggKey{"_overflow", k.Start}] = o
				continue
			}
			want[k] = *s
		}
		rows, err := db.Query(cctx, `SELECT service, extract(epoch FROM timestamp)::bigint, count, latency_sum, latency_sq_sum, version FROM analytics_metrics_`+w.Name)
		if err != nil {
			return err
		}
		got := map[aggKey]sums{}
		for rows.Next() {
			var k aggKey
			var s sums
			var count, version int64
			if err := rows.Scan(&k.Service, &k.Start, &count, &s.Lat, &s.LatSq, &version); err != nil {
				rows.Close()
				return err
			}
			s.Count, s.Version = uint64(count), uint64(version)
			got[k] = s
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for k, s := range want {
			g, ok := got[k]
			if !ok || g != s {
				r.RowDiff++
				r.problem("PG %s %v: row %+v (present %v), KV %+v", w.Name, k, g, ok, s)
			}
		}
		for k, g := range got {
			if _, ok := want[k]; !ok {
				r.RowDiff++
				r.problem("PG %s %v: row %+v with no KV aggregate", w.Name, k, g)
			}
		}
	}
	rows, err := db.Query(cctx, `SELECT stream_seq, count(*) FROM analytics_events GROUP BY stream_seq`)
	if err != nil {
		return err
	}
	seen := map[uint64]bool{}
	for rows.Next() {
		var seq, n int64
		if err := rows.Scan(&seq, &n); err != nil {
			rows.Close()
			return err
		}
		seen[uint64(seq)] = true
		if !validSeqs[uint64(seq)] {
			r.EvUnexpected += int(n)
			r.problem("analytics_events: stream_seq %d is not a valid event of the stream", seq)
		} else if n > 1 {
			r.EvDup += int(n - 1)
			r.problem("analytics_events: stream_seq %d stored %d times", seq, n)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for seq := range validSeqs {
		if !seen[seq] {
			r.EvLost++
		}
	}
	if r.EvLost > 0 {
		r.problem("analytics_events: %d valid events missing", r.EvLost)
	}
	return nil
}

func isNoResponders(err error) bool {
	return errors.Is(err, nats.ErrNoResponders) || strings.Contains(err.Error(), nats.ErrNoResponders.Error())
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// readStream reads every event and dead letter of STACKLENS_EVENTS.
func readStream(ctx context.Context, js jetstream.JetStream) ([]streamMsg, error) {
	st, err := js.Stream(ctx, natsutil.StreamEvents)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, nil
		}
		return nil, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, err
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 {
		return nil, nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{natsutil.EventsPrefix + ">", natsutil.DLQPrefix + ">"},
	})
	if err != nil {
		return nil, err
	}
	var out []streamMsg
	for {
		batch, err := cons.Fetch(2000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, err
		}
		n := 0
		done := false
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				return nil, err
			}
			h := m.Headers()
			sm := streamMsg{seq: meta.Sequence.Stream, dlq: strings.HasPrefix(m.Subject(), natsutil.DLQPrefix), data: m.Data()}
			if sm.dlq {
				sm.reason = h.Get(natsutil.HdrDLQReason)
			}
			p, perr := strconv.Atoi(h.Get(natsutil.HdrKafkaPartition))
			o, oerr := strconv.ParseInt(h.Get(natsutil.HdrKafkaOffset), 10, 64)
			sm.coord, sm.ok = Coord{p, o}, perr == nil && oerr == nil && h.Get(natsutil.HdrKafkaTopic) == Topic
			out = append(out, sm)
			if meta.NumPending == 0 || meta.Sequence.Stream >= last {
				done = true
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, err
		}
		if done || n == 0 {
			return out, nil
		}
	}
}

// readKV reads every aggregate of a bucket (nil map when it does not exist).
func readKV(ctx context.Context, js jetstream.JetStream, bucket string) (map[aggKey]*sums, error) {
	out := map[aggKey]*sums{}
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return out, nil
		}
		return nil, err
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if err != nil {
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				continue
			}
			return nil, err
		}
		a, err := agg.Decode(e.Value())
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", k, err)
		}
		out[aggKey{a.Service, a.Start}] = &sums{Count: a.Count, Lat: a.LatencySum, LatSq: a.LatencySqSum, Version: a.Version}
	}
	return out, nil
}

// WaitConverged polls Check until every invariant holds or deadline
// passes, returning the last result and the time it took.
func (c *Checker) WaitConverged(ctx context.Context, deadline time.Duration) (*Result, time.Duration, error) {
	start := time.Now()
	var last *Result
	var lastErr error
	for {
		r, err := c.Check(ctx)
		if err == nil && r.OK() {
			return r, time.Since(start), nil
		}
		if err == nil {
			last = r
		}
		lastErr = err
		if time.Since(start) > deadline || ctx.Err() != nil {
			if last == nil {
				return nil, time.Since(start), fmt.Errorf("no successful check: %v", lastErr)
			}
			return last, time.Since(start), nil
		}
		time.Sleep(time.Second)
	}
}
