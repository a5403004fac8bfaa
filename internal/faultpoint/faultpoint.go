// Package faultpoint lets crash tests stop a stage at a named point. The
// stages call Hit where a crash is worth testing (a batch half sent, a
// flush half applied, Kafka offsets committed); a test process installs a
// handler with Set that kills the process there. With no handler, Hit
// costs one atomic load, so the points stay in production code.
package faultpoint

import (
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
)

var handler atomic.Pointer[func(point string)]

// Set installs f as the handler of every point; nil removes it.
func Set(f func(point string)) {
	if f == nil {
		handler.Store(nil)
		return
	}
	handler.Store(&f)
}

// Enabled reports whether a handler is installed, for a point that needs
// preparing (flushing a connection first, so the crash really leaves work
// half done).
func Enabled() bool { return handler.Load() != nil }

// Hit calls the handler, if any, with point.
func Hit(point string) {
	if f := handler.Load(); f != nil {
		(*f)(point)
	}
}

// KillAt installs a handler that kills this process with SIGKILL — a crash,
// with no deferred work run — the after-th time it reaches point, counting
// only hits that come once armedBy was reached ("": from the start). Crash
// tests run it in a child process.
func KillAt(point string, after int64, armedBy string) {
	var hits atomic.Int64
	armed := atomic.Bool{}
	armed.Store(armedBy == "")
	Set(func(p string) {
		if p == armedBy {
			armed.Store(true)
		}
		if p == point && armed.Load() && hits.Add(1) >= after {
			fmt.Fprintf(os.Stderr, "FAULT %s #%d: kill -9 self\n", p, after)
			kill()
		}
	})
}

// kill ends the process as a crash would; a variable so that the counting
// can be tested in-process.
var kill = func() {
	_ = syscall.Kill(os.Getpid(), killSignal)
	select {} // never return into the stage
}

// killSignal is what kill sends; a variable so that a test can send itself
// a signal it survives.
var killSignal = syscall.SIGKILL
