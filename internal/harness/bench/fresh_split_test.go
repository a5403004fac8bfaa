package bench

import (
	"testing"
	"time"
)

func TestSplitProbes(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	at := func(s, e float64) probe {
		return probe{t0.Add(time.Duration(s * float64(time.Second))), t0.Add(time.Duration(e * float64(time.Second)))}
	}
	from := t0.Add(4 * time.Second)
	for _, tc := range []struct {
		name   string
		p      probe
		from   time.Time
		before bool
	}{
		{"seen before the load", at(0.5, 1.2), from, true},
		{"seen just before it starts", at(3.5, 3.999), from, true},
		{"seen as it starts", at(3.5, 4), from, false},
		{"sent before, seen with it", at(3.8, 4.3), from, false},
		{"with it", at(6, 6.4), from, false},
		{"no load", at(6, 6.4), time.Time{}, true},
	} {
		before, with := splitProbes([]probe{tc.p}, tc.from)
		if got := len(before) == 1; got != tc.before || len(before)+len(with) != 1 {
			t.Errorf("%s: before %v with %v, want before=%v", tc.name, before, with, tc.before)
		}
	}
}

func TestSetFreshness(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	var ps []probe
	// 10 probes before the load at 100..190 ms, 10 with it at 1000..1900 ms.
	for i := range 10 {
		s := t0.Add(time.Duration(i) * 100 * time.Millisecond)
		ps = append(ps, probe{s, s.Add(time.Duration(100+10*i) * time.Millisecond)})
		d := t0.Add(10*time.Second + time.Duration(i)*100*time.Millisecond)
		ps = append(ps, probe{d, d.Add(time.Duration(1000+100*i) * time.Millisecond)})
	}
	var s Steady
	s.setFreshness(ps, t0.Add(5*time.Second))
	want := Steady{FreshP50ms: 190, FreshP99ms: 1900, FreshMaxMS: 1900,
		BeforeProbes: 10, FreshBeforeP50ms: 140, FreshBeforeP99ms: 190, WithProbes: 10, FreshWithP99ms: 1900}
	if s.FreshP50ms != want.FreshP50ms || s.FreshP99ms != want.FreshP99ms || s.FreshMaxMS != want.FreshMaxMS ||
		s.BeforeProbes != want.BeforeProbes || s.FreshBeforeP50ms != want.FreshBeforeP50ms || s.FreshBeforeP99ms != want.FreshBeforeP99ms ||
		s.WithProbes != want.WithProbes || s.FreshWithP99ms != want.FreshWithP99ms {
		t.Errorf("got %+v\nwant %+v", s, want)
	}
}
