package agg

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/stacklens/stacklens/internal/event"
	"github.com/stacklens/stacklens/internal/window"
)

const (
	// DefaultMaxServices is MAX_SERVICES' default (docs/ARCHITECTURE.md §4).
	DefaultMaxServices = 10000
	// OverflowService is the service under which events of services beyond
	// MaxServices are counted. A real service of that name shares its
	// aggregates.
	OverflowService = "_overflow"
)

// Config configures an Aggregator.
type Config struct {
	// Windows, as from window.ParseList (canonical, distinct sizes); Key.Window
	// indexes this slice. At most 256.
	Windows []window.Window
	// MaxServices is the number of distinct services admitted per (window,
	// bucket); ≤ 0 means DefaultMaxServices.
	MaxServices int
	// Thresholds are the latency thresholds (ms) whose good events every
	// aggregate created counts (see SetThresholds).
	Thresholds []float64
}

// Aggregator folds events into per-(service, window, bucket) delta
// aggregates: the seed's TimeSeriesAggregator. It is not safe for
// concurrent use; a processor worker owns one.
//
// Cardinality (docs/ARCHITECTURE.md §4): in each (window, bucket), the first MaxServices
// distinct services get their own aggregates; events of further services
// are folded into the OverflowService aggregate of that bucket and counted
// by Overflow. Which services are admitted is remembered per bucket across
// Drains (so a service never moves between its own key and _overflow within
// a bucket) until ForgetBefore drops the bucket. The bound is per
// Aggregator: processors owning different shards each admit up to
// MaxServices. Memory is bounded by (MaxServices+1) aggregates per window
// per bucket touched between Drains, plus the admission sets of buckets not
// yet forgotten.
type Aggregator struct {
	windows     []window.Window
	maxServices int
	thresholds  []float64 // normalized; given to every aggregate created

	aggs     map[Key]*Aggregate
	admitted map[bucketID]map[string]string // service → its interned copy
	overflow uint64

	// cache[i] is the aggregate the previous event hit in window i: events
	// of one service tend to come in runs, and a hit skips the map.
	cache []cacheEntry

	free     []*Aggregate        // drained aggregates, reset, for reuse
	freeSets []map[string]string // forgotten admission sets, cleared
}

type bucketID struct {
	window uint8
	start  int64
}

type cacheEntry struct {
	service string // interned: never points into an event's buffer
	start   int64
	agg     *Aggregate
}

// NewAggregator returns an empty Aggregator.
func NewAggregator(cfg Config) (*Aggregator, error) {
	if len(cfg.Windows) == 0 || len(cfg.Windows) > 256 {
		return nil, fmt.Errorf("agg: need 1 to 256 windows, got %d", len(cfg.Windows))
	}
	for i, w := range cfg.Windows {
		if p, err := window.Parse(w.Name); err != nil || p != w {
			return nil, fmt.Errorf("agg: window %+v is not a canonical window from window.Parse", w)
		}
		for _, prev := range cfg.Windows[:i] {
			if prev.Size == w.Size {
				return nil, errors.New("agg: duplicate window " + w.Name)
			}
		}
	}
	g := &Aggregator{
		windows:     slices.Clone(cfg.Windows),
		maxServices: cfg.MaxServices,
		aggs:        make(map[Key]*Aggregate),
		admitted:    make(map[bucketID]map[string]string),
		cache:       make([]cacheEntry, len(cfg.Windows)),
	}
	if g.maxServices <= 0 {
		g.maxServices = DefaultMaxServices
	}
	if err := g.SetThresholds(cfg.Thresholds); err != nil {
		return nil, err
	}
	return g, nil
}

// SetThresholds sets the latency thresholds counted by the aggregates
// created from now on; aggregates already held keep theirs (a threshold is
// only counted from an aggregate's first event, docs/processor.md).
func (g *Aggregator) SetThresholds(ts []float64) error {
	ts, err := NormalizeThresholds(ts)
	if err != nil {
		return fmt.Errorf("agg: %w", err)
	}
	g.thresholds = ts
	return nil
}

// Windows returns the configured windows; Key.Window indexes them.
func (g *Aggregator) Windows() []window.Window { return slices.Clone(g.windows) }

// Add folds e, the event at stream sequence seq (0 when unsequenced), into
// its bucket of every window. Aggregates remember the highest seq folded in
// (LastSeq); skipping events already contained in a stored aggregate is the
// caller's job, since only it knows the stored LastSeq. Add does not
// allocate in steady state.
func (g *Aggregator) Add(e event.Event, seq uint64) {
	s := makeSample(e)
	for i := range g.windows {
		start := g.windows[i].StartUnix(s.ns)
		c := &g.cache[i]
		a := c.agg
		if a == nil || c.start != start || c.service != e.Service {
			a = g.lookup(uint8(i), e.Service, start)
		}
		a.add(s)
		a.LastSeq = max(a.LastSeq, seq)
	}
}

// lookup finds or creates the aggregate for (service, window, start),
// applying the cardinality bound, and caches it unless it is the overflow
// aggregate (whose cache entry would have to hold the event's own string).
func (g *Aggregator) lookup(w uint8, service string, start int64) *Aggregate {
	c := &g.cache[w]
	c.agg = nil
	if a := g.aggs[Key{Service: service, Window: w, Start: start}]; a != nil {
		c.service, c.start, c.agg = a.Service, start, a
		return a
	}
	b := bucketID{window: w, start: start}
	set := g.admitted[b]
	if set == nil {
		set = g.newSet()
		g.admitted[b] = set
	}
	name, ok := set[service]
	if !ok {
		if len(set) >= g.maxServices {
			g.overflow++
			k := Key{Service: OverflowService, Window: w, Start: start}
			a := g.aggs[k]
			if a == nil {
				a = g.newAggregate(k)
			}
			return a
		}
		// Clone: the event's string may share a large message buffer.
		name = strings.Clone(service)
		set[name] = name
	}
	a := g.newAggregate(Key{Service: name, Window: w, Start: start})
	c.service, c.start, c.agg = name, start, a
	return a
}

func (g *Aggregator) newSet() map[string]string {
	if n := len(g.freeSets); n > 0 {
		set := g.freeSets[n-1]
		g.freeSets = g.freeSets[:n-1]
		return set
	}
	return make(map[string]string)
}

func (g *Aggregator) newAggregate(k Key) *Aggregate {
	var a *Aggregate
	if n := len(g.free); n > 0 {
		a = g.free[n-1]
		g.free = g.free[:n-1]
		a.Service, a.Start = k.Service, k.Start
	} else {
		a = NewAggregate(k.Service, k.Start)
	}
	a.SetThresholds(g.thresholds)
	g.aggs[k] = a
	return a
}

// Len returns the number of aggregates held (since the last Drain).
func (g *Aggregator) Len() int { return len(g.aggs) }

// Overflow returns how many event folds went to OverflowService because
// their service was not admitted (an event counts once per window).
func (g *Aggregator) Overflow() uint64 { return g.overflow }

// Drain hands every aggregate held to fn, in no particular order, and
// empties the Aggregator: the processor's flush. The *Aggregate is only
// valid during the call — it is reset and reused afterwards — so fn must
// merge, encode or Clone it, not keep it. fn must not call the Aggregator.
func (g *Aggregator) Drain(fn func(Key, *Aggregate)) {
	n := len(g.aggs)
	// Keep as many spare aggregates as this interval used: the next
	// interval most likely needs as many, and an old spike is not pinned.
	if len(g.free) > n {
		clear(g.free[n:])
		g.free = g.free[:n]
	}
	keep := n - len(g.free)
	for k, a := range g.aggs {
		fn(k, a)
		if keep > 0 {
			keep--
			a.Reset()
			g.free = append(g.free, a)
		}
	}
	clear(g.aggs)
	clear(g.cache)
}

// ForgetBefore drops the admission state of the buckets that end at or
// before unixSec (start + window size ≤ unixSec): the processor calls it
// once windows are final, to bound memory. A late event for a forgotten
// bucket is admitted afresh. It returns the number of buckets dropped.
func (g *Aggregator) ForgetBefore(unixSec int64) int {
	dropped := 0
	for b, set := range g.admitted {
		if b.start+int64(g.windows[b.window].Seconds()) <= unixSec {
			delete(g.admitted, b)
			clear(set)
			g.freeSets = append(g.freeSets, set)
			dropped++
		}
	}
	// Keep the spare sets few; each may have grown to MaxServices entries.
	if len(g.freeSets) > 2*len(g.windows) {
		clear(g.freeSets[2*len(g.windows):])
		g.freeSets = g.freeSets[:2*len(g.windows)]
	}
	clear(g.cache)
	return dropped
}

// Get returns the aggregate held for k, or nil; like Drain's, it is valid
// until the next Drain.
func (g *Aggregator) Get(k Key) *Aggregate { return g.aggs[k] }

// Snapshot returns deep copies of all aggregates held, for tests and
// debugging.
func (g *Aggregator) Snapshot() map[Key]*Aggregate {
	m := make(map[Key]*Aggregate, len(g.aggs))
	for k, a := range g.aggs {
		m[k] = a.Clone()
	}
	return m
}

// Aggregate returns the rows of window name ("1min", or any spelling Parse
// accepts) held since the last Drain, newest bucket first, then by
// service: the seed's agg.aggregate('1min'). It returns nil for a window
// that is not configured.
func (g *Aggregator) Aggregate(name string) []Row {
	w, err := window.Parse(name)
	if err != nil {
		return nil
	}
	idx := slices.Index(g.windows, w)
	if idx < 0 {
		return nil
	}
	rows := []Row{}
	for k, a := range g.aggs {
		if int(k.Window) == idx {
			rows = append(rows, a.Row(w))
		}
	}
	slices.SortFunc(rows, func(x, y Row) int {
		if c := y.Timestamp.Compare(x.Timestamp); c != 0 {
			return c
		}
		return cmp.Compare(x.Service, y.Service)
	})
	return rows
}
