package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/segmentio/kafka-go"

	"github.com/stacklens/stacklens/internal/faultpoint"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/natsutil"
)

// TestHelperBridgeProcess is not a test: it is the bridge process the
// crash tests start (re-executing the test binary) and kill -9. With
// BRIDGE_FAULT=<point> and BRIDGE_FAULT_AFTER=<n> it kills itself with
// SIGKILL the n-th time it reaches that point.
func TestHelperBridgeProcess(t *testing.T) {
	if os.Getenv("STACKLENS_BRIDGE_HELPER") != "1" {
		t.Skip("helper process of the crash tests")
	}
	env := testenv.Environ()
	cfg := testenv.Config(t, env)
	fault := env["BRIDGE_FAULT"]
	after, _ := strconv.ParseInt(env["BRIDGE_FAULT_AFTER"], 10, 64)
	if fault != "" {
		// Count only once a Kafka commit was made, so the group's
		// committed offsets exist and lag behind the stream.
		faultpoint.KillAt(fault, after, hookAfterCommit)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	opts := testOptions(env["BRIDGE_NAME"])
	opts.SessionTimeout = time.Second
	opts.CommitInterval = 20 * time.Millisecond
	if err := Run(ctx, Deps{Config: cfg, Log: log.With("bridge", env["BRIDGE_NAME"]), Options: opts}); err != nil {
		t.Fatal(err)
	}
}

// child is a bridge subprocess.
type child struct {
	name string
	cmd  *exec.Cmd
	out  *testenv.SyncBuffer
	done chan struct{}
	err  error
}

// spawn starts a bridge subprocess; fault "" runs it without faults.
func (s *setup) spawn(name, fault string, after int) *child {
	s.t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperBridgeProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "STACKLENS_BRIDGE_HELPER=1", "BRIDGE_NAME="+name,
		"BRIDGE_FAULT="+fault, "BRIDGE_FAULT_AFTER="+strconv.Itoa(after))
	for k, v := range s.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	c := &child{name: name, cmd: cmd, out: &testenv.SyncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = c.out, c.out
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	go func() { c.err = cmd.Wait(); close(c.done) }()
	s.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-c.done
		if s.t.Failed() {
			s.t.Logf("--- output of bridge %s:\n%s", name, c.out.String())
		}
	})
	return c
}

// waitKilled waits for the child to die of SIGKILL.
func (c *child) waitKilled(t testing.TB, timeout time.Duration) {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(max(timeout, time.Millisecond)):
		t.Fatalf("bridge %s did not reach its fault point in %v:\n%s", c.name, timeout, c.out.String())
	}
	var ee *exec.ExitError
	if !errors.As(c.err, &ee) || ee.ProcessState.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("bridge %s: exit %v, want SIGKILL:\n%s", c.name, c.err, c.out.String())
	}
}

// feedUntilDead produces small rounds of messages until the child has
// killed itself at its fault point (so it keeps having work), then checks
// it died of SIGKILL.
func (s *setup) feedUntilDead(c *corpus, ch *child) {
	s.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		s.produce(c.messages(60, 11))
		select {
		case <-ch.done:
			ch.waitKilled(s.t, 0)
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
	ch.waitKilled(s.t, time.Second)
}

// kill9 kills the child with SIGKILL now.
func (c *child) kill9(t testing.TB) {
	t.Helper()
	_ = c.cmd.Process.Kill()
	<-c.done
}

// stop stops the child with SIGTERM and expects a clean exit.
func (c *child) stop(t testing.TB) {
	t.Helper()
	// Only once it is running (its signal handler installed).
	testenv.Eventually(t, 30*time.Second, func() error {
		if !strings.Contains(c.out.String(), "partitions assigned") {
			return fmt.Errorf("bridge %s has not started", c.name)
		}
		return nil
	})
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("bridge %s did not stop on SIGTERM", c.name)
	}
	if c.err != nil {
		t.Fatalf("bridge %s: %v:\n%s", c.name, c.err, c.out.String())
	}
	if !strings.Contains(c.out.String(), "bridge stopped") {
		t.Errorf("bridge %s: no ordered shutdown in its log:\n%s", c.name, c.out.String())
	}
}

// fastGroups lets consumer groups use short session timeouts, so a killed
// member is evicted in about a second.
func (s *setup) fastGroups() {
	s.t.Helper()
	cl := &kafka.Client{Addr: kafka.TCP(s.kafka.Brokers...), Timeout: 10 * time.Second}
	resp, err := cl.AlterConfigs(context.Background(), &kafka.AlterConfigsRequest{
		Resources: []kafka.AlterConfigRequestResource{{
			ResourceType: kafka.ResourceTypeBroker,
			Configs:      []kafka.AlterConfigRequestConfig{{Name: "group.min.session.timeout.ms", Value: "500"}},
		}},
	})
	if err == nil {
		for _, e := range resp.Errors {
			if e != nil {
				err = e
			}
		}
	}
	if err != nil {
		s.t.Fatalf("cannot lower group.min.session.timeout.ms: %v", err)
	}
}

// tinyDuplicateWindow creates the stream with a 100 ms duplicate window,
// so nothing can depend on JetStream de-duplication.
func (s *setup) tinyDuplicateWindow(js jetstream.JetStream) {
	s.t.Helper()
	sc := natsutil.EventsStreamConfig(s.config().NATS)
	sc.Duplicates = 100 * time.Millisecond
	if _, err := js.CreateStream(context.Background(), sc); err != nil {
		s.t.Fatal(err)
	}
}

func noMsgIDs(t testing.TB, js jetstream.JetStream) {
	t.Helper()
	for _, m := range readStream(t, js) {
		if _, ok := m.hdr[jetstream.MsgIDHeader]; ok {
			t.Fatalf("seq %d has a Nats-Msg-Id: the protocol must not rely on de-duplication", m.seq)
		}
	}
}

// TestCrashAtEachPoint kills a bridge process with SIGKILL at each point of
// the protocol — after a fetch, in the middle of a batch, after the
// publish but before the Kafka commit, after a commit — restarts it (with
// the duplicate window long expired: 100 ms), and checks that the stream
// holds each valid event exactly once, in partition order.
func TestCrashAtEachPoint(t *testing.T) {
	for _, tc := range []struct {
		point         string
		first, second int // kill at the n-th time the point is reached
	}{
		{hookAfterFetch, 5, 3},
		{hookMidBatch, 5, 3},
		{hookAfterPublish, 5, 3},
		{hookAfterCommit, 2, 1},
	} {
		point := tc.point
		t.Run(point, func(t *testing.T) {
			s := newSetup(t)
			s.env["KAFKA_BATCH_SIZE"] = "50"
			s.fastGroups()
			js := s.nats.JetStream(t)
			s.tinyDuplicateWindow(js)
			c := newCorpus()
			s.produce(c.messages(1500, 11))

			s.feedUntilDead(c, s.spawn("crash1", point, tc.first))
			// A second crash at the same point on the restarted process.
			s.feedUntilDead(c, s.spawn("crash2", point, tc.second))
			b := s.spawn("final", "", 0)
			s.waitCaughtUp(js, 60*time.Second)
			b.stop(t)
			s.verifyExactlyOnce(js, c)
			noMsgIDs(t, js)
		})
	}
}

// TestTwoBridgesOneKilled runs two bridges in one consumer group, kills
// one with SIGKILL while both forward, and checks the survivor takes over
// its partitions without loss or duplicates.
func TestTwoBridgesOneKilled(t *testing.T) {
	s := newSetup(t)
	s.env["KAFKA_BATCH_SIZE"] = "20"
	s.fastGroups()
	js := s.nats.JetStream(t)
	c := newCorpus()
	s.produce(c.messages(500, 13))
	a := s.spawn("a", "", 0)
	b := s.spawn("b", "", 0)
	// Both members own partitions before the kill.
	testenv.Eventually(t, 30*time.Second, func() error {
		for _, ch := range []*child{a, b} {
			if !strings.Contains(ch.out.String(), "partitions assigned") {
				return fmt.Errorf("%s has no partitions yet", ch.name)
			}
		}
		return nil
	})
	for i := range 10 {
		s.produce(c.messages(300, 13))
		if i == 4 {
			a.kill9(t)
		}
	}
	s.waitCaughtUp(js, 60*time.Second)
	b.stop(t)
	s.verifyExactlyOnce(js, c)
}
