package bridge

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/harness/testenv"
)

// TestBridgeEventTimezone: with EVENT_TIMEZONE=Asia/Tokyo the bridge reads
// the naive timestamp a producer in Tokyo writes (Python's
// datetime.now().isoformat(), 9 h ahead of UTC) as Tokyo time and forwards
// it; read as UTC it would be 9 h in the future and dead-lettered. A
// timestamp with an offset is read as written.
func TestBridgeEventTimezone(t *testing.T) {
	s := newSetup(t)
	s.env["EVENT_TIMEZONE"] = "Asia/Tokyo"
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	naive := now.In(tokyo).Format("2006-01-02T15:04:05.000000")
	withOffset := now.UTC().Format("2006-01-02T15:04:05.000000+00:00")
	line := `{"timestamp": %q, "service": "checkout", "level": "info", "latency_ms": 50.0, "risk_score": 0.1, "id": %q}`
	s.produce([]kafka.Message{
		{Key: []byte("a"), Value: fmt.Appendf(nil, line, naive, "naive")},
		{Key: []byte("b"), Value: fmt.Appendf(nil, line, withOffset, "offset")},
	})
	s.start("a")
	js := s.nats.JetStream(t)
	s.waitCaughtUp(js, 60*time.Second)
	got := map[string]string{}
	for _, m := range readStream(t, js) {
		for _, id := range []string{"naive", "offset"} {
			if strings.Contains(string(m.data), `"id": "`+id+`"`) {
				got[id] = m.subject
			}
		}
	}
	for _, id := range []string{"naive", "offset"} {
		if !strings.HasPrefix(got[id], "stacklens.events.") {
			t.Errorf("%s event on %q, want an events subject", id, got[id])
		}
	}
	// Both decode to the same instant in the bridge's zone.
	lim := event.Limits{Location: tokyo}
	a, errA := event.Decode(fmt.Appendf(nil, line, naive, "naive"), now, lim)
	b, errB := event.Decode(fmt.Appendf(nil, line, withOffset, "offset"), now, lim)
	if errA != nil || errB != nil || !a.Time.Equal(b.Time) {
		t.Errorf("naive %v %v, with offset %v %v", a.Time, errA, b.Time, errB)
	}
}

// TestBridgeBadEventTimezone: an unknown zone stops the bridge at start
// with an error naming EVENT_TIMEZONE.
func TestBridgeBadEventTimezone(t *testing.T) {
	cfg := testenv.Config(t, map[string]string{})
	cfg.Pipeline.EventTimezone = "Mars/Olympus_Mons"
	err := Run(context.Background(), Deps{Config: cfg})
	if ce, ok := err.(*config.Error); !ok || ce.Var != "EVENT_TIMEZONE" {
		t.Fatalf("Run: %v, want a config error naming EVENT_TIMEZONE", err)
	}
}
