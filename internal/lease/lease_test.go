package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/natsutil"
)

func TestIsConflict(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("boom"), false},
		{jetstream.ErrKeyExists, true},
		{fmt.Errorf("wrapped: %w", &jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence}), true},
		{&jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamWrongLastSequenceConstant}, true},
		{errors.New("nats: wrong last sequence: 5"), true},
	} {
		if got := IsConflict(c.err); got != c.want {
			t.Errorf("IsConflict(%v) = %v", c.err, got)
		}
	}
}

// TestLeaseCAS: acquisition, renewal, takeover of an expired lease,
// release and the epoch, against a real KV bucket and a fake clock.
func TestLeaseCAS(t *testing.T) {
	ns := testenv.NATS(t)
	js := ns.JetStream(t)
	ctx := testenv.Context(t)
	kv, err := natsutil.EnsureKV(ctx, js, jetstream.KeyValueConfig{Bucket: "lease_test", History: 1})
	if err != nil {
		t.Fatal(err)
	}
	const ttl = 10 * time.Second
	now := time.Unix(1_800_000_000, 0)
	acquire := func(owner string) *Lease {
		t.Helper()
		l, err := TryAcquire(ctx, kv, "k", owner, ttl, now)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	a := acquire("a")
	if a == nil || a.Epoch() != 1 || a.Key() != "k" {
		t.Fatalf("a could not acquire a free lease: %+v", a)
	}
	if acquire("b") != nil {
		t.Fatal("b acquired a held lease")
	}
	if a = acquire("a"); a == nil || a.Epoch() != 2 {
		t.Fatalf("a could not re-acquire its own lease: %+v", a)
	}
	now = now.Add(5 * time.Second)
	if err := a.Renew(ctx, now); err != nil {
		t.Fatal(err)
	}
	if !a.Valid(now.Add(7*time.Second), 2*time.Second) || a.Valid(now.Add(9*time.Second), 2*time.Second) {
		t.Fatal("Valid ignores the expiry or the margin")
	}
	e, _ := kv.Get(ctx, "k")
	var v Value
	if err := json.Unmarshal(e.Value(), &v); err != nil || v.Owner != "a" || v.Epoch != 2 || !v.Expires.Equal(now.Add(ttl)) {
		t.Fatalf("stored value %s (%v)", e.Value(), err)
	}
	now = now.Add(9 * time.Second) // a renewed 9 s ago: still valid
	if acquire("b") != nil {
		t.Fatal("b took a live lease")
	}
	now = now.Add(2 * time.Second) // expired
	b := acquire("b")
	if b == nil || b.Epoch() != 3 {
		t.Fatalf("b could not take over an expired lease: %+v", b)
	}
	if err := a.Renew(ctx, now); !errors.Is(err, ErrLost) {
		t.Fatalf("a renewed a lease it lost: %v", err)
	}
	if err := a.Release(ctx); err == nil {
		t.Fatal("a released b's lease")
	}
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if b.Valid(now, 0) {
		t.Fatal("a released lease is still valid")
	}
	if a = acquire("a"); a == nil || a.Epoch() != 4 {
		t.Fatalf("a could not acquire a released lease: %+v", a)
	}
	// An unreadable value is taken over like a released one.
	if _, err := kv.Put(ctx, "k", []byte("not json")); err != nil {
		t.Fatal(err)
	}
	if c := acquire("c"); c == nil || c.Epoch() != 1 {
		t.Fatalf("c could not take over an unreadable lease: %+v", c)
	}
}

// TestLeaseRaces: of candidates racing for one free lease, exactly one
// wins; the others get nil and no error.
func TestLeaseRaces(t *testing.T) {
	ns := testenv.NATS(t)
	js := ns.JetStream(t)
	ctx := testenv.Context(t)
	kv, err := natsutil.EnsureKV(ctx, js, jetstream.KeyValueConfig{Bucket: "lease_race", History: 1})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	for round := range 5 {
		key := fmt.Sprintf("k%d", round)
		wins := make(chan *Lease, 8)
		errs := make(chan error, 8)
		for i := range 8 {
			go func() {
				l, err := TryAcquire(ctx, kv, key, fmt.Sprint("owner", i), time.Minute, now)
				errs <- err
				wins <- l
			}()
		}
		n := 0
		for range 8 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
			if <-wins != nil {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("round %d: %d winners, want 1", round, n)
		}
	}
}

// TestLeaseWithNATSDown: a holder that cannot reach NATS gets errors, not
// ErrLost — it has not lost the lease, it cannot tell — and a candidate
// gets an error, not a lease.
func TestLeaseWithNATSDown(t *testing.T) {
	ns := testenv.NATS(t)
	js := ns.JetStream(t)
	ctx := testenv.Context(t)
	kv, err := natsutil.EnsureKV(ctx, js, jetstream.KeyValueConfig{Bucket: "lease_down", History: 1})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	l, err := TryAcquire(ctx, kv, "k", "a", time.Minute, now)
	if err != nil || l == nil {
		t.Fatalf("acquire: %v %v", l, err)
	}
	ns.Shutdown()
	sctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := l.Renew(sctx, now); err == nil || errors.Is(err, ErrLost) {
		t.Fatalf("renew with NATS down: %v, want an error that is not ErrLost", err)
	}
	if got, err := TryAcquire(sctx, kv, "k2", "b", time.Minute, now); err == nil || got != nil {
		t.Fatalf("acquire with NATS down: %v %v, want an error", got, err)
	}
	if err := l.Release(sctx); err == nil {
		t.Fatal("release with NATS down succeeded")
	}
}
