package alerting

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stacklens/stacklens/internal/harness/testenv"
)

// TestTwoReplicasOneEvaluator: two engines on one database and NATS — one
// leads at a time, alerts are not duplicated, and the standby takes over
// when the leader stops (gracefully, then by losing its NATS connection).
func TestTwoReplicasOneEvaluator(t *testing.T) {
	f := newFixture(t)
	f.rule("Burst", "error_rate", ">", 20, nil, 1, "critical", "slack")
	ns := testenv.NATS(t)
	cfg := f.config()
	cfg.SingleReplica = false
	cfg.LeaseTTL = 1500 * time.Millisecond
	ncA, ncB, ncC := ns.Conn(t), ns.Conn(t), ns.Conn(t)
	a := f.engine(cfg, Deps{NATS: ncA})
	b := f.engine(cfg, Deps{NATS: ncB})
	engines := []*Engine{a, b}
	var both atomic.Int64
	watch, stopWatch := context.WithCancel(f.ctx)
	defer stopWatch()
	go func() {
		for watch.Err() == nil {
			n := 0
			for _, e := range engines[:2] {
				if e.IsLeader() {
					n++
				}
			}
			if n > 1 {
				both.Add(1)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	stops := []func(){f.start(a), f.start(b)}
	leader := func(cands ...*Engine) *Engine {
		t.Helper()
		var l *Engine
		testenv.Eventually(t, 10*time.Second, func() error {
			l = nil
			for _, e := range cands {
				if e.IsLeader() {
					if l != nil {
						return fmt.Errorf("two leaders")
					}
					l = e
				}
			}
			if l == nil {
				return fmt.Errorf("no leader")
			}
			return nil
		})
		return l
	}
	first := leader(a, b)
	f.window("svc1", 0, 90)
	f.waitCounts(1, 1, 0, 0)

	// Graceful stop: the lease is released and the standby takes over.
	idx := 0
	if first == b {
		idx = 1
	}
	stops[idx]()
	second := leader(engines[1-idx])
	if second == first {
		t.Fatal("stopped engine still leads")
	}
	f.window("svc2", 1, 90)
	f.window("svc1", 1, 95) // still firing: nothing new
	f.waitCounts(2, 2, 0, 0)

	// The holder dies (loses NATS): a third replica takes over after the TTL.
	c := f.engine(cfg, Deps{NATS: ncC})
	f.start(c)
	if second == a {
		ncA.Close()
	} else {
		ncB.Close()
	}
	testenv.Eventually(t, 10*time.Second, func() error {
		if second.IsLeader() {
			return fmt.Errorf("cut-off holder still leads")
		}
		return nil
	})
	leader(c)
	f.window("svc3", 2, 90)
	f.waitCounts(3, 3, 0, 0)
	if n := f.int(`SELECT count(*) FROM analytics_alerts`); n != 3 {
		t.Errorf("%d alerts, want 3", n)
	}
	stopWatch()
	if n := both.Load(); n > 0 {
		t.Errorf("two leaders observed %d times", n)
	}
}
