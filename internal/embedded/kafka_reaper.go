package embedded

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// memberReaper works around a defect of the embedded broker (kfake): a
// consumer-group member whose connection dies while its JoinGroup request
// is parked at the coordinator is never expired — kfake arms the member's
// session timer only once the join response has been delivered — so the
// partitions the next generation assigns to it stay unread until some
// other member triggers a rebalance. Kafka expires such a member after its
// session timeout. (Found by the chaos suite: a bridge killed while
// rejoining left half the partitions unforwarded for good.)
//
// The reaper watches the group requests that prove a member alive
// (JoinGroup, SyncGroup, Heartbeat, OffsetCommit; observed, not handled)
// and, every interval, describes the groups it saw: a member of a
// group not heard from for longer than the group's session timeout (the
// longest any member joined with, or its rebalance timeout if longer: a
// follower is silent between its JoinGroup and its SyncGroup) plus a grace
// is removed with a LeaveGroup on its behalf, which makes the coordinator
// rebalance as Kafka would have.
type memberReaper struct {
	c        *kfake.Cluster
	log      *slog.Logger
	interval time.Duration
	grace    time.Duration
	client   *kafka.Client
	tr       *kafka.Transport
	// limit, when set (tests), replaces the session-derived silence limit.
	limit time.Duration

	mu      sync.Mutex
	seen    map[string]map[string]time.Time // group → member → last request
	session map[string]time.Duration        // group → longest session or rebalance timeout
}

// defaultSession is assumed for a group whose joins the reaper did not
// see (the broker was restarted on its data directory).
const defaultSession = 45 * time.Second

func newMemberReaper(c *kfake.Cluster, log *slog.Logger, interval, grace time.Duration) *memberReaper {
	// A transport of its own, closed with the reaper (the default one
	// would keep a pool, and its metadata refresh, for every broker
	// address the process ever used).
	tr := &kafka.Transport{}
	return &memberReaper{c: c, log: log, interval: interval, grace: grace, tr: tr,
		client: &kafka.Client{Addr: kafka.TCP(c.ListenAddrs()...), Timeout: interval, Transport: tr},
		seen:   map[string]map[string]time.Time{}, session: map[string]time.Duration{}}
}

// start installs the request hooks and sweeps every interval until stop.
func (r *memberReaper) start() (stop func()) {
	c := r.c
	for _, key := range []kmsg.Key{kmsg.JoinGroup, kmsg.SyncGroup, kmsg.Heartbeat, kmsg.OffsetCommit} {
		c.ControlKey(key.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
			r.observe(req)
			return nil, nil, false
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(r.interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				r.sweep(ctx)
			}
		}
	}()
	return func() { cancel(); <-done; r.tr.CloseIdleConnections() }
}

func (r *memberReaper) observe(req kmsg.Request) {
	var group, member string
	var session time.Duration
	switch q := req.(type) {
	case *kmsg.JoinGroupRequest:
		group, member = q.Group, q.MemberID
		session = time.Duration(max(q.SessionTimeoutMillis, q.RebalanceTimeoutMillis)) * time.Millisecond
	case *kmsg.SyncGroupRequest:
		group, member = q.Group, q.MemberID
	case *kmsg.HeartbeatRequest:
		group, member = q.Group, q.MemberID
	case *kmsg.OffsetCommitRequest:
		group, member = q.Group, q.MemberID
	default:
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen[group] == nil {
		r.seen[group] = map[string]time.Time{}
	}
	if member != "" {
		r.seen[group][member] = time.Now()
	}
	if session > r.session[group] {
		r.session[group] = session
	}
}

// sweep removes the members of groups that have been silent for
// longer than their session allows.
func (r *memberReaper) sweep(ctx context.Context) {
	r.mu.Lock()
	groups := make([]string, 0, len(r.seen))
	for g := range r.seen {
		groups = append(groups, g)
	}
	r.mu.Unlock()
	if len(groups) == 0 {
		return
	}
	cl := r.client
	desc, err := cl.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: groups})
	if err != nil {
		return
	}
	now := time.Now()
	for _, g := range desc.Groups {
		if g.GroupState == "Empty" || g.GroupState == "Dead" {
			r.mu.Lock()
			delete(r.seen, g.GroupID) // forgotten until it is used again
			delete(r.session, g.GroupID)
			r.mu.Unlock()
			continue
		}
		// Not only stable groups: a group rebalancing for a member that
		// died mid-join waits for it (kfake arms no timer for it), and
		// Kafka would have expired it after the rebalance timeout. Live
		// members keep sending heartbeats or joins meanwhile.
		if g.Error != nil {
			continue
		}
		r.mu.Lock()
		limit := r.session[g.GroupID]
		if limit == 0 {
			limit = defaultSession
		}
		limit += r.grace
		if r.limit > 0 {
			limit = r.limit
		}
		var stale []string
		live := map[string]bool{}
		for _, m := range g.Members {
			live[m.MemberID] = true
			last, ok := r.seen[g.GroupID][m.MemberID]
			if !ok {
				// First sight: the clock starts now.
				r.seen[g.GroupID][m.MemberID] = now
				continue
			}
			if now.Sub(last) > limit {
				stale = append(stale, m.MemberID)
			}
		}
		for id := range r.seen[g.GroupID] {
			if !live[id] {
				delete(r.seen[g.GroupID], id) // left or expired normally
			}
		}
		r.mu.Unlock()
		for _, id := range stale {
			_, err := cl.LeaveGroup(ctx, &kafka.LeaveGroupRequest{GroupID: g.GroupID,
				Members: []kafka.LeaveGroupRequestMember{{ID: id}}})
			r.mu.Lock()
			delete(r.seen[g.GroupID], id)
			r.mu.Unlock()
			r.log.Warn("embedded kafka: removed a consumer-group member silent beyond its session timeout",
				"group", g.GroupID, "member", id, "silent_for", limit.String(), "err", err)
		}
	}
}
