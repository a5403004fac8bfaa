package processor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/agg"
	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/lease"
	"github.com/stacklens/stacklens/internal/natsutil"
)

// entry is one aggregate key of the shard held in memory: the stored
// aggregate as last read or written (with its KV revision) and the delta
// folded since the last flush.
type entry struct {
	key    agg.Key        // Window indexes the windows; Service is the stored service
	kvKey  string         // key in the window's bucket
	stored *agg.Aggregate // nil: the key does not exist (rev 0)
	rev    uint64
	delta  *agg.Aggregate // nil: nothing folded since the last flush

	dirty     bool // in the worker's dirty list
	markFinal bool // write final: true in the next flush
	// marker: the service is not admitted in this bucket (MAX_SERVICES);
	// its events go to the shard's overflow key.
	marker bool
}

func (e *entry) lastSeq() uint64 {
	if e.stored == nil {
		return 0
	}
	return e.stored.LastSeq
}

func (e *entry) final() bool { return e.stored != nil && e.stored.Final }

type bucketKey struct {
	w     uint8
	start int64
}

// bucketState is one (window, bucket) of the shard in memory.
type bucketState struct {
	entries  []*entry
	admitted int // services with their own key
	// listed: the bucket's keys of this shard were listed on first touch;
	// exists holds those not loaded yet (true: a live key of a service,
	// already counted in admitted). A key not listed did not exist, so its
	// first touch needs no read (if it appears meanwhile, the Create's CAS
	// fails and the shard restarts). Counting the existing keys makes the
	// MAX_SERVICES routing after a restart the same as before it: every
	// service admitted before the checkpoint has its key.
	listed bool
	exists map[string]bool
}

// watermark is a sample of the shard's backlog for finality: once the
// shard has consumed up to stream sequence seq and handled n messages
// since its (re)start, everything published before time t has been folded.
type watermark struct {
	t   time.Time
	seq uint64
	n   uint64
}

// shardWorker consumes one shard and keeps its aggregates.
type shardWorker struct {
	sh    *shared
	shard int
	log   *slog.Logger // the processor's, with the shard
	lease *lease.Lease // nil in replay
	ctx   context.Context
	stopF context.CancelFunc
	quit  chan struct{}
	done  chan struct{}
	once  sync.Once

	// replay only
	fromSeq  uint64 // replay start (0: the checkpoint)
	fromTime time.Time
	onFold   func(n int)

	mu        sync.Mutex
	gen       uint64
	cc        jetstream.ConsumeContext
	entries   map[agg.Key]*entry
	buckets   map[bucketKey]*bucketState
	dirty     []*entry
	last      []*entry // per window, the entry the previous event hit
	overflowN string   // service of the shard's overflow aggregates

	consumed        uint64    // last stream sequence handled
	pending         uint64    // consumer's pending count after `consumed`
	handled         uint64    // messages handled since the consumer's (re)start
	coveredAt       time.Time // what `pending` covers: everything published before it
	msgsSince       int       // messages handled since the last flush
	oldestTS        int64     // stream timestamp (Unix ns) of the first of them
	marks           []watermark
	caughtUpAt      time.Time // everything published before it is folded
	started         bool
	needReset       bool
	stopping        bool // final flush of a handover: never restart
	restartFailures int
	ckptSeq         uint64 // last checkpoint written or read
	ckptRev         uint64
	ckptOpen        map[string]int64
	maxEventNs      int64
	folded          int
	unparsable      int // messages skipped for unparsable metadata (first one logged)
	metrics         *shardMetricSet
	// Reused across flushes (docs/PERFORMANCE.md, the processor's
	// allocation): flushed deltas, emptied by newDelta, and the buffer the
	// flush encodes the KV values into.
	spare  []*agg.Aggregate
	encBuf []byte
}

func newShardWorker(sh *shared, shard int, l *lease.Lease) *shardWorker {
	ctx, cancel := context.WithCancel(context.Background())
	return &shardWorker{
		sh: sh, shard: shard, log: sh.log.With("shard", shard), lease: l, ctx: ctx, stopF: cancel,
		quit: make(chan struct{}), done: make(chan struct{}),
		entries:   map[agg.Key]*entry{},
		buckets:   map[bucketKey]*bucketState{},
		last:      make([]*entry, len(sh.buckets.windows)),
		overflowN: agg.OverflowService + "-" + strconv.Itoa(shard),
		metrics:   shardCounters(shard),
	}
}

// run starts consuming and flushes every FLUSH_INTERVAL until stop or abort.
func (w *shardWorker) run(context.Context) {
	defer close(w.done)
	defer w.sh.unreadable.dropShard(w.shard)
	t := time.NewTicker(w.sh.cfg.Processor.FlushInterval)
	defer t.Stop()
	w.mu.Lock()
	w.needReset = true
	w.mu.Unlock()
	for {
		w.flush()
		select {
		case <-w.quit:
			return
		case <-t.C:
		}
	}
}

// stop ends the worker cleanly: consumption stops, a final flush writes
// what was folded and the checkpoint.
func (w *shardWorker) stop(ctx context.Context) {
	w.once.Do(func() { close(w.quit) })
	<-w.done
	w.mu.Lock()
	w.gen++
	w.stopping = true
	if w.cc != nil {
		w.cc.Stop()
		w.cc = nil
	}
	w.mu.Unlock()
	if ctx.Err() == nil {
		w.flush()
	}
	w.mu.Lock()
	w.clearLocked()
	w.mu.Unlock()
	w.stopF()
	shardGaugesDrop(w.shard)
}

// abort ends the worker without writing: the shard is no longer ours.
func (w *shardWorker) abort() {
	w.stopF()
	w.once.Do(func() { close(w.quit) })
	w.mu.Lock()
	w.gen++
	if w.cc != nil {
		w.cc.Stop()
		w.cc = nil
	}
	w.clearLocked()
	w.mu.Unlock()
	<-w.done
	shardGaugesDrop(w.shard)
}

func (w *shardWorker) clearLocked() {
	w.entries = map[agg.Key]*entry{}
	w.buckets = map[bucketKey]*bucketState{}
	w.dirty = w.dirty[:0]
	clear(w.last)
	w.marks = nil
	w.started = false
}

func (w *shardWorker) opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(w.ctx, 10*time.Second)
}

// restartLocked discards everything in memory and consumes again from the
// checkpoint (docs/ARCHITECTURE.md §3: per-key last_seq makes the re-fold exact).
func (w *shardWorker) restartLocked() error {
	w.gen++
	if w.cc != nil {
		w.cc.Stop()
		w.cc = nil
	}
	w.clearLocked()
	w.needReset = true
	ctx, cancel := w.opCtx()
	defer cancel()
	if err := w.readCheckpoint(ctx); err != nil {
		return err
	}
	if err := w.recoverOpen(ctx); err != nil {
		return err
	}
	start := w.ckptSeq + 1
	if w.fromSeq > 0 {
		start = max(start, w.fromSeq)
	}
	head, err := w.shardHead(ctx)
	if err != nil {
		return err
	}
	now := w.sh.clock.Now()
	w.consumed, w.pending, w.handled, w.msgsSince = start-1, 0, 0, 0
	w.caughtUpAt = time.Time{}
	if head < start {
		w.caughtUpAt = now
	} else {
		w.marks = append(w.marks, watermark{t: now, seq: head})
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{natsutil.ShardFilter(w.shard)}}
	switch {
	case !w.fromTime.IsZero() && w.ckptSeq == 0:
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		t := w.fromTime
		cfg.OptStartTime = &t
	case start > 1:
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = start
	}
	cons, err := w.sh.js.OrderedConsumer(ctx, natsutil.StreamEvents, cfg)
	if err != nil {
		return err
	}
	gen := w.gen
	cc, err := cons.Consume(func(m jetstream.Msg) { w.handle(gen, m) },
		jetstream.PullMaxMessages(2000),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			w.log.Debug("consumer", "err", err)
		}))
	if err != nil {
		return err
	}
	w.cc = cc
	w.needReset = false
	w.started = true
	return nil
}

// shardHead returns the stream sequence of the shard's newest event (0 if
// none).
func (w *shardWorker) shardHead(ctx context.Context) (uint64, error) {
	m, err := w.sh.stream.GetLastMsgForSubject(ctx, natsutil.ShardFilter(w.shard))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return m.Sequence, nil
}

// handle is the consumer callback: one stream message.
func (w *shardWorker) handle(gen uint64, m jetstream.Msg) {
	ar, ok := natsutil.ParseAckReply(m.Reply())
	seq, pending, ts := ar.StreamSeq, ar.Pending, ar.Timestamp
	w.mu.Lock()
	defer w.mu.Unlock()
	if gen != w.gen || w.needReset {
		return
	}
	if !ok {
		// Without the stream sequence the message can be neither folded
		// exactly (last_seq) nor dead-lettered (its ID is the sequence):
		// it is skipped, but visibly (docs/processor.md, "Unparsable
		// metadata").
		unparsableMeta.Inc()
		w.unparsable++
		if w.unparsable == 1 {
			w.log.Error("message without parsable JetStream metadata skipped (further ones only counted: stacklens_processor_unparsable_metadata_total)",
				"reply", m.Reply(), "subject", m.Subject())
		}
		return
	}
	if seq <= w.consumed {
		if seq < w.consumed {
			// The ordered consumer never redelivers, but after its own
			// reset a message of the consumer it replaced can still reach
			// us after the new one's first. Folding it now would be
			// skipped by last_seq and the event lost: the shard starts
			// again from its checkpoint instead.
			w.log.Warn("message delivered out of order; re-consuming from the checkpoint", "seq", seq, "consumed", w.consumed)
			w.needReset = true
		}
		return
	}
	now := w.sh.clock.Now()
	// The retention horizon is judged against the time the event entered
	// the stream, not the processing time: live processing and any later
	// replay of the same message decide alike.
	ev, err := event.Decode(m.Data(), time.Unix(0, ts), w.sh.limits)
	if err != nil {
		if err := w.deadLetter(m, seq, err); err != nil {
			w.log.Warn("dead-letter failed; re-consuming from the checkpoint", "err", err)
			w.needReset = true
			return
		}
	} else if err := w.fold(ev, seq); err != nil {
		w.log.Warn("cannot load an aggregate; re-consuming from the checkpoint", "err", err)
		w.needReset = true
		return
	}
	// The pending count was taken when the server sent the message, and
	// the client may have held it since (up to PullMaxMessages of them):
	// the count covers what was published until the message entered the
	// stream, which is its age ago (the finality watermark's time).
	covered := now
	if age := time.Since(time.Unix(0, ts)); age > 0 {
		covered = now.Add(-age)
	}
	w.consumed, w.pending, w.coveredAt = seq, pending, covered
	w.handled++
	if w.msgsSince == 0 {
		w.oldestTS = ts
	}
	w.msgsSince++
	w.folded++
	if w.onFold != nil {
		w.onFold(1)
	}
}

// fold adds ev (stream sequence seq) to the delta of its key in every
// window, skipping the keys whose stored aggregate already contains it.
func (w *shardWorker) fold(ev event.Event, seq uint64) error {
	ns := ev.Time.UnixNano()
	w.maxEventNs = max(w.maxEventNs, ns)
	w.metrics.folded.Inc()
	for i := range w.sh.buckets.windows {
		start := w.sh.buckets.windows[i].StartUnix(ns)
		e := w.last[i]
		if e == nil || e.key.Start != start || e.key.Service != ev.Service {
			var err error
			if e, err = w.lookup(uint8(i), ev.Service, start); err != nil {
				return err
			}
			w.last[i] = e
		}
		t := e
		if e.marker {
			overflowEvents.Inc()
			var err error
			if t, err = w.lookup(uint8(i), w.overflowN, start); err != nil {
				return err
			}
		}
		if seq <= t.lastSeq() {
			skippedFolds.Inc()
			continue // already in the stored aggregate: a redelivery
		}
		if t.final() && i == 0 {
			lateEvents.Inc()
		}
		if t.delta == nil {
			t.delta = w.newDelta(t)
		}
		if !t.dirty {
			t.dirty = true
			w.dirty = append(w.dirty, t)
		}
		t.delta.Add(ev)
		t.delta.LastSeq = seq
	}
	return nil
}

// lookup returns the entry of (window, service, bucket), loading the stored
// aggregate on first touch and applying MAX_SERVICES.
func (w *shardWorker) lookup(wi uint8, service string, start int64) (*entry, error) {
	k := agg.Key{Service: service, Window: wi, Start: start}
	if e := w.entries[k]; e != nil {
		return e, nil
	}
	bk := bucketKey{w: wi, start: start}
	b := w.buckets[bk]
	if b == nil {
		b = &bucketState{}
		if err := w.listBucket(wi, start, b); err != nil {
			return nil, err
		}
		w.buckets[bk] = b
	}
	e := &entry{key: k, kvKey: k.KVKey()}
	var stored *agg.Aggregate
	counted, listed := b.exists[e.kvKey]
	if listed || !b.listed {
		var err error
		if stored, e.rev, err = w.load(wi, e.kvKey); err != nil {
			return nil, err
		}
		delete(b.exists, e.kvKey)
	}
	switch {
	case service == w.overflowN:
		e.stored = stored
	case stored != nil:
		e.stored = stored
		if !counted {
			b.admitted++
		}
	case counted: // listed, deleted since: it keeps its place
	case b.admitted < w.sh.cfg.Processor.MaxServices:
		b.admitted++
	default:
		e.marker = true
	}
	w.entries[k] = e
	b.entries = append(b.entries, e)
	return e, nil
}

// listBucket lists the keys of this shard in one (window, bucket): one
// round trip instead of one read per key at bucket boundaries.
func (w *shardWorker) listBucket(wi uint8, start int64, b *bucketState) error {
	ctx, cancel := w.opCtx()
	defer cancel()
	// A metadata-only watch, deletes included (their markers must be read).
	watch, err := w.sh.buckets.agg[wi].WatchFiltered(ctx, []string{"*." + strconv.FormatInt(start, 10)}, jetstream.MetaOnly())
	if err != nil {
		return err
	}
	defer func() { _ = watch.Stop() }()
	for done := false; !done; {
		select {
		case en := <-watch.Updates():
			if en == nil {
				done = true
				break
			}
			if k, err := agg.ParseKVKey(en.Key()); err == nil && w.ownsService(k.Service) {
				if b.exists == nil {
					b.exists = map[string]bool{}
				}
				live := en.Operation() == jetstream.KeyValuePut && k.Service != w.overflowN
				b.exists[en.Key()] = live
				if live {
					b.admitted++
				}
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	b.listed = true
	return nil
}

// load reads and decodes a stored aggregate; nil if the key does not
// exist. It reads the KV stream directly so that a deleted or purged key
// (an operator's `nats kv del`) yields the revision of its marker, which
// the next write must expect.
func (w *shardWorker) load(wi uint8, key string) (*agg.Aggregate, uint64, error) {
	ctx, cancel := w.opCtx()
	defer cancel()
	m, err := w.sh.buckets.streams[wi].GetLastMsgForSubject(ctx, "$KV."+w.sh.buckets.names[wi]+"."+key)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	bucket := w.sh.buckets.names[wi]
	if op := m.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
		w.sh.unreadable.set(w.shard, bucket, key, nil)
		return nil, m.Sequence, nil
	}
	a, err := agg.Decode(m.Data)
	w.sh.unreadable.set(w.shard, bucket, key, err)
	if err != nil {
		// A value we cannot read is never overwritten blindly: the shard
		// retries (and logs, counts, reports in /health) until an operator
		// repairs it (docs/RUNBOOK.md, "Unreadable aggregate").
		return nil, 0, fmt.Errorf("%s %s: %w", bucket, key, err)
	}
	return a, m.Sequence, nil
}

// deadLetter publishes an event the processor rejects (too_late: beyond
// the retention horizon) to stacklens.dlq.processor.<reason>, with a
// message ID derived from the stream sequence so a re-consumption does not
// duplicate it.
func (w *shardWorker) deadLetter(m jetstream.Msg, seq uint64, derr error) error {
	reason := event.ReasonOf(derr)
	if reason == "" {
		reason = event.ReasonInvalidJSON
	}
	if reason == event.ReasonTooLate {
		tooLateEvents.Inc()
	}
	msg := nats.NewMsg(natsutil.DLQSubject("processor", reason))
	for k, v := range m.Headers() {
		msg.Header[k] = v
	}
	msg.Header.Set(natsutil.HdrDLQReason, string(reason))
	msg.Header.Set(natsutil.HdrDLQError, derr.Error())
	msg.Header.Set(natsutil.HdrDLQStage, "processor")
	msg.Header.Set("Stacklens-Stream-Seq", strconv.FormatUint(seq, 10))
	msg.Data = m.Data()
	ctx, cancel := w.opCtx()
	defer cancel()
	_, err := w.sh.js.PublishMsg(ctx, msg, jetstream.WithMsgID("processor-dlq-"+strconv.FormatUint(seq, 10)))
	return err
}
