package retry

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestBackoffGrowsToMaxWithJitter(t *testing.T) {
	b := New(10*time.Millisecond, 80*time.Millisecond)
	nominal := []time.Duration{10, 20, 40, 80, 80, 80}
	for i, n := range nominal {
		n *= time.Millisecond
		d := b.Next()
		if d < n/2 || d > n*3/2 {
			t.Fatalf("wait %d = %v, want within ±50%% of %v", i, d, n)
		}
	}
	b.Reset()
	if d := b.Next(); d > 15*time.Millisecond {
		t.Fatalf("after Reset the wait is %v, want about 10ms", d)
	}
}

func TestUntilRetriesUntilSuccess(t *testing.T) {
	calls, notified := 0, 0
	err := Until(context.Background(), New(time.Millisecond, 2*time.Millisecond), func(context.Context) error {
		calls++
		if calls < 4 {
			return errors.New("down")
		}
		return nil
	}, func(err error, wait time.Duration) {
		notified++
		if err == nil || wait <= 0 {
			t.Errorf("notify(%v, %v)", err, wait)
		}
	})
	if err != nil || calls != 4 || notified != 3 {
		t.Fatalf("err %v, calls %d, notified %d; want nil, 4, 3", err, calls, notified)
	}
}

func TestUntilStopsOnPermanentError(t *testing.T) {
	bad := errors.New("shards changed")
	calls := 0
	err := Until(context.Background(), New(time.Millisecond, time.Millisecond), func(context.Context) error {
		calls++
		return Permanent(bad)
	}, nil)
	if !errors.Is(err, bad) || calls != 1 {
		t.Fatalf("err %v after %d calls; want %v after 1", err, calls, bad)
	}
}

func TestUntilStopsWhenContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	err := Until(ctx, New(time.Millisecond, time.Millisecond), func(context.Context) error {
		calls++
		if calls == 3 {
			cancel()
		}
		return errors.New("down")
	}, nil)
	if !errors.Is(err, context.Canceled) || calls != 3 {
		t.Fatalf("err %v after %d calls; want context.Canceled after 3", err, calls)
	}
	if Until(ctx, New(time.Millisecond, time.Millisecond), func(context.Context) error { t.Fatal("called"); return nil }, nil) == nil {
		t.Fatal("Until on an ended context returned nil")
	}
}

func TestWaitEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if New(time.Hour, time.Hour).Wait(ctx) {
		t.Fatal("Wait on an ended context returned true")
	}
	if !New(time.Millisecond, time.Millisecond).Wait(context.Background()) {
		t.Fatal("Wait returned false")
	}
}
