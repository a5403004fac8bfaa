package projections

import (
	"bytes"
	"strconv"
	"time"

	"github.com/stacklens/stacklens/internal/event"
)

// Lean raw-event payloads (docs/projections.md, "Raw events"; docs/SCHEMA.md).
//
// analytics_events stores an event's timestamp, service, level, latency_ms
// and risk_score in columns. leanPayload drops a member from the stored
// payload when the column gives it back as the same JSON value, so the
// payload holds only what the columns cannot say. The SQL function
// stacklens_event_payload(e) rebuilds the event: it adds back each of the
// five members the payload lacks, from its column, in the canonical form
// below, and lets the payload's own members win. The four required
// members are in every event, so "absent from the payload" means
// "stripped"; risk_score is added only when its column is not NULL (a
// "risk_score": null member is kept in the payload).
//
// A member is stripped only when its raw text is exactly the canonical
// rendering of the column value, which is checked here byte for byte:
//
//	timestamp   "2006-01-02T15:04:05.999999Z" (RFC 3339 in UTC, at most
//	            microseconds — the column's precision —, trailing zeros
//	            trimmed: Go's RFC3339Nano), years 1–9999
//	service     the string, without escapes
//	level       the normalised level ("info", "warning", …), without escapes
//	latency_ms  strconv.FormatFloat(v, 'f', -1, 64): the shortest decimal
//	risk_score  that reads back as v; PostgreSQL renders the float8 column
//	            as the same shortest decimal (extra_float_digits ≥ 1), so
//	            the rebuilt number is equal as a JSON number
//
// Anything else — a naive or zoned timestamp, epoch milliseconds,
// nanoseconds, "WARN", 50.0, 1e2, a key that occurs twice, any escaped key —
// stays in the payload as it was sent, so the rebuilt object is equal to
// the original as JSON (member order aside).

// leanFields are the members the columns carry, in event.Decode's order.
var leanFields = [...]string{"timestamp", "service", "level", "latency_ms", "risk_score"}

// appendLean appends to dst data (a JSON object event.Decode accepted as
// ev) without the members the columns give back.
func appendLean(dst, data []byte, ev *event.Event) []byte {
	var spans [16]member
	ms, ok := topMembers(spans[:0], data)
	if !ok {
		return append(dst, data...)
	}
	var seen [len(leanFields)]int
	for i := range ms {
		key := data[ms[i].key:ms[i].colon]
		if bytes.IndexByte(key, '\\') >= 0 {
			// An escaped key may be one of the five under another
			// spelling; which occurrence wins is not worth working out.
			return append(dst, data...)
		}
		if f := leanField(key); f >= 0 {
			ms[i].field = f
			seen[f]++
		}
	}
	var buf [40]byte
	strip := func(f int, val []byte) bool {
		if seen[f] != 1 {
			return false // absent, or repeated: keep what was sent
		}
		switch f {
		case 0:
			t := ev.Time.UTC()
			if t.Nanosecond()%1000 != 0 || t.Year() < 1 || t.Year() > 9999 || len(val) < 2 || val[0] != '"' {
				return false
			}
			return bytes.Equal(val[1:len(val)-1], t.AppendFormat(buf[:0], time.RFC3339Nano))
		case 1:
			return quoted(val, ev.Service)
		case 2:
			return quoted(val, ev.Level.String())
		case 3:
			return bytes.Equal(val, strconv.AppendFloat(buf[:0], ev.LatencyMS, 'f', -1, 64))
		default:
			return ev.HasRisk && bytes.Equal(val, strconv.AppendFloat(buf[:0], ev.Risk, 'f', -1, 64))
		}
	}
	out := append(dst, '{')
	first := true
	for _, m := range ms {
		if m.field >= 0 && strip(m.field, data[m.val:m.end]) {
			continue
		}
		if !first {
			out = append(out, ',')
		}
		first = false
		out = append(out, data[m.key:m.end]...)
	}
	return append(out, '}')
}

// quoted reports whether val is the JSON string s written without escapes.
func quoted(val []byte, s string) bool {
	return len(val) == len(s)+2 && val[0] == '"' && val[len(val)-1] == '"' &&
		string(val[1:len(val)-1]) == s && bytes.IndexByte(val, '\\') < 0
}

// leanField is the index in leanFields of a raw key (quotes included), or
// -1. Escaped keys are not recognised: such members are kept.
func leanField(key []byte) int {
	if len(key) < 2 {
		return -1
	}
	k := key[1 : len(key)-1]
	for i, f := range leanFields {
		if string(k) == f {
			return i
		}
	}
	return -1
}

// member is one top-level member of an object: data[key:colon] is the key
// (quotes included, trailing spaces trimmed), data[val:end] the value,
// data[key:end] the whole member.
type member struct {
	key, colon, val, end int
	field                int
}

// topMembers splits a JSON object into its top-level members. data has
// been validated by event.Decode; anything unexpected gives ok == false
// (the caller then keeps data whole).
func topMembers(ms []member, data []byte) (_ []member, ok bool) {
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return nil, false
	}
	i = skipSpace(data, i+1)
	if i < len(data) && data[i] == '}' {
		return ms, true
	}
	for i < len(data) {
		if data[i] != '"' {
			return nil, false
		}
		m := member{key: i, field: -1}
		if i = skipString(data, i); i < 0 {
			return nil, false
		}
		m.colon = i
		i = skipSpace(data, i)
		if i >= len(data) || data[i] != ':' {
			return nil, false
		}
		m.val = skipSpace(data, i+1)
		if i = skipValue(data, m.val); i < 0 {
			return nil, false
		}
		m.end = i
		ms = append(ms, m)
		i = skipSpace(data, i)
		if i >= len(data) {
			return nil, false
		}
		switch data[i] {
		case ',':
			i = skipSpace(data, i+1)
		case '}':
			return ms, true
		default:
			return nil, false
		}
	}
	return nil, false
}

func skipSpace(d []byte, i int) int {
	for i < len(d) && (d[i] == ' ' || d[i] == '\t' || d[i] == '\n' || d[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the offset after the string starting at d[i] ('"'),
// or -1.
func skipString(d []byte, i int) int {
	for i++; i < len(d); i++ {
		switch d[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

// skipValue returns the offset after the value starting at d[i], or -1.
func skipValue(d []byte, i int) int {
	if i >= len(d) {
		return -1
	}
	switch d[i] {
	case '"':
		return skipString(d, i)
	case '{', '[':
		depth := 0
		for ; i < len(d); i++ {
			switch d[i] {
			case '"':
				if i = skipString(d, i); i < 0 {
					return -1
				}
				i--
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
		return -1
	default: // number, true, false, null
		j := i
		for j < len(d) && d[j] != ',' && d[j] != '}' && d[j] != ']' && d[j] != ' ' && d[j] != '\t' && d[j] != '\n' && d[j] != '\r' {
			j++
		}
		if j == i {
			return -1
		}
		return j
	}
}

// needsSanitize reports whether a payload holds an escape PostgreSQL
// cannot turn into text (\u0000, a surrogate half: paired ones are
// rare enough to take the slow path too), so that readers' conversions
// to jsonb (stacklens_event_payload) never fail on a stored row.
func needsSanitize(b []byte) bool {
	for i := bytes.Index(b, []byte(`\u`)); i >= 0; {
		// Count the backslashes before: an odd run means this one is escaped.
		n := 0
		for j := i - 1; j >= 0 && b[j] == '\\'; j-- {
			n++
		}
		if n%2 == 0 && i+6 <= len(b) {
			h := b[i+2 : i+6]
			if string(h) == "0000" || (h[0] == 'd' || h[0] == 'D') && (h[1] >= '8' && h[1] <= '9' || h[1] >= 'a' && h[1] <= 'f' || h[1] >= 'A' && h[1] <= 'F') {
				return true
			}
		}
		k := bytes.Index(b[i+2:], []byte(`\u`))
		if k < 0 {
			break
		}
		i += 2 + k
	}
	return false
}
