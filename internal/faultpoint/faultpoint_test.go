package faultpoint

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestHitCallsTheHandlerUntilRemoved(t *testing.T) {
	Hit("nothing installed") // must not panic
	if Enabled() {
		t.Fatal("Enabled with no handler")
	}
	var got []string
	Set(func(p string) { got = append(got, p) })
	if !Enabled() {
		t.Fatal("not Enabled after Set")
	}
	Hit("a")
	Hit("b")
	Set(nil)
	Hit("c")
	if Enabled() || len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Fatalf("handler saw %q, Enabled %v; want [a b], false", got, Enabled())
	}
}

// TestKillAt re-runs this test binary as a child that hits points and
// must die by SIGKILL at the third "b" after the first "arm", not before.
func TestKillAt(t *testing.T) {
	if os.Getenv("FAULTPOINT_CHILD") == "1" {
		KillAt("b", 3, "arm")
		for _, p := range []string{"b", "b", "arm", "b", "b"} {
			Hit(p)
			fmt.Println("survived", p)
		}
		Hit("b")
		fmt.Println("survived the kill point")
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestKillAt$")
	cmd.Env = append(os.Environ(), "FAULTPOINT_CHILD=1")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want SIGKILL\n%s", err, out)
	}
	if n := strings.Count(string(out), "survived "); n != 5 || strings.Contains(string(out), "kill point") {
		t.Fatalf("child output:\n%s", out)
	}
}

// TestKillAtCounts: in-process, with the kill recorded instead: only hits
// of the point after the arming point count, and the kill comes at the
// after-th.
func TestKillAtCounts(t *testing.T) {
	defer func(k func()) { kill = k; Set(nil) }(kill)
	var at []int
	step := 0
	kill = func() { at = append(at, step) }
	KillAt("p", 2, "arm")
	for i, p := range []string{"p", "x", "arm", "p", "x", "p", "p"} {
		step = i
		Hit(p)
	}
	if len(at) != 2 || at[0] != 5 || at[1] != 6 {
		t.Fatalf("killed at steps %v, want [5 6] (the 2nd armed hit, and every one after)", at)
	}
	KillAt("q", 1, "")
	step = 99
	Hit("q")
	if len(at) != 3 || at[2] != 99 {
		t.Fatalf("unarmed KillAt: killed at %v", at)
	}
}

// TestKillSignalsItselfAndNeverReturns: kill sends the kill signal to this
// very process and never returns into the stage (here with SIGUSR1, which
// the test catches, in place of SIGKILL; the goroutine stays parked).
func TestKillSignalsItselfAndNeverReturns(t *testing.T) {
	defer func(s syscall.Signal) { killSignal = s }(killSignal)
	killSignal = syscall.SIGUSR1
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	defer signal.Stop(sig)
	returned := make(chan struct{})
	go func() {
		kill()
		close(returned)
	}()
	select {
	case s := <-sig:
		if s != syscall.SIGUSR1 {
			t.Fatalf("got %v", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("kill sent no signal to the process")
	}
	select {
	case <-returned:
		t.Fatal("kill returned")
	case <-time.After(50 * time.Millisecond):
	}
}
