// Package bridge forwards the Kafka input topic into the JetStream event
// log of record, exactly once, validating every message at the edge.
//
// Each Kafka partition is forwarded in order by one worker, in atomic
// JetStream batches whose last message is the partition's checkpoint (the
// last Kafka offset in the batch) on stacklens.offsets.<topic>.<partition>.
// A batch is fenced on the checkpoint subject's last sequence, so the
// stream always holds a gap-free prefix of every partition, whatever
// crashes, restarts or rebalances happen. On assignment a worker resumes
// after the checkpoint it reads from the stream; Kafka offsets are
// committed (asynchronously) after the batches are acknowledged, for
// monitoring and as the fallback when the stream holds no checkpoint.
// See docs/bridge.md.
package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/segmentio/kafka-go"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/faultpoint"
	"github.com/stacklens/stacklens/internal/natsutil"
	"github.com/stacklens/stacklens/internal/telemetry"
)

// HealthName is the bridge's readiness check.
const HealthName = "bridge"

// Deps is what the bridge runs with.
type Deps struct {
	Config  *config.Config
	Log     *slog.Logger
	Health  *telemetry.Health // may be nil
	Options Options
}

// Options are tuning knobs outside the shared configuration; the zero
// value means the defaults.
type Options struct {
	// Name is the NATS client name (default natsutil.DefaultName("bridge")).
	Name string
	// Consumer group timings (defaults KAFKA_HEARTBEAT_INTERVAL,
	// KAFKA_SESSION_TIMEOUT, KAFKA_REBALANCE_TIMEOUT).
	HeartbeatInterval, SessionTimeout, RebalanceTimeout time.Duration
	// CommitInterval is how often acknowledged offsets are committed to
	// Kafka (default 1s).
	CommitInterval time.Duration
	// MaxWait is the longest a fetch long-polls a quiet partition (default
	// 500ms); a message arriving meanwhile is returned at once (MinBytes 1),
	// so it bounds idle polling, not latency.
	MaxWait time.Duration
	// PublishTimeout bounds one attempt to publish a batch (default 10s).
	PublishTimeout time.Duration
	// CheckpointRefresh is how long a partition may stay quiet before its
	// checkpoint is re-published, so that it never ages out of the stream
	// (default EVENTS_MAX_AGE / 4).
	CheckpointRefresh time.Duration
	// ProbeInterval is how often Kafka connectivity is checked for
	// readiness (default 5s).
	ProbeInterval time.Duration
	// ShutdownGrace bounds how long an in-flight batch may still be retried
	// once the bridge is stopping or the partition is revoked (default 10s).
	ShutdownGrace time.Duration
}

func (o Options) withDefaults(k config.Kafka, maxAge time.Duration) Options {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if o.Name == "" {
		o.Name = natsutil.DefaultName("bridge")
	}
	def(&o.HeartbeatInterval, k.Heartbeat)
	def(&o.SessionTimeout, k.SessionTimeout)
	def(&o.RebalanceTimeout, k.RebalanceTimeout)
	def(&o.CommitInterval, time.Second)
	def(&o.MaxWait, 500*time.Millisecond)
	def(&o.PublishTimeout, 10*time.Second)
	def(&o.ShutdownGrace, 10*time.Second)
	def(&o.ProbeInterval, 5*time.Second)
	def(&o.CheckpointRefresh, maxAge/4)
	return o
}

type bridge struct {
	cfg    *config.Config
	opts   Options
	log    *slog.Logger
	health *telemetry.Health
	limits event.Limits
	dialer *kafka.Dialer

	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream

	kafkaErr, natsErr atomic.Pointer[timedErr]
	kafkaProbeErr     atomic.Pointer[error]
	// For readiness, read by the health loop: set once connected and
	// once the stream is provisioned.
	natsConn    atomic.Pointer[nats.Conn]
	provisioned atomic.Bool
}

func (b *bridge) setKafkaProbeErr(err error) { b.kafkaProbeErr.Store(&err) }

type timedErr struct {
	err error
	at  time.Time
}

// errRecent is how long an error keeps the bridge not ready after it
// was last seen without a success since.
const errRecent = 10 * time.Second

func newBridge(d Deps) (*bridge, error) {
	if d.Config == nil {
		return nil, errors.New("bridge: no configuration")
	}
	if d.Config.Kafka.Linger <= 0 {
		// Its default lives in internal/config; zero would publish every
		// partial batch at once (a caller that skipped the configuration).
		return nil, &config.Error{Var: "KAFKA_LINGER", Msg: fmt.Sprintf("%v: must be positive", d.Config.Kafka.Linger)}
	}
	log := d.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "bridge")
	loc, err := d.Config.Pipeline.EventLocation()
	if err != nil {
		return nil, err
	}
	b := &bridge{
		cfg:    d.Config,
		opts:   d.Options.withDefaults(d.Config.Kafka, d.Config.NATS.EventsMaxAge),
		log:    log,
		health: d.Health,
		limits: event.Limits{
			MaxBytes:      d.Config.Pipeline.MaxEventBytes,
			MaxFutureSkew: d.Config.Pipeline.MaxFutureSkew,
			Horizon:       d.Config.NATS.EventsMaxAge,
			Location:      loc,
		},
	}
	dialer, err := newDialer(d.Config.Kafka)
	if err != nil {
		return nil, err
	}
	b.dialer = dialer
	return b, nil
}

// Run forwards Kafka to JetStream until ctx is cancelled, then shuts down
// in order — stop fetching, finish the in-flight batches, commit the Kafka
// offsets, leave the consumer group, close NATS — and returns nil. It
// returns an error only for bad configuration or a stream it must not
// touch (SHARDS changed).
func Run(ctx context.Context, d Deps) error {
	b, err := newBridge(d)
	if err != nil {
		return err
	}
	return b.run(ctx)
}

func (b *bridge) run(ctx context.Context) error {
	b.setHealth(errors.New("starting"))
	hdone := make(chan struct{})
	hctx, hcancel := context.WithCancel(context.Background())
	go func() { defer close(hdone); b.healthLoop(hctx) }()
	defer func() {
		hcancel()
		<-hdone
		b.setHealth(errors.New("stopped"))
	}()

	nc, err := natsutil.Connect(ctx, b.cfg.NATS, b.opts.Name, b.log)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	b.nc = nc
	b.natsConn.Store(nc)
	defer func() {
		_ = nc.FlushTimeout(2 * time.Second)
		nc.Close()
		b.log.Info("bridge stopped: NATS closed")
	}()
	if mp := int(nc.MaxPayload()) - 8<<10; mp > 0 && (b.limits.MaxBytes <= 0 || mp < b.limits.MaxBytes) {
		// A message the server cannot take would block its partition.
		b.limits.MaxBytes = mp
	}
	if b.js, err = jetstream.New(nc); err != nil {
		return err
	}
	if b.stream, err = b.provision(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	b.provisioned.Store(true)
	cg, err := b.newConsumerGroup()
	if err != nil {
		return fmt.Errorf("bridge: kafka consumer group: %w", err)
	}
	b.log.Info("bridge started", "topic", b.cfg.Kafka.InputTopic, "group", b.cfg.Kafka.GroupID,
		"brokers", b.cfg.Kafka.BootstrapServers, "batch_size", b.cfg.Kafka.BatchSize,
		"batch_timeout_ms", b.cfg.Kafka.BatchTimeoutMS, "linger", b.cfg.Kafka.Linger)

	var gens sync.WaitGroup
	for {
		gen, err := cg.Next(ctx)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			b.setKafkaErr(err)
			b.log.Warn("kafka consumer group", "err", err)
			continue
		}
		b.setKafkaErr(nil)
		gens.Add(1)
		gen.Start(func(gctx context.Context) {
			defer gens.Done()
			b.runGeneration(ctx, gctx, gen)
		})
	}
	b.log.Info("stopping: fetching stopped, finishing in-flight batches")
	gens.Wait()
	b.log.Info("stopping: leaving the consumer group")
	if err := cg.Close(); err != nil {
		b.log.Warn("leaving the consumer group", "err", err)
	}
	return nil
}

// provision creates or updates the stream, retrying while NATS or
// JetStream is unavailable.
func (b *bridge) provision(ctx context.Context) (jetstream.Stream, error) {
	var st jetstream.Stream
	err := natsutil.ProvisionWithRetry(ctx, b.log, func(ctx context.Context) (err error) {
		st, err = natsutil.EnsureEventsStream(ctx, b.js, b.cfg.NATS)
		return err
	}, b.setNATSErr)
	if err != nil {
		return nil, err
	}
	b.setNATSErr(nil)
	return st, nil
}

// runGeneration forwards the partitions assigned in one consumer-group
// generation until it ends (rebalance) or the bridge stops, then commits
// the offsets of the acknowledged batches.
func (b *bridge) runGeneration(runCtx, gctx context.Context, gen *kafka.Generation) {
	ctx, cancel := context.WithCancel(gctx)
	defer cancel()
	defer context.AfterFunc(runCtx, cancel)()
	pubCtx, pubCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer pubCancel()
	defer context.AfterFunc(ctx, func() { time.AfterFunc(b.opts.ShutdownGrace, pubCancel) })()

	group := newGroupPublisher(b.js, b.opts.PublishTimeout)
	groupDone := make(chan struct{})
	go func() { group.run(pubCtx); close(groupDone) }()
	defer func() { pubCancel(); <-groupDone }()

	assigned := gen.Assignments[b.cfg.Kafka.InputTopic]
	sort.Slice(assigned, func(i, j int) bool { return assigned[i].ID < assigned[j].ID })
	ids := make([]int, 0, len(assigned))
	workers := make([]*partitionWorker, 0, len(assigned))
	var wg sync.WaitGroup
	for _, a := range assigned {
		w := b.newWorker(a.ID)
		w.group = group
		workers = append(workers, w)
		ids = append(ids, a.ID)
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(ctx, pubCtx, a.Offset)
		}()
	}
	b.log.Info("partitions assigned", "generation", gen.ID, "member", gen.MemberID, "partitions", ids)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTicker(b.opts.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			b.commit(gen, workers)
		case <-done:
			b.commit(gen, workers)
			b.log.Info("partitions released", "generation", gen.ID, "partitions", ids)
			return
		}
	}
}

// commit commits the offsets after the acknowledged batches (one request
// for all partitions of the generation).
func (b *bridge) commit(gen *kafka.Generation, workers []*partitionWorker) {
	offs := map[int]int64{}
	for _, w := range workers {
		if a := w.acked.Load(); a >= 0 && a != w.committed {
			offs[w.partition] = a
		}
	}
	if len(offs) == 0 {
		return
	}
	if err := gen.CommitOffsets(map[string]map[int]int64{b.cfg.Kafka.InputTopic: offs}); err != nil {
		b.log.Warn("commit offsets", "generation", gen.ID, "err", err)
		return
	}
	for _, w := range workers {
		if a, ok := offs[w.partition]; ok {
			w.committed = a
			w.gauges.committed.Set(float64(a))
		}
	}
	faultpoint.Hit(hookAfterCommit)
}

func (b *bridge) setKafkaErr(err error) { setErr(&b.kafkaErr, err) }
func (b *bridge) setNATSErr(err error)  { setErr(&b.natsErr, err) }

func setErr(p *atomic.Pointer[timedErr], err error) {
	if err == nil {
		if p.Load() != nil {
			p.Store(nil)
		}
		return
	}
	p.Store(&timedErr{err: err, at: time.Now()})
}

// readiness is nil when both Kafka and NATS work.
func (b *bridge) readiness() error {
	var errs []error
	if nc := b.natsConn.Load(); nc == nil || !nc.IsConnected() {
		errs = append(errs, errors.New("nats: not connected"))
	} else if !b.provisioned.Load() {
		errs = append(errs, errors.New("nats: event stream not provisioned"))
	}
	if p := b.kafkaProbeErr.Load(); p == nil {
		errs = append(errs, errors.New("kafka: not checked yet"))
	} else if *p != nil {
		errs = append(errs, *p)
	}
	for _, p := range []*atomic.Pointer[timedErr]{&b.natsErr, &b.kafkaErr} {
		if e := p.Load(); e != nil && time.Since(e.at) < errRecent {
			errs = append(errs, e.err)
		}
	}
	return errors.Join(errs...)
}

func (b *bridge) healthLoop(ctx context.Context) {
	go b.kafkaProbe(ctx)
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		b.setHealth(b.readiness())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// kafkaProbe checks every few seconds that a broker answers a metadata
// request for the input topic; the result is the Kafka part of readiness
// (with consumer-group errors).
func (b *bridge) kafkaProbe(ctx context.Context) {
	for {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := b.probeKafka(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		b.setKafkaProbeErr(err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(b.opts.ProbeInterval):
		}
	}
}

func (b *bridge) probeKafka(ctx context.Context) error {
	var errs []error
	for _, addr := range b.cfg.Kafka.BootstrapServers {
		conn, err := b.dialer.DialContext(ctx, "tcp", addr)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if dl, ok := ctx.Deadline(); ok {
			_ = conn.SetDeadline(dl)
		}
		_, err = conn.ReadPartitions(b.cfg.Kafka.InputTopic)
		_ = conn.Close()
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("kafka: %w", errors.Join(errs...))
}

func (b *bridge) setHealth(err error) {
	if b.health != nil {
		b.health.Set(HealthName, err)
	}
}
