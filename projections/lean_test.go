package projections

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/harness/loadgen"
)

func decodeForTest(t *testing.T, in string) event.Event {
	t.Helper()
	ev, err := event.Decode([]byte(in), time.Now(), decodeLimits)
	if err != nil {
		t.Fatalf("%s: %v", in, err)
	}
	return ev
}

// TestAppendLean: which members leave the payload (the PostgreSQL side,
// rebuilding the event, is checked by TestEventsProjector).
func TestAppendLean(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`{"timestamp":"2026-11-29T01:00:00.123456Z","service":"checkout","level":"info","latency_ms":52.25,"risk_score":0.5,"host":"h"}`, `{"host":"h"}`},
		{`{"timestamp":"2026-11-29T01:00:00Z","service":"s","level":"warning","latency_ms":0}`, `{}`},
		// Not canonical: kept as sent.
		{`{"timestamp":"2026-11-29T01:00:00.123456789Z","service":"s","level":"WARN","latency_ms":50.0,"risk_score":1e-1}`,
			`{"timestamp":"2026-11-29T01:00:00.123456789Z","level":"WARN","latency_ms":50.0,"risk_score":1e-1}`},
		{`{"timestamp":"2026-11-29T01:00:00.120","service":"s","level":"info","latency_ms":1}`, `{"timestamp":"2026-11-29T01:00:00.120"}`},
		{`{"timestamp":"2026-11-29T02:00:00+01:00","service":"s","level":"info","latency_ms":1}`, `{"timestamp":"2026-11-29T02:00:00+01:00"}`},
		{`{"timestamp":1764378000000,"service":"s","level":"info","latency_ms":1}`, `{"timestamp":1764378000000}`},
		{`{"timestamp":"2026-11-29T01:00:00Z","service":"s","level":"info","latency_ms":1,"risk_score":null}`, `{"risk_score":null}`},
		// Repeated or escaped keys: the repeated member stays, an escaped key keeps everything.
		{`{"timestamp":"2026-11-29T01:00:00Z","service":"s","level":"info","latency_ms":1,"service":"s"}`, `{"service":"s","service":"s"}`},
		{`{"timestamp":"2026-11-29T01:00:00Z","service":"s","level":"info","latency_ms":1,"\u0068ost":"h"}`,
			`{"timestamp":"2026-11-29T01:00:00Z","service":"s","level":"info","latency_ms":1,"\u0068ost":"h"}`},
		// Whitespace between members goes, inside values it stays.
		{" {\n \"a\" : { \"b\" : [1, \"}\\\"]\"] } ,\"timestamp\":\"2026-11-29T01:00:00Z\",\"service\":\"s\",\"level\":\"info\",\"latency_ms\":1 }\n",
			`{"a" : { "b" : [1, "}\"]"] }}`},
	} {
		ev := decodeForTest(t, c.in)
		got := string(appendLean([]byte("prefix"), []byte(c.in), &ev))
		if got != "prefix"+c.want {
			t.Errorf("appendLean(%s)\n = %s\nwant prefix%s", c.in, got, c.want)
		}
		if !json.Valid([]byte(got[len("prefix"):])) {
			t.Errorf("appendLean(%s) is not JSON: %s", c.in, got)
		}
	}
	// Loadgen events with microsecond timestamps keep only their extra
	// members, and are never longer than the message.
	gen := loadgen.NewGenerator(3, 20, time.Now())
	for i := range 1000 {
		msg, _ := gen.Next(nil, time.Now().Truncate(time.Microsecond))
		ev := decodeForTest(t, string(msg))
		lean := appendLean(nil, msg, &ev)
		var m map[string]any
		if err := json.Unmarshal(lean, &m); err != nil || len(m) != 4 || m["endpoint"] == nil || m["trace_id"] == nil {
			t.Fatalf("event %d: %s → %s (%v)", i, msg, lean, err)
		}
		if len(lean) > len(msg) {
			t.Fatalf("lean payload longer than the message: %s", lean)
		}
	}
}

func TestNeedsSanitize(t *testing.T) {
	for in, want := range map[string]bool{
		`{"m":"plain"}`:          false,
		`{"m":"\u00e9"}`:         false,
		`{"m":"\u0000"}`:         true,
		`{"m":"\\u0000"}`:        false, // a backslash, then text
		`{"m":"\\\u0000"}`:       true,
		`{"m":"x\ud800y"}`:       true,
		`{"m":"x\uDFFFy"}`:       true,
		`{"m":"\ud83c\udf89"}`:   true, // a valid pair takes the slow path too
		`{"m":"\u00e9","n":"\u`:  false,
		`{"m":"\uD7FF \u0001"}`:  false,
		`{"m":"a\u0000b\u0041"}`: true,
	} {
		if got := needsSanitize([]byte(in)); got != want {
			t.Errorf("needsSanitize(%s) = %v, want %v", in, got, want)
		}
	}
}

func BenchmarkAppendLean(b *testing.B) {
	msg, _ := loadgen.NewGenerator(3, 20, time.Now()).Next(nil, time.Now().Truncate(time.Microsecond))
	ev, err := event.Decode(msg, time.Now(), decodeLimits)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 0, len(msg))
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		buf = appendLean(buf[:0], msg, &ev)
	}
}

// TestTopMembersRefusesWhatItCannotSplit: the splitter gives ok == false
// for what is not an object of members (it does not validate scalars:
// event.Decode did), so that appendLean keeps such a payload whole rather
// than cutting it at a wrong offset.
func TestTopMembersRefusesWhatItCannotSplit(t *testing.T) {
	for _, in := range []string{
		``, `   `, `[]`, `"s"`, // not an object
		`{`, `{ `, `{"a":1`, `{"a":1,`, `{"a":1 `, // truncated
		`{a:1}`, `{"a" 1}`, `{"a":}`, `{"a": }`, `{"a`, `{"a\"}`, // broken members
		`{"a":1 "b":2}`, `{"a":"x";"b":2}`, `{"a":1]`, // bad separators
		`{"a":"x}`, `{"a":{"b":"c}}`, `{"a":[1,2}`, `{"a":{"b":1}`, // unterminated values
		`{"a":[1`, `{"a":{"b":[`, `{"a":`, `{"a": `, `{"a":,}`, // no value, or no end
	} {
		if ms, ok := topMembers(nil, []byte(in)); ok || ms != nil {
			t.Errorf("topMembers(%q) = %v, %v; want not ok", in, ms, ok)
		}
	}
	for in, n := range map[string]int{`{}`: 0, ` { } `: 0, `{"a":1}`: 1, `{"a" : [1,{"b":"]"}] , "c":null}`: 2, `{"a":"\\"}`: 1} {
		if ms, ok := topMembers(nil, []byte(in)); !ok || len(ms) != n {
			t.Errorf("topMembers(%q) = %v, %v; want %d members", in, ms, ok, n)
		}
	}
	// appendLean keeps what cannot be split as it is.
	ev := decodeForTest(t, `{"timestamp":"2026-11-29T01:00:00Z","service":"s","level":"info","latency_ms":1}`)
	for _, in := range []string{`{"timestamp":"2026-11-29T01:00:00Z","service":"s"`, `[1]`} {
		if got := string(appendLean([]byte("p"), []byte(in), &ev)); got != "p"+in {
			t.Errorf("appendLean(%q) = %q, want it whole", in, got)
		}
	}
	if leanField([]byte(`"`)) != -1 || leanField(nil) != -1 || leanField([]byte(`"level"`)) != 2 {
		t.Error("leanField of short keys")
	}
}
