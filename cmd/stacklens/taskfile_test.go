package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestTaskDownSignalsDev: on a machine without a Docker engine (this
// kind), `go tool task down` interrupts the process whose pid `stacklens
// dev` wrote to .data/dev.pid — what `go tool task up` started. go-task's
// shell has no kill builtin, so the task must run the kill program.
func TestTaskDownSignalsDev(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tf, err := os.ReadFile(filepath.Join(root, "Taskfile.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Taskfile.yml"), tf, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, ".data"), 0o755); err != nil {
		t.Fatal(err)
	}
	dev := exec.Command("sleep", "60") // stands in for stacklens dev
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dev.Process.Kill() })
	pid := strconv.Itoa(dev.Process.Pid)
	if err := os.WriteFile(filepath.Join(dir, ".data", "dev.pid"), []byte(pid+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	down := exec.Command("go", "tool", "task", "--taskfile", filepath.Join(dir, "Taskfile.yml"), "down")
	down.Dir = root // go tool finds go-task through this module's go.mod
	out, err := down.CombinedOutput()
	if err != nil {
		t.Fatalf("task down: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "stopping stacklens dev (pid "+pid+")") {
		t.Errorf("task down said:\n%s", out)
	}
	done := make(chan error, 1)
	go func() { done <- dev.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("the process ended without a signal: %v", err)
		}
		if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGINT {
			t.Errorf("the process ended by %v, want SIGINT", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the process is still running 30 s after task down")
	}
}
