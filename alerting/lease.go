package alerting

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/natsutil"
)

// leaseKey is the key of the evaluator lease in the stacklens_alerting
// bucket.
const leaseKey = "evaluator"

// leaseValue is the lease's JSON value. A lease whose ExpiresAt (unix
// milliseconds) has passed may be taken over by compare-and-set.
type leaseValue struct {
	Holder    string `json:"holder"`
	ExpiresAt int64  `json:"expires_at_ms"`
	Acquired  int64  `json:"acquired_at_ms"`
}

type lease struct {
	kv     jetstream.KeyValue
	holder string
	ttl    time.Duration
	now    func() time.Time
	rev    uint64
	since  int64
}

// tryAcquire takes the lease when it is free, expired or already ours.
func (l *lease) tryAcquire(ctx context.Context) (bool, error) {
	now := l.now()
	val := func() []byte {
		b, _ := json.Marshal(leaseValue{Holder: l.holder, ExpiresAt: now.Add(l.ttl).UnixMilli(), Acquired: now.UnixMilli()})
		return b
	}
	entry, err := l.kv.Get(ctx, leaseKey)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted):
		rev, err := l.kv.Create(ctx, leaseKey, val())
		if err != nil {
			if errors.Is(err, jetstream.ErrKeyExists) {
				return false, nil
			}
			return false, err
		}
		l.rev, l.since = rev, now.UnixMilli()
		return true, nil
	case err != nil:
		return false, err
	}
	var cur leaseValue
	if json.Unmarshal(entry.Value(), &cur) == nil && cur.Holder != l.holder && cur.ExpiresAt > now.UnixMilli() {
		return false, nil // held by a live replica
	}
	rev, err := l.kv.Update(ctx, leaseKey, val(), entry.Revision())
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return false, nil // someone else won the race
		}
		return false, err
	}
	l.rev, l.since = rev, now.UnixMilli()
	return true, nil
}

// renew extends the lease with compare-and-set on our last revision.
func (l *lease) renew(ctx context.Context) error {
	now := l.now()
	b, _ := json.Marshal(leaseValue{Holder: l.holder, ExpiresAt: now.Add(l.ttl).UnixMilli(), Acquired: l.since})
	rev, err := l.kv.Update(ctx, leaseKey, b, l.rev)
	if err != nil {
		return err
	}
	l.rev = rev
	return nil
}

// release deletes the lease if it is still ours, so a standby takes over
// at once.
func (l *lease) release(ctx context.Context) error {
	return l.kv.Delete(ctx, leaseKey, jetstream.LastRevision(l.rev))
}

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
	var l *lease
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
		if l == nil {
			kv, err := e.leaseBucket(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				logErr("alerting: lease bucket unavailable; retrying", err)
			} else {
				l = &lease{kv: kv, holder: e.holder, ttl: ttl, now: e.now}
			}
		}
		if l != nil {
			actx, cancel := context.WithTimeout(ctx, step)
			ok, err := l.tryAcquire(actx)
			cancel()
			switch {
			case err != nil && ctx.Err() == nil:
				logErr("alerting: lease acquisition failed; retrying", err)
			case ok:
				lastErr = ""
				leaseChanges.Inc()
				e.log.Info("alerting: lease acquired", "holder", e.holder)
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
func (e *Engine) holdLease(ctx context.Context, l *lease) {
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
			if err := l.release(rctx); err != nil {
				e.log.Debug("alerting: lease release", "err", err)
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
		err := l.renew(rctx)
		rc()
		if err == nil {
			lastOK = e.now()
			continue
		}
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyNotFound) {
			e.log.Warn("alerting: lease lost to another replica; stopping evaluation", "err", err)
			return
		}
		if e.now().Sub(lastOK) >= ttl*2/3 {
			e.log.Warn("alerting: lease not renewed in time; stopping evaluation", "err", fmt.Errorf("renew: %w", err))
			return
		}
	}
}
