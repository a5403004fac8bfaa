package event

import (
	"bytes"
	"encoding/json"
	"math"
	"math/big"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

// refDecode is the reference for Decode, written from the contract in the
// package doc with encoding/json, regexp and math/big instead of the hand
// scanner, the hand date parser and the decimal arithmetic. FuzzDecode
// requires both to agree on every input.
func refDecode(data []byte, now time.Time, lim Limits) (Event, Reason, string) {
	maxBytes := lim.MaxBytes
	if maxBytes <= 0 {
		maxBytes = 64 << 10
	}
	if len(data) > maxBytes {
		return Event{}, ReasonTooLarge, ""
	}
	if !json.Valid(data) {
		return Event{}, ReasonInvalidJSON, ""
	}
	if bytes.TrimLeft(data, " \t\r\n")[0] != '{' {
		return Event{}, ReasonInvalidJSON, ""
	}

	// Walk the top-level members; the last occurrence of a key wins.
	type span struct {
		raw        json.RawMessage
		start, end int64 // data[start:end] is ':' + blanks + the value
	}
	last := map[string]span{}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if _, err := dec.Token(); err != nil {
		panic(err)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			panic(err)
		}
		start := dec.InputOffset()
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			panic(err)
		}
		last[tok.(string)] = span{raw, start, dec.InputOffset()}
	}

	// UTF-8: all of the input except a string service value must be valid.
	svc, hasSvc := last["service"]
	if hasSvc && svc.raw[0] == '"' {
		if !utf8.Valid(data[:svc.start]) || !utf8.Valid(data[svc.end:]) {
			return Event{}, ReasonInvalidJSON, ""
		}
	} else if !utf8.Valid(data) {
		return Event{}, ReasonInvalidJSON, ""
	}

	get := func(k string) (json.RawMessage, bool) {
		s, ok := last[k]
		if !ok || string(s.raw) == "null" {
			return nil, false
		}
		return s.raw, true
	}
	str := func(raw json.RawMessage) string {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			panic(err)
		}
		return s
	}
	isNum := func(raw json.RawMessage) bool { return raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9' }

	var ev Event
	raw, ok := get("timestamp")
	switch {
	case !ok:
		return Event{}, ReasonMissingField, "timestamp"
	case raw[0] == '"':
		if ev.Time, ok = refParseTime(str(raw), lim.Location); !ok {
			return Event{}, ReasonBadTimestamp, "timestamp"
		}
	case isNum(raw):
		if ev.Time, ok = refEpochMillis(string(raw)); !ok {
			return Event{}, ReasonBadTimestamp, "timestamp"
		}
	default:
		return Event{}, ReasonBadType, "timestamp"
	}

	raw, ok = get("service")
	switch {
	case !ok:
		return Event{}, ReasonMissingField, "service"
	case raw[0] != '"':
		return Event{}, ReasonBadType, "service"
	case !utf8.Valid(raw):
		return Event{}, ReasonBadService, "service"
	}
	ev.Service = str(raw)
	if !refValidService(ev.Service) {
		return Event{}, ReasonBadService, "service"
	}

	raw, ok = get("level")
	switch {
	case !ok:
		return Event{}, ReasonMissingField, "level"
	case raw[0] != '"':
		return Event{}, ReasonBadType, "level"
	}
	if ev.Level, ok = refLevels[refASCIILower(str(raw))]; !ok {
		return Event{}, ReasonBadLevel, "level"
	}

	raw, ok = get("latency_ms")
	switch {
	case !ok:
		return Event{}, ReasonMissingField, "latency_ms"
	case !isNum(raw):
		return Event{}, ReasonBadType, "latency_ms"
	}
	ev.LatencyMS = refParseFloat(string(raw))
	if math.IsInf(ev.LatencyMS, 0) || ev.LatencyMS < 0 || ev.LatencyMS > 1e15 {
		return Event{}, ReasonOutOfRange, "latency_ms"
	}

	if raw, ok = get("risk_score"); ok {
		if !isNum(raw) {
			return Event{}, ReasonBadType, "risk_score"
		}
		ev.Risk = refParseFloat(string(raw))
		if math.IsInf(ev.Risk, 0) || ev.Risk < 0 || ev.Risk > 1 {
			return Event{}, ReasonOutOfRange, "risk_score"
		}
		ev.HasRisk = true
	}

	skew := lim.MaxFutureSkew
	if skew <= 0 {
		skew = 5 * time.Minute
	}
	if ev.Time.Sub(now) > skew {
		return Event{}, ReasonFutureTimestamp, "timestamp"
	}
	if lim.Horizon > 0 && now.Sub(ev.Time) > lim.Horizon {
		return Event{}, ReasonTooLate, "timestamp"
	}
	return ev, "", ""
}

// refParseFloat rounds a JSON number literal to the nearest float64 with
// exact rational arithmetic. (strconv.ParseFloat is wrong on literals with
// more than 800 digits before the decimal point, see TestParseFloat.)
func refParseFloat(lit string) float64 {
	mant, exp := lit, 0
	if i := strings.IndexAny(lit, "eE"); i >= 0 {
		mant = lit[:i]
		exp, _ = strconv.Atoi(lit[i+1:]) // saturates on overflow
	}
	sign := 1.0
	if strings.HasPrefix(lit, "-") {
		sign = -1
	}
	r, ok := new(big.Rat).SetString(mant)
	if !ok {
		panic("bad mantissa " + mant)
	}
	switch {
	case r.Sign() == 0:
		return math.Copysign(0, sign)
	case exp > len(lit)+400: // |mant| ≥ 10^-len(lit)
		return math.Inf(int(sign))
	case exp < -(len(lit) + 400): // |mant| < 10^len(lit)
		return math.Copysign(0, sign)
	}
	p := new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(abs(exp))), nil))
	if exp >= 0 {
		r.Mul(r, p)
	} else {
		r.Quo(r, p)
	}
	f, _ := r.Float64()
	return math.Copysign(f, sign)
}

// refValidService is the service-name rule of ValidService written with the
// unicode package: 1–128 bytes of UTF-8, no Cc (C0, DEL, C1) or Zl/Zp rune,
// no whitespace at either end.
func refValidService(s string) bool {
	return s != "" && len(s) <= 128 && utf8.ValidString(s) &&
		!strings.ContainsFunc(s, func(r rune) bool { return unicode.IsControl(r) || unicode.In(r, unicode.Zl, unicode.Zp) }) &&
		strings.TrimSpace(s) == s
}

var refLevels = map[string]Level{
	"debug": LevelDebug, "info": LevelInfo, "notice": LevelNotice,
	"warning": LevelWarning, "warn": LevelWarning, "error": LevelError,
	"critical": LevelCritical, "fatal": LevelFatal,
}

func refASCIILower(s string) string {
	return strings.Map(func(r rune) rune {
		if 'A' <= r && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}, s)
}

var refTimeRE = regexp.MustCompile(
	`^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))?$`)

func refParseTime(s string, loc *time.Location) (time.Time, bool) {
	m := refTimeRE.FindStringSubmatch(s)
	if m == nil {
		return time.Time{}, false
	}
	n := func(i int) int { v, _ := strconv.Atoi(m[i]); return v }
	frac := (m[7] + "000000000")[:9]
	nsec, _ := strconv.Atoi(frac)
	t := time.Date(n(1), time.Month(n(2)), n(3), n(4), n(5), n(6), nsec, time.UTC)
	// time.Date normalises (Feb 30 → Mar 2, 24:00 → next day): reject that.
	if t.Year() != n(1) || int(t.Month()) != n(2) || t.Day() != n(3) ||
		t.Hour() != n(4) || t.Minute() != n(5) || t.Second() != n(6) {
		return time.Time{}, false
	}
	if m[9] != "" {
		oh, om := n(10), n(11)
		if oh > 23 || om > 59 {
			return time.Time{}, false
		}
		off := time.Duration(oh)*time.Hour + time.Duration(om)*time.Minute
		if m[9] == "+" {
			off = -off
		}
		t = t.Add(off)
	}
	if m[8] == "" && m[9] == "" && loc != nil {
		t = time.Unix(refNaive(t.Unix(), loc), int64(t.Nanosecond())).UTC()
	}
	return t, true
}

// refNaive reads the wall time wall (Unix seconds of that wall clock) in
// loc from the zone periods around it (time.ZoneBounds): the earliest
// instant whose period's offset gives that wall time; in a gap, the wall
// time read with the offset of the last period that ended before it.
func refNaive(wall int64, loc *time.Location) int64 {
	type period struct{ start, end, off int64 } // [start, end) in Unix seconds
	var ps []period
	for p := time.Unix(wall-3*86400, 0).In(loc); p.Unix() <= wall+3*86400; {
		start, end := p.ZoneBounds()
		if !end.IsZero() && !end.After(p) {
			// ZoneBounds reports a pseudo-boundary at New Year where the
			// zone's rule string takes over (Go 1.26); step over it.
			p = p.Add(time.Second)
			continue
		}
		_, off := p.Zone()
		pr := period{math.MinInt64, math.MaxInt64, int64(off)}
		if !start.IsZero() {
			pr.start = start.Unix()
		}
		if !end.IsZero() {
			pr.end = end.Unix()
		}
		ps = append(ps, pr)
		if end.IsZero() {
			break
		}
		p = end.In(loc)
	}
	best, found := int64(0), false
	for _, p := range ps {
		if t := wall - p.off; p.start <= t && t < p.end && (!found || t < best) {
			best, found = t, true
		}
	}
	if found {
		return best
	}
	before := ps[0].off
	for _, p := range ps {
		if p.end != math.MaxInt64 && p.end+p.off <= wall {
			before = p.off
		}
	}
	return wall - before
}

// refEpochMillis converts with exact rational arithmetic and floors to the
// nanosecond; the value must lie in [0000-01-01, 10000-01-01) UTC.
func refEpochMillis(lit string) (time.Time, bool) {
	mant, exp := lit, 0
	if i := strings.IndexAny(lit, "eE"); i >= 0 {
		mant = lit[:i]
		exp, _ = strconv.Atoi(lit[i+1:]) // saturates on overflow
	}
	r, ok := new(big.Rat).SetString(mant)
	if !ok {
		panic("bad mantissa " + mant)
	}
	if r.Sign() == 0 {
		return time.Unix(0, 0).UTC(), true
	}
	// Keep the powers of ten small: |mant| ≥ 10^-len(lit), so a larger
	// exponent is out of range; |mant| < 10^len(lit), so a smaller one is
	// below a nanosecond.
	switch {
	case exp > len(lit)+20:
		return time.Time{}, false
	case exp < -(len(lit) + 20):
		if r.Sign() > 0 {
			return time.Unix(0, 0).UTC(), true
		}
		return time.Unix(0, -1).UTC(), true
	}
	p := new(big.Rat).SetInt(new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(abs(exp))), nil))
	if exp >= 0 {
		r.Mul(r, p)
	} else {
		r.Quo(r, p)
	}
	if r.Cmp(new(big.Rat).SetInt64(minEpochMSRef)) < 0 || r.Cmp(new(big.Rat).SetInt64(maxEpochMSRef+1)) >= 0 {
		return time.Time{}, false
	}
	ns := r.Mul(r, new(big.Rat).SetInt64(1e6))
	q := new(big.Int).Div(ns.Num(), ns.Denom()) // Euclidean: floor, as Denom > 0
	sec, nsec := new(big.Int).DivMod(q, big.NewInt(1e9), new(big.Int))
	return time.Unix(sec.Int64(), nsec.Int64()).UTC(), true
}

const (
	minEpochMSRef = -62167219200000 // time.Date(0, 1, 1, …).UnixMilli()
	maxEpochMSRef = 253402300799999 // time.Date(9999, 12, 31, 23, 59, 59, 999e6, …).UnixMilli()
)

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

func TestReferenceConstants(t *testing.T) {
	if got := time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli(); got != minEpochMS || minEpochMSRef != minEpochMS {
		t.Errorf("min epoch ms = %d", got)
	}
	if got := time.Date(9999, 12, 31, 23, 59, 59, 999e6, time.UTC).UnixMilli(); got != maxEpochMS || maxEpochMSRef != maxEpochMS {
		t.Errorf("max epoch ms = %d", got)
	}
}

// Fixed clock and limits for the differential tests.
var (
	fuzzNow = time.Date(2026, 11, 29, 1, 0, 0, 0, time.UTC)
	fuzzLim = Limits{MaxBytes: 4096, MaxFutureSkew: 5 * time.Minute, Horizon: 7 * 24 * time.Hour}
	// fuzzLimLA reads naive timestamps in a zone west of UTC with DST.
	fuzzLimLA = func() Limits {
		l := fuzzLim
		var err error
		if l.Location, err = time.LoadLocation("America/Los_Angeles"); err != nil {
			panic(err)
		}
		return l
	}()
)

// checkAgainstReference fails t unless Decode and refDecode agree on data.
func checkAgainstReference(t *testing.T, data []byte, now time.Time, lim Limits) {
	t.Helper()
	got, err := Decode(data, now, lim)
	want, wantReason, wantField := refDecode(data, now, lim)
	if err != nil {
		de, ok := err.(*DecodeError)
		if !ok {
			t.Fatalf("Decode(%q): error %T %v is not *DecodeError", data, err, err)
		}
		if de.Reason != wantReason || de.Field != wantField {
			t.Fatalf("Decode(%q) = %v; reference says %s %q", data, err, wantReason, wantField)
		}
		if msg := err.Error(); strings.ContainsAny(msg, "\r\n\x00") || !utf8.ValidString(msg) {
			t.Fatalf("Decode(%q): error message not header-safe: %q", data, msg)
		}
		return
	}
	if wantReason != "" {
		t.Fatalf("Decode(%q) = %+v; reference says %s %q", data, got, wantReason, wantField)
	}
	if !got.Time.Equal(want.Time) || got.Time.Location() != time.UTC ||
		got.Service != want.Service || got.Level != want.Level ||
		got.LatencyMS != want.LatencyMS || got.HasRisk != want.HasRisk || got.Risk != want.Risk {
		t.Fatalf("Decode(%q)\n got %+v\nwant %+v", data, got, want)
	}
	if math.Signbit(got.LatencyMS) || math.Signbit(got.Risk) {
		t.Fatalf("Decode(%q): negative zero in %+v", data, got)
	}
}

func FuzzDecode(f *testing.F) {
	for _, c := range decodeCases {
		f.Add([]byte(c.in))
	}
	for _, s := range syntaxCases {
		f.Add([]byte(s.in))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkAgainstReference(t, data, fuzzNow, fuzzLim)
	})
}

// FuzzDecodeMembers fuzzes the member values of a well-formed object, which
// reaches the field rules far more often than FuzzDecode's raw bytes. Each
// argument is raw JSON text for one member's value; risk and extra may be
// empty (absent).
func FuzzDecodeMembers(f *testing.F) {
	for _, s := range [][6]string{
		{`"2026-11-29T00:59:00Z"`, `"checkout"`, `"info"`, `50`, `0.1`, `"x":1`},
		{`"2026-11-29T00:59:00.123456"`, `"caf\u00e9"`, `"WARN"`, `0`, `1`, ``},
		{`"2026-11-29 00:59:00+01:00"`, `"a.b"`, `"fatal"`, `1e3`, `null`, `"meta":{"a":[1,{"b":"c"}]}`},
		{`1795913940000`, `"svc"`, `"critical"`, `-0.0`, `0.99999`, `"service":"other"`},
		{`1795913940000.000001`, `"s"`, `"debug"`, `12.5E-1`, ``, `"level":"x"`},
		{`-62167219200000`, `""`, `"notice"`, `1`, `1.5`, ``},
		{`"2026-11-29T01:05:00Z"`, `"\ud800"`, `"error"`, `"1"`, `-0`, ``},
		{`"2026-11-28T17:00:00"`, `" x"`, `"info"`, `1e15`, ``, ``},
		{`"2026-11-01T01:30:00"`, `"a\u0085"`, `"info"`, `1000000000000000.125`, ``, ``},
		{`"2026-11-22T01:00:00Z"`, `"x\u0000"`, `"Info"`, `null`, `[]`, `"":""`},
		{`"2026-02-29T00:00:00Z"`, `1`, `3`, `{}`, `true`, `"k":"\ud83d\ude00"`},
		{`2.5e14`, `"` + strings.Repeat("x", 128) + `"`, `"warning"`, `1e400`, `1e-400`, ``},
	} {
		f.Add(s[0], s[1], s[2], s[3], s[4], s[5])
	}
	f.Fuzz(func(t *testing.T, ts, svc, lvl, lat, risk, extra string) {
		var b strings.Builder
		b.WriteString(`{"timestamp":` + ts + `,"service":` + svc + `,"level":` + lvl + `,"latency_ms":` + lat)
		if risk != "" {
			b.WriteString(`,"risk_score":` + risk)
		}
		if extra != "" {
			b.WriteString("," + extra)
		}
		b.WriteString("}")
		checkAgainstReference(t, []byte(b.String()), fuzzNow, fuzzLim)
		checkAgainstReference(t, []byte(b.String()), fuzzNow, fuzzLimLA)
	})
}
