package event

import (
	"encoding/binary"
	"fmt"
	"unicode/utf16"
	"unicode/utf8"
)

// This file is the hand-written JSON scanner behind Decode. It walks the
// flat top-level object once, validating the whole input against the JSON
// grammar (RFC 8259) and recording where the values of the known members
// are; it does not build values. FuzzDecode checks it against encoding/json.

// maxNesting is encoding/json's nesting limit, kept so both agree.
const maxNesting = 10000

// Indices of the members Decode looks at.
const (
	fieldTimestamp = iota
	fieldService
	fieldLevel
	fieldLatency
	fieldRisk
	numFields

	fieldUnknown = -1
)

var fieldNames = [numFields]string{"timestamp", "service", "level", "latency_ms", "risk_score"}

// member locates the value of a known member: data[start:end] is the raw
// JSON value (quotes included for strings).
type member struct {
	start, end int
	esc        bool // a string value containing backslash escapes
	set        bool // the member occurred
}

// plain marks bytes that stand for themselves inside a JSON string and are
// ASCII: everything from 0x20 to 0x7F except '"' and '\\'.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func isHex(c byte) bool {
	return isDigit(c) || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func skipWS(d []byte, i int) int {
	for i < len(d) {
		switch d[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

func invalid(msg string) *DecodeError {
	return &DecodeError{Reason: ReasonInvalidJSON, Msg: msg}
}

// unexpected reports the byte at d[i] (or the end of input) as a syntax error.
func unexpected(d []byte, i int, context string) *DecodeError {
	if i >= len(d) {
		return invalid("unexpected end of input " + context)
	}
	return invalid(fmt.Sprintf("unexpected %s at offset %d %s", quoteShort(d[i:i+1]), i, context))
}

// scanObject checks that d is exactly one JSON object (surrounded by optional
// whitespace), valid UTF-8 outside the value of the last "service" member,
// and records the last occurrence of each known member in ms. It reports
// whether that service value is a string containing invalid UTF-8.
func scanObject(d []byte, ms *[numFields]member) (svcBadUTF8 bool, err *DecodeError) {
	i := skipWS(d, 0)
	if i >= len(d) {
		return false, invalid("empty input")
	}
	if d[i] != '{' {
		return false, unexpected(d, i, "looking for the beginning of the top-level object")
	}
	i = skipWS(d, i+1)
	badAt := -1  // offset of invalid UTF-8 outside the current service string
	svcBad := -1 // offset of invalid UTF-8 in the current (last so far) service string
	note := func(at int) {
		if at >= 0 && badAt < 0 {
			badAt = at
		}
	}
	if i < len(d) && d[i] == '}' {
		i++
	} else {
		for {
			if i >= len(d) || d[i] != '"' {
				return false, unexpected(d, i, "looking for the beginning of an object key string")
			}
			ks := i + 1
			end, kesc, kbad, err := scanString(d, ks)
			if err != nil {
				return false, err
			}
			note(kbad)
			f := lookupKey(d[ks:end-1], kesc)
			i = skipWS(d, end)
			if i >= len(d) || d[i] != ':' {
				return false, unexpected(d, i, "after an object key")
			}
			i = skipWS(d, i+1)
			vs := i
			if i >= len(d) {
				return false, unexpected(d, i, "looking for the beginning of a value")
			}
			vesc, vbad := false, -1
			switch c := d[i]; {
			case c == '"':
				i, vesc, vbad, err = scanString(d, i+1)
			case c == '{' || c == '[':
				i, vbad, err = skipContainer(d, i, 1)
			default:
				i, err = scanScalar(d, i)
			}
			if err != nil {
				return false, err
			}
			if f == fieldService {
				note(svcBad) // an earlier service value is now just data
				svcBad = -1
				if d[vs] == '"' {
					svcBad, vbad = vbad, -1
				}
			}
			note(vbad)
			if f != fieldUnknown {
				ms[f] = member{start: vs, end: i, esc: vesc, set: true}
			}
			i = skipWS(d, i)
			if i < len(d) && d[i] == ',' {
				i = skipWS(d, i+1)
				continue
			}
			if i < len(d) && d[i] == '}' {
				i++
				break
			}
			return false, unexpected(d, i, "after an object member")
		}
	}
	if i = skipWS(d, i); i < len(d) {
		return false, unexpected(d, i, "after the top-level object")
	}
	if badAt >= 0 {
		return false, invalid(fmt.Sprintf("invalid UTF-8 at offset %d", badAt))
	}
	return svcBad >= 0, nil
}

// lookupKey maps the raw contents of a key string to a known field.
func lookupKey(raw []byte, esc bool) int {
	if esc {
		// Each escape takes at most 6 raw bytes and yields at least one
		// byte, so a key decodes to at least len(raw)/6 bytes: longer
		// keys cannot be the 10-byte "latency_ms".
		const longest = 10
		if len(raw) > 6*longest {
			return fieldUnknown
		}
		var buf [6 * longest]byte
		raw = unescape(buf[:0], raw)
	}
	switch string(raw) {
	case "timestamp":
		return fieldTimestamp
	case "service":
		return fieldService
	case "level":
		return fieldLevel
	case "latency_ms":
		return fieldLatency
	case "risk_score":
		return fieldRisk
	}
	return fieldUnknown
}

// scanString scans a string whose opening quote is at d[i-1]. It returns the
// index after the closing quote, whether the string has escapes, and the
// offset of its first invalid UTF-8 byte (-1 if none).
func scanString(d []byte, i int) (end int, esc bool, bad int, err *DecodeError) {
	bad = -1
	for {
		for i+8 <= len(d) && !special8(binary.LittleEndian.Uint64(d[i:])) {
			i += 8
		}
		for i < len(d) && plain[d[i]] {
			i++
		}
		if i >= len(d) {
			return i, esc, bad, unexpected(d, i, "in a string")
		}
		switch c := d[i]; {
		case c == '"':
			return i + 1, esc, bad, nil
		case c == '\\':
			esc = true
			if i+1 >= len(d) {
				return i, esc, bad, unexpected(d, i+1, "in a string escape")
			}
			switch d[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				for k := i + 2; k < i+6; k++ {
					if k >= len(d) || !isHex(d[k]) {
						return k, esc, bad, unexpected(d, k, "in a \\u escape")
					}
				}
				i += 6
			default:
				return i, esc, bad, unexpected(d, i+1, "in a string escape")
			}
		case c < 0x20:
			return i, esc, bad, unexpected(d, i, "in a string (control character)")
		default: // c >= 0x80
			r, size := utf8.DecodeRune(d[i:])
			if r == utf8.RuneError && size == 1 && bad < 0 {
				bad = i
			}
			i += size
		}
	}
}

// special8 reports whether any of the 8 bytes packed in x is not plain:
// '"', '\\', below 0x20 or above 0x7F (SWAR: a byte of (v-0x01…)&^v has
// its top bit set only if the byte of v is zero or a borrow reached it from
// a lower zero byte, so the whole word is zero iff no byte of v is zero).
func special8(x uint64) bool {
	const ones, tops = 0x0101010101010101, 0x8080808080808080
	q := x ^ (ones * '"')
	b := x ^ (ones * '\\')
	return ((q-ones)&^q|(b-ones)&^b|(x-ones*0x20)|x)&tops != 0
}

// scanScalar scans a number or literal starting at d[i].
func scanScalar(d []byte, i int) (int, *DecodeError) {
	switch d[i] {
	case 't':
		return scanLiteral(d, i, "true")
	case 'f':
		return scanLiteral(d, i, "false")
	case 'n':
		return scanLiteral(d, i, "null")
	}
	return scanNumber(d, i)
}

func scanLiteral(d []byte, i int, lit string) (int, *DecodeError) {
	for k := 0; k < len(lit); k++ {
		if i+k >= len(d) || d[i+k] != lit[k] {
			return i + k, unexpected(d, i+k, "in literal "+lit)
		}
	}
	return i + len(lit), nil
}

// scanNumber scans a number per the JSON grammar:
// -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
func scanNumber(d []byte, i int) (int, *DecodeError) {
	if i < len(d) && d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case i < len(d) && '1' <= d[i] && d[i] <= '9':
		i++
		for i < len(d) && isDigit(d[i]) {
			i++
		}
	default:
		return i, unexpected(d, i, "looking for the beginning of a value")
	}
	if i < len(d) && d[i] == '.' {
		i++
		if i >= len(d) || !isDigit(d[i]) {
			return i, unexpected(d, i, "after the decimal point in a number")
		}
		for i < len(d) && isDigit(d[i]) {
			i++
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if i >= len(d) || !isDigit(d[i]) {
			return i, unexpected(d, i, "in the exponent of a number")
		}
		for i < len(d) && isDigit(d[i]) {
			i++
		}
	}
	return i, nil
}

// skipContainer skips the object or array starting at d[i], which is nested
// in depth open containers. It returns the index after it and the offset of
// the first invalid UTF-8 byte in its strings (-1 if none).
func skipContainer(d []byte, i, depth int) (int, int, *DecodeError) {
	const (
		wantValue = iota
		wantKey
		wantNext // after a value: ',' or the closing bracket
	)
	var buf [64]byte
	stack := buf[:0] // open brackets, innermost last
	bad := -1
	state := wantValue
	for {
		i = skipWS(d, i)
		if i >= len(d) {
			return i, bad, unexpected(d, i, "in a nested value")
		}
		c := d[i]
		switch state {
		case wantValue:
			switch {
			case c == '{' || c == '[':
				if depth+len(stack) >= maxNesting {
					return i, bad, invalid(fmt.Sprintf("exceeded max nesting depth %d at offset %d", maxNesting, i))
				}
				stack = append(stack, c)
				i = skipWS(d, i+1)
				switch {
				case i < len(d) && (c == '{' && d[i] == '}' || c == '[' && d[i] == ']'):
					stack = stack[:len(stack)-1]
					i++
					if len(stack) == 0 {
						return i, bad, nil
					}
					state = wantNext
				case c == '{':
					state = wantKey
				}
				continue
			case c == '"':
				end, _, b, err := scanString(d, i+1)
				if err != nil {
					return end, bad, err
				}
				if b >= 0 && bad < 0 {
					bad = b
				}
				i = end
			default:
				end, err := scanScalar(d, i)
				if err != nil {
					return end, bad, err
				}
				i = end
			}
			state = wantNext
		case wantKey:
			if c != '"' {
				return i, bad, unexpected(d, i, "looking for the beginning of an object key string")
			}
			end, _, b, err := scanString(d, i+1)
			if err != nil {
				return end, bad, err
			}
			if b >= 0 && bad < 0 {
				bad = b
			}
			i = skipWS(d, end)
			if i >= len(d) || d[i] != ':' {
				return i, bad, unexpected(d, i, "after an object key")
			}
			i++
			state = wantValue
		case wantNext:
			top := stack[len(stack)-1]
			switch {
			case c == ',':
				i++
				state = wantValue
				if top == '{' {
					state = wantKey
				}
			case top == '{' && c == '}' || top == '[' && c == ']':
				i++
				stack = stack[:len(stack)-1]
				if len(stack) == 0 {
					return i, bad, nil
				}
			default:
				return i, bad, unexpected(d, i, "after a nested value")
			}
		}
	}
}

// unescape appends the decoded contents of a syntactically valid JSON string
// (without its quotes) to dst, exactly as encoding/json decodes it: a \u
// escape of a lone or mismatched surrogate becomes U+FFFD.
func unescape(dst, s []byte) []byte {
	for i := 0; i < len(s); {
		if s[i] != '\\' {
			j := i + 1
			for j < len(s) && s[j] != '\\' {
				j++
			}
			dst = append(dst, s[i:j]...)
			i = j
			continue
		}
		switch c := s[i+1]; c {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r := hex4(s[i+2:])
			i += 6
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if i+6 <= len(s) && s[i] == '\\' && s[i+1] == 'u' {
					r2 = hex4(s[i+2:])
				}
				if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
					dst = utf8.AppendRune(dst, dec)
					i += 6
					continue
				}
				r = utf8.RuneError
			}
			dst = utf8.AppendRune(dst, r)
			continue
		default: // '"', '\\', '/'
			dst = append(dst, c)
		}
		i += 2
	}
	return dst
}

// hex4 decodes four hex digits (already validated).
func hex4(s []byte) rune {
	var r rune
	for _, c := range s[:4] {
		switch {
		case c <= '9':
			c -= '0'
		case c <= 'F':
			c -= 'A' - 10
		default:
			c -= 'a' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}
