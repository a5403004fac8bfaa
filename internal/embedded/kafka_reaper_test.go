package embedded

import (
	"context"
	"encoding/binary"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// joinAndDie sends a JoinGroup (v1, as kafka-go does) for a new member of
// group on a raw connection and closes the connection while the request
// is parked at the coordinator (the group preparing a rebalance and
// waiting for the live member to rejoin): the member dies while joining,
// as a bridge killed during a restart does.
func joinAndDie(t *testing.T, addr, group, topic string) {
	t.Helper()
	meta := kmsg.NewConsumerMemberMetadata()
	meta.Topics = []string{topic}
	proto := kmsg.NewJoinGroupRequestProtocol()
	proto.Name, proto.Metadata = "range", meta.AppendTo(nil)
	req := kmsg.NewJoinGroupRequest()
	req.SetVersion(1)
	req.Group, req.ProtocolType = group, "consumer"
	req.SessionTimeoutMillis, req.RebalanceTimeoutMillis = 6000, 2000 // 6 s: the broker's minimum
	req.Protocols = []kmsg.JoinGroupRequestProtocol{proto}
	clientID := "doomed"
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
	if _, err := conn.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(msg))), msg...)); err != nil {
		t.Fatal(err)
	}
	cl := &kafka.Client{Addr: kafka.TCP(addr), Timeout: time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		d, err := cl.DescribeGroups(context.Background(), &kafka.DescribeGroupsRequest{GroupIDs: []string{group}})
		if err == nil && len(d.Groups) == 1 && d.Groups[0].GroupState == "PreparingRebalance" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the join never parked")
		}
		time.Sleep(5 * time.Millisecond)
	}
	_ = conn.Close()
}

// memberSplit runs a consumer-group member (kafka-go, fast timings) and a
// member that dies while joining, and reports how many of the topic's two
// partitions the live member holds after settle.
func memberSplit(t *testing.T, addr string, settle time.Duration) int {
	topic, group := "t", "g"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID: group, Brokers: []string{addr}, Topics: []string{topic},
		// A slow heartbeat: the live member notices the rebalance late,
		// so the doomed join stays parked for a while.
		HeartbeatInterval: 1500 * time.Millisecond, SessionTimeout: 6 * time.Second, RebalanceTimeout: 2 * time.Second,
		JoinGroupBackoff: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	var held, gens atomic.Int64
	go func() {
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
	deadline := time.Now().Add(20 * time.Second)
	for held.Load() != 2 {
		if time.Now().After(deadline) {
			t.Fatal("the live member never got both partitions")
		}
		time.Sleep(20 * time.Millisecond)
	}
	joinAndDie(t, addr, group, topic)
	deadline = time.Now().Add(20 * time.Second)
	for held.Load() != 1 { // the next generation counts the dead member
		if time.Now().After(deadline) {
			t.Fatalf("the live member holds %d partitions; want the split with the dead member", held.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	end := time.Now().Add(settle)
	for time.Now().Before(end) && held.Load() != 2 {
		time.Sleep(50 * time.Millisecond)
	}
	return int(held.Load())
}

// TestReaperExpiresMemberKilledWhileJoining: with the reaper, the member
// that died while joining is removed after its session timeout and the
// live member gets every partition back.
func TestReaperExpiresMemberKilledWhileJoining(t *testing.T) {
	k, err := StartKafka(KafkaOptions{Topics: []string{"t"}, Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	start := time.Now()
	if n := memberSplit(t, k.ListenAddrs()[0], 20*time.Second); n != 2 {
		t.Fatalf("the live member still holds %d of 2 partitions after 20 s: the dead member was not expired", n)
	}
	t.Logf("dead member expired, partitions back after %v", time.Since(start).Round(100*time.Millisecond))
}

// TestKfakeKeepsMemberKilledWhileJoining documents the kfake defect the
// reaper makes up for: without it the dead member stays in the group
// (here for 14 s, more than twice its session timeout). If this starts failing,
// kfake expires such members itself and the reaper can go.
func TestKfakeKeepsMemberKilledWhileJoining(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if n := memberSplit(t, c.ListenAddrs()[0], 14*time.Second); n != 1 {
		t.Fatalf("bare kfake gave the live member %d partitions back: the defect is gone", n)
	}
}
