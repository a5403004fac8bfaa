package alerting

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/lease"
	"github.com/stacklens/stacklens/internal/natsutil"
)

// leaseKey is the key of the evaluator lease in the stacklens_alerting
// bucket.
const leaseKey = "evaluator"

func (e *Engine) leaseBucket(ctx context.Context) (jetstream.KeyValue, error) {
	js, err := jetstream.New(e.nc)
	if err != nil {
		return nil, err
	}
	return natsutil.EnsureKV(ctx, js, jetstream.KeyValueConfig{
		Bucket:      natsutil.AlertingBucket,
		Description: "StackLens alert engine: the evaluator lease",
		History:     1,
		Replicas:    max(e.cfg.NATS.Replicas, 1),
		Storage:     jetstream.FileStorage,
	})
}

// runLease competes for the lease and leads while holding it.
func (e *Engine) runLease(ctx context.Context) error {
	ttl := e.cfg.LeaseTTL
	step := ttl / 3
	var kv jetstream.KeyValue
	var lastErr string
	logErr := func(msg string, err error) {
		if err.Error() != lastErr {
			e.log.Warn(msg, "err", err)
		}
		lastErr = err.Error()
	}
	t := time.NewTicker(step)
	defer t.Stop()
	for {
		if kv == nil {
			var err error
			if kv, err = e.leaseBucket(ctx); err != nil {
				kv = nil
				if ctx.Err() != nil {
					return nil
				}
				logErr("lease bucket unavailable; retrying", err)
			}
		}
		if kv != nil {
			actx, cancel := context.WithTimeout(ctx, step)
			l, err := lease.TryAcquire(actx, kv, leaseKey, e.holder, ttl, e.now())
			cancel()
			switch {
			case err != nil && ctx.Err() == nil:
				logErr("lease acquisition failed; retrying", err)
			case l != nil:
				lastErr = ""
				leaseChanges.Inc()
				e.log.Info("lease acquired", "holder", e.holder, "epoch", l.Epoch())
				e.holdLease(ctx, l)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// holdLease leads while renewing the lease every TTL/3; it stops leading
// when ctx is done (and releases the lease) or when the lease could not be
// renewed for 2/3 of the TTL (before anyone may take it over).
func (e *Engine) holdLease(ctx context.Context, l *lease.Lease) {
	ttl := e.cfg.LeaseTTL
	lctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	e.setLeader(true)
	wg.Go(func() { e.lead(lctx) })
	defer func() {
		cancel()
		wg.Wait()
		e.setLeader(false)
		if ctx.Err() != nil {
			rctx, rc := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			if err := l.Release(rctx); err != nil {
				e.log.Debug("lease release", "err", err)
			}
			rc()
		}
	}()
	lastOK := e.now()
	t := time.NewTicker(ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, rc := context.WithTimeout(ctx, ttl/3)
		err := l.Renew(rctx, e.now())
		rc()
		if err == nil {
			lastOK = e.now()
			continue
		}
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, lease.ErrLost) {
			e.log.Warn("lease lost to another replica; stopping evaluation", "err", err)
			return
		}
		if e.now().Sub(lastOK) >= ttl*2/3 {
			e.log.Warn("lease not renewed in time; stopping evaluation", "err", err)
			return
		}
	}
}
