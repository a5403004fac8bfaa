package chaos

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/segmentio/kafka-go"
)

// Regression tests for product bugs the suite found (docs/CHAOS.md,
// "Bugs found"); each failed before its fix.

// TestRegressionBridgeCrashLoopStallsIntake: a bridge killed with -9 while
// it is (re)joining the consumer group leaves a dead member in the group
// until the session timeout; the next generation still assigns it
// partitions. With the session and rebalance timeouts hard-coded at 30 s,
// two quick crashes stopped the intake for over a minute after the bridge
// was back (docs/ARCHITECTURE.md §8 I5: 60 s). Fixed: KAFKA_SESSION_TIMEOUT,
// KAFKA_REBALANCE_TIMEOUT and KAFKA_HEARTBEAT_INTERVAL are configuration,
// defaulting to 10 s, 10 s and 1 s.
func TestRegressionBridgeCrashLoopStallsIntake(t *testing.T) {
	if testing.Short() {
		t.Skip("40 s crash loop; runs in the default suite, not with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := startRegression(ctx, t)
	b, err := c.Role("bridge-0", "bridge", nil)
	if err != nil {
		t.Fatal(err)
	}
	truth, err := Produce(ctx, c.KafkaAddr, Workload{Events: 500, Services: 5, Duration: time.Second, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	ck := &Checker{NATSURL: c.NATSURL(), PGDSN: c.PGDSN, Truth: truth}
	inStream := func() bool {
		if err := truth.Locate(ctx, c.KafkaAddr); err != nil {
			t.Fatal(err)
		}
		r, err := ck.Check(ctx)
		return err == nil && r.MsgLost == 0 && r.MsgDup == 0
	}
	for deadline := time.Now().Add(30 * time.Second); !inStream(); time.Sleep(time.Second) {
		if time.Now().After(deadline) {
			t.Fatal("the first batch never reached the stream")
		}
	}
	// Crash, restart, crash again while it joins the group, restart.
	b.Kill9()
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	b.Kill9()
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	more, err := Produce(ctx, c.KafkaAddr, Workload{Events: 500, Services: 5, Duration: time.Second, Seed: 2, IDBase: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	truth.Merge(more)
	for !inStream() {
		if time.Since(back) > 120*time.Second {
			t.Fatalf("intake still stalled %v after the bridge came back (bridge running: %v, exit code %d); the broker's view of the group: %s\nbridge log and goroutines:\n%s",
				time.Since(back).Round(time.Second), b.Running(), b.ExitCode, describeGroup(ctx, c.KafkaAddr, "stacklens-bridge"), b.DumpGoroutines(64<<10))
		}
		time.Sleep(time.Second)
	}
	if took := time.Since(back); took > 60*time.Second {
		t.Errorf("intake resumed only %v after the bridge came back (I5: 60 s); log:\n%s", took.Round(time.Second), b.LogTail(2000))
	} else {
		t.Logf("intake resumed %v after the bridge came back", took.Round(100*time.Millisecond))
	}
}

// TestRegressionProcessorExitsOnKVSetupError: processor.setup used to
// retry while the event stream was unavailable but return at once when
// creating an aggregate bucket failed, so the process exited instead of
// retrying with backoff (docs/ARCHITECTURE.md §7); it now retries the whole
// provisioning. Fixed, so it runs in the default suite. In a 3-node NATS
// cluster with a node restarting, bucket creation timed out ("kv bucket stacklens_agg_1min: context deadline exceeded")
// and both processors died (row nats-cluster-node-kill). Here a transient
// conflict — a stream squatting the bucket's subjects for 5 s — does the
// same deterministically on one node.
func TestRegressionProcessorExitsOnKVSetupError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := startRegression(ctx, t)
	nc, err := nats.Connect(c.NATSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SQUATTER", Subjects: []string{"$KV.stacklens_agg_1min.>"}}); err != nil {
		t.Fatal(err)
	}
	p, err := c.Role("processor-0", "processor", nil)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second)
	if err := js.DeleteStream(ctx, "SQUATTER"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Second)
	if !p.Running() {
		t.Errorf("the processor exited (code %d) on a transient bucket-creation error instead of retrying; log:\n%s", p.ExitCode, p.LogTail(1500))
		return
	}
	if _, err := js.KeyValue(ctx, "stacklens_agg_1min"); err != nil {
		t.Errorf("processor still running but bucket not created 10 s after the conflict cleared: %v", err)
	}
}

// startRegression starts the infrastructure in a private directory; both
// are torn down at test end.
func startRegression(ctx context.Context, t *testing.T) *Cluster {
	t.Helper()
	dir, err := os.MkdirTemp("", "stacklens-chaos-regress-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	_ = os.Chmod(dir, 0o755)
	c, err := Start(ctx, Options{Bin: binPath, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// TestRegressionCheckerPassBounded: a JetStream API request that is never
// answered (one was lost while the cluster recovered from the
// nats-leader-isolated partition, and the checker waited for the row's
// whole 20-minute context) must fail the pass, so WaitConverged keeps
// polling.
func TestRegressionCheckerPassBounded(t *testing.T) {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	defer s.Shutdown()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	// A responder that swallows every JetStream API request.
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Subscribe("$JS.API.>", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	ck := &Checker{NATSURL: s.ClientURL(), Truth: &Truth{At: map[Coord]*Produced{}}, PassTimeout: time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	if _, err := ck.Check(ctx); err == nil {
		t.Fatal("a check against an unanswered JetStream API succeeded")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("check took %v; want it bounded by its pass timeout (1s)", d)
	}
}

// describeGroup is the broker's view of a consumer group, for failure
// messages.
func describeGroup(ctx context.Context, addr, group string) string {
	cl := &kafka.Client{Addr: kafka.TCP(addr), Timeout: 10 * time.Second}
	resp, err := cl.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{group}})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, g := range resp.Groups {
		fmt.Fprintf(&b, "state %s, error %v, members:", g.GroupState, g.Error)
		for _, m := range g.Members {
			var parts []int
			for _, t := range m.MemberAssignments.Topics {
				parts = append(parts, t.Partitions...)
			}
			fmt.Fprintf(&b, " %s (%s) partitions %v;", m.MemberID, m.ClientHost, parts)
		}
	}
	return b.String()
}
