package projections

import (
	"context"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stacklens/stacklens/internal/agg"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/window"
)

// TestPostgresOutage stops PostgreSQL (fast shutdown, and a crash) while KV
// updates keep coming (5 s, or 30 s with STACKLENS_LONG_TESTS=1):
// readiness goes down, nothing is lost, and after the restart the rows
// converge exactly to the KV (I4, I5) with readiness back up, without any
// operator action.
func TestPostgresOutage(t *testing.T) {
	t.Run("stop", func(t *testing.T) { testPostgresOutage(t, false) })
	t.Run("kill", func(t *testing.T) { testPostgresOutage(t, true) })
}

func testPostgresOutage(t *testing.T, kill bool) {
	outage := 5 * time.Second
	if os.Getenv("STACKLENS_LONG_TESTS") == "1" {
		outage = 30 * time.Second
	}
	pg := testenv.PrivatePostgres(t)
	h := newHarness(t, pg.DSN("postgres", "postgres"), nil)
	h.start(Options{AckWait: 2 * time.Second}) // short: held batches must be kept in progress

	var wrote atomic.Int64
	pctx, pstop := context.WithCancel(h.ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // producer: the processors' KV updates
		defer wg.Done()
		r := rand.New(rand.NewPCG(7, 8))
		type item struct {
			w window.Window
			a *agg.Aggregate
		}
		var items []item
		now := time.Now()
		for _, w := range h.wins {
			for s := range 20 {
				for b := range 2 {
					start := w.Start(now).Unix() - int64(b)*int64(w.Seconds())
					items = append(items, item{w, mkAgg(r, "svc"+itoa(int64(s)), w, start, 1, s%2 == 0)})
				}
			}
		}
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-pctx.Done():
				return
			case <-tick.C:
			}
			it := items[r.IntN(len(items))]
			addEvents(r, it.a, it.w, 1+r.IntN(3), true)
			if _, err := h.kv[it.w.Name].Put(h.ctx, ownKey(it.a), it.a.Encode(nil, it.w)); err != nil {
				if h.ctx.Err() == nil {
					t.Error(err)
				}
				return
			}
			wrote.Add(1)
		}
	}()
	var sawDown atomic.Bool
	go func() { // readiness watcher
		for pctx.Err() == nil {
			if !h.ready() {
				sawDown.Store(true)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()

	time.Sleep(time.Second)
	stopPG := pg.Stop
	if kill {
		stopPG = pg.Kill
	}
	if err := stopPG(); err != nil {
		t.Fatal(err)
	}
	t.Logf("PostgreSQL stopped after %d KV updates", wrote.Load())
	testenv.Eventually(t, 10*time.Second, func() error {
		if !sawDown.Load() {
			return errorString("readiness still up")
		}
		return nil
	})
	time.Sleep(outage)
	if err := pg.Restart(h.ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("PostgreSQL restarted after %d KV updates", wrote.Load())
	time.Sleep(time.Second)
	pstop()
	wg.Wait()
	began := time.Now()
	testenv.Eventually(t, 60*time.Second, h.checkI4)
	testenv.Eventually(t, 10*time.Second, func() error {
		if !h.ready() {
			return errorString("not ready")
		}
		return nil
	})
	t.Logf("%d KV updates; converged %v after the producer stopped", wrote.Load(), time.Since(began).Round(time.Millisecond))
}
