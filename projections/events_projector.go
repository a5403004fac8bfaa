package projections

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/natsutil"
)

// eventsProjector copies the valid events of STACKLENS_EVENTS into
// analytics_events.
type eventsProjector struct {
	js   jetstream.JetStream
	wr   *Writer
	spec consumerSpec
	st   *status
	log  *slog.Logger
	opts Options
	hot  time.Duration
	now  func() time.Time
	lim  event.Limits
}

// eventsConsumerSuffix names the raw-event consumer after ConsumerPrefix.
const eventsConsumerSuffix = "_events"

// loc is the zone of naive timestamps (EVENT_TIMEZONE).
func newEventsProjector(js jetstream.JetStream, wr *Writer, cfg *config.Config, loc *time.Location, o Options, st *status, log *slog.Logger, now func() time.Time) *eventsProjector {
	p := &eventsProjector{
		js: js, wr: wr, st: st, opts: o, now: now,
		log: log.With("projection", "events"),
		hot: time.Duration(max(cfg.Retention.HotDays, 1)) * 24 * time.Hour,
		lim: decodeLimits,
	}
	p.lim.Location = loc
	p.spec = consumerSpec{
		stream: natsutil.StreamEvents,
		cfg: jetstream.ConsumerConfig{
			Durable:       o.ConsumerPrefix + eventsConsumerSuffix,
			Description:   "StackLens projections: " + natsutil.StreamEvents + " → analytics_events",
			FilterSubject: natsutil.EventsPrefix + ">",
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       o.AckWait,
			MaxDeliver:    -1,
			MaxAckPending: 4 * o.EventsBatch,
		},
		batch:   o.EventsBatch,
		wait:    o.BatchWait,
		backoff: o.MaxBackoff,
		handle:  p.handle,
		prepare: p.prepare,
	}
	return p
}

// prepare sets where a new consumer starts: at the retention horizon
// (events older than RETENTION_HOT would be deleted right away). An
// existing consumer keeps its start.
func (p *eventsProjector) prepare(ctx context.Context, cfg *jetstream.ConsumerConfig) error {
	c, err := p.js.Consumer(ctx, p.spec.stream, cfg.Durable)
	switch {
	case err == nil:
		have := c.CachedInfo().Config
		cfg.DeliverPolicy, cfg.OptStartTime, cfg.OptStartSeq = have.DeliverPolicy, have.OptStartTime, have.OptStartSeq
		return nil
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		start := p.now().Add(-p.hot)
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
		return nil
	default:
		return err
	}
}

func (p *eventsProjector) run(ctx context.Context) {
	runConsumer(ctx, p.js, p.spec, p.st, p.log)
}

// decodeLimits accepts every event the bridge accepted, whenever it is
// projected: no size, skew or horizon limits beyond the bridge's own. The
// zone of naive timestamps is EVENT_TIMEZONE, as for the bridge and the
// processors, so raw rows and aggregates agree.
var decodeLimits = event.Limits{MaxBytes: math.MaxInt, MaxFutureSkew: 100 * 365 * 24 * time.Hour}

func (p *eventsProjector) handle(ctx context.Context, msgs []jetstream.Msg) error {
	now := p.now()
	horizon := now.Add(-p.hot)
	rows := make([]EventRow, 0, len(msgs))
	size := 0
	for _, m := range msgs {
		size += len(m.Data())
	}
	// One buffer for the batch's lean payloads (appendLean never grows
	// them), so a batch costs one allocation for them, not one per event.
	arena := make([]byte, 0, size+2*len(msgs))
	for _, m := range msgs {
		ar, ok := natsutil.ParseAckReply(m.Reply())
		if !ok {
			badMessages.Inc()
			continue
		}
		ev, err := event.Decode(m.Data(), now, p.lim)
		if err != nil {
			badMessages.Inc()
			p.log.Error("skipping undecodable event", "seq", ar.StreamSeq, "subject", m.Subject(), "err", err)
			continue
		}
		if ev.Time.Before(horizon) {
			eventsSkipped.Inc()
			continue
		}
		start := len(arena)
		arena = appendLean(arena, m.Data(), &ev)
		r := EventRow{
			Seq:       ar.StreamSeq,
			Time:      ev.Time,
			Service:   ev.Service,
			Level:     ev.Level.String(),
			LatencyMS: ev.LatencyMS,
			Payload:   arena[start:len(arena):len(arena)],
		}
		if ev.HasRisk {
			risk := ev.Risk
			r.Risk = &risk
		}
		// The Kafka topic is not stored: it is KAFKA_INPUT_TOPIC for every
		// event (and in the stream's Kafka-Topic header).
		if h := m.Headers(); h != nil {
			if v, err := strconv.ParseInt(h.Get(natsutil.HdrKafkaPartition), 10, 32); err == nil {
				part := int32(v)
				r.Partition = &part
			}
			if v, err := strconv.ParseInt(h.Get(natsutil.HdrKafkaOffset), 10, 64); err == nil {
				r.Offset = &v
			}
		}
		rows = append(rows, r)
	}
	if len(rows) == 0 {
		return nil
	}
	start := time.Now()
	var n int64
	err := retryDB(ctx, p.spec.cfg.Durable, p.st, p.log, p.opts.MaxBackoff, func(ctx context.Context) error {
		var err error
		n, err = p.wr.InsertEvents(ctx, rows)
		return err
	})
	if err != nil {
		return err
	}
	batchSeconds("events").UpdateDuration(start)
	eventsInserted.Add(int(n))
	return nil
}
