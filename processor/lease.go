package processor

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stacklens/stacklens/internal/lease"
)

// Keys of the coordination bucket.
func leaseKey(shard int) string  { return "lease." + strconv.Itoa(shard) }
func ckptKey(shard int) string   { return "ckpt." + strconv.Itoa(shard) }
func memberKey(id string) string { return "member." + id }

// errLeaseExpired stops a flush that could not end before the shard's
// lease may pass to another member.
var errLeaseExpired = errors.New("lease expired")

// memberValue is the JSON value of member.<id>, the heartbeat.
type memberValue struct {
	ID      string    `json:"id"`
	Expires time.Time `json:"expires"`
	Shards  []int     `json:"shards"`
}

// membership is one member: heartbeat, lease renewal, rebalancing, and the
// shard workers of the leases it holds.
type membership struct {
	sh       *shared
	interval time.Duration
	ttl      time.Duration
	shards   int

	mu      sync.Mutex
	held    map[int]*lease.Lease
	workers map[int]*shardWorker
	wg      sync.WaitGroup
}

func newMembership(sh *shared, interval time.Duration) *membership {
	return &membership{
		sh: sh, interval: interval, ttl: sh.cfg.Processor.LeaseTTL, shards: sh.cfg.NATS.Shards,
		held: map[int]*lease.Lease{}, workers: map[int]*shardWorker{},
	}
}

// run heartbeats and rebalances until ctx ends, then hands every shard over.
func (m *membership) run(ctx context.Context) {
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for {
		m.tick(ctx)
		select {
		case <-ctx.Done():
			m.shutdown()
			return
		case <-t.C:
		}
	}
}

func (m *membership) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, max(m.interval, 2*time.Second))
}

// tick is one round: heartbeat, renew, count members, release or acquire.
func (m *membership) tick(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	octx, cancel := m.opCtx(ctx)
	defer cancel()
	now := m.sh.clock.Now()
	m.heartbeat(octx, now)
	m.renew(octx, now)
	members, err := m.aliveMembers(octx, now)
	if err != nil {
		m.sh.log.Warn("cannot list members", "err", err)
		return
	}
	target := (m.shards + members - 1) / members
	m.mu.Lock()
	n := len(m.held)
	m.mu.Unlock()
	switch {
	case n > target:
		m.releaseExcess(octx, n-target)
	case n < target:
		m.acquire(ctx, octx, now, target-n)
	}
	ownedShards.Set(float64(m.ownedTotal()))
}

var ownedMu sync.Mutex
var ownedByMember = map[*membership]int{}

func (m *membership) ownedTotal() int {
	m.mu.Lock()
	n := len(m.held)
	m.mu.Unlock()
	ownedMu.Lock()
	defer ownedMu.Unlock()
	ownedByMember[m] = n
	t := 0
	for _, v := range ownedByMember {
		t += v
	}
	return t
}

func (m *membership) heldShards() []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	var s []int
	for k := range m.held {
		s = append(s, k)
	}
	slices.Sort(s)
	return s
}

func (m *membership) heartbeat(ctx context.Context, now time.Time) {
	b, _ := json.Marshal(memberValue{ID: m.sh.id, Expires: now.Add(m.ttl), Shards: m.heldShards()})
	if _, err := m.sh.coord.Put(ctx, memberKey(m.sh.id), b); err != nil {
		m.sh.log.Warn("heartbeat failed", "err", err)
	}
}

// renew extends every held lease with CAS; a conflict means another member
// took the shard (we were stalled past the TTL): the worker is dropped
// without flushing.
func (m *membership) renew(ctx context.Context, now time.Time) {
	m.mu.Lock()
	leases := maps.Clone(m.held)
	m.mu.Unlock()
	for shard, l := range leases {
		err := l.Renew(ctx, now)
		if err == nil {
			continue
		}
		if errors.Is(err, lease.ErrLost) {
			m.sh.log.Warn("lease lost; dropping the shard's state", "shard", shard, "epoch", l.Epoch())
			m.drop(shard)
			continue
		}
		m.sh.log.Warn("lease renewal failed", "shard", shard, "err", err)
	}
}

// drop forgets a lost shard: its worker stops without writing anything.
func (m *membership) drop(shard int) {
	m.mu.Lock()
	w := m.workers[shard]
	delete(m.workers, shard)
	delete(m.held, shard)
	m.mu.Unlock()
	if w != nil {
		w.abort()
	}
}

// aliveMembers counts members whose heartbeat has not expired (this one
// included) and deletes long-dead heartbeats.
func (m *membership) aliveMembers(ctx context.Context, now time.Time) (int, error) {
	lister, err := m.sh.coord.ListKeysFiltered(ctx, "member.>")
	if err != nil {
		return 0, err
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	_ = lister.Stop()
	alive := 1
	for _, k := range keys {
		if k == memberKey(m.sh.id) {
			continue
		}
		e, err := m.sh.coord.Get(ctx, k)
		if err != nil {
			continue
		}
		var v memberValue
		if json.Unmarshal(e.Value(), &v) != nil {
			continue
		}
		if v.Expires.After(now) {
			alive++
		} else if now.Sub(v.Expires) > 10*m.ttl {
			_ = m.sh.coord.Delete(ctx, k, jetstream.LastRevision(e.Revision()))
		}
	}
	return alive, nil
}

// releaseExcess hands n shards over: final flush and checkpoint, then the
// lease is released so another member can take it at once.
func (m *membership) releaseExcess(ctx context.Context, n int) {
	held := m.heldShards()
	slices.SortFunc(held, func(a, b int) int { // lowest preference first
		sa, sb := score(m.sh.id, a), score(m.sh.id, b)
		switch {
		case sa < sb:
			return -1
		case sa > sb:
			return 1
		}
		return 0
	})
	for _, s := range held[:min(n, len(held))] {
		m.release(ctx, s)
	}
}

func (m *membership) release(ctx context.Context, shard int) {
	m.mu.Lock()
	l, w := m.held[shard], m.workers[shard]
	delete(m.held, shard)
	delete(m.workers, shard)
	m.mu.Unlock()
	if l == nil {
		return
	}
	if w != nil {
		w.stop(ctx)
	}
	if err := l.Release(ctx); err != nil {
		m.sh.log.Warn("lease release failed (it will expire)", "shard", shard, "err", err)
		return
	}
	m.sh.log.Info("shard released", "shard", shard, "epoch", l.Epoch())
}

// acquire takes up to n free or expired shard leases, best-scored first.
func (m *membership) acquire(ctx, octx context.Context, now time.Time, n int) {
	m.mu.Lock()
	var cand []int
	for s := 0; s < m.shards; s++ {
		if m.held[s] == nil {
			cand = append(cand, s)
		}
	}
	m.mu.Unlock()
	slices.SortFunc(cand, func(a, b int) int {
		sa, sb := score(m.sh.id, a), score(m.sh.id, b)
		switch {
		case sa > sb:
			return -1
		case sa < sb:
			return 1
		}
		return 0
	})
	for _, s := range cand {
		if n == 0 || octx.Err() != nil {
			return
		}
		l, err := lease.TryAcquire(octx, m.sh.coord, leaseKey(s), m.sh.id, m.ttl, now)
		if err != nil {
			m.sh.log.Warn("lease acquisition failed", "shard", s, "err", err)
			continue
		}
		if l == nil {
			continue
		}
		n--
		w := newShardWorker(m.sh, s, l)
		m.mu.Lock()
		m.held[s] = l
		m.workers[s] = w
		m.mu.Unlock()
		m.sh.log.Info("shard acquired", "shard", s, "epoch", l.Epoch())
		safeGo(&m.wg, func() { w.run(ctx) })
	}
}

// shutdown hands every shard over and removes the heartbeat.
func (m *membership) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range m.heldShards() {
		safeGo(&wg, func() { m.release(ctx, s) })
	}
	wg.Wait()
	m.wg.Wait()
	_ = m.sh.coord.Delete(ctx, memberKey(m.sh.id))
	ownedShards.Set(float64(m.ownedTotal()))
	ownedMu.Lock()
	delete(ownedByMember, m)
	ownedMu.Unlock()
}
