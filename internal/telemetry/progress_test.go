package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestProgressLine: the line carries each figure, the rate of totals since
// the previous line, and stops with its context; interval 0 is off.
func TestProgressLine(t *testing.T) {
	var in atomic.Int64
	figs := func() []Figure {
		return []Figure{{Name: "in", Value: float64(in.Load()), Total: true}, {Name: "lag", Value: 7}, {Name: "ratio", Value: 0.25}}
	}
	var buf lockedBuffer
	log := slog.New(slog.NewJSONHandler(&buf, nil)).With("component", "test")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); Progress(ctx, log, 20*time.Millisecond, figs) }()
	// waitLine polls the log for a progress line with in == want.
	waitLine := func(want float64) map[string]any {
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			for _, l := range strings.Split(buf.String(), "\n") {
				var m map[string]any
				if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "progress" && m["in"] == want {
					return m
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
		return nil
	}
	if waitLine(0) == nil {
		t.Fatalf("no progress line: %s", buf.String())
	}
	in.Add(100) // after a line: the next rate is over this increment
	line := waitLine(100)
	cancel()
	<-done
	if line == nil {
		t.Fatalf("no progress line with in=100: %s", buf.String())
	}
	if line["component"] != "test" || line["lag"] != 7.0 || line["ratio"] != 0.25 || line["level"] != "INFO" {
		t.Errorf("line %v", line)
	}
	if r, _ := line["in_per_sec"].(float64); r <= 0 {
		t.Errorf("in_per_sec %v", line["in_per_sec"])
	}

	// Rates are exact: 20 more over 2 s.
	prev := map[string]float64{"in": 10}
	attrs := progressAttrs([]Figure{{Name: "in", Value: 30, Total: true}, {Name: "lag", Value: 3}}, prev, 2*time.Second)
	got := map[string]any{}
	for _, a := range attrs {
		got[a.Key] = a.Value.Any()
	}
	if got["in"] != int64(30) || got["in_per_sec"] != 10.0 || got["lag"] != int64(3) || prev["in"] != 30 {
		t.Errorf("attrs %v prev %v", got, prev)
	}

	// STATS_INTERVAL_SEC=0: returns at once, logs nothing.
	var quiet lockedBuffer
	Progress(context.Background(), slog.New(slog.NewJSONHandler(&quiet, nil)), 0, figs)
	if quiet.String() != "" {
		t.Errorf("interval 0 logged %q", quiet.String())
	}
}
