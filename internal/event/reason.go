package event

import (
	"errors"
	"strconv"
)

// Reason is a machine-readable dead-letter reason. Its value is used verbatim
// as the last token of the dead-letter subject stacklens.dlq.<stage>.<reason>
// and in the Dlq-Reason header, so every value is a subject-safe token.
type Reason string

// Dead-letter reasons produced by [Decode]. ReasonTooLate is also the reason
// for events beyond the retention horizon found later in the pipeline.
const (
	// ReasonInvalidJSON: not JSON, not an object at the top level, trailing
	// data after the object, nesting too deep, or invalid UTF-8 outside the
	// service string.
	ReasonInvalidJSON Reason = "invalid_json"
	// ReasonMissingField: a required field (timestamp, service, level,
	// latency_ms) is absent or null.
	ReasonMissingField Reason = "missing_field"
	// ReasonBadType: a known field has the wrong JSON type (e.g. latency_ms
	// is a string, level is a number).
	ReasonBadType Reason = "bad_type"
	// ReasonOutOfRange: latency_ms is negative, not finite or above
	// MaxLatencyMS, or risk_score is outside [0, 1] or not finite.
	ReasonOutOfRange Reason = "out_of_range"
	// ReasonTooLarge: the message is longer than Limits.MaxBytes.
	ReasonTooLarge Reason = "too_large"
	// ReasonFutureTimestamp: timestamp is later than now + Limits.MaxFutureSkew.
	ReasonFutureTimestamp Reason = "future_timestamp"
	// ReasonTooLate: timestamp is earlier than now − Limits.Horizon (the
	// retention/replay horizon).
	ReasonTooLate Reason = "too_late"
	// ReasonBadTimestamp: timestamp is a string in no accepted format, names
	// an invalid date or time, or is an epoch number outside years 0000–9999.
	ReasonBadTimestamp Reason = "bad_timestamp"
	// ReasonBadService: service breaks the service-name rule of
	// ValidService (empty or blank, longer than 128 bytes, not valid UTF-8,
	// a C0/DEL/C1 control character or line separator, whitespace at
	// either end).
	ReasonBadService Reason = "bad_service"
	// ReasonBadLevel: level is a string that names no known level.
	ReasonBadLevel Reason = "bad_level"
)

// AllReasons returns every reason Decode can produce, in a fixed order (a new
// slice on each call), e.g. to pre-register metrics or create DLQ consumers.
func AllReasons() []Reason {
	return []Reason{
		ReasonInvalidJSON, ReasonMissingField, ReasonBadType, ReasonOutOfRange,
		ReasonTooLarge, ReasonFutureTimestamp, ReasonTooLate, ReasonBadTimestamp,
		ReasonBadService, ReasonBadLevel,
	}
}

// String returns the reason's token.
func (r Reason) String() string { return string(r) }

// DecodeError is the error returned by [Decode]; use errors.As to get it.
// Error() reads like `event: missing_field "latency_ms": required`.
// Msg never contains raw input bytes other than short, ASCII-quoted
// excerpts, so Error() is safe to put in a NATS header (no CR/LF).
type DecodeError struct {
	Reason Reason // why the event was rejected
	Field  string // the input field at fault ("timestamp", …), or "" for whole-message reasons
	Msg    string // human-readable detail
}

func (e *DecodeError) Error() string {
	s := "event: " + string(e.Reason)
	if e.Field != "" {
		s += " " + strconv.Quote(e.Field)
	}
	if e.Msg != "" {
		s += ": " + e.Msg
	}
	return s
}

// ReasonOf returns the Reason of the first *DecodeError in err's chain, or ""
// if there is none.
func ReasonOf(err error) Reason {
	var de *DecodeError
	if errors.As(err, &de) {
		return de.Reason
	}
	return ""
}

// quoteShort quotes at most 32 bytes of b as ASCII-only Go syntax, marking
// truncation, so that error messages stay short and header-safe.
func quoteShort[S string | []byte](b S) string {
	const maxQuote = 32
	if len(b) > maxQuote {
		return strconv.QuoteToASCII(string(b[:maxQuote])) + "..."
	}
	return strconv.QuoteToASCII(string(b))
}
