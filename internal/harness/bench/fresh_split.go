package bench

import (
	"slices"
	"time"
)

// probe is one freshness probe: written to Kafka at sent, visible at
// /metrics at seen.
type probe struct {
	sent, seen time.Time
}

// splitProbes divides the probes' freshness at from, when the steady
// hold's 32-client API load starts competing with the pipeline for the
// same cores: the probes seen before it are the pipeline's own freshness
// at that rate; the others ran with the load or behind the backlog it
// left. With no load (from zero) every probe is before.
func splitProbes(ps []probe, from time.Time) (before, with []time.Duration) {
	for _, p := range ps {
		d := p.seen.Sub(p.sent)
		if from.IsZero() || p.seen.Before(from) {
			before = append(before, d)
		} else {
			with = append(with, d)
		}
	}
	return before, with
}

// setFreshness fills the steady hold's freshness figures from the probes
// seen, all of them and split at the API load's start.
func (s *Steady) setFreshness(ps []probe, loadFrom time.Time) {
	before, with := splitProbes(ps, loadFrom)
	all := append(slices.Clone(before), with...)
	s.FreshP50ms, s.FreshP99ms = ms(Percentile(all, 0.5)), ms(Percentile(all, 0.99))
	if len(all) > 0 {
		s.FreshMaxMS = ms(slices.Max(all))
	}
	s.BeforeProbes, s.WithProbes = len(before), len(with)
	s.FreshBeforeP50ms, s.FreshBeforeP99ms = ms(Percentile(before, 0.5)), ms(Percentile(before, 0.99))
	s.FreshWithP99ms = ms(Percentile(with, 0.99))
}
