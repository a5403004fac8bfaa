package event

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"testing"
)

func TestLevels(t *testing.T) {
	for _, tc := range []struct {
		l        Level
		name     string
		err, wrn bool
	}{
		{LevelDebug, "debug", false, false},
		{LevelInfo, "info", false, false},
		{LevelNotice, "notice", false, false},
		{LevelWarning, "warning", false, true},
		{LevelError, "error", true, false},
		{LevelCritical, "critical", true, false},
		{LevelFatal, "fatal", true, false},
	} {
		if got := tc.l.String(); got != tc.name {
			t.Errorf("Level(%d).String() = %q, want %q", tc.l, got, tc.name)
		}
		if !tc.l.Valid() || tc.l.IsError() != tc.err || tc.l.IsWarning() != tc.wrn {
			t.Errorf("%s: Valid %v IsError %v IsWarning %v", tc.name, tc.l.Valid(), tc.l.IsError(), tc.l.IsWarning())
		}
		if l, ok := ParseLevel(tc.name); !ok || l != tc.l {
			t.Errorf("ParseLevel(%q) = %v, %v", tc.name, l, ok)
		}
	}
	if NumLevels != 7 {
		t.Errorf("NumLevels = %d", NumLevels)
	}
	for i := 1; i < NumLevels; i++ {
		if Level(i) <= Level(i-1) {
			t.Errorf("levels not ordered by severity at %d", i)
		}
	}
	bad := Level(NumLevels)
	if bad.Valid() || bad.IsError() || bad.IsWarning() || bad.String() != "Level(7)" {
		t.Errorf("undefined level: Valid %v IsError %v IsWarning %v String %q", bad.Valid(), bad.IsError(), bad.IsWarning(), bad.String())
	}
	if Level(255).String() != "Level(255)" {
		t.Errorf("Level(255).String() = %q", Level(255).String())
	}
}

func TestParseLevel(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Level
		ok   bool
	}{
		{"debug", LevelDebug, true}, {"DEBUG", LevelDebug, true}, {"Debug", LevelDebug, true},
		{"info", LevelInfo, true}, {"INFO", LevelInfo, true}, {"iNfO", LevelInfo, true},
		{"notice", LevelNotice, true}, {"Notice", LevelNotice, true},
		{"warning", LevelWarning, true}, {"WARNING", LevelWarning, true},
		{"warn", LevelWarning, true}, {"Warn", LevelWarning, true}, {"WARN", LevelWarning, true},
		{"error", LevelError, true}, {"Error", LevelError, true}, {"ERROR", LevelError, true},
		{"critical", LevelCritical, true}, {"CRITICAL", LevelCritical, true},
		{"fatal", LevelFatal, true}, {"Fatal", LevelFatal, true},
		{"", 0, false}, {"err", 0, false}, {"crit", 0, false}, {"trace", 0, false},
		{"warnin", 0, false}, {"warningx", 0, false}, {"criticals", 0, false},
		{"info ", 0, false}, {" info", 0, false}, {"in\x00fo", 0, false},
		{"ınfo", 0, false}, {"İnfo", 0, false}, {"emergency", 0, false},
		{"6", 0, false}, {"Level(1)", 0, false},
	} {
		got, ok := ParseLevel(tc.in)
		if ok != tc.ok || got != tc.want {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestLevelText(t *testing.T) {
	type doc struct {
		L Level `json:"level"`
	}
	b, err := json.Marshal(doc{LevelWarning})
	if err != nil || string(b) != `{"level":"warning"}` {
		t.Errorf("Marshal = %s, %v", b, err)
	}
	var d doc
	if err := json.Unmarshal([]byte(`{"level":"WARN"}`), &d); err != nil || d.L != LevelWarning {
		t.Errorf("Unmarshal warn = %v, %v", d.L, err)
	}
	if err := json.Unmarshal([]byte(`{"level":"loud"}`), &d); err == nil {
		t.Error("Unmarshal of an unknown level succeeded")
	}
	if _, err := Level(9).MarshalText(); err == nil {
		t.Error("MarshalText of Level(9) succeeded")
	}
}

func TestDecodeErrorFormat(t *testing.T) {
	for _, tc := range []struct {
		err  DecodeError
		want string
	}{
		{DecodeError{ReasonMissingField, "latency_ms", "required"}, `event: missing_field "latency_ms": required`},
		{DecodeError{ReasonTooLarge, "", "too big"}, `event: too_large: too big`},
		{DecodeError{ReasonInvalidJSON, "", ""}, `event: invalid_json`},
		{DecodeError{ReasonBadLevel, "level", ""}, `event: bad_level "level"`},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
}

func TestReasonOf(t *testing.T) {
	_, err := Decode([]byte(`{}`), fuzzNow, fuzzLim)
	wrapped := fmt.Errorf("bridge: partition 3 offset 17: %w", err)
	var de *DecodeError
	if !errors.As(wrapped, &de) || de.Reason != ReasonMissingField || de.Field != "timestamp" {
		t.Errorf("errors.As(%v) = %+v", wrapped, de)
	}
	if r := ReasonOf(wrapped); r != ReasonMissingField {
		t.Errorf("ReasonOf(wrapped) = %q", r)
	}
	if r := ReasonOf(errors.New("other")); r != "" {
		t.Errorf("ReasonOf(other) = %q", r)
	}
	if r := ReasonOf(nil); r != "" {
		t.Errorf("ReasonOf(nil) = %q", r)
	}
}

func TestAllReasons(t *testing.T) {
	want := map[Reason]string{
		ReasonInvalidJSON: "invalid_json", ReasonMissingField: "missing_field",
		ReasonBadType: "bad_type", ReasonOutOfRange: "out_of_range",
		ReasonTooLarge: "too_large", ReasonFutureTimestamp: "future_timestamp",
		ReasonTooLate: "too_late", ReasonBadTimestamp: "bad_timestamp",
		ReasonBadService: "bad_service", ReasonBadLevel: "bad_level",
	}
	all := AllReasons()
	if len(all) != len(want) {
		t.Fatalf("AllReasons() has %d reasons, want %d", len(all), len(want))
	}
	subjectSafe := regexp.MustCompile(`^[a-z_]+$`)
	seen := map[Reason]bool{}
	for _, r := range all {
		if want[r] != string(r) || r.String() != string(r) || seen[r] || !subjectSafe.MatchString(string(r)) {
			t.Errorf("unexpected or duplicate reason %q", r)
		}
		seen[r] = true
	}
	all[0] = "mutated"
	if AllReasons()[0] != ReasonInvalidJSON {
		t.Error("AllReasons shares its backing array")
	}
}
