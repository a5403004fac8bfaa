package api

import (
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
)

// flight is one in-progress (or, with a TTL, recently finished) read whose
// encoded response identical concurrent requests share.
type flight struct {
	done    chan struct{}
	body    []byte
	err     error
	expires time.Time
	version uint64 // the data's version when the read began (coalescer.changes)
}

// coalescer shares the encoded response of identical concurrent GET
// requests (same path and query string): the first runs the query, the
// others wait for it. With ttl > 0 results are also reused for ttl after
// they were produced. Errors are never reused after their flight ends.
// A waiter's response can therefore be older than its request by at most
// one query's duration (plus ttl).
//
// With changes set, ttl only bounds the age: a finished result is reused
// while the version of the table it was read from (do's dep) is still the
// one its read began at, and only while changes are being followed.
type coalescer struct {
	mu      sync.Mutex
	m       map[string]*flight
	ttl     time.Duration
	now     func() time.Time
	changes versioner
}

// versioner tells the current version of a table, and whether its
// changes are followed (false: any change may go unnoticed, so nothing is
// reused).
type versioner interface {
	version(table string) (v uint64, followed bool)
}

func newCoalescer(ttl time.Duration, now func() time.Time) *coalescer {
	return &coalescer{m: map[string]*flight{}, ttl: ttl, now: now}
}

// reusable: f (finished, read from dep) may answer a new request.
func (co *coalescer) reusable(f *flight, dep string) bool {
	if co.ttl <= 0 || f.err != nil || !co.now().Before(f.expires) {
		return false
	}
	if co.changes == nil {
		return true
	}
	v, ok := co.changes.version(dep)
	return ok && v == f.version
}

// do answers key with fn's result, shared as described above; dep names
// the table fn reads (for changes; "" without).
func (co *coalescer) do(key, dep string, fn func() ([]byte, error)) ([]byte, error) {
	co.mu.Lock()
	if f, ok := co.m[key]; ok {
		select {
		case <-f.done:
			if co.reusable(f, dep) {
				co.mu.Unlock()
				return f.body, nil
			}
		default:
			co.mu.Unlock()
			<-f.done
			return f.body, f.err
		}
	}
	if co.ttl > 0 && len(co.m) > 1024 {
		now := co.now()
		for k, f := range co.m {
			select {
			case <-f.done:
				if !now.Before(f.expires) {
					delete(co.m, k)
				}
			default:
			}
		}
	}
	f := &flight{done: make(chan struct{})}
	keep := co.ttl > 0
	if co.changes != nil {
		var followed bool
		f.version, followed = co.changes.version(dep)
		keep = keep && followed
	}
	co.m[key] = f
	co.mu.Unlock()

	func() {
		defer func() {
			if r := recover(); r != nil {
				f.err = &apiError{Status: fiber.StatusInternalServerError, Msg: "internal error"}
				close(f.done)
				co.forget(key, f)
				panic(r)
			}
		}()
		f.body, f.err = fn()
	}()
	f.expires = co.now().Add(co.ttl)
	close(f.done)
	if !keep || f.err != nil {
		co.forget(key, f)
	}
	return f.body, f.err
}

// drop forgets every finished result, so that the next request runs its
// query (after a write that changes it). Flights in progress still answer
// their waiters but are not reused.
func (co *coalescer) drop() {
	if co == nil {
		return
	}
	co.mu.Lock()
	clear(co.m)
	co.mu.Unlock()
}

func (co *coalescer) forget(key string, f *flight) {
	co.mu.Lock()
	if co.m[key] == f {
		delete(co.m, key)
	}
	co.mu.Unlock()
}

// sendShared answers a validated GET with the coalesced encoding of fn's
// result (or fn's error).
func (s *Server) sendShared(c *fiber.Ctx, fn func() ([]byte, error)) error {
	return sendVia(c, s.coalesce, "", fn)
}

// sendFollowing answers a validated GET that reads only table through
// readCache: reused until table changes (see changeWatch).
func (s *Server) sendFollowing(c *fiber.Ctx, table string, fn func() ([]byte, error)) error {
	return sendVia(c, s.readCache, table, fn)
}

// sendVia is sendShared through co (nil: fn runs for every request), for
// a read of table dep ("" when co follows no changes).
func sendVia(c *fiber.Ctx, co *coalescer, dep string, fn func() ([]byte, error)) error {
	var body []byte
	var err error
	if co == nil {
		body, err = fn()
	} else {
		// The request's path, not the route's: /slos/1 and /slos/2 are one
		// route. Cloned: Fiber's strings alias buffers reused after the request.
		key := strings.Clone(c.Path()) + "?" + string(c.Context().QueryArgs().QueryString())
		body, err = co.do(key, dep, fn)
	}
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Send(body)
}
