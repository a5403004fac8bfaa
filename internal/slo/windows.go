package slo

import (
	"time"

	"github.com/stacklens/stacklens/internal/window"
)

// MinBuckets is the fewest buckets a rolling window is read from. The
// newest bucket is the current, partial one, so a window of n buckets
// covers between n-1 and n bucket lengths of event time; with n >= 5 that
// is at least 80 % of the window (a 5m window from the 5min table would be
// the current bucket alone, a few seconds after each boundary).
const MinBuckets = 5

// TableFor picks the metrics table that answers a rolling window of d:
// the coarsest configured window whose size divides d into at least
// MinBuckets buckets; when none does, the finest window. With the default
// windows: 5m from 1min; 30m, 1h and 2h from 5min; 6h, 1d, 3d and a 30d
// period from 1hour.
func TableFor(d time.Duration, windows []window.Window) window.Window {
	if len(windows) == 0 {
		windows = window.Defaults()
	}
	best, finest := window.Window{}, windows[0]
	for _, w := range windows {
		if w.Size < finest.Size {
			finest = w
		}
		if d%w.Size == 0 && d/w.Size >= MinBuckets && w.Size > best.Size {
			best = w
		}
	}
	if best.Size == 0 {
		return finest
	}
	return best
}

// Range is the run of buckets of one metrics table that answers a
// rolling window ending at some instant.
type Range struct {
	Window window.Window
	// First and Last are the starts of the oldest and the newest bucket,
	// both included.
	First, Last time.Time
}

// Span is the event time the range covers up to now: from the start of
// its oldest bucket.
func (r Range) Span(now time.Time) time.Duration { return now.Sub(r.First) }

// RangeAt is the range of the rolling window of d ending at now: the
// ceil(d / size) newest buckets of TableFor(d), the one containing now —
// still partial — included. Including it keeps burn rates current (they
// are ratios, which a partial bucket does not bias); the price is that the
// window covers between d - size and d of event time (Span).
func RangeAt(d time.Duration, now time.Time, windows []window.Window) Range {
	w := TableFor(d, windows)
	return rangeOf(w, d, w.Start(now))
}

// RangeBefore is the range of the rolling window of d that ends at the
// bucket boundary end (excluded) of TableFor(d): the complete buckets
// starting in [end - d, end). History points use it; end is a boundary.
func RangeBefore(d time.Duration, end time.Time, windows []window.Window) Range {
	w := TableFor(d, windows)
	return rangeOf(w, d, w.Start(end.Add(-time.Nanosecond)))
}

func rangeOf(w window.Window, d time.Duration, last time.Time) Range {
	n := (d + w.Size - 1) / w.Size
	return Range{Window: w, First: last.Add(-(n - 1) * w.Size), Last: last}
}
