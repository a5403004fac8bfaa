package netns

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Need fails under CI=true when hosts cannot be made here, and skips
// (with the reason) elsewhere.
func Need(t *testing.T) {
	t.Helper()
	if err := Available(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("network-namespace tests cannot run under CI: %v (run as root with iproute2 installed)", err)
		}
		t.Skipf("network-namespace tests: %v", err)
	}
}

func namespaces(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	var ns []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], prefix) {
			ns = append(ns, f[0])
		}
	}
	return ns
}

func ours(all []string, id string) []string {
	var out []string
	for _, n := range all {
		if strings.HasPrefix(n, id) {
			out = append(out, n)
		}
	}
	return out
}

// reachable: a line sent from a to b's echo server comes back.
func reachable(ctx context.Context, from, to *Host, port int) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	c, err := from.DialContext(ctx, "tcp", net.JoinHostPort(to.IP, strconv.Itoa(port)))
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("hi\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && line == "hi\n"
}

// TestMain lets the test binary serve as the echo server inside a host.
func TestMain(m *testing.M) {
	if addr := os.Getenv("NETNS_ECHO"); addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			os.Exit(2)
		}
		for {
			c, err := ln.Accept()
			if err != nil {
				os.Exit(0)
			}
			go func() {
				defer c.Close()
				line, err := bufio.NewReader(c).ReadString('\n')
				if err == nil {
					_, _ = c.Write([]byte(line))
				}
			}()
		}
	}
	os.Exit(m.Run())
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestHosts(t *testing.T) {
	Need(t)
	n, err := New(250)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			n.Close()
		}
	})
	a, err := n.AddHost("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := n.AddHost("b")
	if err != nil {
		t.Fatal(err)
	}
	if got := ours(namespaces(t), n.id); len(got) != 3 {
		t.Fatalf("namespaces of the run: %v, want the bridge's and two hosts'", got)
	}
	// The test binary is the echo server (TestMain) in each host.
	self, _ := os.Executable()
	echo := func(h *Host) *exec.Cmd {
		srv := h.Command(self)
		srv.Env = append(os.Environ(), "NETNS_ECHO="+h.IP+":7000")
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = srv.Process.Kill() })
		return srv
	}
	echo(a)
	srv := echo(b)
	ctx := context.Background()
	waitFor(t, "TCP a→b", func() bool { return reachable(ctx, a, b, 7000) })
	waitFor(t, "TCP b→a", func() bool { return reachable(ctx, b, a, 7000) })
	// Nothing of the run is configured in the root namespace.
	if out, err := exec.Command("ip", "-o", "addr").Output(); err != nil || strings.Contains(string(out), n.subnet) {
		t.Fatalf("the root namespace has an address of the run (%v): addresses must live in the hosts only", err)
	}

	if err := a.LinkDown(); err != nil {
		t.Fatal(err)
	}
	if reachable(ctx, a, b, 7000) || reachable(ctx, b, a, 7000) {
		t.Fatal("link down: still connected")
	}
	if err := a.LinkUp(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "TCP a→b after link up", func() bool { return reachable(ctx, a, b, 7000) })

	if err := a.Blackhole(b); err != nil {
		t.Fatal(err)
	}
	if reachable(ctx, a, b, 7000) || reachable(ctx, b, a, 7000) {
		t.Fatal("blackhole: still connected")
	}
	if err := a.Unblackhole(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "TCP a→b after unblackhole", func() bool { return reachable(ctx, a, b, 7000) })

	if err := a.Remove(); err != nil {
		t.Fatal(err)
	}
	if reachable(ctx, a, b, 7000) {
		t.Fatal("veth removed: still connected")
	}
	if err := a.Attach(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "TCP a→b after re-attach", func() bool { return reachable(ctx, a, b, 7000) })

	// Deleting b kills its processes and its namespace.
	if err := b.Delete(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = srv.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the deleted host's process survived")
	}
	if err := b.Recreate(); err != nil {
		t.Fatal(err)
	}
	echo(b)
	waitFor(t, "TCP a→recreated b", func() bool { return reachable(ctx, a, b, 7000) })

	n.Close()
	closed = true
	if got := ours(namespaces(t), n.id); len(got) != 0 {
		t.Fatalf("namespaces left after Close: %v", got)
	}
}

// TestSweep: namespaces of a run whose process is gone are removed, with
// their processes; a live run's are left alone.
func TestSweep(t *testing.T) {
	Need(t)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	name := prefix + strconv.Itoa(dead.Process.Pid) + "x1-h"
	if err := ip("netns", "add", name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ip("netns", "del", name) })
	sleeper := exec.Command("ip", "netns", "exec", name, "sleep", "300")
	sleeper.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = sleeper.Wait(); close(exited) }()
	live, err := New(251)
	if err != nil { // New sweeps
		t.Fatal(err)
	}
	defer live.Close()
	Sweep()
	for _, ns := range namespaces(t) {
		if ns == name {
			t.Fatalf("namespace %s of a dead run survived the sweep", name)
		}
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("a dead run's process survived the sweep")
	}
	if got := ours(namespaces(t), live.id); len(got) != 1 {
		t.Fatalf("the live run's namespaces: %v", got)
	}
}

// TestDialToMissingHostKeepsThreads: a dial to a host whose namespace is
// gone fails without ending its OS thread; ending it would SIGKILL every
// child that thread had forked with Pdeathsig (the role processes of a
// test running meanwhile).
func TestDialToMissingHostKeepsThreads(t *testing.T) {
	// Children forked from many threads, which then go back to the
	// scheduler's pool where the dials below run.
	var (
		mu       sync.Mutex
		children []*exec.Cmd
		wg       sync.WaitGroup
	)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			cmd := exec.Command("sleep", "60")
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			if err := cmd.Start(); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			children = append(children, cmd)
			mu.Unlock()
			time.Sleep(20 * time.Millisecond) // hold the thread so the others get their own
		}()
	}
	wg.Wait()
	defer func() {
		for _, c := range children {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	}()
	gone := &Host{Name: "gone", NS: "stacklens-test-no-such-namespace"}
	for range 20 {
		var dials sync.WaitGroup
		for range 16 {
			dials.Add(1)
			go func() {
				defer dials.Done()
				if _, err := gone.DialContext(context.Background(), "tcp", "127.0.0.1:1"); err == nil {
					t.Error("dial through a missing namespace succeeded")
				}
			}()
		}
		dials.Wait()
	}
	for i, c := range children {
		var ws syscall.WaitStatus
		if pid, _ := syscall.Wait4(c.Process.Pid, &ws, syscall.WNOHANG, nil); pid != 0 {
			t.Fatalf("child %d of %d was killed (%v): a failed dial ended the thread that forked it", i, len(children), ws.Signal())
		}
	}
}
