package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
)

func TestLoggerFormatsAndLevels(t *testing.T) {
	var b bytes.Buffer
	NewLogger(&b, "warning", "JSON").Info("hidden")
	NewLogger(&b, "warning", "json").Warn("shown", "k", 1)
	var m map[string]any
	if err := json.Unmarshal(b.Bytes(), &m); err != nil || m["msg"] != "shown" || m["k"] != 1.0 {
		t.Fatalf("json log %q: %v", b.String(), err)
	}
	b.Reset()
	NewLogger(&b, "debug", "text").Debug("plain", "k", "v")
	if s := b.String(); !strings.Contains(s, "plain") || !strings.Contains(s, "k=v") || strings.Contains(s, "\x1b[") {
		t.Errorf("text log to a non-terminal should be uncoloured: %q", s)
	}
	if f, err := os.CreateTemp(t.TempDir(), "log"); err == nil {
		NewLogger(f, "info", "text").Info("to a file")
		f.Close()
	}
	for in, want := range map[string]slog.Level{"DEBUG": slog.LevelDebug, "warn": slog.LevelWarn, "WARNING": slog.LevelWarn, "error": slog.LevelError, "INFO": slog.LevelInfo, "bogus": slog.LevelInfo} {
		if got := ParseLevel(in); got != want {
			t.Errorf("ParseLevel(%q) = %v, want %v", in, got, want)
		}
	}
	Discard().Error("nothing")
}

func TestHealthSnapshot(t *testing.T) {
	h := NewHealth()
	if _, ok := h.Snapshot(context.Background()); !ok {
		t.Error("an empty registry is healthy")
	}
	h.Set("bridge", nil)
	first, _ := h.Snapshot(context.Background())
	h.Set("bridge", nil)
	again, _ := h.Snapshot(context.Background())
	if !again["bridge"].Since.Equal(first["bridge"].Since) {
		t.Error("Since moved although the state did not flip")
	}
	calls := 0
	h.Register("db", func(context.Context) error { calls++; return errors.New("connection refused") })
	st, ok := h.Snapshot(context.Background())
	if ok || st["db"].OK || st["db"].Message != "connection refused" || !st["bridge"].OK || calls != 1 {
		t.Errorf("snapshot %+v ok=%v calls=%d", st, ok, calls)
	}
	h.Remove("db")
	if _, ok := h.Snapshot(context.Background()); !ok {
		t.Error("removing the failing check should make it healthy")
	}
}

func TestServerEndpoints(t *testing.T) {
	h := NewHealth()
	s, err := Listen("127.0.0.1:0", h, "v1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, Discard()) }()
	base := "http://" + s.Addr()
	get := func(path string) (int, string) {
		t.Helper()
		// The socket is bound by Listen, so no wait for Run is needed.
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return resp.StatusCode, b.String()
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "go_goroutines") || !strings.Contains(body, "process_cpu_seconds_total") {
		t.Errorf("/metrics %d", code)
	}
	h.Set("processor", errors.New("lease lost"))
	if code, body := get("/ready"); code != 503 || !strings.Contains(body, `"unhealthy"`) || !strings.Contains(body, "lease lost") {
		t.Errorf("/ready %d %s", code, body)
	}
	h.Set("processor", nil)
	if code, body := get("/health"); code != 200 || !strings.Contains(body, `"healthy"`) || !strings.Contains(body, "v1.2.3") {
		t.Errorf("/health %d %s", code, body)
	}
	if code, _ := get("/debug/pprof/"); code != 200 {
		t.Errorf("pprof %d", code)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if _, err := Listen(s.Addr(), h, ""); err != nil {
		// The port is free again after shutdown: listening twice must work.
		t.Errorf("re-listen after shutdown: %v", err)
	}
	if _, err := Listen("256.0.0.1:1", h, ""); err == nil {
		t.Error("listening on a bad address succeeded")
	}
}
