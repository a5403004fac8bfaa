package event

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// Defaults and fixed limits of the input contract (docs/ARCHITECTURE.md §2.1).
const (
	DefaultMaxBytes      = 64 << 10        // MAX_EVENT_BYTES
	DefaultMaxFutureSkew = 5 * time.Minute // MAX_FUTURE_SKEW
	MaxServiceBytes      = 128             // longest service name, in bytes
	// MaxLatencyMS is the largest latency_ms accepted (10^15 ms, about
	// 31 700 years); larger values are out_of_range. It is also the
	// aggregation kernel's clamp (agg.MaxLatencyMS, which keeps Σx² finite),
	// so no accepted event is ever altered by aggregation.
	MaxLatencyMS = 1e15
)

// Limits bounds what Decode accepts. The zero value means the defaults, with
// no horizon.
type Limits struct {
	// MaxBytes is the longest accepted message; ≤ 0 means DefaultMaxBytes.
	MaxBytes int
	// MaxFutureSkew is how far past now an event time may be;
	// ≤ 0 means DefaultMaxFutureSkew.
	MaxFutureSkew time.Duration
	// Horizon is the retention horizon: events older than now−Horizon are
	// too_late. ≤ 0 disables the check.
	Horizon time.Duration
	// Location is the zone of timestamps written without an offset
	// (EVENT_TIMEZONE); nil means UTC. Every role that decodes events must
	// use the same zone, or the raw rows and the aggregates disagree.
	Location *time.Location
}

// Decode validates one raw input message and returns its event, with Time in
// UTC. now is the wall-clock time the skew and horizon checks refer to. On
// failure the error is a *DecodeError naming the dead-letter reason and the
// field; the checks and their order are described in the package doc.
//
// Decode does not retain data and is safe for concurrent use. On success it
// allocates once, for the service string (more only for long escaped
// timestamps and numbers beyond 64 bytes).
func Decode(data []byte, now time.Time, lim Limits) (Event, error) {
	maxBytes := lim.MaxBytes
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	if len(data) > maxBytes {
		return Event{}, &DecodeError{Reason: ReasonTooLarge,
			Msg: fmt.Sprintf("message is %d bytes, limit is %d", len(data), maxBytes)}
	}
	var ms [numFields]member
	svcBad, err := scanObject(data, &ms)
	if err != nil {
		return Event{}, err
	}
	var ev Event
	if ev.Time, err = decodeTime(data, ms[fieldTimestamp], lim.Location); err != nil {
		return Event{}, err
	}
	if ev.Service, err = decodeService(data, ms[fieldService], svcBad); err != nil {
		return Event{}, err
	}
	if ev.Level, err = decodeLevel(data, ms[fieldLevel]); err != nil {
		return Event{}, err
	}
	if ev.LatencyMS, _, err = decodeNumber(data, ms[fieldLatency], fieldLatency); err != nil {
		return Event{}, err
	}
	if ev.LatencyMS < 0 {
		return Event{}, fieldErr(ReasonOutOfRange, fieldLatency, "negative: "+fmtFloat(ev.LatencyMS))
	}
	if ev.LatencyMS > MaxLatencyMS {
		return Event{}, fieldErr(ReasonOutOfRange, fieldLatency,
			fmtFloat(ev.LatencyMS)+" exceeds the maximum "+fmtFloat(MaxLatencyMS))
	}
	if ev.Risk, ev.HasRisk, err = decodeNumber(data, ms[fieldRisk], fieldRisk); err != nil {
		return Event{}, err
	}
	if ev.Risk < 0 || ev.Risk > 1 {
		return Event{}, fieldErr(ReasonOutOfRange, fieldRisk, "outside [0, 1]: "+fmtFloat(ev.Risk))
	}
	skew := lim.MaxFutureSkew
	if skew <= 0 {
		skew = DefaultMaxFutureSkew
	}
	if ev.Time.After(now.Add(skew)) {
		return Event{}, fieldErr(ReasonFutureTimestamp, fieldTimestamp, fmt.Sprintf(
			"%s is %s ahead of now, more than the allowed %s",
			ev.Time.Format(time.RFC3339Nano), ev.Time.Sub(now), skew))
	}
	if lim.Horizon > 0 && ev.Time.Before(now.Add(-lim.Horizon)) {
		return Event{}, fieldErr(ReasonTooLate, fieldTimestamp, fmt.Sprintf(
			"%s is older than the %s horizon", ev.Time.Format(time.RFC3339Nano), lim.Horizon))
	}
	return ev, nil
}

func fieldErr(r Reason, field int, msg string) *DecodeError {
	return &DecodeError{Reason: r, Field: fieldNames[field], Msg: msg}
}

// pow10 holds the powers of ten that are exact in a float64.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// parseFloat parses a JSON number literal (grammar already checked) to the
// nearest float64, ±Inf if it overflows. Plain decimals with at most 15
// digits take Clinger's fast path: the digits as an integer and the power of
// ten are both exact in a float64, so one correctly rounded division gives
// the correctly rounded result. Long literals are shortened first (see
// parseLongFloat); everything else goes to strconv.
func parseFloat(lit []byte) float64 {
	if len(lit) > 64 {
		return parseLongFloat(lit)
	}
	i, neg := 0, lit[0] == '-'
	if neg {
		i++
	}
	var mant uint64
	nd, frac := 0, 0
	for ; i < len(lit) && isDigit(lit[i]); i++ {
		mant = mant*10 + uint64(lit[i]-'0')
		nd++
	}
	if i < len(lit) && lit[i] == '.' {
		for i++; i < len(lit) && isDigit(lit[i]); i++ {
			mant = mant*10 + uint64(lit[i]-'0')
			nd++
			frac++
		}
	}
	if i == len(lit) && nd <= 15 {
		f := float64(mant) / pow10[frac]
		if neg {
			f = -f
		}
		return f
	}
	f, _ := strconv.ParseFloat(string(lit), 64) // only ErrRange is possible
	return f
}

// parseLongFloat parses a long number literal in time linear in its length
// (strconv.ParseFloat takes milliseconds on 60 KB of digits, which a
// hostile producer could use to slow the pipeline down, and misplaces the
// decimal point when more than 800 digits precede it: "1" + 800 zeros +
// "e-800" gives 0.1). It keeps 800 significant digits plus a sticky 1 if
// anything nonzero follows, written as 0.ddd…e±x: no rounding boundary of a
// float64 (≤ 767 significant digits) lies strictly between the literal and
// the shortened value, so both round alike.
func parseLongFloat(lit []byte) float64 {
	const keep = 800
	var n decimal
	n.parse(lit)
	sign := 1.0
	if n.neg {
		sign = -1
	}
	first := n.firstNonZero()
	e := n.point - first // value = 0.D × 10^e, D's first digit nonzero
	switch {
	case first < 0 || e < -330: // below half the smallest denormal
		return sign * 0
	case e > 309: // at least 1e309
		return math.Inf(int(sign))
	}
	var buf [2 + keep + 1 + 8]byte
	b := append(buf[:0], '0', '.')
	for k := first; k < first+keep && k < n.numDig; k++ {
		b = append(b, '0'+n.digit(k))
	}
	if n.anyNonZeroFrom(first + keep) {
		b = append(b, '1')
	}
	b = append(b, 'e')
	b = strconv.AppendInt(b, int64(e), 10)
	f, _ := strconv.ParseFloat(string(b), 64)
	return sign * f
}

func fmtFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// jsonType names the JSON type of a non-null value starting with byte c.
func jsonType(c byte) string {
	switch c {
	case '"':
		return "string"
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "boolean"
	}
	return "number"
}

// present reports whether a member occurred with a non-null value.
func (m member) present(d []byte) bool { return m.set && d[m.start] != 'n' }

func missing(field int) *DecodeError {
	return fieldErr(ReasonMissingField, field, "required")
}

func badType(d []byte, m member, field int, want string) *DecodeError {
	return fieldErr(ReasonBadType, field, "want "+want+", got "+jsonType(d[m.start]))
}

// contents returns the raw bytes between a string value's quotes.
func (m member) contents(d []byte) []byte { return d[m.start+1 : m.end-1] }

func decodeTime(d []byte, m member, loc *time.Location) (time.Time, *DecodeError) {
	if !m.present(d) {
		return time.Time{}, missing(fieldTimestamp)
	}
	switch c := d[m.start]; {
	case c == '"':
		raw := m.contents(d)
		if m.esc {
			var buf [64]byte
			raw = unescape(buf[:0], raw)
		}
		t, ok := parseTimestamp(raw, loc)
		if !ok {
			return time.Time{}, fieldErr(ReasonBadTimestamp, fieldTimestamp,
				"not an RFC 3339 or ISO 8601 date-time: "+quoteShort(raw))
		}
		return t, nil
	case c == '-' || isDigit(c):
		t, ok := epochMillis(d[m.start:m.end])
		if !ok {
			return time.Time{}, fieldErr(ReasonBadTimestamp, fieldTimestamp,
				"epoch milliseconds outside years 0000-9999: "+quoteShort(d[m.start:m.end]))
		}
		return t, nil
	}
	return time.Time{}, badType(d, m, fieldTimestamp, "string or number")
}

func decodeService(d []byte, m member, badUTF8 bool) (string, *DecodeError) {
	if !m.present(d) {
		return "", missing(fieldService)
	}
	if d[m.start] != '"' {
		return "", badType(d, m, fieldService, "string")
	}
	if badUTF8 {
		return "", fieldErr(ReasonBadService, fieldService, "not valid UTF-8")
	}
	raw := m.contents(d)
	if m.esc {
		var buf [MaxServiceBytes]byte
		raw = unescape(buf[:0], raw)
	}
	switch msg := serviceProblem(raw); msg {
	case "":
	case svcEmpty:
		return "", fieldErr(ReasonBadService, fieldService, msg)
	case svcTooLong:
		return "", fieldErr(ReasonBadService, fieldService,
			fmt.Sprintf("%d bytes, longer than %d", len(raw), MaxServiceBytes))
	default:
		return "", fieldErr(ReasonBadService, fieldService, msg+": "+quoteShort(raw))
	}
	return string(raw), nil
}

func decodeLevel(d []byte, m member) (Level, *DecodeError) {
	if !m.present(d) {
		return 0, missing(fieldLevel)
	}
	if d[m.start] != '"' {
		return 0, badType(d, m, fieldLevel, "string")
	}
	raw := m.contents(d)
	if m.esc {
		// Level names have at most 8 bytes, each escape yields at least one.
		const longest = 6 * len("critical")
		if len(raw) > longest {
			return 0, fieldErr(ReasonBadLevel, fieldLevel, "unknown level: "+quoteShort(raw))
		}
		var buf [longest]byte
		raw = unescape(buf[:0], raw)
	}
	l, ok := parseLevel(raw)
	if !ok {
		return 0, fieldErr(ReasonBadLevel, fieldLevel, "unknown level: "+quoteShort(raw))
	}
	return l, nil
}

// decodeNumber decodes a finite number; absent or null gives ok == false,
// which is missing_field for latency_ms.
func decodeNumber(d []byte, m member, field int) (v float64, ok bool, err *DecodeError) {
	if !m.present(d) {
		if field == fieldRisk {
			return 0, false, nil
		}
		return 0, false, missing(field)
	}
	if c := d[m.start]; c != '-' && !isDigit(c) {
		return 0, false, badType(d, m, field, "number")
	}
	lit := d[m.start:m.end]
	v = parseFloat(lit)
	if math.IsInf(v, 0) {
		return 0, false, fieldErr(ReasonOutOfRange, field, "not finite: "+quoteShort(lit))
	}
	if v == 0 {
		v = 0 // no -0
	}
	return v, true, nil
}
