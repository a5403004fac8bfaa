package event

import (
	"fmt"
	"strconv"
	"time"
)

// Level is the severity of an event. The zero value is LevelDebug; levels are
// ordered by severity, so l >= LevelWarning selects warnings and worse.
type Level uint8

// The levels accepted on input, in increasing severity.
const (
	LevelDebug Level = iota
	LevelInfo
	LevelNotice
	LevelWarning
	LevelError
	LevelCritical
	LevelFatal
)

// NumLevels is the number of defined levels; Level values below it are valid,
// so a [NumLevels]T array can be indexed by a Level.
const NumLevels = int(LevelFatal) + 1

var levelNames = [NumLevels]string{"debug", "info", "notice", "warning", "error", "critical", "fatal"}

// String returns the canonical lower-case name ("warning", never "warn"), or
// "Level(N)" for an undefined value.
func (l Level) String() string {
	if l.Valid() {
		return levelNames[l]
	}
	return "Level(" + strconv.Itoa(int(l)) + ")"
}

// Valid reports whether l is one of the defined levels.
func (l Level) Valid() bool { return l <= LevelFatal }

// IsError reports whether events of this level count as errors: error,
// critical and fatal.
func (l Level) IsError() bool { return l >= LevelError && l <= LevelFatal }

// IsWarning reports whether events of this level count as warnings: warning
// (input spelling "warning" or "warn").
func (l Level) IsWarning() bool { return l == LevelWarning }

// MarshalText encodes the canonical name; it fails for an undefined level.
func (l Level) MarshalText() ([]byte, error) {
	if !l.Valid() {
		return nil, fmt.Errorf("event: cannot marshal undefined level %d", uint8(l))
	}
	return []byte(levelNames[l]), nil
}

// UnmarshalText accepts what [ParseLevel] accepts.
func (l *Level) UnmarshalText(b []byte) error {
	v, ok := parseLevel(b)
	if !ok {
		return fmt.Errorf("event: unknown level %s", quoteShort(b))
	}
	*l = v
	return nil
}

// ParseLevel parses a level name, ASCII case-insensitively: debug, info,
// notice, warning or warn, error, critical, fatal. Nothing else (no
// surrounding spaces, no abbreviations other than warn) is accepted.
func ParseLevel(s string) (Level, bool) { return parseLevel(s) }

func parseLevel[S string | []byte](s S) (Level, bool) {
	const maxLen = len("critical")
	if len(s) < len("warn") || len(s) > maxLen {
		return 0, false
	}
	var buf [maxLen]byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	switch string(buf[:len(s)]) {
	case "debug":
		return LevelDebug, true
	case "info":
		return LevelInfo, true
	case "notice":
		return LevelNotice, true
	case "warning", "warn":
		return LevelWarning, true
	case "error":
		return LevelError, true
	case "critical":
		return LevelCritical, true
	case "fatal":
		return LevelFatal, true
	}
	return 0, false
}

// Event is one validated input event: the fields the aggregation needs. The
// rest of the input message is kept, if at all, by the caller as raw bytes.
type Event struct {
	Time      time.Time // event time, in UTC (Location is time.UTC)
	Service   string    // valid by ValidService
	Level     Level
	LatencyMS float64 // finite, ≥ 0 (never -0)
	Risk      float64 // finite, in [0, 1]; valid only if HasRisk
	HasRisk   bool    // risk_score was present and not null
}
