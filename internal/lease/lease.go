// Package lease is the one lease the stages share: a key in a JetStream KV
// bucket naming its owner until an expiry, written only by compare-and-set,
// so that at most one live owner holds it at a time. The processor leases
// shards (lease.<shard> in stacklens_processor); the alert engine leases
// the evaluator (evaluator in stacklens_alerting). docs/ARCHITECTURE.md §5
// describes how each uses it.
//
// Time comes from the caller (now), so the owners' fake clocks drive it in
// tests. An owner that stalls past its expiry may still believe it holds
// the lease: Valid leaves a margin, and every write of a stage is fenced
// on its own (CAS on KV revisions, last_seq), so a late write of a former
// owner is refused.
package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Value is the JSON value of a lease key, readable with `nats kv get`.
// Owner "" is a released lease; Epoch rises with every acquisition.
type Value struct {
	Owner    string    `json:"owner"`
	Epoch    uint64    `json:"epoch"`
	Expires  time.Time `json:"expires"`
	Acquired time.Time `json:"acquired,omitzero"`
}

// Free reports whether the lease may be taken by owner at now: absent
// (zero Value), released, expired, or owner's own.
func (v Value) Free(owner string, now time.Time) bool {
	return v.Owner == "" || v.Owner == owner || !v.Expires.After(now)
}

// ErrLost means the lease was written by someone else since our last
// write: another owner took it over.
var ErrLost = errors.New("lease lost to another owner")

// Lease is a lease held by this process.
type Lease struct {
	kv         jetstream.KeyValue
	key, owner string
	ttl        time.Duration
	epoch      uint64
	acquired   time.Time
	rev        uint64       // KV revision of our last write
	expires    atomic.Int64 // Unix nanoseconds, by the owner's clock
}

// TryAcquire takes the lease at key for ttl when it is free (see
// Value.Free). It returns nil and no error when a live owner holds it or
// another candidate won the race.
func TryAcquire(ctx context.Context, kv jetstream.KeyValue, key, owner string, ttl time.Duration, now time.Time) (*Lease, error) {
	var cur Value
	var rev uint64
	e, err := kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted):
	case err != nil:
		return nil, fmt.Errorf("read lease %s: %w", key, err)
	default:
		rev = e.Revision()
		if json.Unmarshal(e.Value(), &cur) != nil {
			cur = Value{} // unreadable: taken over like a released one
		}
		if !cur.Free(owner, now) {
			return nil, nil
		}
	}
	l := &Lease{kv: kv, key: key, owner: owner, ttl: ttl, epoch: cur.Epoch + 1, acquired: now}
	b := l.value(now)
	if rev == 0 {
		rev, err = kv.Create(ctx, key, b)
	} else {
		rev, err = kv.Update(ctx, key, b, rev)
	}
	if IsConflict(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("write lease %s: %w", key, err)
	}
	l.rev = rev
	l.expires.Store(now.Add(ttl).UnixNano())
	return l, nil
}

func (l *Lease) value(now time.Time) []byte {
	b, _ := json.Marshal(Value{Owner: l.owner, Epoch: l.epoch, Expires: now.Add(l.ttl), Acquired: l.acquired})
	return b
}

// Key is the lease's key.
func (l *Lease) Key() string { return l.key }

// Epoch is the lease's epoch: it rises with every acquisition.
func (l *Lease) Epoch() uint64 { return l.epoch }

// Renew extends the lease to now+TTL with compare-and-set on our last
// write; ErrLost (wrapped) if another owner wrote it since.
func (l *Lease) Renew(ctx context.Context, now time.Time) error {
	rev, err := l.kv.Update(ctx, l.key, l.value(now), l.rev)
	if err != nil {
		if IsConflict(err) || errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("renew lease %s: %w (%w)", l.key, ErrLost, err)
		}
		return fmt.Errorf("renew lease %s: %w", l.key, err)
	}
	l.rev = rev
	l.expires.Store(now.Add(l.ttl).UnixNano())
	return nil
}

// Release hands the lease back (owner "", epoch kept) if it is still ours,
// so another candidate may take it at once instead of after the TTL.
func (l *Lease) Release(ctx context.Context) error {
	b, _ := json.Marshal(Value{Epoch: l.epoch})
	if _, err := l.kv.Update(ctx, l.key, b, l.rev); err != nil {
		return fmt.Errorf("release lease %s: %w", l.key, err)
	}
	l.expires.Store(0)
	return nil
}

// Valid reports whether the lease is still ours by the owner's clock with
// margin to spare, so that work started now ends before anyone else may
// take over.
func (l *Lease) Valid(now time.Time, margin time.Duration) bool {
	return now.UnixNano() < l.expires.Load()-int64(margin)
}

// IsConflict reports a compare-and-set failure (wrong last sequence, key
// exists).
func IsConflict(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, jetstream.ErrKeyExists) {
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return true
	}
	return strings.Contains(err.Error(), "wrong last sequence")
}
