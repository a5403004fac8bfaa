package agg

import (
	"errors"
	"fmt"
	"math"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/DataDog/sketches-go/ddsketch/mapping"
	"github.com/DataDog/sketches-go/ddsketch/store"

	"github.com/stacklens/stacklens/internal/event"
)

const (
	// RelativeAccuracy of latency percentiles (docs/ARCHITECTURE.md §4).
	RelativeAccuracy = 0.01
	// SketchMaxBins bounds the bins of each sketch store; see the package
	// documentation for why 2048 and why the lowest bins collapse.
	SketchMaxBins = 2048
	// MaxLatencyMS is the largest latency the kernel records (about 31 700
	// years); larger values are clamped so that Σx² cannot overflow. It is
	// the decoder's bound, so only events that bypassed validation (none in
	// the pipeline) are ever clamped.
	MaxLatencyMS = event.MaxLatencyMS
)

// sketchMapping is shared by every sketch: it is immutable, and sharing it
// saves memory and makes the mapping equality check in merges a pointer
// compare in practice.
var sketchMapping = func() *mapping.LogarithmicMapping {
	m, err := mapping.NewLogarithmicMapping(RelativeAccuracy)
	if err != nil {
		panic(err)
	}
	return m
}()

func newStore() store.Store { return store.NewCollapsingLowestDenseStore(SketchMaxBins) }

// NewSketch returns an empty sketch with the kernel's mapping and stores.
func NewSketch() *ddsketch.DDSketch {
	return ddsketch.NewDDSketch(sketchMapping, newStore(), newStore())
}

// sketchQuantile returns the nearest-rank q-quantile of the non-negative
// values in sk: the value of rank ⌈q·n⌉ (1-based). The library's own
// GetValueAtQuantile uses rank ⌊q·(n−1)⌋ (0-based), a different order
// statistic; we want the common nearest-rank definition, computed on the
// same bins. sk must be non-empty and hold no negative values.
func sketchQuantile(sk *ddsketch.DDSketch, q float64) float64 {
	n := sk.GetCount()
	// The explicit conversion stops the compiler fusing the multiply into
	// anything else, so the rank is the same on every architecture.
	k := math.Ceil(float64(q * n))
	r := max(k-1, 0) // 0-based rank
	zero := sk.GetZeroCount()
	if r < zero {
		return 0
	}
	pos := sk.GetPositiveValueStore()
	return sk.Value(pos.KeyAtRank(r - zero))
}

// decodeSketch decodes the compact encoding of a sketch into the empty
// sketch into (nil: a new sketch with the kernel's stores). On error no
// sketch is returned, so a half-decoded one is never reused. The library
// trusts its input: a corrupt bin
// index can make a store compute a negative length and panic, so a panic
// here is turned into an error (decoding is the one place untrusted bytes
// reach the library).
func decodeSketch(into *ddsketch.DDSketch, b []byte) (sk *ddsketch.DDSketch, err error) {
	defer func() {
		if r := recover(); r != nil {
			sk, err = nil, fmt.Errorf("corrupt sketch: %v", r)
		}
	}()
	if sk = into; sk == nil {
		sk = NewSketch()
	}
	if err := sk.DecodeAndMergeWith(b); err != nil {
		return nil, fmt.Errorf("corrupt sketch: %w", err)
	}
	return sk, nil
}

var errSketchMismatch = errors.New("sketch does not match the aggregate")

// checkSketch verifies that sk can be the sketch of count latencies in
// [minV, maxV]: only whole, positive bin counts adding up to count, no
// negative values, and bins within the index range of [minV, maxV] (±1 for
// rounding; collapsing only ever moves counts to higher bins of the range).
// It is what lets Decode promise that a decoded aggregate behaves like one
// built by Add.
func checkSketch(sk *ddsketch.DDSketch, count uint64, minV, maxV float64) error {
	if !sk.GetNegativeValueStore().IsEmpty() {
		return fmt.Errorf("%w: negative latencies", errSketchMismatch)
	}
	zero := sk.GetZeroCount()
	if !isCount(zero) {
		return fmt.Errorf("%w: zero count %v", errSketchMismatch, zero)
	}
	pos := sk.GetPositiveValueStore()
	total := zero
	ok := true
	pos.ForEach(func(_ int, c float64) bool {
		ok = isCount(c)
		total += c
		return !ok
	})
	// The store's running total must equal the sum of its positive bins:
	// a zero, negative or NaN bin from corrupt input would make them differ.
	if !ok || total != zero+pos.TotalCount() || total != float64(count) {
		return fmt.Errorf("%w: sketch holds %v values, aggregate counts %d", errSketchMismatch, total, count)
	}
	// The minimum and the maximum are never collapsed away, so their bins
	// must be there: zeros iff the minimum is (indexably) zero, and the top
	// bin at the maximum's index.
	tiny := sketchMapping.MinIndexableValue()
	if (zero > 0) != (count > 0 && minV <= tiny) {
		return fmt.Errorf("%w: %v zero values with minimum latency %v", errSketchMismatch, zero, minV)
	}
	if pos.IsEmpty() != (maxV <= tiny) {
		return fmt.Errorf("%w: positive values do not match maximum latency %v", errSketchMismatch, maxV)
	}
	if pos.IsEmpty() {
		return nil
	}
	lo, _ := pos.MinIndex()
	hi, _ := pos.MaxIndex()
	top := sketchMapping.Index(maxV)
	if lo < sketchMapping.Index(max(minV, tiny))-1 || hi < top-1 || hi > top+1 {
		return fmt.Errorf("%w: bins [%d, %d] do not match the latency range [%v, %v]", errSketchMismatch, lo, hi, minV, maxV)
	}
	return nil
}

// isCount reports whether c is a whole, non-negative, exactly representable
// count.
func isCount(c float64) bool {
	return c >= 0 && c <= 1<<53 && c == math.Trunc(c)
}
