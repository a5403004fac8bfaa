package processor

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stacklens/stacklens/internal/faultpoint"
	"github.com/stacklens/stacklens/internal/harness/testenv"
)

// TestHelperProcessorProcess is not a test: it is the processor process the
// crash tests start (re-executing the test binary) and kill. With
// PROC_FAULT=<point> and PROC_FAULT_AFTER=<n> it kills itself with SIGKILL
// the n-th time a flush reaches that point.
func TestHelperProcessorProcess(t *testing.T) {
	if os.Getenv("STACKLENS_PROCESSOR_HELPER") != "1" {
		t.Skip("helper process of the crash tests")
	}
	env := testenv.Environ()
	cfg := testenv.Config(t, env)
	fault := env["PROC_FAULT"]
	after, _ := strconv.ParseInt(env["PROC_FAULT_AFTER"], 10, 64)
	if fault != "" {
		faultpoint.KillAt(fault, after, "")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := Run(ctx, Deps{Config: cfg, Log: testLogger(t, env["PROCESSOR_ID"]), Options: Options{Name: env["PROCESSOR_ID"]}}); err != nil {
		t.Fatal(err)
	}
}

// child is a processor subprocess.
type child struct {
	name string
	cmd  *exec.Cmd
	out  *testenv.SyncBuffer
	done chan struct{}
	err  error
}

func (h *harness) spawn(name, fault string, after int) *child {
	h.t.Helper()
	args := []string{"-test.run=^TestHelperProcessorProcess$", "-test.count=1"}
	if f := flag.Lookup("test.gocoverdir"); f != nil && f.Value.String() != "" {
		args = append(args, "-test.gocoverdir="+f.Value.String()) // children add their coverage
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "STACKLENS_PROCESSOR_HELPER=1", "PROCESSOR_ID="+name,
		"PROC_FAULT="+fault, "PROC_FAULT_AFTER="+strconv.Itoa(after))
	for k, v := range h.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	c := &child{name: name, cmd: cmd, out: &testenv.SyncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = c.out, c.out
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	go func() { c.err = cmd.Wait(); close(c.done) }()
	h.t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		<-c.done
		if h.t.Failed() {
			h.t.Logf("--- output of processor %s:\n%s", name, c.out.String())
		}
	})
	return c
}

func (c *child) waitKilled(t testing.TB, timeout time.Duration) {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(timeout):
		t.Fatalf("processor %s did not reach its fault point in %v:\n%s", c.name, timeout, c.out.String())
	}
	var ee *exec.ExitError
	if !errors.As(c.err, &ee) || ee.ProcessState.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("processor %s: exit %v, want SIGKILL:\n%s", c.name, c.err, c.out.String())
	}
}

func (c *child) terminate(t testing.TB) {
	t.Helper()
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		if c.err != nil {
			t.Fatalf("processor %s: %v\n%s", c.name, c.err, c.out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("processor %s did not stop", c.name)
	}
}

// ingest publishes batches in the background until stopped.
type ingest struct {
	stop chan struct{}
	done chan struct{}
}

func (h *harness) ingest(r *rand.Rand, base time.Time, batch int) *ingest {
	in := &ingest{stop: make(chan struct{}), done: make(chan struct{})}
	evs := make(chan []testEvent, 1000)
	// Generate on this goroutine (rand is not safe for concurrent use).
	for i := 0; i < 1000; i++ {
		evs <- genEvents(r, batch, 30, base, 5*time.Minute)
	}
	close(evs)
	go func() {
		defer close(in.done)
		for b := range evs {
			select {
			case <-in.stop:
				return
			default:
			}
			h.publish(b...)
			time.Sleep(5 * time.Millisecond) // pacing of the producer, not a wait for a condition
		}
	}()
	return in
}

func (in *ingest) end() {
	close(in.stop)
	<-in.done
}

// waitPublished waits until at least n more events were published.
func (h *harness) waitPublished(n int) {
	h.t.Helper()
	h.mu.Lock()
	target := h.nPub + n
	h.mu.Unlock()
	testenv.Eventually(h.t, 30*time.Second, func() error {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.nPub < target {
			return fmt.Errorf("published %d of %d", h.nPub, target)
		}
		return nil
	})
}

// owners waits until the valid leases match want (member → number of
// shards, or -1 for "between lo and hi").
func (h *harness) waitOwners(timeout time.Duration, check func(map[string]int) error) {
	h.t.Helper()
	ctx := testenv.Context(h.t)
	testenv.Eventually(h.t, timeout, func() error {
		ls, err := h.leases(ctx)
		if err != nil {
			return err
		}
		by := map[string]int{}
		now := time.Now()
		for _, l := range ls {
			if l.Owner != "" && l.Expires.After(now) {
				by[l.Owner]++
			}
		}
		if err := check(by); err != nil {
			return fmt.Errorf("%v: %w", by, err)
		}
		return nil
	})
}

func ownsAll(name string, shards int) func(map[string]int) error {
	return func(by map[string]int) error {
		if by[name] != shards || len(by) != 1 {
			return errors.New("want " + name + " to own every shard")
		}
		return nil
	}
}

func TestKill9MidFlush(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess crash test")
	}
	h := newHarness(t, map[string]string{"SHARDS": "4", "LEASE_TTL": "1s"})
	r := rand.New(rand.NewPCG(3, 4))
	base := time.Now().Add(-10 * time.Minute).Truncate(time.Minute)
	in := h.ingest(r, base, 200)
	for i, fault := range []string{"mid-writes", "before-checkpoint", "mid-writes"} {
		c := h.spawn(fmt.Sprintf("k%d", i), fault, 3+i)
		c.waitKilled(t, 60*time.Second)
		h.waitPublished(400)
	}
	// A second member crashing while another takes over.
	a := h.spawn("a", "", 0)
	b := h.spawn("b", "before-checkpoint", 5)
	b.waitKilled(t, 60*time.Second)
	h.waitPublished(400)
	in.end()
	h.waitExact(60 * time.Second)
	a.terminate(t)
	// A restart after a clean stop continues exactly.
	h.publish(genEvents(r, 500, 30, base, 6*time.Minute)...)
	c := h.spawn("c", "", 0)
	h.waitExact(60 * time.Second)
	c.terminate(t)
}

func TestSigstopBeyondLease(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess stall test")
	}
	h := newHarness(t, map[string]string{"SHARDS": "4", "LEASE_TTL": "1s"})
	r := rand.New(rand.NewPCG(5, 6))
	base := time.Now().Add(-10 * time.Minute).Truncate(time.Minute)
	in := h.ingest(r, base, 200)
	a := h.spawn("a", "", 0)
	h.waitOwners(30*time.Second, ownsAll("a", 4))
	h.waitPublished(600)
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	b := h.spawn("b", "", 0)
	h.waitOwners(30*time.Second, ownsAll("b", 4))
	h.waitPublished(600)
	if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	h.waitPublished(600)
	// a rejoins as a member and the shards are shared again.
	h.waitOwners(30*time.Second, func(by map[string]int) error {
		if by["a"] != 2 || by["b"] != 2 {
			return errors.New("want 2+2")
		}
		return nil
	})
	h.waitPublished(400)
	in.end()
	h.waitExact(60 * time.Second)
	a.terminate(t)
	b.terminate(t)
	h.waitExact(10 * time.Second)
	if os.Getenv("STACKLENS_TEST_DEBUG") != "" {
		t.Logf("output of a:\n%s", a.out.String())
	}
}

func TestScaleOneThreeOne(t *testing.T) {
	h := newHarness(t, map[string]string{"SHARDS": "8", "LEASE_TTL": "1s"})
	r := rand.New(rand.NewPCG(7, 8))
	base := time.Now().Add(-10 * time.Minute).Truncate(time.Minute)
	in := h.ingest(r, base, 200)
	a := h.startWorker("a", nil)
	h.waitOwners(30*time.Second, ownsAll("a", 8))
	h.waitPublished(600)
	b := h.startWorker("b", nil)
	c := h.startWorker("c", nil)
	h.waitOwners(30*time.Second, func(by map[string]int) error {
		if len(by) != 3 || by["a"] > 3 || by["b"] > 3 || by["c"] > 3 || by["a"]+by["b"]+by["c"] != 8 {
			return errors.New("want a fair 3/3/2 split")
		}
		return nil
	})
	h.waitPublished(600)
	b.stop(t)
	c.stop(t)
	h.waitOwners(30*time.Second, ownsAll("a", 8))
	h.waitPublished(400)
	in.end()
	h.waitExact(60 * time.Second)
	a.stop(t)
}
