package projections

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/retry"
)

// consumerSpec describes one durable pull consumer and what to do with its
// messages.
type consumerSpec struct {
	stream  string
	cfg     jetstream.ConsumerConfig // Durable set
	batch   int
	wait    time.Duration
	backoff time.Duration
	// handle makes the batch durable in PostgreSQL (retrying as long as it
	// takes) and returns nil, after which every message is acknowledged;
	// it returns an error only when ctx ended, and nothing is acknowledged.
	// Messages it wants dropped (undecodable) are simply part of a
	// successful batch.
	handle func(ctx context.Context, msgs []jetstream.Msg) error
	// prepare, if set, adjusts the configuration before each creation.
	prepare func(ctx context.Context, cfg *jetstream.ConsumerConfig) error
}

// runConsumer creates (or re-creates, after errors) the consumer and feeds
// batches to spec.handle until ctx ends.
func runConsumer(ctx context.Context, js jetstream.JetStream, spec consumerSpec, st *status, log *slog.Logger) {
	name := spec.cfg.Durable
	log = log.With("consumer", name)
	b := retry.New(50*time.Millisecond, spec.backoff)
	failures := 0
	for ctx.Err() == nil {
		cfg := spec.cfg
		var err error
		var cons jetstream.Consumer
		if spec.prepare != nil {
			err = spec.prepare(ctx, &cfg)
		}
		if err == nil {
			cons, err = js.CreateOrUpdateConsumer(ctx, spec.stream, cfg)
		}
		if err == nil {
			if failures > 0 {
				log.Info("consumer available", "stream", spec.stream)
			}
			st.set(name, nil)
			failures = 0
			b.Reset()
			err = consume(ctx, cons, spec, log)
		}
		if ctx.Err() != nil {
			return
		}
		failures++
		st.set(name, err)
		if failures == 1 || failures%20 == 0 {
			log.Warn("consumer unavailable; retrying", "stream", spec.stream, "failures", failures, "err", err)
		}
		if !b.Wait(ctx) {
			return
		}
	}
}

// heldSet tracks messages fetched but not yet acknowledged, so that their
// AckWait can be extended while PostgreSQL is slow or down.
type heldSet struct {
	mu   sync.Mutex
	msgs map[*[]jetstream.Msg]struct{}
}

func (h *heldSet) add(b *[]jetstream.Msg) {
	h.mu.Lock()
	h.msgs[b] = struct{}{}
	h.mu.Unlock()
}

func (h *heldSet) remove(b *[]jetstream.Msg) {
	h.mu.Lock()
	delete(h.msgs, b)
	h.mu.Unlock()
}

func (h *heldSet) each(f func(jetstream.Msg)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for b := range h.msgs {
		for _, m := range *b {
			f(m)
		}
	}
}

// shutdownGrace is how long a batch being written may take to commit
// after shutdown began.
const shutdownGrace = 5 * time.Second

// consume runs one consumer: a fetcher pulls the next batch while the
// current one is written, and held messages are kept from redelivery
// meanwhile. It returns ctx's error, or the fetch error that made it stop
// (the caller re-creates the consumer).
func consume(ctx context.Context, cons jetstream.Consumer, spec consumerSpec, log *slog.Logger) error {
	held := &heldSet{msgs: map[*[]jetstream.Msg]struct{}{}}
	batches := make(chan *[]jetstream.Msg, 1)
	fctx, cancel := context.WithCancel(ctx)
	var fetchErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(batches)
		fetchErr = fetchBatches(fctx, cons, spec, held, batches)
	})
	wg.Go(func() { keepInProgress(fctx, spec.cfg.AckWait, held) })
	err := writeBatches(ctx, spec, batches, held)
	cancel()
	// Drain whatever the fetcher still queued.
	for b := range batches {
		nakAll(*b)
		held.remove(b)
	}
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		return err
	}
	if fetchErr == nil {
		fetchErr = errors.New("fetch stopped")
	}
	log.Debug("fetch failed", "err", fetchErr)
	return fetchErr
}

// fetchBatches pulls batches into out until ctx ends (nil) or fetching
// fails for good (the error).
func fetchBatches(ctx context.Context, cons jetstream.Consumer, spec consumerSpec, held *heldSet, out chan<- *[]jetstream.Msg) error {
	lag := lagGauge(spec.cfg.Durable)
	errs := 0
	for ctx.Err() == nil {
		mb, err := cons.Fetch(spec.batch, jetstream.FetchMaxWait(spec.wait))
		var msgs []jetstream.Msg
		if err == nil {
			for m := range mb.Messages() {
				msgs = append(msgs, m)
			}
			err = mb.Error()
			if errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
				err = nil // an empty wait, not a failure
			}
		}
		if len(msgs) > 0 {
			if md, e := msgs[len(msgs)-1].Metadata(); e == nil {
				lag.Set(float64(md.NumPending))
			}
			b := &msgs
			held.add(b)
			select {
			case out <- b:
			case <-ctx.Done():
				held.remove(b)
				nakAll(msgs)
				return nil
			}
		}
		if err == nil {
			errs = 0
			continue
		}
		errs++
		if giveUpFetching(err, errs) {
			return err
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// giveUpFetching decides, after the errs-th fetch error in a row, whether
// to stop and have the consumer re-created: at once when the consumer is
// gone, else after three failures in a row.
func giveUpFetching(err error, errs int) bool {
	return errs >= 3 || errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound)
}

// keepInProgress tells the server, every third of ackWait, that the held
// messages are still being worked on, so it does not redeliver them.
func keepInProgress(ctx context.Context, ackWait time.Duration, held *heldSet) {
	every := ackWait / 3
	if every <= 0 {
		every = 10 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			held.each(func(m jetstream.Msg) { _ = m.InProgress() })
		}
	}
}

// writeBatches makes each batch durable with spec.handle and acknowledges
// it, until the batches end or a batch cannot be made durable (ctx ended:
// that batch is left for redelivery). A batch being written when ctx ends
// gets a grace period to commit (stop intake, drain in-flight); after it,
// it is abandoned unacknowledged.
func writeBatches(ctx context.Context, spec consumerSpec, batches <-chan *[]jetstream.Msg, held *heldSet) error {
	delay := delaySeconds(spec.cfg.Durable)
	wctx, wcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer wcancel()
	stopGrace := context.AfterFunc(ctx, func() {
		select {
		case <-time.After(shutdownGrace):
			wcancel()
		case <-wctx.Done():
		}
	})
	defer stopGrace()
	for b := range batches {
		err := ctx.Err()
		if err == nil {
			err = spec.handle(wctx, *b)
		}
		if err != nil {
			// ctx ended before the batch was durable: leave it for
			// redelivery (Nak: at once, to another replica if any).
			nakAll(*b)
			held.remove(b)
			return err
		}
		if md, err := (*b)[0].Metadata(); err == nil {
			delay.UpdateDuration(md.Timestamp)
		}
		for _, m := range *b {
			_ = m.Ack()
		}
		held.remove(b)
	}
	return nil
}

func nakAll(msgs []jetstream.Msg) {
	for _, m := range msgs {
		_ = m.Nak()
	}
}
