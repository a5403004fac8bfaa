package event

import (
	"errors"
	"unicode"
	"unicode/utf8"
)

// ValidService reports why s is not a valid service name (nil: it is).
// It is the one rule for service names: the decoder dead-letters events
// whose service breaks it (bad_service), and the API and the silences'
// service matcher refuse such names with a 400, so every name the pipeline
// stores can be queried and no name is refused that could be stored.
//
// A valid name is 1–128 bytes of valid UTF-8 with
//   - no control character: C0 (U+0000–U+001F), DEL (U+007F) or C1
//     (U+0080–U+009F), which break logs, headers and terminals;
//   - no line or paragraph separator (U+2028, U+2029);
//   - no whitespace at either end (so " checkout" cannot pass for
//     "checkout" on a dashboard), hence never blank.
//
// Inner spaces and any other printable character are allowed. The error's
// text is a short reason without the name, e.g. "contains a control
// character".
func ValidService(s string) error {
	if msg := serviceProblem([]byte(s)); msg != "" {
		return errors.New(msg)
	}
	return nil
}

// Reasons serviceProblem gives.
const (
	svcEmpty      = "empty"
	svcTooLong    = "longer than 128 bytes"
	svcBadUTF8    = "not valid UTF-8"
	svcControl    = "contains a control character"
	svcLineSep    = "contains a line or paragraph separator"
	svcBlank      = "blank (only whitespace)"
	svcWhitespace = "starts or ends with whitespace"
)

// serviceProblem is ValidService without allocating (the decoder calls it
// on every event): "" when s is valid, else one of the svc* reasons.
func serviceProblem(s []byte) string {
	switch {
	case len(s) == 0:
		return svcEmpty
	case len(s) > MaxServiceBytes:
		return svcTooLong
	}
	ascii := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f {
			return svcControl
		}
		if c >= 0x80 {
			ascii = false
		}
	}
	if !ascii {
		for i := 0; i < len(s); {
			r, size := decodeRune(s[i:])
			switch {
			case r == utf8.RuneError && size == 1:
				return svcBadUTF8
			case 0x80 <= r && r <= 0x9f:
				return svcControl
			case r == '\u2028' || r == '\u2029':
				return svcLineSep
			}
			i += size
		}
	}
	first, _ := decodeRune(s)
	last, _ := decodeLastRune(s)
	if isSpace(first) || isSpace(last) {
		for i := 0; i < len(s); {
			r, size := decodeRune(s[i:])
			if !isSpace(r) {
				return svcWhitespace
			}
			i += size
		}
		return svcBlank
	}
	return ""
}

// isSpace is unicode.IsSpace with an ASCII fast path.
func isSpace(r rune) bool {
	if r < utf8.RuneSelf {
		return r == ' ' || '\t' <= r && r <= '\r'
	}
	return unicode.IsSpace(r)
}

func decodeRune(s []byte) (rune, int) {
	if len(s) > 0 && s[0] < utf8.RuneSelf {
		return rune(s[0]), 1
	}
	return utf8.DecodeRune(s)
}

func decodeLastRune(s []byte) (rune, int) {
	if n := len(s); n > 0 && s[n-1] < utf8.RuneSelf {
		return rune(s[n-1]), 1
	}
	return utf8.DecodeLastRune(s)
}
