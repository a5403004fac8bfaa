package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/natsutil"
)

// PipelineStatus is the "pipeline" object of /health: the backlog of each
// JetStream stage and the dead letters, as last sampled by a PipelineProbe
// (docs/api.md, "GET /health").
type PipelineStatus struct {
	Status      string          `json:"status" enum:"ok,warning,unavailable,disabled" doc:"disabled: this API samples nothing (no NATS); unavailable: the last sample failed (error), the numbers are from sampled_at; warning: a stream holds 80 % or more of its byte bound (streams), or the database of DB_MAX_BYTES (database)"`
	Error       string          `json:"error,omitempty"`
	SampledAt   *time.Time      `json:"sampled_at,omitempty" doc:"when the numbers were read from JetStream (every few seconds, not per request)"`
	Processor   *ProcessorLag   `json:"processor,omitempty"`
	Projections []ConsumerLag   `json:"projections,omitempty" doc:"the projections' durable consumers"`
	DeadLetters *DeadLetterInfo `json:"dead_letters,omitempty"`
	Streams     []StreamUsage   `json:"streams,omitempty" doc:"disk use of STACKLENS_EVENTS and STACKLENS_DLQ against their byte bounds"`
	Database    *DatabaseUsage  `json:"database,omitempty" doc:"size of the StackLens database against DB_MAX_BYTES"`
}

// DatabaseUsage is the database's size against its budget DB_MAX_BYTES.
// PostgreSQL has no byte bound of its own: retention goes by age, so the
// warning is what stands between growth and a full disk.
type DatabaseUsage struct {
	Status    string     `json:"status" enum:"ok,warning,unavailable" doc:"warning: used_ratio ≥ 0.8 (docs/RUNBOOK.md, Database near its byte bound); unavailable: the last size query failed (error), bytes are from sampled_at"`
	Error     string     `json:"error,omitempty"`
	SampledAt *time.Time `json:"sampled_at,omitempty" doc:"when the size was read (about every minute)"`
	Bytes     int64      `json:"bytes" doc:"pg_database_size of the database"`
	MaxBytes  int64      `json:"max_bytes" doc:"DB_MAX_BYTES; -1: none"`
	UsedRatio *float64   `json:"used_ratio,omitempty" doc:"bytes / max_bytes; absent without a bound"`
}

// The database size gauges (docs/RUNBOOK.md, "Database near its byte
// bound"); the ratio exists only with DB_MAX_BYTES set.
const (
	metricDatabaseBytes     = "stacklens_database_bytes"
	metricDatabaseUsedRatio = "stacklens_database_bytes_used_ratio"
)

// StreamUsage is a stream's size against its byte bound
// (EVENTS_MAX_BYTES, DLQ_MAX_BYTES). At the bound JetStream drops the
// oldest messages, consumed or not, so the warning comes before it.
type StreamUsage struct {
	Stream    string   `json:"stream"`
	Status    string   `json:"status" enum:"ok,warning" doc:"warning: used_ratio ≥ 0.8 (docs/RUNBOOK.md, Stream near its byte bound)"`
	Messages  uint64   `json:"messages"`
	Bytes     uint64   `json:"bytes" doc:"bytes stored (after compression)"`
	MaxBytes  int64    `json:"max_bytes" doc:"the byte bound; -1: none"`
	UsedRatio *float64 `json:"used_ratio,omitempty" doc:"bytes / max_bytes; absent without a bound"`
}

// streamWarnRatio is the used ratio from which a stream's usage is a
// warning: enough room left to act before the oldest unconsumed events go.
const streamWarnRatio = 0.8

// ProcessorLag is the processors' backlog on STACKLENS_EVENTS.
type ProcessorLag struct {
	Shards        int        `json:"shards"`
	Unconsumed    int        `json:"unconsumed" doc:"shards no processor consumes now (their events wait)"`
	Pending       int64      `json:"pending" doc:"events of consumed shards not yet delivered to their processor"`
	MaxLagSeconds float64    `json:"max_lag_seconds" doc:"age of the oldest event not yet consumed, over all shards"`
	ShardLags     []ShardLag `json:"shard_lags" doc:"by shard"`
}

// ShardLag is one shard's backlog.
type ShardLag struct {
	Shard         int      `json:"shard"`
	Consumed      bool     `json:"consumed" doc:"a processor consumes the shard now"`
	Pending       *int64   `json:"pending" doc:"events not yet delivered to its processor; null when no processor consumes it"`
	LagSeconds    float64  `json:"lag_seconds" doc:"age of the oldest event after the consumer's position (or the checkpoint); 0: caught up"`
	CheckpointSeq uint64   `json:"checkpoint_seq" doc:"stream sequence the shard's aggregates are durable up to"`
	CheckpointAge *float64 `json:"checkpoint_age_seconds,omitempty" doc:"seconds since the checkpoint was written"`
	Owner         string   `json:"owner,omitempty" doc:"the processor that wrote the checkpoint"`
}

// ConsumerLag is one durable consumer's backlog.
type ConsumerLag struct {
	Consumer   string  `json:"consumer"`
	Stream     string  `json:"stream"`
	Pending    int64   `json:"pending" doc:"messages not yet delivered"`
	AckPending int64   `json:"ack_pending" doc:"delivered, not yet acknowledged"`
	LagSeconds float64 `json:"lag_seconds" doc:"age of the oldest unacknowledged message; 0: caught up"`
}

// DeadLetterInfo counts the dead letters kept in STACKLENS_EVENTS.
type DeadLetterInfo struct {
	Total             int64              `json:"total" doc:"dead letters in the stream (kept for EVENTS_MAX_AGE)"`
	LastMinute        int64              `json:"last_minute" doc:"new dead letters over the last last_minute_seconds"`
	LastMinuteSeconds float64            `json:"last_minute_seconds" doc:"the span last_minute covers: 60, less while this API has sampled for under a minute"`
	Reasons           []DeadLetterReason `json:"reasons" doc:"by stage, then reason"`
}

// DeadLetterReason is the count of one stage.reason subject.
type DeadLetterReason struct {
	Stage      string `json:"stage"`
	Reason     string `json:"reason"`
	Total      int64  `json:"total"`
	LastMinute int64  `json:"last_minute"`
}

// PipelineReporter hands /health the latest pipeline sample (a
// *PipelineProbe); nil means not sampled yet.
type PipelineReporter interface {
	PipelineStatus() *PipelineStatus
}

// PipelineProbe samples lag and dead letters from JetStream in the
// background, so /health (hit by load balancers and every open dashboard)
// never waits for NATS: each request reads the last sample.
type PipelineProbe struct {
	js       jetstream.JetStream
	windows  []string
	interval time.Duration
	log      *slog.Logger
	now      func() time.Time

	mu      sync.Mutex
	cur     *PipelineStatus
	samples []dlqSample // oldest first, spanning a bit over a minute

	dbSize     func(context.Context) (int64, error)
	dbMax      int64
	dbInterval time.Duration
	dbMu       sync.Mutex // one size query at a time; guards db, dbNext
	db         *DatabaseUsage
	dbNext     time.Time
}

type dlqSample struct {
	at     time.Time
	counts map[string]int64 // subject → messages
}

// PipelineProbeOptions configure a probe.
type PipelineProbeOptions struct {
	// Windows are the aggregation windows, whose KV streams' consumers
	// are the projections'.
	Windows []string
	// Interval between samples; 0: 5 s.
	Interval time.Duration
	Log      *slog.Logger
	Now      func() time.Time // tests; nil: time.Now
	// DatabaseSize returns the StackLens database's size in bytes
	// (Server.DatabaseSize); nil: /health has no database usage.
	DatabaseSize func(context.Context) (int64, error)
	// DatabaseMaxBytes is DB_MAX_BYTES; 0: no bound (size only).
	DatabaseMaxBytes int64
	// DatabaseInterval between size queries; 0: 1 min. pg_database_size
	// stats every file of the database, too much for every sample.
	DatabaseInterval time.Duration
}

// NewPipelineProbe builds a probe on nc; Run samples.
func NewPipelineProbe(nc *nats.Conn, o PipelineProbeOptions) (*PipelineProbe, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("pipeline probe: %w", err)
	}
	if o.Interval <= 0 {
		o.Interval = 5 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.DatabaseInterval <= 0 {
		o.DatabaseInterval = time.Minute
	}
	return &PipelineProbe{js: js, windows: o.Windows, interval: o.Interval,
		log: o.Log.With("component", "pipeline-probe"), now: o.Now,
		dbSize: o.DatabaseSize, dbMax: o.DatabaseMaxBytes, dbInterval: o.DatabaseInterval}, nil
}

// PipelineStatus returns the latest sample (nil before the first).
func (p *PipelineProbe) PipelineStatus() *PipelineStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cur
}

// Run samples every interval until ctx ends.
func (p *PipelineProbe) Run(ctx context.Context) {
	t := time.NewTicker(p.interval)
	defer t.Stop()
	var lastErr string
	for {
		err := p.Sample(ctx)
		if err != nil && err.Error() != lastErr && ctx.Err() == nil {
			p.log.Warn("pipeline sample failed", "err", err)
		}
		lastErr = ""
		if err != nil {
			lastErr = err.Error()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sample reads the pipeline's state once. On failure the previous numbers
// stay, marked unavailable with the error.
func (p *PipelineProbe) Sample(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, max(p.interval, 2*time.Second))
	defer cancel()
	st, err := p.sample(ctx)
	// The database is sampled even when NATS is not: a filling disk
	// matters most when the pipeline is already in trouble.
	db := p.database(ctx)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		prev := PipelineStatus{}
		if p.cur != nil {
			prev = *p.cur
		}
		prev.Status, prev.Error = "unavailable", truncate(err.Error(), 200)
		prev.Database = db
		p.cur = &prev
		return err
	}
	st.Database = db
	if db != nil && db.Status == "warning" {
		st.Status = "warning"
	}
	p.cur = st
	return nil
}

// database returns the database usage, querying the size when the last
// query is DatabaseInterval old (or failed), and publishes
// stacklens_database_bytes and, with a bound,
// stacklens_database_bytes_used_ratio.
func (p *PipelineProbe) database(ctx context.Context) *DatabaseUsage {
	if p.dbSize == nil {
		return nil
	}
	p.dbMu.Lock()
	defer p.dbMu.Unlock()
	now := p.now()
	if p.db != nil && now.Before(p.dbNext) {
		return p.db
	}
	n, err := p.dbSize(ctx)
	if err != nil {
		prev := DatabaseUsage{MaxBytes: -1}
		if p.db != nil {
			prev = *p.db
		}
		if prev.Error == "" && ctx.Err() == nil {
			p.log.Warn("database size query failed", "err", err)
		}
		prev.Status, prev.Error = "unavailable", truncate(fmt.Sprintf("database size: %v", err), 200)
		p.db = &prev // retried next sample
		return p.db
	}
	u := &DatabaseUsage{Status: "ok", SampledAt: &now, Bytes: n, MaxBytes: p.dbMax}
	metrics.GetOrCreateGauge(metricDatabaseBytes, nil).Set(float64(n))
	if u.MaxBytes > 0 {
		r := float64(n) / float64(u.MaxBytes)
		u.UsedRatio = &r
		if r >= streamWarnRatio {
			u.Status = "warning"
		}
		metrics.GetOrCreateGauge(metricDatabaseUsedRatio, nil).Set(r)
	} else {
		u.MaxBytes = -1
		metrics.UnregisterMetric(metricDatabaseUsedRatio)
	}
	p.db, p.dbNext = u, now.Add(p.dbInterval)
	return u
}

func (p *PipelineProbe) sample(ctx context.Context) (*PipelineStatus, error) {
	now := p.now()
	events, err := p.js.Stream(ctx, natsutil.StreamEvents)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", natsutil.StreamEvents, err)
	}
	info, err := events.Info(ctx, jetstream.WithSubjectFilter(natsutil.DLQPrefix+">"))
	if err != nil {
		return nil, fmt.Errorf("dead letter counts: %w", err)
	}
	shards, _ := strconv.Atoi(info.Config.Metadata["stacklens.shards"])
	consumers, err := listConsumers(ctx, events)
	if err != nil {
		return nil, err
	}
	out := &PipelineStatus{Status: "ok", SampledAt: &now}
	if out.Processor, err = p.processorLag(ctx, events, consumers, shards, now); err != nil {
		return nil, err
	}
	out.Projections = []ConsumerLag{}
	for _, ci := range consumers {
		if ci.Config.Durable == "" {
			continue // the processors' ordered consumers, CLI readers
		}
		out.Projections = append(out.Projections, consumerLag(ctx, events, ci, now))
	}
	for _, w := range p.windows {
		kvs, err := p.js.Stream(ctx, "KV_"+natsutil.AggBucket(w))
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue // no processor has run yet
		}
		if err != nil {
			return nil, fmt.Errorf("stream KV_%s: %w", natsutil.AggBucket(w), err)
		}
		cs, err := listConsumers(ctx, kvs)
		if err != nil {
			return nil, err
		}
		for _, ci := range cs {
			if ci.Config.Durable != "" {
				out.Projections = append(out.Projections, consumerLag(ctx, kvs, ci, now))
			}
		}
	}
	slices.SortFunc(out.Projections, func(a, b ConsumerLag) int { return strings.Compare(a.Consumer, b.Consumer) })
	out.DeadLetters = p.deadLetters(info.State.Subjects, now)
	if out.Streams, err = p.streamUsage(ctx, info); err != nil {
		return nil, err
	}
	for _, u := range out.Streams {
		if u.Status == "warning" {
			out.Status = "warning"
		}
	}
	return out, nil
}

// streamUsage reports the size and bound of the event stream (from events,
// the info sample already read) and of the dead-letter stream, and
// publishes them as stacklens_stream_bytes{stream},
// stacklens_stream_max_bytes{stream} and
// stacklens_stream_bytes_used_ratio{stream} (the ratio only when bounded).
func (p *PipelineProbe) streamUsage(ctx context.Context, events *jetstream.StreamInfo) ([]StreamUsage, error) {
	infos := []*jetstream.StreamInfo{events}
	dlq, err := p.js.Stream(ctx, natsutil.StreamDLQ)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		// provisioned with the event stream; not yet
	case err != nil:
		return nil, fmt.Errorf("stream %s: %w", natsutil.StreamDLQ, err)
	default:
		info, err := dlq.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", natsutil.StreamDLQ, err)
		}
		infos = append(infos, info)
	}
	out := make([]StreamUsage, 0, len(infos))
	for _, info := range infos {
		name := info.Config.Name
		u := StreamUsage{Stream: name, Status: "ok", Messages: info.State.Msgs, Bytes: info.State.Bytes, MaxBytes: info.Config.MaxBytes}
		if u.MaxBytes <= 0 {
			u.MaxBytes = -1
		}
		setStreamGauges(name, u)
		if u.MaxBytes > 0 {
			r := float64(u.Bytes) / float64(u.MaxBytes)
			u.UsedRatio = &r
			if r >= streamWarnRatio {
				u.Status = "warning"
			}
		}
		out = append(out, u)
	}
	return out, nil
}

func listConsumers(ctx context.Context, s jetstream.Stream) ([]*jetstream.ConsumerInfo, error) {
	l := s.ListConsumers(ctx)
	var out []*jetstream.ConsumerInfo
	for ci := range l.Info() {
		out = append(out, ci)
	}
	if err := l.Err(); err != nil {
		return nil, fmt.Errorf("consumers of %s: %w", s.CachedInfo().Config.Name, err)
	}
	return out, nil
}

// oldestAfter is the age at now of the first message after seq matching
// filter (0 when there is none).
func oldestAfter(ctx context.Context, s jetstream.Stream, seq uint64, filter string, now time.Time) float64 {
	var opts []jetstream.GetMsgOpt
	if filter != "" {
		opts = append(opts, jetstream.WithGetMsgSubject(filter))
	}
	m, err := s.GetMsg(ctx, seq+1, opts...)
	if err != nil {
		return 0 // no such message: caught up (or it just expired)
	}
	return max(now.Sub(m.Time).Seconds(), 0)
}

func filterOf(c jetstream.ConsumerConfig) string {
	if c.FilterSubject != "" {
		return c.FilterSubject
	}
	if len(c.FilterSubjects) == 1 {
		return c.FilterSubjects[0]
	}
	return ""
}

func consumerLag(ctx context.Context, s jetstream.Stream, ci *jetstream.ConsumerInfo, now time.Time) ConsumerLag {
	c := ConsumerLag{Consumer: ci.Name, Stream: ci.Stream, Pending: int64(ci.NumPending), AckPending: int64(ci.NumAckPending)}
	if ci.NumPending > 0 || ci.NumAckPending > 0 {
		c.LagSeconds = oldestAfter(ctx, s, ci.AckFloor.Stream, filterOf(ci.Config), now)
	}
	return c
}

// checkpoint is the processor's ckpt.<shard> value (docs/processor.md).
type checkpoint struct {
	Seq     uint64    `json:"seq"`
	Owner   string    `json:"owner"`
	Updated time.Time `json:"updated"`
}

// processorLag: a shard is consumed when a consumer filters on its
// subjects (the processor's ordered consumer; the most advanced one if a
// replay runs too); its pending count is that consumer's. A shard nobody
// consumes has no pending count, and its lag is the age of the first event
// after its checkpoint.
func (p *PipelineProbe) processorLag(ctx context.Context, events jetstream.Stream, consumers []*jetstream.ConsumerInfo,
	shards int, now time.Time) (*ProcessorLag, error) {
	byShard := map[int]*jetstream.ConsumerInfo{}
	for _, ci := range consumers {
		f := filterOf(ci.Config)
		rest, ok := strings.CutPrefix(f, natsutil.EventsPrefix)
		if !ok || ci.Config.Durable != "" {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSuffix(rest, ".>"))
		if err != nil || f != natsutil.ShardFilter(n) {
			continue
		}
		if cur := byShard[n]; cur == nil || ci.NumPending < cur.NumPending {
			byShard[n] = ci
		}
	}
	kv, err := p.js.KeyValue(ctx, natsutil.ProcessorBucket)
	if err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("kv bucket %s: %w", natsutil.ProcessorBucket, err)
	}
	out := &ProcessorLag{Shards: shards, ShardLags: make([]ShardLag, 0, shards)}
	for n := range shards {
		sl := ShardLag{Shard: n}
		if kv != nil {
			e, err := kv.Get(ctx, "ckpt."+strconv.Itoa(n))
			switch {
			case errors.Is(err, jetstream.ErrKeyNotFound):
			case err != nil:
				return nil, fmt.Errorf("checkpoint of shard %d: %w", n, err)
			default:
				var c checkpoint
				if err := json.Unmarshal(e.Value(), &c); err == nil {
					sl.CheckpointSeq, sl.Owner = c.Seq, c.Owner
					if !c.Updated.IsZero() {
						age := max(now.Sub(c.Updated).Seconds(), 0)
						sl.CheckpointAge = &age
					}
				}
			}
		}
		from := sl.CheckpointSeq
		if ci := byShard[n]; ci != nil {
			pending := int64(ci.NumPending)
			sl.Consumed, sl.Pending = true, &pending
			out.Pending += pending
			from = ci.Delivered.Stream
			if pending > 0 {
				sl.LagSeconds = oldestAfter(ctx, events, from, natsutil.ShardFilter(n), now)
			}
		} else {
			out.Unconsumed++
			sl.LagSeconds = oldestAfter(ctx, events, from, natsutil.ShardFilter(n), now)
		}
		out.MaxLagSeconds = max(out.MaxLagSeconds, sl.LagSeconds)
		out.ShardLags = append(out.ShardLags, sl)
	}
	return out, nil
}

// deadLetters turns the per-subject totals into counts per stage.reason
// and, against the sample taken about a minute ago, the last minute's.
// Dead letters that expire from the stream (EVENTS_MAX_AGE) within that
// minute lower the difference; it never goes below 0.
func (p *PipelineProbe) deadLetters(subjects map[string]uint64, now time.Time) *DeadLetterInfo {
	counts := map[string]int64{}
	for subj, n := range subjects {
		counts[subj] = int64(n)
	}
	// Keep samples for a bit over a minute; the baseline is the newest one
	// at least a minute old, else the oldest.
	p.mu.Lock()
	p.samples = append(p.samples, dlqSample{at: now, counts: counts})
	for len(p.samples) > 1 && now.Sub(p.samples[1].at) >= time.Minute {
		p.samples = p.samples[1:]
	}
	base := p.samples[0]
	p.mu.Unlock()

	out := &DeadLetterInfo{LastMinuteSeconds: now.Sub(base.at).Seconds(), Reasons: []DeadLetterReason{}}
	for subj, n := range counts {
		stage, reason, _ := strings.Cut(strings.TrimPrefix(subj, natsutil.DLQPrefix), ".")
		last := max(n-base.counts[subj], 0)
		out.Total += n
		out.LastMinute += last
		out.Reasons = append(out.Reasons, DeadLetterReason{Stage: stage, Reason: reason, Total: n, LastMinute: last})
	}
	slices.SortFunc(out.Reasons, func(a, b DeadLetterReason) int {
		if c := strings.Compare(a.Stage, b.Stage); c != 0 {
			return c
		}
		return strings.Compare(a.Reason, b.Reason)
	})
	return out
}

// setStreamGauges publishes u; every API replica publishes the same
// figures, so alerts take the max by stream.
func setStreamGauges(stream string, u StreamUsage) {
	metrics.GetOrCreateGauge(fmt.Sprintf(`stacklens_stream_bytes{stream=%q}`, stream), nil).Set(float64(u.Bytes))
	metrics.GetOrCreateGauge(fmt.Sprintf(`stacklens_stream_max_bytes{stream=%q}`, stream), nil).Set(float64(u.MaxBytes))
	ratio := fmt.Sprintf(`stacklens_stream_bytes_used_ratio{stream=%q}`, stream)
	if u.MaxBytes > 0 {
		metrics.GetOrCreateGauge(ratio, nil).Set(float64(u.Bytes) / float64(u.MaxBytes))
	} else {
		metrics.UnregisterMetric(ratio) // bound removed: no stale ratio
	}
}
