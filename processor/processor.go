// Package processor is the StackLens processor (docs/ARCHITECTURE.md §2.2, §3, §4):
// horizontally scaled, stateless workers that each own some event shards,
// fold the shards' events into per-(service, window, bucket) aggregates and
// keep those aggregates in the JetStream KV buckets stacklens_agg_<window>,
// exactly once.
//
// Ownership (lease.go): members heartbeat into the stacklens_processor
// bucket; each shard has a lease key taken and renewed with compare-and-set;
// every member targets ceil(shards/members) shards and hands excess shards
// over after a final flush.
//
// Folding (shard_worker.go, flush.go, checkpoint.go): an owned shard is read in stream
// order by an ordered consumer from its checkpoint+1. Events are folded in
// memory into per-key deltas; every FLUSH_INTERVAL each dirty key is merged
// into its cached stored aggregate and written with compare-and-set on the
// revision that was read, all writes of a flush pipelined. An aggregate
// stores last_seq, the highest stream sequence it contains; an event with
// seq ≤ last_seq is skipped at fold time. The checkpoint advances only after
// every write of a flush succeeded; any CAS conflict discards the shard's
// memory and re-consumes from the checkpoint.
//
// Time (finality.go): a bucket is final once the clock passes its end plus
// ALLOWED_LATENESS and the shard has caught up; later events are
// corrections; events beyond the stream's retention horizon go to the DLQ
// as too_late.
//
// See docs/processor.md.
package processor

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/natsutil"
	"github.com/stacklens/stacklens/internal/telemetry"
	"github.com/stacklens/stacklens/internal/window"
)

// HealthName is the processor's readiness check.
const HealthName = "processor"

// Clock gives the wall-clock time used for finality, the retention horizon
// and lease expiry; tests use a fake one.
type Clock interface{ Now() time.Time }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// RealClock is the system clock.
var RealClock Clock = realClock{}

// Deps is what the processor runs with.
type Deps struct {
	Config  *config.Config
	Log     *slog.Logger
	Health  *telemetry.Health // may be nil
	Options Options
}

// Options are tuning knobs outside the shared configuration; the zero value
// means the defaults.
type Options struct {
	// Name is the NATS client name (default natsutil.DefaultName("processor")).
	Name string
	// Clock defaults to the system clock.
	Clock Clock
	// HeartbeatInterval is how often the member heartbeats, renews its
	// leases and rebalances (default LEASE_TTL/3).
	HeartbeatInterval time.Duration
	// Conn, when set, is used instead of connecting from the configuration
	// (it is not closed by Run).
	Conn *nats.Conn
}

func (o Options) withDefaults(c *config.Config) Options {
	if o.Name == "" {
		o.Name = natsutil.DefaultName("processor")
	}
	if o.Clock == nil {
		o.Clock = RealClock
	}
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = c.Processor.LeaseTTL / 3
	}
	return o
}

// bucketSet is the KV buckets one processor writes: the aggregates of each
// window (index = window index) and the coordination bucket.
type bucketSet struct {
	windows []window.Window
	names   []string // KV bucket name per window
	agg     []jetstream.KeyValue
	streams []jetstream.Stream // the KV buckets' streams (direct reads)
}

// shared is what every shard worker of one process uses.
type shared struct {
	cfg     *config.Config
	log     *slog.Logger
	clock   Clock
	js      jetstream.JetStream
	stream  jetstream.Stream
	coord   jetstream.KeyValue // nil in replay: checkpoints in memory only
	buckets bucketSet
	limits  event.Limits
	id      string
	// unreadable: stored aggregates that fail to decode (metric, /health)
	unreadable *unreadableSet
	// config: the stacklens_config bucket (SLO latency thresholds); slo:
	// the current thresholds (thresholds.go)
	config jetstream.KeyValue
	slo    *sloThresholds
}

// Run runs one processor member until ctx is cancelled, then hands its
// shards over cleanly (final flush, checkpoint, lease release).
func Run(ctx context.Context, d Deps) error {
	if d.Config == nil {
		return errors.New("processor: no configuration")
	}
	log := d.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "processor")
	opts := d.Options.withDefaults(d.Config)
	nc := opts.Conn
	if nc == nil {
		var err error
		nc, err = natsutil.Connect(ctx, d.Config.NATS, opts.Name, log)
		if err != nil {
			return err
		}
		defer nc.Close()
	}
	sh, err := setup(ctx, nc, d.Config, log, opts.Clock, memberID(d.Config))
	if err != nil {
		return err
	}
	if d.Health != nil {
		d.Health.Register(HealthName, func(context.Context) error {
			if !nc.IsConnected() {
				return errors.New("NATS not connected")
			}
			if ks := sh.unreadable.keys(); len(ks) > 0 {
				return fmt.Errorf("unreadable aggregate(s) stall their shard: %s (docs/RUNBOOK.md, \"Unreadable aggregate\")",
					strings.Join(ks, ", "))
			}
			return nil
		})
		defer d.Health.Remove(HealthName)
	}
	defer exportUnreadable(sh.unreadable)()
	// The thresholds are known before the first event is fetched, so the
	// aggregates created first already count them.
	wctx, stopWatch := context.WithCancel(ctx)
	var watchWG sync.WaitGroup
	defer watchWG.Wait()
	defer stopWatch()
	ready := make(chan struct{})
	safeGo(&watchWG, func() { watchThresholds(wctx, sh, sh.config, log, ready) })
	select {
	case <-ready:
	case <-ctx.Done():
		return nil
	}
	log.Info("processor started", "member", sh.id, "shards", d.Config.NATS.Shards,
		"windows", windowNames(sh.buckets.windows), "flush_interval", d.Config.Processor.FlushInterval,
		"slo_latency_thresholds_ms", sh.thresholds())
	m := newMembership(sh, opts.HeartbeatInterval)
	m.run(ctx)
	log.Info("processor stopped", "member", sh.id)
	return nil
}

// setup provisions the stream and buckets and returns the shared state.
// A dependency that is not there yet (NATS down, a cluster without a
// leader, a bucket that cannot be created for now) is retried with backoff
// until ctx ends, as docs/ARCHITECTURE.md §7 asks; only a changed SHARDS is permanent.
func setup(ctx context.Context, nc *nats.Conn, cfg *config.Config, log *slog.Logger, clock Clock, id string) (*shared, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(8192))
	if err != nil {
		return nil, err
	}
	windows, err := cfg.Pipeline.ValidWindows()
	if err != nil {
		return nil, err
	}
	var sh *shared
	err = natsutil.ProvisionWithRetry(ctx, log, func(ctx context.Context) (err error) {
		sh, err = provision(ctx, js, cfg, windows)
		return err
	}, nil)
	if err != nil {
		return nil, err
	}
	sh.log, sh.clock, sh.id = log, clock, id
	return sh, nil
}

// provision creates or updates the event stream and the KV buckets once.
func provision(ctx context.Context, js jetstream.JetStream, cfg *config.Config, windows []window.Window) (*shared, error) {
	st, err := natsutil.EnsureEventsStream(ctx, js, cfg.NATS)
	if err != nil {
		return nil, err
	}
	bs := bucketSet{windows: windows}
	for _, w := range windows {
		kv, err := natsutil.EnsureKV(ctx, js, AggBucketConfig(cfg, w, natsutil.AggBucket(w.Name)))
		if err != nil {
			return nil, err
		}
		if err := bs.add(ctx, js, natsutil.AggBucket(w.Name), kv); err != nil {
			return nil, err
		}
	}
	coord, err := natsutil.EnsureKV(ctx, js, CoordBucketConfig(cfg))
	if err != nil {
		return nil, err
	}
	config, err := natsutil.EnsureKV(ctx, js, natsutil.ConfigBucketConfig(cfg.NATS))
	if err != nil {
		return nil, err
	}
	lim, err := limitsOf(cfg)
	if err != nil {
		return nil, err
	}
	return &shared{cfg: cfg, js: js, stream: st, coord: coord, buckets: bs, limits: lim, unreadable: &unreadableSet{}, config: config, slo: &sloThresholds{}}, nil
}

// limitsOf returns the decode limits of the processor: the events were
// validated by the bridge, so size and future skew are not re-judged (a
// configuration change must not dead-letter what the stream already
// holds); only the retention horizon is the processor's to check. Naive
// timestamps are read in EVENT_TIMEZONE, as the bridge read them.
func limitsOf(cfg *config.Config) (event.Limits, error) {
	loc, err := cfg.Pipeline.EventLocation()
	if err != nil {
		return event.Limits{}, err
	}
	return event.Limits{
		MaxBytes:      max(cfg.Pipeline.MaxEventBytes, 16<<20),
		MaxFutureSkew: 100 * 365 * 24 * time.Hour,
		Horizon:       cfg.NATS.EventsMaxAge,
		Location:      loc,
	}, nil
}

// AggBucketConfig is the KV configuration of a window's aggregate bucket:
// history 1, TTL from the window's retention tier (windows under
// config.WarmWindowLimit: RETENTION_WARM days, longer ones: RETENTION_COLD
// days, as their tables), replicas from NATS_REPLICAS.
func AggBucketConfig(cfg *config.Config, w window.Window, name string) jetstream.KeyValueConfig {
	days := cfg.Retention.WindowDays(w)
	return jetstream.KeyValueConfig{
		Bucket:      name,
		Description: "StackLens " + w.Name + " aggregates (key <service-token>.<bucket-start-unix>)",
		History:     1,
		TTL:         time.Duration(days) * 24 * time.Hour,
		Replicas:    cfg.NATS.Replicas,
		Storage:     jetstream.FileStorage,
	}
}

// CoordBucketConfig is the configuration of stacklens_processor: leases,
// member heartbeats and checkpoints, no TTL.
func CoordBucketConfig(cfg *config.Config) jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      natsutil.ProcessorBucket,
		Description: "StackLens processor leases (lease.<shard>), heartbeats (member.<id>) and checkpoints (ckpt.<shard>)",
		History:     1,
		Replicas:    cfg.NATS.Replicas,
		Storage:     jetstream.FileStorage,
	}
}

func (bs *bucketSet) add(ctx context.Context, js jetstream.JetStream, name string, kv jetstream.KeyValue) error {
	st, err := js.Stream(ctx, "KV_"+name)
	if err != nil {
		return fmt.Errorf("kv bucket %s: %w", name, err)
	}
	bs.names = append(bs.names, name)
	bs.agg = append(bs.agg, kv)
	bs.streams = append(bs.streams, st)
	return nil
}

func windowNames(ws []window.Window) string {
	var s []string
	for _, w := range ws {
		s = append(s, w.Name)
	}
	return strings.Join(s, ",")
}

// memberID returns PROCESSOR_ID, or host-pid, made KV-key safe.
func memberID(cfg *config.Config) string {
	id := cfg.Processor.ID
	if id == "" {
		id = strings.TrimPrefix(natsutil.DefaultName("processor"), "stacklens-processor@")
	}
	var b strings.Builder
	for i := 0; i < len(id); i++ {
		c := id[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' {
			b.WriteByte(c)
		} else {
			b.WriteByte('-')
		}
	}
	return b.String()
}

// score is the rendezvous-hash preference of member id for shard: members
// prefer the shards with their highest scores, which spreads acquisitions.
func score(id string, shard int) uint32 {
	h := fnv.New32a()
	fmt.Fprintf(h, "%s/%d", id, shard)
	return h.Sum32()
}

// safeGo runs f in a goroutine tracked by wg.
func safeGo(wg *sync.WaitGroup, f func()) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		f()
	}()
}
