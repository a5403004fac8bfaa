package telemetry

import (
	"context"
	"log/slog"
	"math"
	"time"
)

// Figure is one number of a progress line.
type Figure struct {
	Name  string
	Value float64
	// Total marks a running total (a counter): the line also carries
	// <Name>_per_sec, its rate since the previous line.
	Total bool
}

// Progress logs a one-line summary of figures() at INFO every interval —
// what a Kafka consumer's statistics line gives an operator tailing the
// logs — until ctx ends. interval <= 0 (STATS_INTERVAL_SEC=0) turns it off.
// The figures are read from the component's Prometheus counters, so the
// line and /metrics never disagree.
func Progress(ctx context.Context, log *slog.Logger, interval time.Duration, figures func() []Figure) {
	if interval <= 0 || figures == nil {
		return
	}
	prev := map[string]float64{}
	for _, f := range figures() {
		if f.Total {
			prev[f.Name] = f.Value
		}
	}
	last := time.Now()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			log.LogAttrs(ctx, slog.LevelInfo, "progress", progressAttrs(figures(), prev, now.Sub(last))...)
			last = now
		}
	}
}

// progressAttrs renders the figures, adding the rate of each total since
// the values in prev (which it updates).
func progressAttrs(figs []Figure, prev map[string]float64, elapsed time.Duration) []slog.Attr {
	attrs := make([]slog.Attr, 0, 2*len(figs))
	for _, f := range figs {
		attrs = append(attrs, number(f.Name, f.Value))
		if f.Total {
			rate := 0.0
			if s := elapsed.Seconds(); s > 0 {
				rate = math.Round((f.Value-prev[f.Name])/s*10) / 10
			}
			attrs = append(attrs, slog.Float64(f.Name+"_per_sec", rate))
			prev[f.Name] = f.Value
		}
	}
	return attrs
}

// number logs whole values as integers (counters, gauges of messages).
func number(name string, v float64) slog.Attr {
	if v == math.Trunc(v) && math.Abs(v) < 1<<53 {
		return slog.Int64(name, int64(v))
	}
	return slog.Float64(name, v)
}
