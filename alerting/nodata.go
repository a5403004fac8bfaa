package alerting

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stacklens/stacklens/internal/window"
)

// MetricNoData is the metric_name of a rule that fires when a service
// stops sending (docs/alerting.md, "No data"): for_windows is the number of
// missing windows; operator and threshold are ignored.
const MetricNoData = "no_data"

// noDataRescan bounds how long a returning service waits for its no-data
// alert to resolve when no window boundary passes (a variable for tests).
var noDataRescan = 5 * time.Second

// DueWindow is the start of the newest window of w that is over at now: it
// ended at least grace ago, so a service that sent anything during it has
// its row by now (grace covers ALLOWED_LATENESS and the pipeline's delay).
func DueWindow(w window.Window, now time.Time, grace time.Duration) time.Time {
	return w.Start(now.Add(-grace - w.Size))
}

// MissingWindows counts the windows after lastSeen (the start of the
// service's newest row) up to and including due.
func MissingWindows(lastSeen, due time.Time, size time.Duration) int {
	if !due.After(lastSeen) {
		return 0
	}
	return int(due.Sub(lastSeen) / size)
}

// EvaluateNoData is the pure state machine of a no_data rule for one
// service, evaluated at a moment whose newest over window starts at due.
// lastSeen is the start of the service's newest row within the lookback,
// zero when it has none there.
//
//   - not firing: fires once ForWindows windows in a row (the ones after
//     lastSeen, up to due) have no row; the alert id derives from the
//     fingerprint and the first missing window, so re-evaluating the same
//     gap yields the same id (the insert and outbox rows stay idempotent).
//     A service with no row in the lookback was never seen by this rule and
//     does not fire.
//   - firing: resolves as soon as fewer than ForWindows windows are missing
//     (data came back); a service that stays away keeps its alert firing,
//     also after its last row left the lookback.
//
// State.Consecutive holds the missing windows (at most ForWindows) and
// State.LastWindow the due window of the last evaluation.
func EvaluateNoData(r *Rule, fingerprint string, size time.Duration, st State, lastSeen, due time.Time) Step {
	next := st
	next.LastWindow = due
	n := max(r.ForWindows, 1)
	if lastSeen.IsZero() {
		if !st.Firing && st.Consecutive != 0 {
			next.Consecutive = 0
			return Step{Next: next, Changed: true}
		}
		return Step{Next: next}
	}
	missing := MissingWindows(lastSeen, due, size)
	if st.Firing {
		if missing >= n {
			return Step{Next: next}
		}
		next.Firing, next.Consecutive, next.AlertID = false, missing, ""
		return Step{Next: next, Transition: Resolve, AlertID: st.AlertID, Changed: true}
	}
	if missing < n {
		next.Consecutive = missing
		return Step{Next: next, Changed: missing != st.Consecutive}
	}
	next.Firing, next.Consecutive = true, n
	next.AlertID = AlertID(fingerprint, lastSeen.Add(size))
	return Step{Next: next, Transition: Fire, AlertID: next.AlertID, Changed: true}
}

// noDataLookback is how far back a no_data rule on w looks for services:
// the evaluation horizon plus the missing windows, so a service is watched
// at least until its alert could fire.
func (e *Engine) noDataLookback(w window.Window, forWindows int) time.Duration {
	return e.horizon(w) + time.Duration(forWindows)*w.Size
}

// lastSeen returns, per service, the start of its newest row (final or
// not) of window w since `since`.
func (e *Engine) lastSeen(ctx context.Context, w window.Window, since time.Time) (map[string]time.Time, error) {
	rows, err := e.pool.Query(ctx, `SELECT service, max(timestamp) FROM analytics_metrics_`+w.Name+`
WHERE timestamp >= $1 GROUP BY service`, since)
	if err != nil {
		return nil, fmt.Errorf("read %s services: %w", w.Name, err)
	}
	out := map[string]time.Time{}
	var svc string
	var ts time.Time
	_, err = pgx.ForEachRow(rows, []any{&svc, &ts}, func() error {
		out[svc] = ts
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read %s services: %w", w.Name, err)
	}
	return out, nil
}

// noDataScan is when the services of a window were last scanned for a
// no_data rule, and which due window that was for.
type noDataScan struct {
	at    time.Time
	due   time.Time
	rules string // the rules scanned for: a new or changed rule rescans at once
}

// evaluateNoData evaluates the no_data rules of window w: once per window
// boundary (when due advances), and at most every noDataRescan otherwise
// so that a returning service resolves promptly. It returns the changes.
func (e *Engine) evaluateNoData(ctx context.Context, w window.Window, rules []*Rule, now time.Time,
	get func(fp string, r *Rule, svc string) *fpState) ([]change, error) {
	due := DueWindow(w, now, e.cfg.NoDataGrace)
	longest := 1
	key := ""
	for _, r := range rules {
		longest = max(longest, r.ForWindows)
		key += fmt.Sprintf("%d/%d ", r.ID, r.ForWindows)
	}
	last, scanned := e.noData[w.Name]
	if scanned && last.due.Equal(due) && last.rules == key && !now.Before(last.at) && now.Sub(last.at) < noDataRescan {
		return nil, nil
	}
	seen, err := e.lastSeen(ctx, w, now.Add(-e.noDataLookback(w, longest)))
	if err != nil {
		return nil, err
	}
	e.noData[w.Name] = noDataScan{at: now, due: due, rules: key}
	var out []change
	for _, r := range rules {
		services := map[string]time.Time{}
		for svc, ts := range seen {
			if ts.After(now.Add(-e.noDataLookback(w, r.ForWindows))) {
				services[svc] = ts
			}
		}
		// Firing alerts of services gone past the lookback stay evaluated
		// (they keep firing until the service returns).
		for _, s := range e.ev.states {
			if s.ruleID == r.ID && s.Firing {
				if _, ok := services[s.service]; !ok {
					services[s.service] = time.Time{}
				}
			}
		}
		for svc, ts := range services {
			fp := Fingerprint(r.ID, svc)
			s := get(fp, r, svc)
			step := EvaluateNoData(r, fp, w.Size, s.State, ts, due)
			evaluationsTotal.Inc()
			s.State = step.Next
			s.dirty = s.dirty || step.Changed
			if step.Transition != None {
				out = append(out, change{rule: r, fp: fp, service: svc, step: step,
					value: float64(MissingWindows(ts, due, w.Size)), start: due, lastSeen: ts})
			}
		}
	}
	return out, nil
}

func noDataMessage(r *Rule, service string, missing float64, first time.Time) string {
	return fmt.Sprintf("%s: no data from service %s for %s %s windows (since the window starting %s)",
		r.Name, service, fmtValue(missing), r.Window, first.Format(time.RFC3339))
}
