package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/natsutil"
)

func TestDLQListAndReplayCommands(t *testing.T) {
	srv := testenv.NATS(t)
	js := srv.JetStream(t)
	ctx := testenv.Context(t)
	if _, err := natsutil.EnsureEventsStream(ctx, js, config.NATS{Replicas: 1, Shards: 16, EventsMaxAge: 168 * time.Hour, DLQMaxAge: 720 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	// An event first, so the dead letter's sequences differ between the
	// streams: SEQ is STACKLENS_DLQ's, EVENT_SEQ STACKLENS_EVENTS'.
	if _, err := js.Publish(ctx, natsutil.EventSubject(1, "checkout"), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(natsutil.DLQSubject("bridge", "missing_field"))
	m.Data = []byte(`{"service":"checkout","level":"info","latency_ms":3}`)
	m.Header.Set(natsutil.HdrDLQError, `missing_field "timestamp"`)
	ack, err := js.PublishMsg(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	// The corrected event carries a naive Tokyo wall time, read in
	// EVENT_TIMEZONE (as UTC it would be 9 h in the future).
	env := map[string]string{"ENV_FILE": writeEmpty(t), "NATS_URL": srv.URL, "EVENT_TIMEZONE": "Asia/Tokyo"}
	code, out, errs := runCLI(t, ctx, env, "dlq", "list")
	if code != exitOK || !strings.Contains(out, "missing_field") || !strings.Contains(out, "false") {
		t.Fatalf("list: %d %q %s", code, out, errs)
	}
	fixed := filepath.Join(t.TempDir(), "fixed.json")
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Now().In(tokyo).Add(-time.Minute).Format("2006-01-02T15:04:05")
	_ = os.WriteFile(fixed, []byte(`{"timestamp":"`+ts+`","service":"checkout","level":"info","latency_ms":3}`), 0o600)
	row := strings.Fields(strings.Split(out, "\n")[1])
	seq := row[0]
	if seq != "1" || row[1] != strconv.FormatUint(ack.Sequence, 10) {
		t.Fatalf("SEQ %q EVENT_SEQ %q, want 1 and %d:\n%s", seq, row[1], ack.Sequence, out)
	}
	if code, out, errs := runCLI(t, ctx, env, "dlq", "replay", "--seq", seq, "--file", fixed); code != exitOK || !strings.Contains(out, "replayed dead letter") {
		t.Fatalf("replay: %d %q %s", code, out, errs)
	}
	if code, _, errs := runCLI(t, ctx, env, "dlq", "replay", "--seq", seq, "--file", fixed); code != exitFail || !strings.Contains(errs, "already replayed") {
		t.Fatalf("second replay: %d %s", code, errs)
	}
	if code, out, _ := runCLI(t, ctx, env, "dlq", "list"); code != exitOK || !strings.Contains(out, "true") {
		t.Fatalf("list after replay: %q", out)
	}
	for _, args := range [][]string{{"dlq"}, {"dlq", "replay"}} {
		if code, _, _ := runCLI(t, ctx, env, args...); code != exitConfig {
			t.Errorf("%v: exit %d", args, code)
		}
	}
}
