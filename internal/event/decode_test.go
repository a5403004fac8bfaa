package event

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ev builds an input object from a valid base event (timestamp one minute
// before fuzzNow, service checkout, level info, latency 50). Each override
// `"key":value` replaces the base member with that key or is appended;
// "-key" removes the base member.
func ev(over ...string) string {
	members := []string{
		`"timestamp":"2026-11-29T00:59:00Z"`,
		`"service":"checkout"`,
		`"level":"info"`,
		`"latency_ms":50`,
	}
	for _, o := range over {
		if key, ok := strings.CutPrefix(o, "-"); ok {
			for i, m := range members {
				if strings.HasPrefix(m, `"`+key+`":`) {
					members = append(members[:i], members[i+1:]...)
					break
				}
			}
			continue
		}
		prefix := o[:strings.Index(o, ":")+1]
		replaced := false
		for i, m := range members {
			if strings.HasPrefix(m, prefix) {
				members[i], replaced = o, true
			}
		}
		if !replaced {
			members = append(members, o)
		}
	}
	return "{" + strings.Join(members, ",") + "}"
}

var baseTime = time.Date(2026, 11, 29, 0, 59, 0, 0, time.UTC)

// want returns the base event with changes applied.
func want(change func(e *Event)) *Event {
	e := &Event{Time: baseTime, Service: "checkout", Level: LevelInfo, LatencyMS: 50}
	if change != nil {
		change(e)
	}
	return e
}

func at(t time.Time) *Event { return want(func(e *Event) { e.Time = t }) }

func utc(y int, mo time.Month, d, h, mi, s, ns int) time.Time {
	return time.Date(y, mo, d, h, mi, s, ns, time.UTC)
}

type decodeCase struct {
	name   string
	in     string
	want   *Event // accepted with this event when reason == ""
	reason Reason
	field  string
}

var decodeCases = []decodeCase{
	// The seed's example event.
	{"seed example", `{"timestamp": "2026-11-29T01:00:00.123456", "service": "checkout",
 "level": "info", "latency_ms": 50.0, "risk_score": 0.1}`,
		want(func(e *Event) {
			e.Time = utc(2026, 11, 29, 1, 0, 0, 123456000)
			e.Risk, e.HasRisk = 0.1, true
		}), "", ""},

	// Timestamp forms.
	{"rfc3339 Z", ev(`"timestamp":"2026-11-29T00:59:00Z"`), at(baseTime), "", ""},
	{"rfc3339 lower t z", ev(`"timestamp":"2026-11-29t00:59:00z"`), at(baseTime), "", ""},
	{"rfc3339 millis", ev(`"timestamp":"2026-11-29T00:59:00.123Z"`), at(utc(2026, 11, 29, 0, 59, 0, 123e6)), "", ""},
	{"rfc3339 one digit fraction", ev(`"timestamp":"2026-11-29T00:59:00.5Z"`), at(utc(2026, 11, 29, 0, 59, 0, 5e8)), "", ""},
	{"rfc3339 nanos", ev(`"timestamp":"2026-11-29T00:59:00.123456789Z"`), at(utc(2026, 11, 29, 0, 59, 0, 123456789)), "", ""},
	{"rfc3339 beyond nanos truncated", ev(`"timestamp":"2026-11-29T00:59:00.1234567899999999999999Z"`), at(utc(2026, 11, 29, 0, 59, 0, 123456789)), "", ""},
	{"rfc3339 +05:30", ev(`"timestamp":"2026-11-29T06:29:00+05:30"`), at(baseTime), "", ""},
	{"rfc3339 -05:00", ev(`"timestamp":"2026-11-28T19:59:00.25-05:00"`), at(utc(2026, 11, 29, 0, 59, 0, 25e7)), "", ""},
	{"rfc3339 +00:00", ev(`"timestamp":"2026-11-29T00:59:00+00:00"`), at(baseTime), "", ""},
	{"rfc3339 -00:00", ev(`"timestamp":"2026-11-29T00:59:00-00:00"`), at(baseTime), "", ""},
	{"rfc3339 +23:59", ev(`"timestamp":"2026-11-30T00:58:00+23:59"`), at(baseTime), "", ""},
	{"rfc3339 space and zone", ev(`"timestamp":"2026-11-29 00:59:00.5+00:00"`), at(utc(2026, 11, 29, 0, 59, 0, 5e8)), "", ""},
	{"python isoformat micros", ev(`"timestamp":"2026-11-29T00:59:00.123456"`), at(utc(2026, 11, 29, 0, 59, 0, 123456000)), "", ""},
	{"python isoformat no fraction", ev(`"timestamp":"2026-11-29T00:59:00"`), at(baseTime), "", ""},
	{"python str space micros", ev(`"timestamp":"2026-11-29 00:59:00.000001"`), at(utc(2026, 11, 29, 0, 59, 0, 1000)), "", ""},
	{"python str space", ev(`"timestamp":"2026-11-29 00:59:00"`), at(baseTime), "", ""},
	{"escaped timestamp", ev(`"timestamp":"2026-11-29T00:59:00\u005A"`), at(baseTime), "", ""},
	{"escaped timestamp digits", ev(`"timestamp":"\u0032026-11-29T00:59:00.1\u0032"`), at(utc(2026, 11, 29, 0, 59, 0, 12e7)), "", ""},
	{"epoch ms", ev(`"timestamp":1795913940000`), at(baseTime), "", ""},
	{"epoch ms fraction", ev(`"timestamp":1795913940000.5`), at(utc(2026, 11, 29, 0, 59, 0, 500000)), "", ""},
	{"epoch ms sub-ns floored", ev(`"timestamp":1795913940000.0000019`), at(utc(2026, 11, 29, 0, 59, 0, 1)), "", ""},
	{"epoch ms exponent", ev(`"timestamp":1.79591394e12`), at(baseTime), "", ""},
	{"epoch ms exponent fraction", ev(`"timestamp":17959139400001E-1`), at(utc(2026, 11, 29, 0, 59, 0, 100000)), "", ""},
	{"epoch ms exponent plus", ev(`"timestamp":0.179591394e+13`), at(baseTime), "", ""},

	{"timestamp missing", ev(`-timestamp`), nil, ReasonMissingField, "timestamp"},
	{"timestamp null", ev(`"timestamp":null`), nil, ReasonMissingField, "timestamp"},
	{"timestamp bool", ev(`"timestamp":true`), nil, ReasonBadType, "timestamp"},
	{"timestamp false", ev(`"timestamp":false`), nil, ReasonBadType, "timestamp"},
	{"timestamp object", ev(`"timestamp":{"s":1}`), nil, ReasonBadType, "timestamp"},
	{"timestamp array", ev(`"timestamp":[1795913940000]`), nil, ReasonBadType, "timestamp"},
	{"timestamp numeric string", ev(`"timestamp":"1795913940000"`), nil, ReasonBadTimestamp, "timestamp"},
	{"timestamp empty", ev(`"timestamp":""`), nil, ReasonBadTimestamp, "timestamp"},
	{"timestamp date only", ev(`"timestamp":"2026-11-29"`), nil, ReasonBadTimestamp, "timestamp"},
	{"timestamp no seconds", ev(`"timestamp":"2026-11-29T00:59Z"`), nil, ReasonBadTimestamp, "timestamp"},
	{"timestamp empty fraction", ev(`"timestamp":"2026-11-29T00:59:00.Z"`), nil, ReasonBadTimestamp, "timestamp"},
	{"timestamp comma fraction", ev(`"timestamp":"2026-11-29T00:59:00,5Z"`), nil, ReasonBadTimestamp, "timestamp"},
	{"timestamp slash date", ev(`"timestamp":"2026/11/29T00:59:00Z"`), nil, ReasonBadTimestamp, "timestamp"},
	{"timestamp bad separator", ev(`"timestamp":"2026-11-29_00:59:00Z"`), nil, ReasonBadTimestamp, "timestamp"},
	{"timestamp leading space", ev(`"timestamp":" 2026-11-29T00:59:00Z"`), nil, ReasonBadTimestamp, "timestamp"},
	{"timestamp trailing space", ev(`"timestamp":"2026-11-29T00:59:00Z "`), nil, ReasonBadTimestamp, "timestamp"},
	{"timestamp space before zone", ev(`"timestamp":"2026-11-29T00:59:00 Z"`), nil, ReasonBadTimestamp, "timestamp"},
	{"timestamp double zone", ev(`"timestamp":"2026-11-29T00:59:00ZZ"`), nil, ReasonBadTimestamp, "timestamp"},
	{"timestamp offset no colon", ev(`"timestamp":"2026-11-29T00:59:00+0000"`), nil, ReasonBadTimestamp, "timestamp"},
	{"timestamp offset hours only", ev(`"timestamp":"2026-11-29T00:59:00+00"`), nil, ReasonBadTimestamp, "timestamp"},
	{"timestamp offset hour 24", ev(`"timestamp":"2026-11-29T00:59:00+24:00"`), nil, ReasonBadTimestamp, "timestamp"},
	{"timestamp offset minute 60", ev(`"timestamp":"2026-11-29T00:59:00+05:60"`), nil, ReasonBadTimestamp, "timestamp"},
	{"timestamp offset letters", ev(`"timestamp":"2026-11-29T00:59:00+0a:00"`), nil, ReasonBadTimestamp, "timestamp"},
	{"timestamp hour 24", ev(`"timestamp":"2026-11-29T24:00:00Z"`), nil, ReasonBadTimestamp, "timestamp"},
	{"timestamp minute 60", ev(`"timestamp":"2026-11-29T00:60:00Z"`), nil, ReasonBadTimestamp, "timestamp"},
	{"timestamp leap second", ev(`"timestamp":"2026-11-29T00:59:60Z"`), nil, ReasonBadTimestamp, "timestamp"},
	{"timestamp month 13", ev(`"timestamp":"2026-13-29T00:59:00Z"`), nil, ReasonBadTimestamp, "timestamp"},
	{"timestamp month 0", ev(`"timestamp":"2026-00-29T00:59:00Z"`), nil, ReasonBadTimestamp, "timestamp"},
	{"timestamp day 0", ev(`"timestamp":"2026-11-00T00:59:00Z"`), nil, ReasonBadTimestamp, "timestamp"},
	{"timestamp Nov 31", ev(`"timestamp":"2026-11-31T00:59:00Z"`), nil, ReasonBadTimestamp, "timestamp"},
	{"timestamp signed year", ev(`"timestamp":"+2026-11-29T00:59:00Z"`), nil, ReasonBadTimestamp, "timestamp"},
	{"timestamp one-digit hour", ev(`"timestamp":"2026-11-29T1:59:00Z"`), nil, ReasonBadTimestamp, "timestamp"},
	{"timestamp full-width digit", ev(`"timestamp":"２026-11-29T00:59:00Z"`), nil, ReasonBadTimestamp, "timestamp"},
	{"timestamp escaped newline", ev(`"timestamp":"2026-11-29T00:59:00Z\n"`), nil, ReasonBadTimestamp, "timestamp"},
	{"timestamp epoch beyond 9999", ev(`"timestamp":253402300800000`), nil, ReasonBadTimestamp, "timestamp"},
	{"timestamp epoch huge", ev(`"timestamp":1e400`), nil, ReasonBadTimestamp, "timestamp"},
	{"timestamp epoch int64 overflow", ev(`"timestamp":99999999999999999999999`), nil, ReasonBadTimestamp, "timestamp"},
	{"timestamp epoch before 0000", ev(`"timestamp":-62167219200000.000001`), nil, ReasonBadTimestamp, "timestamp"},

	// Skew and horizon (now = 2026-11-29T01:00:00Z, skew 5m, horizon 7d).
	{"skew exactly at limit", ev(`"timestamp":"2026-11-29T01:05:00Z"`), at(utc(2026, 11, 29, 1, 5, 0, 0)), "", ""},
	{"skew 1ns over", ev(`"timestamp":"2026-11-29T01:05:00.000000001Z"`), nil, ReasonFutureTimestamp, "timestamp"},
	{"skew epoch 1ms over", ev(`"timestamp":1795914300001`), nil, ReasonFutureTimestamp, "timestamp"},
	{"far future", ev(`"timestamp":"9999-12-31T23:59:59.999999999Z"`), nil, ReasonFutureTimestamp, "timestamp"},
	{"horizon exactly at limit", ev(`"timestamp":"2026-11-22T01:00:00Z"`), at(utc(2026, 11, 22, 1, 0, 0, 0)), "", ""},
	{"horizon 1ns over", ev(`"timestamp":"2026-11-22T00:59:59.999999999Z"`), nil, ReasonTooLate, "timestamp"},
	{"horizon via offset", ev(`"timestamp":"2026-11-22T01:00:00+00:01"`), nil, ReasonTooLate, "timestamp"},
	{"epoch zero too late", ev(`"timestamp":0`), nil, ReasonTooLate, "timestamp"},
	{"year 0000 too late", ev(`"timestamp":"0000-01-01T00:00:00Z"`), nil, ReasonTooLate, "timestamp"},
	{"field errors before skew", ev(`"timestamp":"9999-01-01T00:00:00Z"`, `"level":"x"`), nil, ReasonBadLevel, "level"},

	// Service.
	{"service unicode", ev(`"service":"café-支付 ✓"`), want(func(e *Event) { e.Service = "café-支付 ✓" }), "", ""},
	{"service escaped", ev(`"service":"\u0063heck\"out\\/\/"`), want(func(e *Event) { e.Service = `check"out\//` }), "", ""},
	{"service surrogate pair", ev(`"service":"a\ud83d\ude00b"`), want(func(e *Event) { e.Service = "a😀b" }), "", ""},
	{"service lone surrogate", ev(`"service":"a\ud800b"`), want(func(e *Event) { e.Service = "a\uFFFDb" }), "", ""},
	{"service high then non-low", ev(`"service":"\ud800\u0041"`), want(func(e *Event) { e.Service = "\uFFFDA" }), "", ""},
	{"service lone low surrogate", ev(`"service":"\udc00x"`), want(func(e *Event) { e.Service = "\uFFFDx" }), "", ""},
	{"service 128 bytes", ev(`"service":"` + strings.Repeat("s", 128) + `"`), want(func(e *Event) { e.Service = strings.Repeat("s", 128) }), "", ""},
	{"service 128 bytes multibyte", ev(`"service":"` + strings.Repeat("é", 64) + `"`), want(func(e *Event) { e.Service = strings.Repeat("é", 64) }), "", ""},
	{"service 128 bytes escaped", ev(`"service":"` + strings.Repeat(`\u00e9`, 64) + `"`), want(func(e *Event) { e.Service = strings.Repeat("é", 64) }), "", ""},
	{"service 129 bytes", ev(`"service":"` + strings.Repeat("s", 129) + `"`), nil, ReasonBadService, "service"},
	{"service 129 bytes multibyte", ev(`"service":"s` + strings.Repeat("é", 64) + `"`), nil, ReasonBadService, "service"},
	{"service 129 bytes escaped", ev(`"service":"` + strings.Repeat(`\u0073`, 129) + `"`), nil, ReasonBadService, "service"},
	{"service empty", ev(`"service":""`), nil, ReasonBadService, "service"},
	{"service invalid UTF-8", ev("\"service\":\"a\xffb\""), nil, ReasonBadService, "service"},
	{"service truncated UTF-8", ev("\"service\":\"caf\xc3\""), nil, ReasonBadService, "service"},
	{"service encoded surrogate", ev("\"service\":\"\xed\xa0\x80\""), nil, ReasonBadService, "service"},
	{"service NUL escape", ev(`"service":"a\u0000b"`), nil, ReasonBadService, "service"},
	{"service newline escape", ev(`"service":"a\nb"`), nil, ReasonBadService, "service"},
	{"service tab escape", ev(`"service":"a\tb"`), nil, ReasonBadService, "service"},
	{"service backspace escape", ev(`"service":"\b"`), nil, ReasonBadService, "service"},
	{"service formfeed escape", ev(`"service":"\f"`), nil, ReasonBadService, "service"},
	{"service CR escape", ev(`"service":"\r"`), nil, ReasonBadService, "service"},
	{"service US escape", ev(`"service":"\u001f"`), nil, ReasonBadService, "service"},
	{"service blank", ev(`"service":"\u0020"`), nil, ReasonBadService, "service"},
	{"service blank spaces", ev(`"service":"   "`), nil, ReasonBadService, "service"},
	{"service blank NBSP", ev(`"service":"\u00a0\u3000"`), nil, ReasonBadService, "service"},
	{"service leading space", ev(`"service":" checkout"`), nil, ReasonBadService, "service"},
	{"service trailing space", ev(`"service":"checkout "`), nil, ReasonBadService, "service"},
	{"service trailing ideographic space", ev(`"service":"checkout　"`), nil, ReasonBadService, "service"},
	{"service leading NBSP", ev("\"service\":\"\u00a0x\""), nil, ReasonBadService, "service"},
	{"service inner spaces ok", ev(`"service":"check out\u00a0now"`), want(func(e *Event) { e.Service = "check out\u00a0now" }), "", ""},
	{"service C1 raw", ev("\"service\":\"a\u0085b\""), nil, ReasonBadService, "service"},
	{"service C1 escape first", ev(`"service":"a\u0080b"`), nil, ReasonBadService, "service"},
	{"service C1 escape last", ev(`"service":"a\u009fb"`), nil, ReasonBadService, "service"},
	{"service after C1 ok", ev(`"service":"a\u00a1b"`), want(func(e *Event) { e.Service = "a\u00a1b" }), "", ""},
	{"service line separator", ev("\"service\":\"a\u2028b\""), nil, ReasonBadService, "service"},
	{"service paragraph separator", ev(`"service":"a\u2029b"`), nil, ReasonBadService, "service"},
	{"service zero-width joiner ok", ev(`"service":"a\u200db"`), want(func(e *Event) { e.Service = "a\u200db" }), "", ""},
	{"service DEL", ev("\"service\":\"a\x7fb\""), nil, ReasonBadService, "service"},
	{"service missing", ev(`-service`), nil, ReasonMissingField, "service"},
	{"service null", ev(`"service":null`), nil, ReasonMissingField, "service"},
	{"service number", ev(`"service":42`), nil, ReasonBadType, "service"},
	{"service array", ev(`"service":["checkout"]`), nil, ReasonBadType, "service"},
	{"service key case-sensitive", ev(`-service`, `"Service":"checkout"`), nil, ReasonMissingField, "service"},
	{"service escaped key", ev(`-service`, `"servic\u0065":"checkout"`), want(nil), "", ""},
	{"service fully escaped key", ev(`-service`, `"\u0073\u0065\u0072\u0076\u0069\u0063\u0065":"checkout"`), want(nil), "", ""},

	// Level.
	{"level debug", ev(`"level":"debug"`), want(func(e *Event) { e.Level = LevelDebug }), "", ""},
	{"level DEBUG", ev(`"level":"DEBUG"`), want(func(e *Event) { e.Level = LevelDebug }), "", ""},
	{"level Info", ev(`"level":"Info"`), want(nil), "", ""},
	{"level notice", ev(`"level":"notice"`), want(func(e *Event) { e.Level = LevelNotice }), "", ""},
	{"level NOTICE", ev(`"level":"NOTICE"`), want(func(e *Event) { e.Level = LevelNotice }), "", ""},
	{"level warning", ev(`"level":"warning"`), want(func(e *Event) { e.Level = LevelWarning }), "", ""},
	{"level Warning", ev(`"level":"Warning"`), want(func(e *Event) { e.Level = LevelWarning }), "", ""},
	{"level warn", ev(`"level":"warn"`), want(func(e *Event) { e.Level = LevelWarning }), "", ""},
	{"level WARN", ev(`"level":"WARN"`), want(func(e *Event) { e.Level = LevelWarning }), "", ""},
	{"level error", ev(`"level":"error"`), want(func(e *Event) { e.Level = LevelError }), "", ""},
	{"level ERROR", ev(`"level":"ERROR"`), want(func(e *Event) { e.Level = LevelError }), "", ""},
	{"level critical", ev(`"level":"critical"`), want(func(e *Event) { e.Level = LevelCritical }), "", ""},
	{"level CrItIcAl", ev(`"level":"CrItIcAl"`), want(func(e *Event) { e.Level = LevelCritical }), "", ""},
	{"level fatal", ev(`"level":"fatal"`), want(func(e *Event) { e.Level = LevelFatal }), "", ""},
	{"level FATAL", ev(`"level":"FATAL"`), want(func(e *Event) { e.Level = LevelFatal }), "", ""},
	{"level escaped", ev(`"level":"\u0065rror"`), want(func(e *Event) { e.Level = LevelError }), "", ""},
	{"level unknown", ev(`"level":"trace"`), nil, ReasonBadLevel, "level"},
	{"level empty", ev(`"level":""`), nil, ReasonBadLevel, "level"},
	{"level too long", ev(`"level":"information"`), nil, ReasonBadLevel, "level"},
	{"level warnings", ev(`"level":"warnings"`), nil, ReasonBadLevel, "level"},
	{"level padded", ev(`"level":" info"`), nil, ReasonBadLevel, "level"},
	{"level dotless i", ev(`"level":"ınfo"`), nil, ReasonBadLevel, "level"},
	{"level full-width", ev(`"level":"ＩＮＦＯ"`), nil, ReasonBadLevel, "level"},
	{"level long escaped", ev(`"level":"` + strings.Repeat(`\u0041`, 9) + `"`), nil, ReasonBadLevel, "level"},
	{"level number", ev(`"level":3`), nil, ReasonBadType, "level"},
	{"level missing", ev(`-level`), nil, ReasonMissingField, "level"},
	{"level null", ev(`"level":null`), nil, ReasonMissingField, "level"},

	// latency_ms.
	{"latency 0", ev(`"latency_ms":0`), want(func(e *Event) { e.LatencyMS = 0 }), "", ""},
	{"latency -0", ev(`"latency_ms":-0.0`), want(func(e *Event) { e.LatencyMS = 0 }), "", ""},
	{"latency underflow", ev(`"latency_ms":-1e-400`), want(func(e *Event) { e.LatencyMS = 0 }), "", ""},
	{"latency fraction", ev(`"latency_ms":12.75`), want(func(e *Event) { e.LatencyMS = 12.75 }), "", ""},
	{"latency exponent", ev(`"latency_ms":1.5E+3`), want(func(e *Event) { e.LatencyMS = 1500 }), "", ""},
	{"latency small exponent", ev(`"latency_ms":25e-1`), want(func(e *Event) { e.LatencyMS = 2.5 }), "", ""},
	{"latency maximum", ev(`"latency_ms":1e15`), want(func(e *Event) { e.LatencyMS = MaxLatencyMS }), "", ""},
	{"latency maximum long", ev(`"latency_ms":1000000000000000.0`), want(func(e *Event) { e.LatencyMS = MaxLatencyMS }), "", ""},
	{"latency rounds to maximum", ev(`"latency_ms":1000000000000000.06`), want(func(e *Event) { e.LatencyMS = MaxLatencyMS }), "", ""},
	{"latency above maximum", ev(`"latency_ms":1000000000000000.125`), nil, ReasonOutOfRange, "latency_ms"},
	{"latency absurd", ev(`"latency_ms":1e300`), nil, ReasonOutOfRange, "latency_ms"},
	{"latency max float", ev(`"latency_ms":1.7976931348623157e308`), nil, ReasonOutOfRange, "latency_ms"},
	{"latency 801 integer digits", ev(`"latency_ms":1` + strings.Repeat("0", 800) + `e-800`), want(func(e *Event) { e.LatencyMS = 1 }), "", ""},
	{"latency long fraction", ev(`"latency_ms":2.` + strings.Repeat("0", 900) + `1`), want(func(e *Event) { e.LatencyMS = 2 }), "", ""},
	{"latency long overflow", ev(`"latency_ms":` + strings.Repeat("9", 400)), nil, ReasonOutOfRange, "latency_ms"},
	{"latency negative", ev(`"latency_ms":-1`), nil, ReasonOutOfRange, "latency_ms"},
	{"latency tiny negative", ev(`"latency_ms":-1e-300`), nil, ReasonOutOfRange, "latency_ms"},
	{"latency overflow", ev(`"latency_ms":1e400`), nil, ReasonOutOfRange, "latency_ms"},
	{"latency string", ev(`"latency_ms":"50"`), nil, ReasonBadType, "latency_ms"},
	{"latency bool", ev(`"latency_ms":true`), nil, ReasonBadType, "latency_ms"},
	{"latency object", ev(`"latency_ms":{}`), nil, ReasonBadType, "latency_ms"},
	{"latency missing", ev(`-latency_ms`), nil, ReasonMissingField, "latency_ms"},
	{"latency null", ev(`"latency_ms":null`), nil, ReasonMissingField, "latency_ms"},

	// risk_score.
	{"risk absent", ev(), want(nil), "", ""},
	{"risk null", ev(`"risk_score":null`), want(nil), "", ""},
	{"risk 0", ev(`"risk_score":0`), want(func(e *Event) { e.Risk, e.HasRisk = 0, true }), "", ""},
	{"risk -0", ev(`"risk_score":-0`), want(func(e *Event) { e.Risk, e.HasRisk = 0, true }), "", ""},
	{"risk 1", ev(`"risk_score":1`), want(func(e *Event) { e.Risk, e.HasRisk = 1, true }), "", ""},
	{"risk 1.0e0", ev(`"risk_score":1.0e0`), want(func(e *Event) { e.Risk, e.HasRisk = 1, true }), "", ""},
	{"risk 0.42", ev(`"risk_score":0.42`), want(func(e *Event) { e.Risk, e.HasRisk = 0.42, true }), "", ""},
	{"risk long tiny", ev(`"risk_score":0.` + strings.Repeat("0", 400) + `1`), want(func(e *Event) { e.Risk, e.HasRisk = 0, true }), "", ""},
	{"risk long just above 1", ev(`"risk_score":1.` + strings.Repeat("0", 400) + `1`), want(func(e *Event) { e.Risk, e.HasRisk = 1, true }), "", ""},
	{"risk above 1", ev(`"risk_score":1.0000001`), nil, ReasonOutOfRange, "risk_score"},
	{"risk negative", ev(`"risk_score":-0.1`), nil, ReasonOutOfRange, "risk_score"},
	{"risk overflow", ev(`"risk_score":-1e999`), nil, ReasonOutOfRange, "risk_score"},
	{"risk string", ev(`"risk_score":"0.1"`), nil, ReasonBadType, "risk_score"},
	{"risk array", ev(`"risk_score":[]`), nil, ReasonBadType, "risk_score"},

	// Order of field checks.
	{"first failing field wins", `{"level":"nope","latency_ms":"x"}`, nil, ReasonMissingField, "timestamp"},
	{"service before level", ev(`"service":""`, `"level":"nope"`), nil, ReasonBadService, "service"},
	{"level before latency", ev(`"level":"nope"`, `"latency_ms":-1`), nil, ReasonBadLevel, "level"},
	{"latency before risk", ev(`"latency_ms":-1`, `"risk_score":2`), nil, ReasonOutOfRange, "latency_ms"},

	// Unknown members are ignored but must be well-formed.
	{"unknown members", ev(`"endpoint":"/api/v1/pay","host":"web-1","trace_id":"abc","message":"ok \"quoted\" {not} [json]"`),
		want(nil), "", ""},
	{"nested unknown", ev(`"meta":{"a":[1,2.5,-3e2,{"b":null,"c":[true,false,[]],"d":{}}],"e":"}]\\\"","f":{"service":"other","latency_ms":-1}}`),
		want(nil), "", ""},
	{"unknown invalid UTF-8", ev("\"message\":\"\xff\""), nil, ReasonInvalidJSON, ""},
	{"unknown nested invalid UTF-8", ev("\"meta\":[{\"k\":\"\xc3\"}]"), nil, ReasonInvalidJSON, ""},
	{"key invalid UTF-8", ev("\"k\xff\":1"), nil, ReasonInvalidJSON, ""},
	{"nested key invalid UTF-8", ev("\"x\":{\"\xff\":1}"), nil, ReasonInvalidJSON, ""},
	{"nested both invalid UTF-8", ev("\"x\":{\"\xff\":\"\xfe\"}"), nil, ReasonInvalidJSON, ""},
	{"unknown NUL escape accepted", ev(`"message":"a\u0000b\ud800"`), want(nil), "", ""},
	{"unknown service-like key", ev(`"service ":1`, `"SERVICE":2`, `"servicex":3`), want(nil), "", ""},
	{"empty key", ev(`"":1`), want(nil), "", ""},
	{"long escaped unknown key", ev(`"` + strings.Repeat(`\u0061`, 11) + `":1`), want(nil), "", ""},

	// Duplicate keys: the last occurrence wins.
	{"duplicate latency", `{"latency_ms":"bad","timestamp":"2026-11-29T00:59:00Z","service":"x","level":"info","latency_ms":7}`,
		want(func(e *Event) { e.Service, e.LatencyMS = "x", 7 }), "", ""},
	{"duplicate latency null", `{"latency_ms":7,"timestamp":"2026-11-29T00:59:00Z","service":"x","level":"info","latency_ms":null}`,
		nil, ReasonMissingField, "latency_ms"},
	{"duplicate service", `{"service":"a","timestamp":"2026-11-29T00:59:00Z","service":"b","level":"info","latency_ms":1}`,
		want(func(e *Event) { e.Service, e.LatencyMS = "b", 1 }), "", ""},
	{"duplicate service earlier invalid UTF-8", "{\"service\":\"\xff\",\"timestamp\":\"2026-11-29T00:59:00Z\",\"service\":\"b\",\"level\":\"info\",\"latency_ms\":1}",
		nil, ReasonInvalidJSON, ""},
	{"duplicate service earlier non-string", `{"service":1,"timestamp":"2026-11-29T00:59:00Z","service":"b","level":"info","latency_ms":1}`,
		want(func(e *Event) { e.Service, e.LatencyMS = "b", 1 }), "", ""},
	{"duplicate service later non-string", "{\"service\":\"\xff\",\"timestamp\":\"2026-11-29T00:59:00Z\",\"service\":1,\"level\":\"info\",\"latency_ms\":1}",
		nil, ReasonInvalidJSON, ""},
	{"service object with invalid UTF-8", ev("\"service\":{\"a\":\"\xff\"}"), nil, ReasonInvalidJSON, ""},
	{"duplicate escaped key", `{"risk_score":0.5,"timestamp":"2026-11-29T00:59:00Z","service":"x","level":"info","latency_ms":1,"risk_scor\u0065":null}`,
		want(func(e *Event) { e.Service, e.LatencyMS = "x", 1 }), "", ""},

	// Whitespace.
	{"whitespace everywhere", " \t\r\n{ \"timestamp\" :\t\"2026-11-29T00:59:00Z\" ,\n\"service\"\r: \"checkout\" , \"level\" : \"info\" , \"latency_ms\" : 50 } \n\t",
		want(nil), "", ""},
}

// syntaxCases are all invalid_json, whatever their fields.
var syntaxCases = []struct{ name, in string }{
	{"empty", ""},
	{"blank", " \n\t\r "},
	{"null", "null"},
	{"array", `[{"service":"x"}]`},
	{"string", `"x"`},
	{"number", `1`},
	{"true", `true`},
	{"BOM", "\ufeff" + ev()},
	{"unclosed", `{`},
	{"unclosed after member", `{"a":1`},
	{"unclosed after comma", `{"a":1,`},
	{"unclosed after colon", `{"a":`},
	{"unclosed after colon blank", `{"a": `},
	{"key without value", `{"a"}`},
	{"key without colon", `{"a" 1}`},
	{"missing value", `{"a":}`},
	{"lone comma", `{,}`},
	{"trailing comma", ev(`"x":1`)[:len(ev(`"x":1`))-1] + `,}`},
	{"double comma", `{"a":1,,"b":2}`},
	{"unquoted key", `{a:1}`},
	{"single quotes", `{'a':1}`},
	{"number key", `{1:1}`},
	{"trailing garbage", ev() + "x"},
	{"trailing object", ev() + "{}"},
	{"trailing NUL", ev() + "\x00"},
	{"NaN", ev(`"latency_ms":NaN`)},
	{"Infinity", ev(`"latency_ms":Infinity`)},
	{"leading zero", ev(`"latency_ms":01`)},
	{"leading plus", ev(`"latency_ms":+1`)},
	{"bare minus", ev(`"latency_ms":-`)},
	{"minus letter", ev(`"latency_ms":-a`)},
	{"trailing dot", ev(`"latency_ms":1.`)},
	{"leading dot", ev(`"latency_ms":.5`)},
	{"empty exponent", ev(`"latency_ms":1e`)},
	{"empty signed exponent", ev(`"latency_ms":1e+`)},
	{"hex number", ev(`"latency_ms":0x10`)},
	{"truncated true", ev(`"x":tru`)},
	{"misspelt false", ev(`"x":fals`)},
	{"misspelt null", ev(`"risk_score":nul`)},
	{"capital null", ev(`"risk_score":Null`)},
	{"literal then letters", ev(`"x":nullx`)},
	{"bad escape", ev(`"message":"\x"`)},
	{"short unicode escape", ev(`"message":"\u12"`)},
	{"bad unicode escape", ev(`"message":"\u12G4"`)},
	{"escape at end", `{"a":"\`},
	{"unicode escape at end", `{"a":"\u00`},
	{"raw newline in string", ev("\"message\":\"a\nb\"")},
	{"raw tab in string", ev("\"message\":\"a\tb\"")},
	{"raw NUL in key", "{\"a\x00\":1}"},
	{"unterminated string", `{"a":"abc`},
	{"unterminated key", `{"abc`},
	{"nested unclosed", ev(`"x":[1,2`)},
	{"nested trailing comma array", ev(`"x":[1,]`)},
	{"nested trailing comma object", ev(`"x":{"a":1,}`)},
	{"nested key without value", ev(`"x":{"a"}`)},
	{"nested key without colon", ev(`"x":{"a" 1}`)},
	{"nested missing comma", ev(`"x":[1 2]`)},
	{"nested mismatched", ev(`"x":[}`)},
	{"nested mismatched 2", ev(`"x":{]`)},
	{"nested bad key", ev(`"x":{1:2}`)},
	{"nested bad value", ev(`"x":[-]`)},
	{"nested bad string", ev(`"x":["\q"]`)},
	{"nested bad string key", ev(`"x":{"\q":1}`)},
	{"nested bad literal", ev(`"x":[nul]`)},
	{"nested lone comma", ev(`"x":[,]`)},
	{"nested empty then value", ev(`"x":[[]1]`)},
	{"nested comment", ev(`"x":[1/*c*/]`)},
	{"comment", `{"a":1 // c` + "\n}"},
	{"unclosed nested at end", `{"x":[`},
	{"unclosed nested object at end", `{"x":{`},
	{"nested key at end", `{"x":{"k"`},
	{"value then end", `{"x":[1`},
	{"vertical tab whitespace", "{\v\"a\":1}"},
	{"non-breaking space", "{\u00a0\"a\":1}"},
}

func decodeTestCase(t *testing.T, in string, wantEv *Event, reason Reason, field string) {
	t.Helper()
	got, err := Decode([]byte(in), fuzzNow, fuzzLim)
	if reason == "" {
		if err != nil {
			t.Fatalf("Decode(%q): unexpected error %v", in, err)
		}
		if !got.Time.Equal(wantEv.Time) || got.Time.Location() != time.UTC {
			t.Errorf("Time = %v (%v), want %v UTC", got.Time, got.Time.Location(), wantEv.Time)
		}
		got.Time = wantEv.Time
		if got != *wantEv {
			t.Errorf("Decode(%q)\n got %+v\nwant %+v", in, got, *wantEv)
		}
		if math.Signbit(got.LatencyMS) || math.Signbit(got.Risk) {
			t.Errorf("negative zero in %+v", got)
		}
	} else {
		var de *DecodeError
		if !errors.As(err, &de) {
			t.Fatalf("Decode(%q) = %+v, %v; want *DecodeError %s %q", in, got, err, reason, field)
		}
		if de.Reason != reason || de.Field != field {
			t.Fatalf("Decode(%q): %v; want reason %s field %q", in, err, reason, field)
		}
		if got != (Event{}) {
			t.Errorf("Decode(%q) returned %+v with the error, want the zero Event", in, got)
		}
	}
	// Every hand-picked case must also agree with the reference decoder.
	checkAgainstReference(t, []byte(in), fuzzNow, fuzzLim)
}

func TestDecode(t *testing.T) {
	for _, c := range decodeCases {
		t.Run(c.name, func(t *testing.T) { decodeTestCase(t, c.in, c.want, c.reason, c.field) })
	}
}

func TestDecodeSyntax(t *testing.T) {
	for _, c := range syntaxCases {
		t.Run(c.name, func(t *testing.T) { decodeTestCase(t, c.in, nil, ReasonInvalidJSON, "") })
	}
}

// TestDecodeEveryReason checks that the tables exercise every reason.
func TestDecodeEveryReason(t *testing.T) {
	seen := map[Reason]bool{ReasonInvalidJSON: true, ReasonTooLarge: true} // TestDecodeSyntax, TestDecodeMaxBytes
	for _, c := range decodeCases {
		seen[c.reason] = true
	}
	for _, r := range AllReasons() {
		if !seen[r] {
			t.Errorf("no test case for reason %s", r)
		}
	}
}

func TestDecodeMaxBytes(t *testing.T) {
	base := ev()
	pad := func(n int) []byte { // base padded with blanks to n bytes
		return []byte(base[:len(base)-1] + strings.Repeat(" ", n-len(base)) + "}")
	}
	for _, tc := range []struct {
		name string
		lim  Limits
		size int
		ok   bool
	}{
		{"custom exactly", Limits{MaxBytes: 100}, 100, true},
		{"custom +1", Limits{MaxBytes: 100}, 101, false},
		{"default exactly", Limits{}, DefaultMaxBytes, true},
		{"default +1", Limits{}, DefaultMaxBytes + 1, false},
		{"negative means default", Limits{MaxBytes: -1}, DefaultMaxBytes, true},
		{"negative means default +1", Limits{MaxBytes: -1}, DefaultMaxBytes + 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := pad(tc.size)
			if len(data) != tc.size {
				t.Fatalf("test input has %d bytes", len(data))
			}
			_, err := Decode(data, fuzzNow, tc.lim)
			if tc.ok && err != nil {
				t.Fatalf("%d bytes: %v", tc.size, err)
			}
			if !tc.ok {
				if ReasonOf(err) != ReasonTooLarge {
					t.Fatalf("%d bytes: %v, want too_large", tc.size, err)
				}
				want := fmt.Sprintf("event: too_large: message is %d bytes, limit is %d", tc.size, tc.size-1)
				if err.Error() != want {
					t.Errorf("Error() = %q, want %q", err.Error(), want)
				}
			}
		})
	}
	// too_large is decided before parsing.
	garbage := []byte(strings.Repeat("\xff", 101))
	if r := ReasonOf(func() error { _, err := Decode(garbage, fuzzNow, Limits{MaxBytes: 100}); return err }()); r != ReasonTooLarge {
		t.Errorf("oversized garbage: reason %q, want too_large", r)
	}
}

func TestDecodeLimits(t *testing.T) {
	old := `"timestamp":"2000-01-01T00:00:00Z"`
	for _, tc := range []struct {
		name   string
		in     string
		lim    Limits
		reason Reason
	}{
		{"no horizon accepts old events", ev(old), Limits{}, ""},
		{"negative horizon disables", ev(old), Limits{Horizon: -time.Hour}, ""},
		{"horizon rejects old events", ev(old), Limits{Horizon: time.Hour}, ReasonTooLate},
		{"default skew at limit", ev(`"timestamp":"2026-11-29T01:05:00Z"`), Limits{}, ""},
		{"default skew over", ev(`"timestamp":"2026-11-29T01:05:00.001Z"`), Limits{}, ReasonFutureTimestamp},
		{"negative skew means default", ev(`"timestamp":"2026-11-29T01:05:00Z"`), Limits{MaxFutureSkew: -1}, ""},
		{"custom skew at limit", ev(`"timestamp":"2026-11-29T01:01:00Z"`), Limits{MaxFutureSkew: time.Minute}, ""},
		{"custom skew over", ev(`"timestamp":"2026-11-29T01:01:00.000000001Z"`), Limits{MaxFutureSkew: time.Minute}, ReasonFutureTimestamp},
		{"epoch ms at skew limit", ev(`"timestamp":1795914300000`), Limits{}, ""},
		{"epoch ms at skew limit + 1ns", ev(`"timestamp":1795914300000.000001`), Limits{}, ReasonFutureTimestamp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode([]byte(tc.in), fuzzNow, tc.lim)
			if r := ReasonOf(err); r != tc.reason {
				t.Fatalf("reason %q (%v), want %q", r, err, tc.reason)
			}
			checkAgainstReference(t, []byte(tc.in), fuzzNow, tc.lim)
		})
	}
}

// TestDecodeFarTimes covers the edges of the timestamp range, with a clock
// and limits that let any year through.
func TestDecodeFarTimes(t *testing.T) {
	farNow := utc(9999, 12, 31, 23, 59, 59, 999999999)
	for _, tc := range []struct {
		ts   string
		want time.Time
		ok   bool
	}{
		{`0`, time.Unix(0, 0), true},
		{`-0`, time.Unix(0, 0), true},
		{`0.0e-5`, time.Unix(0, 0), true},
		{`0e999999999999999999999`, time.Unix(0, 0), true},
		{`1e-99999999999999999999`, time.Unix(0, 0), true},
		{`-1e-99999999999999999999`, time.Unix(0, -1), true},
		{`-1`, time.Unix(0, -1e6), true},
		{`-0.5`, time.Unix(0, -5e5), true},
		{`-0.0000001`, time.Unix(0, -1), true},
		{`-0.0000011`, time.Unix(0, -2), true},
		{`-1001.5`, time.Unix(-2, 998500000), true},
		{`1.5e-3`, time.Unix(0, 1500), true},
		{`123456789e-3`, time.Unix(123, 456789000), true},
		{`253402300799999`, utc(9999, 12, 31, 23, 59, 59, 999e6), true},
		{`253402300799999.999999999`, utc(9999, 12, 31, 23, 59, 59, 999999999), true},
		{`2.53402300799999e14`, utc(9999, 12, 31, 23, 59, 59, 999e6), true},
		{`253402300800000`, time.Time{}, false},
		{`2.534023008e14`, time.Time{}, false},
		{`1e15`, time.Time{}, false},
		{`1e16`, time.Time{}, false},
		{`1e99999999999999999999`, time.Time{}, false},
		{`-62167219200000`, utc(0, 1, 1, 0, 0, 0, 0), true},
		{`-62167219200000.0`, utc(0, 1, 1, 0, 0, 0, 0), true},
		{`-62167219199999.9999999`, utc(0, 1, 1, 0, 0, 0, 0), true},
		{`-62167219200000.0000000001`, time.Time{}, false},
		{`-62167219200001`, time.Time{}, false},
		{`-1e15`, time.Time{}, false},
		{`"0000-01-01T00:00:00Z"`, utc(0, 1, 1, 0, 0, 0, 0), true},
		{`"0000-02-29T00:00:00Z"`, utc(0, 2, 29, 0, 0, 0, 0), true},
		{`"2000-02-29T00:00:00Z"`, utc(2000, 2, 29, 0, 0, 0, 0), true},
		{`"2024-02-29T12:00:00+12:00"`, utc(2024, 2, 29, 0, 0, 0, 0), true},
		{`"1900-02-29T00:00:00Z"`, time.Time{}, false},
		{`"2023-02-29T00:00:00Z"`, time.Time{}, false},
		{`"2023-04-31T00:00:00Z"`, time.Time{}, false},
		{`"2023-06-30T23:59:59Z"`, utc(2023, 6, 30, 23, 59, 59, 0), true},
		{`"2023-09-31T00:00:00Z"`, time.Time{}, false},
		{`"2023-12-31T00:00:00Z"`, utc(2023, 12, 31, 0, 0, 0, 0), true},
		{`"9999-12-31T23:59:59.999999999Z"`, utc(9999, 12, 31, 23, 59, 59, 999999999), true},
		{`"0000-01-01T00:00:00+01:00"`, utc(-1, 12, 31, 23, 0, 0, 0), true},
		{`"1969-12-31T23:59:59.5-00:30"`, utc(1970, 1, 1, 0, 29, 59, 5e8), true},
	} {
		t.Run(tc.ts, func(t *testing.T) {
			in := ev(`"timestamp":` + tc.ts)
			got, err := Decode([]byte(in), farNow, Limits{})
			switch {
			case tc.ok && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tc.ok && (!got.Time.Equal(tc.want) || got.Time.Location() != time.UTC):
				t.Fatalf("Time = %v, want %v", got.Time, tc.want.UTC())
			case !tc.ok && (ReasonOf(err) != ReasonBadTimestamp || err.(*DecodeError).Field != "timestamp"):
				t.Fatalf("got %v, %v; want bad_timestamp", got.Time, err)
			}
			checkAgainstReference(t, []byte(in), farNow, Limits{})
		})
	}
}

func TestDecodeNesting(t *testing.T) {
	// encoding/json allows 10 000 nested containers, the top-level object
	// included; we agree.
	nested := func(depth int) []byte { // depth containers in all
		inner := strings.Repeat("[", depth-1) + strings.Repeat("]", depth-1)
		return []byte(ev(`"x":` + inner))
	}
	if _, err := Decode(nested(maxNesting), fuzzNow, Limits{}); err != nil {
		t.Errorf("depth %d: %v", maxNesting, err)
	}
	_, err := Decode(nested(maxNesting+1), fuzzNow, Limits{})
	if ReasonOf(err) != ReasonInvalidJSON || !strings.Contains(err.Error(), "nesting") {
		t.Errorf("depth %d: %v, want invalid_json about nesting", maxNesting+1, err)
	}
	for _, d := range []int{2, 3, 64, 65, 66, 200, maxNesting, maxNesting + 1} {
		checkAgainstReference(t, nested(d), fuzzNow, Limits{})
	}
	objects := []byte(ev(`"x":` + strings.Repeat(`{"a":`, 100) + "1" + strings.Repeat("}", 100)))
	checkAgainstReference(t, objects, fuzzNow, Limits{})
	if _, err := Decode(objects, fuzzNow, Limits{}); err != nil {
		t.Errorf("nested objects: %v", err)
	}
}

func TestDecodeErrorMessages(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{ev(`-latency_ms`), `event: missing_field "latency_ms": required`},
		{ev(`"latency_ms":"5"`), `event: bad_type "latency_ms": want number, got string`},
		{ev(`"timestamp":{}`), `event: bad_type "timestamp": want string or number, got object`},
		{ev(`"service":[]`), `event: bad_type "service": want string, got array`},
		{ev(`"level":false`), `event: bad_type "level": want string, got boolean`},
		{ev(`"level":"trace\r\n"`), `event: bad_level "level": unknown level: "trace\r\n"`},
		{ev(`"level":"` + strings.Repeat(`\u0041`, 9) + `"`), `event: bad_level "level": unknown level: "\\u0041\\u0041\\u0041\\u0041\\u0041\\u"...`},
		{ev(`"service":"a\nb"`), `event: bad_service "service": contains a control character: "a\nb"`},
		{ev(`"service":""`), `event: bad_service "service": empty`},
		{ev(`"service":"` + strings.Repeat("x", 129) + `"`), `event: bad_service "service": 129 bytes, longer than 128`},
		{ev("\"service\":\"\xff\""), `event: bad_service "service": not valid UTF-8`},
		{ev(`"service":"  "`), `event: bad_service "service": blank (only whitespace): "  "`},
		{ev(`"service":" x"`), `event: bad_service "service": starts or ends with whitespace: " x"`},
		{ev(`"service":"a\u0085"`), `event: bad_service "service": contains a control character: "a\u0085"`},
		{ev(`"service":"a\u2028"`), `event: bad_service "service": contains a line or paragraph separator: "a\u2028"`},
		{ev(`"latency_ms":-2.5`), `event: out_of_range "latency_ms": negative: -2.5`},
		{ev(`"latency_ms":1e999`), `event: out_of_range "latency_ms": not finite: "1e999"`},
		{ev(`"latency_ms":1e300`), `event: out_of_range "latency_ms": 1e+300 exceeds the maximum 1e+15`},
		{ev(`"risk_score":1.5`), `event: out_of_range "risk_score": outside [0, 1]: 1.5`},
		{ev(`"timestamp":"yesterday"`), `event: bad_timestamp "timestamp": not an RFC 3339 or ISO 8601 date-time: "yesterday"`},
		{ev(`"timestamp":1e20`), `event: bad_timestamp "timestamp": epoch milliseconds outside years 0000-9999: "1e20"`},
		{ev(`"timestamp":"2026-11-29T01:06:00Z"`), `event: future_timestamp "timestamp": 2026-11-29T01:06:00Z is 6m0s ahead of now, more than the allowed 5m0s`},
		{ev(`"timestamp":"2026-11-01T00:00:00Z"`), `event: too_late "timestamp": 2026-11-01T00:00:00Z is older than the 168h0m0s horizon`},
		{``, `event: invalid_json: empty input`},
		{`[]`, `event: invalid_json: unexpected "[" at offset 0 looking for the beginning of the top-level object`},
		{`{"a":1} x`, `event: invalid_json: unexpected "x" at offset 8 after the top-level object`},
		{`{"a":1`, `event: invalid_json: unexpected end of input after an object member`},
		{"{\"a\":\"\n\"}", `event: invalid_json: unexpected "\n" at offset 6 in a string (control character)`},
		{"{\"a\":\"\xff\"}", `event: invalid_json: invalid UTF-8 at offset 6`},
	} {
		_, err := Decode([]byte(tc.in), fuzzNow, fuzzLim)
		if err == nil || err.Error() != tc.want {
			t.Errorf("Decode(%q) error\n got %v\nwant %s", tc.in, err, tc.want)
		}
	}
}

// TestDecodeDoesNotRetain checks that the event does not alias the input.
func TestDecodeDoesNotRetain(t *testing.T) {
	data := []byte(ev())
	e, err := Decode(data, fuzzNow, fuzzLim)
	if err != nil {
		t.Fatal(err)
	}
	for i := range data {
		data[i] = 'x'
	}
	if e.Service != "checkout" {
		t.Errorf("Service changed with the input: %q", e.Service)
	}
}

func TestDecodeConcurrent(t *testing.T) {
	done := make(chan error)
	for g := 0; g < 4; g++ {
		go func() {
			var err error
			for i := 0; i < 500 && err == nil; i++ {
				svc := fmt.Sprintf("svc-%d-%d", g, i)
				var e Event
				if e, err = Decode([]byte(ev(`"service":"`+svc+`"`)), fuzzNow, fuzzLim); err == nil && e.Service != svc {
					err = fmt.Errorf("got %q want %q", e.Service, svc)
				}
			}
			done <- err
		}()
	}
	for g := 0; g < 4; g++ {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

const typicalEvent = `{"timestamp": "2026-11-29T01:00:00.123456", "service": "checkout", "level": "info", "latency_ms": 50.0, "risk_score": 0.1}`

func TestDecodeAllocs(t *testing.T) {
	for _, in := range []string{
		typicalEvent,
		ev(`"timestamp":1795913940000`, `"service":"caf\u00e9"`, `"meta":{"a":[1,2,{"b":"c"}]}`),
	} {
		data := []byte(in)
		for _, loc := range []*time.Location{nil, mustZone(t, "Asia/Tokyo")} {
			lim := fuzzLim
			lim.Location = loc
			allocs := testing.AllocsPerRun(200, func() {
				if _, err := Decode(data, fuzzNow.Add(12*time.Hour), lim); err != nil {
					t.Fatal(err)
				}
			})
			if allocs > 1 {
				t.Errorf("Decode(%q) in %v: %.1f allocs, want ≤ 1", in, loc, allocs)
			}
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	for _, bc := range []struct{ name, in string }{
		{"typical", typicalEvent},
		{"epoch_ms", `{"timestamp":1795914000123,"service":"checkout","level":"ERROR","latency_ms":812.5}`},
		{"extra_fields", `{"timestamp":"2026-11-29T01:00:00.123456+00:00","service":"payments-api","level":"warning","latency_ms":50.0,"risk_score":0.1,` +
			`"endpoint":"/api/v1/checkout","host":"web-7f9c","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","message":"upstream \"inventory\" slow","tags":{"region":"eu-west-1","attempt":[1,2]}}`},
		{"escaped", `{"timestamp":"2026-11-29T01:00:00Z","service":"caf\u00e9-\u652f\u4ed8","level":"\u0069nfo","latency_ms":1}`},
	} {
		data := []byte(bc.in)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, err := Decode(data, fuzzNow, fuzzLim); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecodeReference is the encoding/json reference, for comparison.
func BenchmarkDecodeReference(b *testing.B) {
	data := []byte(typicalEvent)
	b.ReportAllocs()
	for b.Loop() {
		refDecode(data, fuzzNow, fuzzLim)
	}
}

// TestUnescape compares unescape with encoding/json on escape-heavy strings.
func TestUnescape(t *testing.T) {
	for _, s := range []string{
		``, `plain`, `\"\\\/\b\f\n\r\t`, `\u0041\u00e9\u4e2d\uFFFF`, `\ud83d\ude00`, `\uD83D\uDE00x`,
		`\ud800`, `\ud800x`, `\ud800\u0041`, `\udc00`, `\udc00\ud800`, `\ud800\ud800\udc00`,
		`\ud800\\`, `\ud800\n`, `a\u0000b`, `caf\u00e9 \u00E9`, `x\ud83d`,
	} {
		var want string
		if err := json.Unmarshal([]byte(`"`+s+`"`), &want); err != nil {
			t.Fatalf("bad test string %q: %v", s, err)
		}
		if got := string(unescape(nil, []byte(s))); got != want {
			t.Errorf("unescape(%q) = %q, want %q", s, got, want)
		}
	}
}

// TestParseFloat compares parseFloat with the exact reference on short and
// long literals, including halfway cases decided by a digit beyond 800.
func TestParseFloat(t *testing.T) {
	z := func(n int) string { return strings.Repeat("0", n) }
	lits := []string{
		"0", "-0", "1", "-1", "0.1", "0.3", "123456789012345", "1234567890123456",
		"0.000000000000001", "9007199254740993", "9007199254740995", "1.7976931348623157e308",
		"2.2250738585072011e-308", "4.9e-324", "2.4e-324", "1e23", "8.98846567431158e307",
		"9007199254740993." + z(1000) + "1", // just above halfway: rounds up
		"9007199254740993." + z(1000),       // exactly halfway: rounds to even
		"-9007199254740993" + z(900) + "1e-901",
		"0." + z(60) + "1",
		"1" + z(300), "1" + z(308), "1" + z(309), "17976931348623158" + z(292), "17976931348623157" + z(292),
		"0." + z(322) + "5", "0." + z(323) + "5", "0." + z(330) + "1", "0." + z(322) + "247032822920623272088284396434110686182529901307162382212792841250337753635104375932649918180817996189898282347722858865463328355177969898199387398005390939063150356595155702263922908583924491051844359318028499365361525003193704576782492193656236698636584807570",
		strings.Repeat("9", 800) + "e-500", strings.Repeat("9", 801) + "e-500", strings.Repeat("1", 2000) + "e-1990",
		"1e" + z(100) + "5", "1e-" + z(100) + "5", "0e99999", "-" + z(1) + "." + z(2000),
		"1" + z(800) + "e-800", "1" + z(5000) + "." + z(10) + "e-5000", "-12345" + z(1000) + "e-1004",
	}
	for _, s := range lits {
		want := refParseFloat(s)
		if got := parseFloat([]byte(s)); got != want || math.Signbit(got) != math.Signbit(want) {
			t.Errorf("parseFloat(%.40q…) = %v, want %v", s, got, want)
		}
		// Where strconv is right (it is not past 800 integer digits), agree
		// with it bit for bit.
		if sf, _ := strconv.ParseFloat(s, 64); sf != want && len(s) < 800 {
			t.Errorf("reference and strconv disagree on %.40q…: %v vs %v", s, want, sf)
		}
	}
	// The strconv bug that parseLongFloat and refParseFloat avoid.
	if sf, _ := strconv.ParseFloat("1"+z(800)+"e-800", 64); sf == 1 {
		t.Log("strconv.ParseFloat now handles > 800 integer digits")
	}
}
