package telemetry

import (
	"context"
	"sort"
	"sync"
	"time"
)

// Health collects named readiness checks of the components running in a
// process. A component reports itself with Set (push) or registers a Check
// (pull); /ready is 200 only when every check passes.
type Health struct {
	mu     sync.RWMutex
	state  map[string]Status
	checks map[string]func(context.Context) error
}

// Status is the last known state of one check.
type Status struct {
	OK      bool      `json:"ok"`
	Message string    `json:"message,omitempty"`
	Since   time.Time `json:"since"`
}

// NewHealth returns an empty registry.
func NewHealth() *Health {
	return &Health{state: map[string]Status{}, checks: map[string]func(context.Context) error{}}
}

// Set records the state of name; the time only moves when the state flips.
func (h *Health) Set(name string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := Status{OK: err == nil, Since: time.Now().UTC()}
	if err != nil {
		st.Message = err.Error()
	}
	if old, ok := h.state[name]; ok && old.OK == st.OK {
		st.Since = old.Since
	}
	h.state[name] = st
}

// Register adds a check that is run on every Snapshot.
func (h *Health) Register(name string, check func(context.Context) error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checks[name] = check
}

// Remove forgets name (a component that stopped).
func (h *Health) Remove(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.state, name)
	delete(h.checks, name)
}

// Snapshot runs the registered checks and returns every state and whether
// all are OK.
func (h *Health) Snapshot(ctx context.Context) (map[string]Status, bool) {
	h.mu.RLock()
	checks := make(map[string]func(context.Context) error, len(h.checks))
	for k, v := range h.checks {
		checks[k] = v
	}
	out := make(map[string]Status, len(h.state)+len(checks))
	for k, v := range h.state {
		out[k] = v
	}
	h.mu.RUnlock()
	names := make([]string, 0, len(checks))
	for n := range checks {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := checks[n](cctx)
		cancel()
		h.Set(n, err)
		h.mu.RLock()
		out[n] = h.state[n]
		h.mu.RUnlock()
	}
	ok := true
	for _, s := range out {
		ok = ok && s.OK
	}
	return out, ok
}
