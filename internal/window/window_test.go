package window

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		name string
		size time.Duration
	}{
		{"1min", "1min", time.Minute},
		{"5min", "5min", 5 * time.Minute},
		{"15min", "15min", 15 * time.Minute},
		{"1hour", "1hour", time.Hour},
		{"2hour", "2hour", 2 * time.Hour},
		{"1day", "1day", 24 * time.Hour},
		{"1m", "1min", time.Minute},
		{"1h", "1hour", time.Hour},
		{"1d", "1day", 24 * time.Hour},
		{" 5MIN ", "5min", 5 * time.Minute},
		{"5 minutes", "5min", 5 * time.Minute},
		{"01min", "1min", time.Minute},
		{"60min", "1hour", time.Hour},
		{"90min", "90min", 90 * time.Minute},
		{"120min", "2hour", 2 * time.Hour},
		{"1440min", "1day", 24 * time.Hour},
		{"24hour", "1day", 24 * time.Hour},
		{"36hours", "36hour", 36 * time.Hour},
		{"7days", "7day", 7 * 24 * time.Hour},
		{"366d", "366day", MaxSize},
		{"3hr", "3hour", 3 * time.Hour},
	}
	for _, tt := range tests {
		w, err := Parse(tt.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if w.Name != tt.name || w.Size != tt.size {
			t.Errorf("Parse(%q) = %+v, want {%s %v}", tt.in, w, tt.name, tt.size)
		}
		if w.String() != tt.name {
			t.Errorf("String() = %q, want %q", w.String(), tt.name)
		}
		// The canonical name parses back to itself.
		if w2, err := Parse(w.Name); err != nil || w2 != w {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", w.Name, w2, err, w)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ in, wantSub string }{
		{"", "empty"},
		{"   ", "empty"},
		{"0min", "positive"},
		{"0h", "positive"},
		{"-1min", "positive"},
		{"-5m", "positive"},
		{"+5min", "whole number"},
		{"30s", "sub-minute"},
		{"30sec", "sub-minute"},
		{"500ms", "sub-minute"},
		{"1.5hour", "whole number"},
		{"1,5min", "unknown unit"},
		{"5", "unknown unit"},
		{"min", "whole number"},
		{"abc", "whole number"},
		{"5weeks", "unknown unit"},
		{"5minx", "unknown unit"},
		{"367day", "maximum"},
		{"527041min", "maximum"},
		{"99999999999999999999min", "maximum"},
		{"1min5", "unknown unit"},
	}
	for _, tt := range tests {
		w, err := Parse(tt.in)
		if err == nil {
			t.Errorf("Parse(%q) = %+v, want error", tt.in, w)
			continue
		}
		if !strings.Contains(err.Error(), tt.wantSub) || !strings.HasPrefix(err.Error(), "window: ") {
			t.Errorf("Parse(%q) error %q, want it to mention %q", tt.in, err, tt.wantSub)
		}
	}
}

func TestMustParse(t *testing.T) {
	if w := MustParse("5m"); w.Name != "5min" {
		t.Fatalf("MustParse(5m) = %+v", w)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("MustParse(bad) did not panic")
		}
	}()
	MustParse("bad")
}

func TestParseList(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"1min,5min,1hour", []string{"1min", "5min", "1hour"}},
		{" 1hour , 1min,5min ", []string{"1min", "5min", "1hour"}},
		{"1d,15min,2h", []string{"15min", "2hour", "1day"}},
		{"5min", []string{"5min"}},
	}
	for _, tt := range tests {
		ws, err := ParseList(tt.in)
		if err != nil {
			t.Errorf("ParseList(%q): %v", tt.in, err)
			continue
		}
		var got []string
		for _, w := range ws {
			got = append(got, w.Name)
		}
		if strings.Join(got, ",") != strings.Join(tt.want, ",") {
			t.Errorf("ParseList(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
	bad := []struct{ in, wantSub string }{
		{"", "no windows"},
		{"  ", "no windows"},
		{"1min,,5min", "empty"},
		{"1min,", "empty"},
		{"1min,1m", "duplicate"},
		{"60min,1hour", "duplicate"},
		{"1min,30s", "sub-minute"},
	}
	for _, tt := range bad {
		ws, err := ParseList(tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.wantSub) {
			t.Errorf("ParseList(%q) = %v, %v; want error mentioning %q", tt.in, ws, err, tt.wantSub)
		}
	}
}

func TestDefaults(t *testing.T) {
	want, err := ParseList("1min,5min,1hour")
	if err != nil {
		t.Fatal(err)
	}
	got := Defaults()
	if len(got) != len(want) {
		t.Fatalf("Defaults() = %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("Defaults()[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestStartBoundaries(t *testing.T) {
	m1, m5, h1, d1 := MustParse("1min"), MustParse("5min"), MustParse("1hour"), MustParse("1day")
	utc := func(s string) time.Time {
		t.Helper()
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	tests := []struct {
		w     Window
		t     time.Time
		start string
	}{
		{m1, utc("2026-11-29T01:00:00Z"), "2026-11-29T01:00:00Z"},
		{m1, utc("2026-11-29T01:00:00.000000001Z"), "2026-11-29T01:00:00Z"},
		{m1, utc("2026-11-29T00:59:59.999999999Z"), "2026-11-29T00:59:00Z"},
		{m1, utc("2026-11-29T01:00:59.999999999Z"), "2026-11-29T01:00:00Z"},
		{m5, utc("2026-11-29T01:04:59.999999999Z"), "2026-11-29T01:00:00Z"},
		{m5, utc("2026-11-29T01:05:00Z"), "2026-11-29T01:05:00Z"},
		{h1, utc("2026-11-29T01:59:59.5Z"), "2026-11-29T01:00:00Z"},
		// A zone offset does not move the bucket: buckets are UTC.
		{h1, utc("2026-11-29T03:30:00+02:00"), "2026-11-29T01:00:00Z"},
		{d1, utc("2026-11-29T23:59:59.999999999Z"), "2026-11-29T00:00:00Z"},
		{d1, utc("2026-11-30T00:00:00Z"), "2026-11-30T00:00:00Z"},
		{d1, utc("2026-11-30T01:00:00+02:00"), "2026-11-29T00:00:00Z"},
		// The epoch and just before it.
		{m1, time.Unix(0, 0), "1970-01-01T00:00:00Z"},
		{m1, time.Unix(0, -1), "1969-12-31T23:59:00Z"},
		{m1, time.Unix(-60, 0), "1969-12-31T23:59:00Z"},
		{m1, time.Unix(-61, 0), "1969-12-31T23:58:00Z"},
		{m5, time.Unix(-1, 999999999), "1969-12-31T23:55:00Z"},
		{d1, utc("1969-07-20T20:17:40Z"), "1969-07-20T00:00:00Z"},
		{d1, utc("1600-01-01T12:00:00Z"), "1600-01-01T00:00:00Z"},
		{h1, utc("9999-12-31T23:59:59.999999999Z"), "9999-12-31T23:00:00Z"},
	}
	for _, tt := range tests {
		got := tt.w.Start(tt.t)
		if got.Format(time.RFC3339Nano) != tt.start || got.Location() != time.UTC {
			t.Errorf("%s.Start(%s) = %s, want %s", tt.w.Name, tt.t.Format(time.RFC3339Nano), got.Format(time.RFC3339Nano), tt.start)
		}
		if !tt.w.Aligned(got.Unix()) {
			t.Errorf("%s: Start %s not Aligned", tt.w.Name, got)
		}
		if end := tt.w.End(got); !end.After(tt.t) || end.Sub(got) != tt.w.Size {
			t.Errorf("%s.End(%s) = %s does not contain %s", tt.w.Name, got, end, tt.t)
		}
		// StartUnix agrees wherever UnixNano is representable.
		if tt.t.Year() > 1678 && tt.t.Year() < 2262 {
			if su := tt.w.StartUnix(tt.t.UnixNano()); su != got.Unix() {
				t.Errorf("%s.StartUnix(%d) = %d, want %d", tt.w.Name, tt.t.UnixNano(), su, got.Unix())
			}
		}
	}
}

func TestStartUnix(t *testing.T) {
	m1, h2, d1 := MustParse("1min"), MustParse("2hour"), MustParse("1day")
	tests := []struct {
		w    Window
		ns   int64
		want int64
	}{
		{m1, 0, 0},
		{m1, 1, 0},
		{m1, -1, -60},
		{m1, 59_999_999_999, 0},
		{m1, 60_000_000_000, 60},
		{m1, -60_000_000_000, -60},
		{m1, -60_000_000_001, -120},
		{h2, 7200e9 - 1, 0},
		{h2, 7200e9, 7200},
		{h2, -1, -7200},
		{d1, math.MaxInt64, 9223286400},
		{d1, math.MinInt64, -9223372800},
	}
	for _, tt := range tests {
		if got := tt.w.StartUnix(tt.ns); got != tt.want {
			t.Errorf("%s.StartUnix(%d) = %d, want %d", tt.w.Name, tt.ns, got, tt.want)
		}
	}
}

// TestStartProperties checks, on random instants, that the bucket contains
// the instant, is aligned, and that Start and StartUnix agree.
func TestStartProperties(t *testing.T) {
	ws, err := ParseList("1min,5min,15min,1hour,2hour,1day,7day")
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		ns := int64(rng.Uint64())
		tm := time.Unix(0, ns)
		for _, w := range ws {
			s := w.StartUnix(ns)
			if !w.Aligned(s) {
				t.Fatalf("%s.StartUnix(%d) = %d not aligned", w.Name, ns, s)
			}
			start := w.Start(tm)
			if start.Unix() != s {
				t.Fatalf("%s: Start(%v).Unix() = %d, StartUnix = %d", w.Name, tm, start.Unix(), s)
			}
			if tm.Before(start) || !tm.Before(w.End(start)) {
				t.Fatalf("%s: %v not in [%v, %v)", w.Name, tm, start, w.End(start))
			}
		}
	}
}

func TestAligned(t *testing.T) {
	m5 := MustParse("5min")
	for _, c := range []struct {
		s    int64
		want bool
	}{{0, true}, {300, true}, {-300, true}, {60, false}, {-60, false}, {299, false}} {
		if got := m5.Aligned(c.s); got != c.want {
			t.Errorf("Aligned(%d) = %v, want %v", c.s, got, c.want)
		}
	}
}

func TestSeconds(t *testing.T) {
	if s := MustParse("5min").Seconds(); s != 300 {
		t.Errorf("5min Seconds = %v", s)
	}
	if s := MustParse("1day").Seconds(); s != 86400 {
		t.Errorf("1day Seconds = %v", s)
	}
}

func BenchmarkStartUnix(b *testing.B) {
	w := MustParse("5min")
	ns := time.Date(2026, 11, 29, 1, 0, 0, 0, time.UTC).UnixNano()
	var sink int64
	for i := 0; b.Loop(); i++ {
		sink += w.StartUnix(ns + int64(i)*1e6)
	}
	_ = sink
}
