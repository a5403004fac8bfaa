package projections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/stacklens/stacklens/internal/agg"
	"github.com/stacklens/stacklens/internal/natsutil"
	"github.com/stacklens/stacklens/internal/retry"
	"github.com/stacklens/stacklens/internal/window"
)

// metricsProjector follows one window's KV bucket through a durable
// consumer on its underlying stream and upserts the rows.
type metricsProjector struct {
	js     jetstream.JetStream
	wr     *Writer
	win    window.Window
	bucket string
	spec   consumerSpec
	st     *status
	log    *slog.Logger
	opts   Options
	parts  *partCache
	shards int // SHARDS: the processors' overflow keys are _overflow-0 … _overflow-<SHARDS-1>
	rows   prometheusCounter
	hist   prometheusHistogram
	// scratch is decoded into for every message that is a whole row (the
	// row copies what it needs), so its sketch is reused rather than
	// allocated per message (docs/PERFORMANCE.md); parts are cloned.
	scratch agg.Aggregate
}

type prometheusCounter interface{ Add(int) }
type prometheusHistogram interface{ UpdateDuration(time.Time) }

func newMetricsProjector(js jetstream.JetStream, wr *Writer, w window.Window, shards int, o Options, st *status, log *slog.Logger) (*metricsProjector, error) {
	if _, err := MetricsTable(w); err != nil {
		return nil, err
	}
	bucket := natsutil.AggBucket(w.Name)
	p := &metricsProjector{
		js: js, wr: wr, win: w, bucket: bucket, st: st, opts: o, shards: shards,
		log:   log.With("window", w.Name),
		parts: newPartCache(),
		rows:  rowsUpserted(w.Name),
		hist:  batchSeconds("metrics_" + w.Name),
	}
	p.spec = consumerSpec{
		stream: "KV_" + bucket,
		cfg: jetstream.ConsumerConfig{
			Durable:       o.ConsumerPrefix + "_" + w.Name,
			Description:   "StackLens projections: " + bucket + " → analytics_metrics_" + w.Name,
			FilterSubject: "$KV." + bucket + ".>",
			// The KV history is short; the latest value of every key is
			// all a new projection needs.
			DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       o.AckWait,
			MaxDeliver:    -1,
			MaxAckPending: 4 * o.MetricsBatch,
		},
		batch:   o.MetricsBatch,
		wait:    o.BatchWait,
		backoff: o.MaxBackoff,
		handle:  p.handle,
	}
	return p, nil
}

func (p *metricsProjector) run(ctx context.Context) {
	runConsumer(ctx, p.js, p.spec, p.st, p.log)
}

// rowKey identifies a metric row.
type rowKey struct {
	service string
	start   int64
}

// handle turns a batch of KV changes into rows and upserts them.
func (p *metricsProjector) handle(ctx context.Context, msgs []jetstream.Msg) error {
	rows := make([]MetricRow, 0, len(msgs))
	var dirty map[rowKey]*partGroup
	prefix := "$KV." + p.bucket + "."
	for _, m := range msgs {
		if isDeletion(m) {
			continue // TTL expiry or purge in KV: PostgreSQL keeps its row
		}
		key := strings.TrimPrefix(m.Subject(), prefix)
		a := &p.scratch
		w, err := agg.DecodeInto(a, m.Data())
		if err != nil || w != p.win {
			badMessages.Inc()
			p.log.Error("skipping undecodable aggregate", "key", key, "err", err, "value_window", w.Name)
			continue
		}
		service, part := rowIdentity(key, a)
		if !part {
			rows = append(rows, RowOf(a, p.win))
			continue
		}
		a = a.Clone() // kept in the part cache
		// A partial aggregate (one shard's _overflow): the row is the
		// merge of every part with the same service and start.
		k := rowKey{service, a.Start}
		g, err := p.parts.group(ctx, p, k, isOverflowShard(a.Service))
		if err != nil {
			return err
		}
		g.put(key, a)
		if dirty == nil {
			dirty = map[rowKey]*partGroup{}
		}
		dirty[k] = g
	}
	for _, g := range dirty {
		rows = append(rows, RowOf(g.merged(), p.win))
	}
	p.parts.evict(time.Now(), max(10*time.Minute, 2*p.win.Size))
	if len(rows) == 0 {
		return nil
	}
	start := time.Now()
	var n int64
	err := retryDB(ctx, p.spec.cfg.Durable, p.st, p.log, p.opts.MaxBackoff, func(ctx context.Context) error {
		var err error
		n, err = p.wr.UpsertMetrics(ctx, p.win, rows)
		if err == nil || !isDataError(err) {
			return err
		}
		// PostgreSQL refuses some row (cannot happen for aggregates
		// agg.Decode accepted): write row by row and drop only the
		// refused ones, never block the stream on them.
		n = 0
		for i := range rows {
			m, err := p.wr.UpsertMetrics(ctx, p.win, rows[i:i+1])
			if err != nil && !isDataError(err) {
				return err
			}
			if err != nil {
				badMessages.Inc()
				p.log.Error("dropping a row PostgreSQL refuses", "service", rows[i].Service, "timestamp", rows[i].Timestamp, "err", err)
			}
			n += m
		}
		return nil
	})
	if err != nil {
		return err
	}
	p.hist.UpdateDuration(start)
	p.rows.Add(int(n))
	return nil
}

func decodeAgg(b []byte) (*agg.Aggregate, window.Window, error) {
	a := new(agg.Aggregate)
	w, err := agg.DecodeInto(a, b)
	return a, w, err
}

// rowIdentity returns the service of the row a KV value belongs to and
// whether the value is only a part of that row. The processors count a
// shard's events beyond MAX_SERVICES under the service "_overflow-<shard>";
// those per-shard aggregates are parts of the one "_overflow" row. A value
// stored under a key other than its own canonical key is a part too.
func rowIdentity(key string, a *agg.Aggregate) (service string, part bool) {
	if isOverflowShard(a.Service) {
		return agg.OverflowService, true
	}
	return a.Service, !isOwnKey(key, a)
}

// isOverflowShard matches "_overflow-<shard number>".
func isOverflowShard(s string) bool {
	n, ok := strings.CutPrefix(s, agg.OverflowService+"-")
	if !ok || n == "" {
		return false
	}
	v, err := strconv.ParseUint(n, 10, 32)
	return err == nil && strconv.FormatUint(v, 10) == n
}

// isOwnKey reports whether key is the canonical key of a's own row
// (<service-token>.<start>); other keys hold parts of a row.
func isOwnKey(key string, a *agg.Aggregate) bool {
	k, err := agg.ParseKVKey(key)
	return err == nil && k.Service == a.Service && k.Start == a.Start
}

// isDeletion reports KV delete and purge operations and server markers
// (TTL expiry), which carry no value.
func isDeletion(m jetstream.Msg) bool {
	h := m.Headers()
	if h != nil && (h.Get("KV-Operation") != "" || h.Get(jetstream.MarkerReasonHeader) != "") {
		return true
	}
	return len(m.Data()) == 0
}

// partCache holds the latest value of every part of the rows that are
// stored in several KV keys, so each change can be written as the merged
// row. A group seen for the first time (after a start, or after eviction)
// is loaded from the bucket's current values first.
type partCache struct {
	groups map[rowKey]*partGroup
	last   time.Time
}

type partGroup struct {
	service string
	start   int64
	parts   map[string]*agg.Aggregate
	touched time.Time
}

func newPartCache() *partCache { return &partCache{groups: map[rowKey]*partGroup{}} }

func (c *partCache) group(ctx context.Context, p *metricsProjector, k rowKey, shardKeys bool) (*partGroup, error) {
	g := c.groups[k]
	if g == nil {
		g = &partGroup{service: k.service, start: k.start, parts: map[string]*agg.Aggregate{}}
		if err := p.loadParts(ctx, k, g, shardKeys); err != nil {
			return nil, err
		}
		c.groups[k] = g
	}
	g.touched = time.Now()
	return g, nil
}

func (g *partGroup) put(key string, a *agg.Aggregate) {
	if old := g.parts[key]; old == nil || old.Version < a.Version {
		g.parts[key] = a
	}
}

// merged sums the parts. Its version is the sum of the parts' versions,
// which grows whenever any part changes, so the version guard still orders
// the merged rows; it is final when every part is.
func (g *partGroup) merged() *agg.Aggregate {
	out := agg.NewAggregate(g.service, g.start)
	final := true
	var version uint64
	for _, key := range slices.Sorted(maps.Keys(g.parts)) { // a fixed order: the same float sums every time
		a := g.parts[key]
		out.Merge(a)
		final = final && a.Final
		version += a.Version
	}
	out.Final, out.Version = final, version
	return out
}

// evict forgets groups untouched for longer than idle, at most once a minute.
func (c *partCache) evict(now time.Time, idle time.Duration) {
	if len(c.groups) == 0 || now.Sub(c.last) < time.Minute {
		return
	}
	c.last = now
	for k, g := range c.groups {
		if now.Sub(g.touched) > idle {
			delete(c.groups, k)
		}
	}
}

// loadParts reads the current values of the parts of k: with shardKeys
// (the processors' _overflow-<shard> aggregates) the SHARDS keys
// _overflow-<shard>.<start> by direct reads, otherwise every key of the
// bucket with the same start (subjects $KV.<bucket>.*.<start>).
func (p *metricsProjector) loadParts(ctx context.Context, k rowKey, g *partGroup, shardKeys bool) error {
	if shardKeys && p.shards > 0 {
		return retryNATS(ctx, p.st, p.log, p.opts.MaxBackoff, func(ctx context.Context) error {
			clear(g.parts)
			kv, err := p.js.KeyValue(ctx, p.bucket)
			if err != nil {
				return err
			}
			for sh := range p.shards {
				key := agg.Key{Service: agg.OverflowService + "-" + strconv.Itoa(sh), Start: k.start}.KVKey()
				e, err := kv.Get(ctx, key)
				if errors.Is(err, jetstream.ErrKeyNotFound) {
					continue
				}
				if err != nil {
					return err
				}
				if a, w, err := decodeAgg(e.Value()); err == nil && w == p.win && a.Start == k.start {
					if svc, part := rowIdentity(key, a); part && svc == k.service {
						g.put(key, a)
					}
				}
			}
			return nil
		})
	}
	prefix := "$KV." + p.bucket + "."
	subj := prefix + "*." + strconv.FormatInt(k.start, 10)
	// The consumers of attempts that failed around an outage: a creation
	// whose reply was lost may be applied after its delete, so they are
	// deleted once more when the read ends, if NATS answers then.
	var unsure []string
	defer func() { _ = p.deleteConsumers(ctx, unsure) }()
	return retryNATS(ctx, p.st, p.log, p.opts.MaxBackoff, func(ctx context.Context) (err error) {
		clear(g.parts)
		// An ephemeral consumer named here, so that it is deleted even
		// when the reply to its creation was lost; not an ordered one,
		// which re-creates itself inside Fetch without a context, so a
		// NATS outage would hold this read and the projections'
		// shutdown. Any failure restarts the whole read.
		name := "stacklens_parts_" + nuid.Next()
		defer func() {
			if p.deleteConsumers(ctx, []string{name}) != nil || err != nil {
				unsure = append(unsure[max(0, len(unsure)-maxUnsureConsumers+1):], name)
			}
		}()
		cons, err := p.js.CreateConsumer(ctx, p.spec.stream, jetstream.ConsumerConfig{
			Name:              name,
			FilterSubject:     subj,
			DeliverPolicy:     jetstream.DeliverLastPerSubjectPolicy,
			AckPolicy:         jetstream.AckNonePolicy,
			InactiveThreshold: time.Minute, // the server's clean-up if every delete is lost too
			MemoryStorage:     true,
		})
		if err != nil {
			return err
		}
		if cons.CachedInfo().NumPending == 0 {
			return nil
		}
		for {
			mb, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
			if err != nil {
				return err
			}
			got, done := 0, false
			for m := range mb.Messages() {
				got++
				if md, err := m.Metadata(); err == nil && md.NumPending == 0 {
					done = true
				}
				key := strings.TrimPrefix(m.Subject(), prefix)
				if isDeletion(m) {
					delete(g.parts, key)
					continue
				}
				a, w, err := decodeAgg(m.Data())
				if err != nil || w != p.win || a.Start != k.start {
					continue
				}
				if svc, part := rowIdentity(key, a); part && svc == k.service {
					g.put(key, a)
				}
			}
			if err := mb.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
				return err
			}
			if done || got == 0 {
				break
			}
		}
		return nil
	})
}

// maxUnsureConsumers bounds the names loadParts deletes again at its end;
// older ones are left to the server's inactivity threshold.
const maxUnsureConsumers = 64

// deleteConsumers deletes the named consumers of the KV stream within a
// second (also when ctx has ended), stopping at the first failure other
// than "not found" — NATS is unreachable, and the inactivity threshold
// removes the rest. Disconnected, it does not wait: it fails at once.
func (p *metricsProjector) deleteConsumers(ctx context.Context, names []string) error {
	if len(names) == 0 {
		return nil
	}
	if !p.js.Conn().IsConnected() {
		return nats.ErrDisconnected
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	for _, name := range names {
		if err := p.js.DeleteConsumer(dctx, p.spec.stream, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return err
		}
	}
	return nil
}

// retryNATS is retryDB for NATS reads.
func retryNATS(ctx context.Context, st *status, log *slog.Logger, maxBackoff time.Duration, f func(context.Context) error) error {
	failures := 0
	err := retry.Until(ctx, retry.New(50*time.Millisecond, maxBackoff), f, func(err error, _ time.Duration) {
		failures++
		st.set("nats", fmt.Errorf("reading KV parts: %w", err))
		if failures == 1 || failures%20 == 0 {
			log.Warn("reading KV parts failed; retrying", "err", err)
		}
	})
	if err == nil && failures > 0 {
		st.set("nats", nil)
	}
	return err
}
