package slo

import (
	"math"
	"time"
)

// Counts are the good and total events of an objective over some time.
type Counts struct {
	Good  int64 `json:"good"`
	Total int64 `json:"total"`
}

// Bad is Total - Good.
func (c Counts) Bad() int64 { return c.Total - c.Good }

// Add returns the sum of c and o.
func (c Counts) Add(o Counts) Counts { return Counts{c.Good + o.Good, c.Total + o.Total} }

// BudgetFraction is the share of events allowed to be bad: 1 - target/100,
// rounded to 11 decimals so that a decimal target gives the float nearest
// the decimal fraction (99.9 → 0.001, where 1 - 99.9/100 is
// 0.0010000000000000009): 1 % bad events on a 99 % objective then burns
// at exactly 1x. Targets are percentages with at most 9 decimals.
func BudgetFraction(target float64) float64 { return math.Round((100-target)*1e9) / 1e11 }

// Compliance is the percentage of good events; nil without events.
func Compliance(c Counts) *float64 {
	if c.Total <= 0 {
		return nil
	}
	v := 100 * float64(c.Good) / float64(c.Total)
	return &v
}

// BurnRate is how many times faster than sustainable the budget burns:
// (bad / total) / (1 - target/100). 1 spends exactly the budget over the
// period; nil without events.
func BurnRate(c Counts, target float64) *float64 {
	if c.Total <= 0 {
		return nil
	}
	f := BudgetFraction(target)
	if f <= 0 {
		return nil // no budget (Validate refuses such targets)
	}
	v := float64(c.Bad()) / float64(c.Total) / f
	return &v
}

// Burning reports whether a burn rate reaches threshold. Targets are
// decimal percentages that binary floating point cannot hold exactly
// (1 - 99.9/100 is 0.0010000000000000009), so a rate that is the threshold
// in decimal arithmetic may come out a few ulps below it; the relative
// tolerance of 1e-9 counts it as reached.
func Burning(rate *float64, threshold float64) bool {
	return rate != nil && *rate >= threshold*(1-1e-9)
}

// Budget is the error budget of a period.
type Budget struct {
	// TotalEvents is how many bad events the target allows:
	// (1 - target/100) x total events.
	TotalEvents float64 `json:"total_events"`
	// ConsumedEvents are the bad events.
	ConsumedEvents int64 `json:"consumed_events"`
	// RemainingEvents is TotalEvents - ConsumedEvents (negative when
	// overspent).
	RemainingEvents float64 `json:"remaining_events"`
	// ConsumedRatio and RemainingRatio are of TotalEvents; nil without
	// events.
	ConsumedRatio  *float64 `json:"consumed_ratio"`
	RemainingRatio *float64 `json:"remaining_ratio"`
}

// ErrorBudget computes the budget of c under target.
func ErrorBudget(c Counts, target float64) Budget {
	b := Budget{
		TotalEvents:    BudgetFraction(target) * float64(c.Total),
		ConsumedEvents: c.Bad(),
	}
	b.RemainingEvents = b.TotalEvents - float64(b.ConsumedEvents)
	if c.Total > 0 && b.TotalEvents > 0 {
		cr := float64(b.ConsumedEvents) / b.TotalEvents
		rr := b.RemainingEvents / b.TotalEvents
		b.ConsumedRatio, b.RemainingRatio = &cr, &rr
	}
	return b
}

// TimeToExhaustion is how many seconds the remaining budget lasts at the
// bad-event rate of bad events in span: 0 when the budget is spent, nil
// when nothing burns (no bad events, or no events at all in the period).
func TimeToExhaustion(b Budget, periodTotal int64, bad int64, span time.Duration) *float64 {
	if periodTotal <= 0 {
		return nil
	}
	if b.RemainingEvents <= 0 {
		z := 0.0
		return &z
	}
	if bad <= 0 || span <= 0 {
		return nil
	}
	v := b.RemainingEvents / (float64(bad) / span.Seconds())
	return &v
}
