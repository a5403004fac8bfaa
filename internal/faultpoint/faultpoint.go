// Package faultpoint lets crash tests stop a stage at a named point. The
// stages call Hit where a crash is worth testing (a batch half sent, a
// flush half applied, Kafka offsets committed); a test process installs a
// handler with Set that kills the process there. With no handler, Hit
// costs one atomic load, so the points stay in production code.
package faultpoint

import "sync/atomic"

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
