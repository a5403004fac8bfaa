// Package retry is the one way the stages wait out a dependency that is
// down (NATS, Kafka, PostgreSQL): capped exponential backoff with jitter,
// from github.com/cenkalti/backoff, that never gives up on its own and
// stops when the context ends.
package retry

import (
	"context"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Backoff is the wait between attempts: Min at first, doubling up to Max,
// each wait drawn from ±50 % of the nominal one so that replicas retrying
// the same dependency spread out.
type Backoff struct{ eb *backoff.ExponentialBackOff }

// New returns a Backoff from min to max.
func New(min, max time.Duration) *Backoff {
	eb := backoff.NewExponentialBackOff()
	eb.InitialInterval = min
	eb.MaxInterval = max
	eb.Multiplier = 2
	eb.MaxElapsedTime = 0 // never stop by itself
	eb.Reset()
	return &Backoff{eb: eb}
}

// Reset starts again from Min, after a success.
func (b *Backoff) Reset() { b.eb.Reset() }

// Next returns the next wait and advances.
func (b *Backoff) Next() time.Duration { return b.eb.NextBackOff() }

// Wait sleeps for the next wait; false if ctx ended first.
func (b *Backoff) Wait(ctx context.Context) bool {
	t := time.NewTimer(b.Next())
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Permanent marks an error that retrying cannot fix: Until returns it at
// once.
func Permanent(err error) error { return backoff.Permanent(err) }

// Until calls f until it returns nil, a Permanent error (returned
// unwrapped) or ctx ends (ctx's error). After each failure it calls
// notify, if not nil, with the error and the wait before the next attempt.
func Until(ctx context.Context, b *Backoff, f func(context.Context) error, notify func(err error, wait time.Duration)) error {
	err := backoff.RetryNotify(func() error {
		if err := ctx.Err(); err != nil {
			return backoff.Permanent(err)
		}
		return f(ctx)
	}, backoff.WithContext(b.eb, ctx), notify)
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}
