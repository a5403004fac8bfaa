// Package window is the window arithmetic of StackLens: parsing the
// configured aggregation windows (AGGREGATION_WINDOWS, docs/ARCHITECTURE.md §4) and
// mapping event times to the tumbling, Unix-epoch-aligned, UTC buckets that
// every aggregate, KV key (docs/ARCHITECTURE.md §2.2) and PostgreSQL row is keyed by.
//
// It is pure: no clock, no I/O, no configuration state. Every component
// (processor, projections, API, replay) must agree on bucket boundaries
// bit for bit, so they all go through this package.
package window

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// MaxSize is the largest window accepted. Longer windows are almost
// certainly a configuration mistake (a typo such as "1000day"), and the bound
// keeps every bucket start far from int64 overflow.
const MaxSize = 366 * 24 * time.Hour

// Window is one tumbling aggregation window. Name is canonical ("1min",
// "5min", "1hour", "1day", "90min", "36hour"): the largest unit that divides
// Size exactly, so two spellings of the same size always get one name (it
// names KV buckets and tables, and "60min" and "1hour" must not be two).
//
// Build Windows with Parse or ParseList: the methods assume Size is a
// positive whole number of minutes.
type Window struct {
	Name string
	Size time.Duration
}

// Defaults are the seed's windows, the default of AGGREGATION_WINDOWS.
func Defaults() []Window {
	return []Window{
		{Name: "1min", Size: time.Minute},
		{Name: "5min", Size: 5 * time.Minute},
		{Name: "1hour", Size: time.Hour},
	}
}

// unit is one accepted suffix. Seconds are deliberately absent: sub-minute
// windows multiply the aggregate and row count for no dashboard benefit.
type unit struct {
	size    time.Duration
	canon   string
	suffixs []string
}

// units is ordered largest first, which is the order canonical naming needs.
var units = []unit{
	{24 * time.Hour, "day", []string{"d", "day", "days"}},
	{time.Hour, "hour", []string{"h", "hr", "hrs", "hour", "hours"}},
	{time.Minute, "min", []string{"m", "min", "mins", "minute", "minutes"}},
}

var secondSuffixes = []string{"s", "sec", "secs", "second", "seconds", "ms", "us", "µs", "ns"}

const syntaxHint = "want a positive whole number of minutes, hours or days, e.g. 1min, 5min, 1hour, 1day"

// Parse parses one window such as "1min", "5min", "15min", "1hour", "2hour",
// "1day", or the short forms "1m", "1h", "1d" (case-insensitive, surrounding
// spaces ignored), and returns it with its canonical Name. Zero, negative,
// fractional, sub-minute and oversized windows are rejected.
func Parse(name string) (Window, error) {
	s := strings.ToLower(strings.TrimSpace(name))
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	num, suffix := s[:i], strings.TrimSpace(s[i:])
	switch {
	case s == "":
		return Window{}, errors.New("window: empty window name; " + syntaxHint)
	case strings.HasPrefix(s, "-"):
		return Window{}, fmt.Errorf("window: invalid window %q: must be positive; %s", name, syntaxHint)
	case num == "":
		return Window{}, fmt.Errorf("window: invalid window %q: %s", name, syntaxHint)
	case strings.HasPrefix(suffix, "."):
		return Window{}, fmt.Errorf("window: invalid window %q: must be a whole number; %s", name, syntaxHint)
	case slices.Contains(secondSuffixes, suffix):
		return Window{}, fmt.Errorf("window: invalid window %q: sub-minute windows are not supported; %s", name, syntaxHint)
	}
	var u *unit
	for k := range units {
		if slices.Contains(units[k].suffixs, suffix) {
			u = &units[k]
			break
		}
	}
	if u == nil {
		return Window{}, fmt.Errorf("window: invalid window %q: unknown unit %q; %s", name, suffix, syntaxHint)
	}
	n, err := strconv.ParseUint(num, 10, 32)
	if err != nil || time.Duration(n) > MaxSize/u.size {
		return Window{}, fmt.Errorf("window: invalid window %q: longer than the maximum of %d days", name, MaxSize/(24*time.Hour))
	}
	if n == 0 {
		return Window{}, fmt.Errorf("window: invalid window %q: must be positive; %s", name, syntaxHint)
	}
	size := time.Duration(n) * u.size
	return Window{Name: canonicalName(size), Size: size}, nil
}

// MustParse is Parse for constants in tests and defaults; it panics on error.
func MustParse(name string) Window {
	w, err := Parse(name)
	if err != nil {
		panic(err)
	}
	return w
}

func canonicalName(size time.Duration) string {
	for _, u := range units {
		if size%u.size == 0 {
			return strconv.FormatInt(int64(size/u.size), 10) + u.canon
		}
	}
	// Unreachable: Parse only builds whole minutes.
	return size.String()
}

// ParseList parses a comma-separated window list such as "1min,5min,1hour"
// (the AGGREGATION_WINDOWS format; spaces around items are ignored) and
// returns the windows sorted by size, smallest first. Empty items and two
// items of the same size ("60min,1hour") are errors: a duplicate would mean
// two KV buckets and tables holding the same data.
func ParseList(list string) ([]Window, error) {
	if strings.TrimSpace(list) == "" {
		return nil, errors.New("window: no windows given; want a comma-separated list such as 1min,5min,1hour")
	}
	parts := strings.Split(list, ",")
	out := make([]Window, 0, len(parts))
	for _, p := range parts {
		w, err := Parse(p)
		if err != nil {
			return nil, err
		}
		for _, prev := range out {
			if prev.Size == w.Size {
				return nil, fmt.Errorf("window: duplicate window %q in %q (same size as %s)", strings.TrimSpace(p), list, prev.Name)
			}
		}
		out = append(out, w)
	}
	slices.SortFunc(out, func(a, b Window) int { return int((a.Size - b.Size) / time.Minute) })
	return out, nil
}

// String returns the canonical name.
func (w Window) String() string { return w.Name }

// Seconds returns the window length in seconds, the denominator of
// throughput_per_sec.
func (w Window) Seconds() float64 { return w.Size.Seconds() }

// sizeSec is the window length in whole seconds.
func (w Window) sizeSec() int64 { return int64(w.Size / time.Second) }

// floorDiv is integer division rounding towards negative infinity, so
// buckets before 1970 are aligned the same way as buckets after it (Go's /
// truncates towards zero, which would put -1s in the bucket starting at 0).
func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// Start returns the start of the bucket containing t, in UTC. Buckets are
// [start, start+Size), aligned to the Unix epoch, so a 1day bucket runs
// from UTC midnight to UTC midnight. It works for any representable time.
func (w Window) Start(t time.Time) time.Time {
	return time.Unix(floorDiv(t.Unix(), w.sizeSec())*w.sizeSec(), 0).UTC()
}

// StartUnix returns the start, in Unix seconds, of the bucket containing the
// instant unixNano (nanoseconds since the epoch, negative before 1970). It is
// the hot-path form of Start and agrees with it for every input.
func (w Window) StartUnix(unixNano int64) int64 {
	// Seconds first (division by a constant is a multiply), then the
	// window: going through seconds cannot overflow, while flooring the
	// nanoseconds to a multiple of Size could underflow near MinInt64.
	sec := floorDiv(unixNano, int64(time.Second))
	size := w.sizeSec()
	return floorDiv(sec, size) * size
}

// End returns the exclusive end of the bucket that starts at start.
func (w Window) End(start time.Time) time.Time { return start.Add(w.Size) }

// Aligned reports whether unixSec is a bucket start of w.
func (w Window) Aligned(unixSec int64) bool {
	return floorDiv(unixSec, w.sizeSec())*w.sizeSec() == unixSec
}
