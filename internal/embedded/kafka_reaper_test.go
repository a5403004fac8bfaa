package embedded

import (
	"context"
	"encoding/binary"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// joinSilently sends a JoinGroup (v1, as kafka-go does) for a new member
// of group on a raw connection and then never speaks again: no SyncGroup,
// no heartbeat. Its session timeout is a minute, so the broker keeps it
// for a minute: the state kfake leaves a member in for good when the
// member dies while its join is parked (kfake arms the session timer only
// once the join response is delivered, and whether it is delivered to a
// closed connection is a coin toss between two ready select cases). The
// connection is closed at test end.
func joinSilently(t *testing.T, addr, group, topic string, rebalanceTimeout time.Duration) {
	t.Helper()
	meta := kmsg.NewConsumerMemberMetadata()
	meta.Topics = []string{topic}
	proto := kmsg.NewJoinGroupRequestProtocol()
	proto.Name, proto.Metadata = "range", meta.AppendTo(nil)
	req := kmsg.NewJoinGroupRequest()
	req.SetVersion(1)
	req.Group, req.ProtocolType = group, "consumer"
	req.SessionTimeoutMillis, req.RebalanceTimeoutMillis = 60_000, int32(rebalanceTimeout/time.Millisecond)
	req.Protocols = []kmsg.JoinGroupRequestProtocol{proto}
	clientID := "silent"
	msg := binary.BigEndian.AppendUint16(nil, uint16(kmsg.JoinGroup))
	msg = binary.BigEndian.AppendUint16(msg, 1)
	msg = binary.BigEndian.AppendUint32(msg, 7) // correlation id
	msg = binary.BigEndian.AppendUint16(msg, uint16(len(clientID)))
	msg = append(msg, clientID...)
	msg = req.AppendTo(msg)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if _, err := conn.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(msg))), msg...)); err != nil {
		t.Fatal(err)
	}
}

// liveMember runs a kafka-go consumer-group member and reports how many
// of the topic's partitions its latest generation holds, and how many
// generations it has had.
func liveMember(t *testing.T, addr, group, topic string) (held, gens *atomic.Int64) {
	ctx, cancel := context.WithCancel(context.Background())
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID: group, Brokers: []string{addr}, Topics: []string{topic},
		HeartbeatInterval: 300 * time.Millisecond, SessionTimeout: 6 * time.Second, RebalanceTimeout: 5 * time.Second,
		JoinGroupBackoff: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	held, gens = new(atomic.Int64), new(atomic.Int64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			gen, err := cg.Next(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				continue
			}
			held.Store(int64(len(gen.Assignments[topic])))
			gens.Add(1)
		}
	}()
	t.Cleanup(func() { cancel(); _ = cg.Close(); <-done })
	return held, gens
}

func waitFor(t *testing.T, within time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReaperRemovesSilentMember: a member that joined and then went
// silent holds half the partitions; the reaper (here with a 2 s silence
// limit instead of the session-derived one) removes it, the live member
// gets every partition back, and the live member itself — heartbeating —
// is never removed.
func TestReaperRemovesSilentMember(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := newMemberReaper(c, slog.New(slog.DiscardHandler), 200*time.Millisecond, 0)
	r.limit = 2 * time.Second
	stop := r.start()
	defer stop()
	addr := c.ListenAddrs()[0]
	held, gens := liveMember(t, addr, "g", "t")
	waitFor(t, 20*time.Second, "the live member gets both partitions", func() bool { return held.Load() == 2 })
	start := time.Now()
	joinSilently(t, addr, "g", "t", 5*time.Second)
	waitFor(t, 20*time.Second, "the next generation counts the silent member", func() bool { return held.Load() == 1 })
	// The broker would keep the silent member for its 60 s session.
	waitFor(t, 20*time.Second, "the reaper removes the silent member", func() bool { return held.Load() == 2 })
	t.Logf("silent member removed, partitions back after %v", time.Since(start).Round(100*time.Millisecond))
	g := gens.Load()
	time.Sleep(3 * r.limit) // longer than the limit: a live member must stay
	if gens.Load() != g || held.Load() != 2 {
		t.Fatalf("the heartbeating member lost its generation (%d → %d generations, %d partitions)", g, gens.Load(), held.Load())
	}
}

// TestReaperRemovesSilentMemberWhileRebalancing: a member that joined
// alone with a minute's rebalance timeout and never synced keeps the group
// out of Stable: a live member's join waits for it to rejoin, and the
// broker would wait the whole minute. The reaper removes it from the
// rebalancing group, and the live member gets every partition well before.
func TestReaperRemovesSilentMemberWhileRebalancing(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := newMemberReaper(c, slog.New(slog.DiscardHandler), 200*time.Millisecond, 0)
	r.limit = 2 * time.Second
	stop := r.start()
	defer stop()
	addr := c.ListenAddrs()[0]
	joinSilently(t, addr, "g", "t", time.Minute)
	start := time.Now()
	held, _ := liveMember(t, addr, "g", "t")
	waitFor(t, 20*time.Second, "the live member gets both partitions while the silent one would hold the rebalance for a minute", func() bool { return held.Load() == 2 })
	t.Logf("partitions assigned after %v", time.Since(start).Round(100*time.Millisecond))
}

// TestStartKafkaRunsTheReaper: the embedded broker, reaper included,
// serves a consumer group and closes without hanging.
func TestStartKafkaRunsTheReaper(t *testing.T) {
	k, err := StartKafka(KafkaOptions{Topics: []string{"t"}, Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	held, _ := liveMember(t, k.ListenAddrs()[0], "g", "t")
	waitFor(t, 20*time.Second, "the member gets both partitions", func() bool { return held.Load() == 2 })
	k.Close() // stops the reaper, then the broker; must not hang
}
