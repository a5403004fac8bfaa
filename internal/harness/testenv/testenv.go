// Package testenv gives tests real servers, never mocks: NATS JetStream
// in-process with its store in a temp dir, a Kafka-protocol broker
// in-process (kfake) or the one named by KAFKA_BOOTSTRAP_SERVERS, and
// PostgreSQL from TEST_DATABASE_URL, else a Docker container (TimescaleDB
// image) when an engine answers, else a throwaway cluster started from the
// local binaries.
//
// Servers that take seconds to start (PostgreSQL) are shared by the tests
// of a package; each test still gets its own database. A package using
// them must run its tests through Main:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
package testenv

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	mainCalled bool
	cleanupMu  sync.Mutex
	cleanups   []func()
)

// Main runs the package's tests and then stops the shared servers.
func Main(m *testing.M) {
	mainCalled = true
	code := m.Run()
	cleanupMu.Lock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	cleanupMu.Unlock()
	os.Exit(code)
}

func atExit(f func()) {
	cleanupMu.Lock()
	defer cleanupMu.Unlock()
	cleanups = append(cleanups, f)
}

// Eventually polls cond every 10 ms until it holds or timeout passes, then
// fails the test with msg (nats-server's checkFor, without sleeps in tests).
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = cond(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Context returns a context cancelled when the test ends.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx
}

// Name turns the test name into an identifier safe for databases, topics
// and subjects.
func Name(t testing.TB) string {
	var b strings.Builder
	for _, r := range strings.ToLower(t.Name()) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	s := b.String()
	if len(s) > 40 {
		s = s[:40]
	}
	return fmt.Sprintf("%s_%d", s, time.Now().UnixNano()%1_000_000)
}

// SyncBuffer is a bytes.Buffer that a logger or a subprocess and a test
// can share.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
