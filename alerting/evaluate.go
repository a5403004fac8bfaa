package alerting

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"
)

// Fingerprint identifies a rule + service: the Kafka message key and the
// PagerDuty dedup_key. It is derived from the rule's id (not its name), so
// renaming a rule keeps its open alerts.
func Fingerprint(ruleID int64, service string) string {
	h := sha256.Sum256([]byte("stacklens-alert\x00" + strconv.FormatInt(ruleID, 10) + "\x00" + service))
	return hex.EncodeToString(h[:16])
}

// AlertID is the stable id of the alert episode of fingerprint whose first
// breaching window started at firstBreach: re-evaluating the same windows
// always yields the same id, so the insert and the outbox rows are
// idempotent and consumers can de-duplicate on it.
func AlertID(fingerprint string, firstBreach time.Time) string {
	h := sha256.Sum256([]byte(fingerprint + "\x00" + strconv.FormatInt(firstBreach.Unix(), 10)))
	return "alr_" + hex.EncodeToString(h[:12])
}

// State is the evaluator's state of one fingerprint (a row of
// analytics_alert_state).
type State struct {
	// Consecutive is how many contiguous windows (ending at LastWindow)
	// breached the rule while it was not firing.
	Consecutive int
	// LastWindow is the start of the newest window evaluated; windows not
	// after it are not evaluated again (re-reads and late corrections of
	// past windows cannot fire twice).
	LastWindow time.Time
	Firing     bool
	AlertID    string
}

// Transition is what a step did to the alert.
type Transition int

// Transitions.
const (
	None Transition = iota
	Fire
	Resolve
)

func (t Transition) String() string {
	switch t {
	case Fire:
		return "firing"
	case Resolve:
		return "resolved"
	}
	return "none"
}

// Step is the result of evaluating one window.
type Step struct {
	Next       State
	Transition Transition
	// AlertID of the alert fired or resolved.
	AlertID string
	// Stale: the window is not newer than the last one evaluated; nothing
	// changed.
	Stale bool
	// Changed: Next differs from the previous state in something the
	// database must remember (consecutive count, firing, alert id).
	Changed bool
}

// Evaluate is the rule's pure state machine: it applies the value of the
// window starting at start (of size win) to st.
//
//   - not firing: a breaching window extends the run of consecutive
//     breaching windows (a gap — a window with no row — restarts it); when
//     the run reaches ForWindows the alert fires, with an alert id derived
//     from the fingerprint and the run's first window.
//   - firing: nothing happens until a window's value is on the good side of
//     the resolve threshold (hysteresis); then the alert resolves.
func Evaluate(r *Rule, fingerprint string, win time.Duration, st State, start time.Time, value float64) Step {
	if !st.LastWindow.IsZero() && !start.After(st.LastWindow) {
		return Step{Next: st, Stale: true}
	}
	next := st
	next.LastWindow = start
	if st.Firing {
		if !r.Cleared(value) {
			return Step{Next: next}
		}
		next.Firing, next.Consecutive, next.AlertID = false, 0, ""
		return Step{Next: next, Transition: Resolve, AlertID: st.AlertID, Changed: true}
	}
	if !r.Breaches(value) {
		next.Consecutive = 0
		return Step{Next: next, Changed: st.Consecutive != 0}
	}
	if st.Consecutive > 0 && start.Equal(st.LastWindow.Add(win)) {
		next.Consecutive = st.Consecutive + 1
	} else {
		next.Consecutive = 1
	}
	forWindows := max(r.ForWindows, 1)
	if next.Consecutive < forWindows {
		return Step{Next: next, Changed: true}
	}
	first := start.Add(-time.Duration(next.Consecutive-1) * win)
	next.Firing = true
	next.AlertID = AlertID(fingerprint, first)
	next.Consecutive = forWindows
	return Step{Next: next, Transition: Fire, AlertID: next.AlertID, Changed: true}
}

// Silence is one row of analytics_alert_silences; nil matchers match
// anything.
type Silence struct {
	ID       int64
	RuleName *string
	Service  *string
	Severity *string
	StartsAt time.Time
	EndsAt   time.Time
}

// Matches reports whether the silence covers an alert of rule r for
// service at time now.
func (s *Silence) Matches(r *Rule, service string, now time.Time) bool {
	if now.Before(s.StartsAt) || !now.Before(s.EndsAt) {
		return false
	}
	return (s.RuleName == nil || *s.RuleName == r.Name) &&
		(s.Service == nil || *s.Service == service) &&
		(s.Severity == nil || *s.Severity == r.Severity)
}

func silenced(sils []Silence, r *Rule, service string, now time.Time) bool {
	for i := range sils {
		if sils[i].Matches(r, service, now) {
			return true
		}
	}
	return false
}
