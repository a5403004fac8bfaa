package agg

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/stacklens/stacklens/internal/event"
)

// Key identifies one aggregate: a service, a window (index into the
// Aggregator's windows, smallest first) and the bucket start in Unix seconds.
type Key struct {
	Service string
	Window  uint8
	Start   int64
}

// KVKey returns the key of the aggregate in its window's KV bucket
// (docs/ARCHITECTURE.md §2.2): "<service-token>.<bucket-start-unix-seconds>". The window
// is not part of it: each window has its own bucket.
func (k Key) KVKey() string {
	return event.ServiceToken(k.Service) + "." + strconv.FormatInt(k.Start, 10)
}

// ParseKVKey reverses KVKey. The returned Key has Window 0: the caller
// knows the window from the bucket the key came from. Keys KVKey cannot
// produce (bad token, non-canonical number such as "+5" or "007") are
// rejected, so the mapping stays one-to-one in both directions.
func ParseKVKey(key string) (Key, error) {
	token, num, ok := strings.Cut(key, ".")
	if !ok {
		return Key{}, fmt.Errorf("agg: KV key %q: want <service-token>.<unix-seconds>", key)
	}
	start, err := strconv.ParseInt(num, 10, 64)
	if err != nil || strconv.FormatInt(start, 10) != num {
		return Key{}, fmt.Errorf("agg: KV key %q: bad bucket start %q", key, num)
	}
	service, err := event.ParseServiceToken(token)
	if err != nil {
		return Key{}, fmt.Errorf("agg: KV key %q: %w", key, err)
	}
	return Key{Service: service, Start: start}, nil
}
