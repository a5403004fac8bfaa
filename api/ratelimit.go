package api

import (
	"fmt"
	"hash/maphash"
	"math"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"golang.org/x/time/rate"

	"github.com/stacklens/stacklens/internal/config"
)

// limiter is a per-client token bucket (API_RATE_LIMIT requests per second,
// burst of one second's worth). Clients are keyed by remote IP; buckets
// idle for longer than limiterIdle are swept when a shard grows.
type limiter struct {
	every  rate.Limit
	burst  int
	now    func() time.Time
	seed   maphash.Seed
	shards [16]limiterShard
}

type limiterShard struct {
	mu sync.Mutex
	m  map[string]*bucket
}

type bucket struct {
	l    *rate.Limiter
	last time.Time
}

const (
	limiterIdle      = 3 * time.Minute
	limiterSweepSize = 4096
)

// newLimiter returns nil (no limit) for perSec <= 0.
func newLimiter(perSec int, now func() time.Time) *limiter {
	if perSec <= 0 {
		return nil
	}
	l := &limiter{every: rate.Limit(perSec), burst: perSec, now: now, seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].m = map[string]*bucket{}
	}
	return l
}

// allow takes a token for client; when none is left it returns how long
// until one is.
func (l *limiter) allow(client string) (bool, time.Duration) {
	sh := &l.shards[maphash.String(l.seed, client)%uint64(len(l.shards))]
	now := l.now()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	b := sh.m[client]
	if b == nil {
		if len(sh.m) >= limiterSweepSize {
			for k, v := range sh.m {
				if now.Sub(v.last) > limiterIdle {
					delete(sh.m, k)
				}
			}
		}
		b = &bucket{l: rate.NewLimiter(l.every, l.burst)}
		sh.m[client] = b
	}
	b.last = now
	r := b.l.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// rateLimit applies the limiter to c; it returns a 429 error with
// Retry-After (whole seconds, at least 1) when the client is over its rate.
func (s *Server) rateLimit(c *fiber.Ctx) error {
	if s.limiter == nil {
		return nil
	}
	ok, wait := s.limiter.allow(c.IP())
	if ok {
		return nil
	}
	s.stats.limited.Add(1)
	secs := int(math.Ceil(wait.Seconds()))
	if secs < 1 {
		secs = 1
	}
	c.Set(fiber.HeaderRetryAfter, strconv.Itoa(secs))
	return &apiError{Status: fiber.StatusTooManyRequests, Msg: fmt.Sprintf("rate limit of %d requests per second exceeded; retry after %d s", s.cfg.API.RateLimit, secs)}
}

// corsPolicy answers CORS for the configured origins only (API_CORS_ORIGINS);
// without any configured origin no CORS headers are ever sent, so browsers
// on other origins cannot read responses. Credentials (cookies) are never
// allowed; the Authorization header may be sent.
type corsPolicy struct {
	origins map[string]bool
}

func newCORS(origins []string) (*corsPolicy, error) {
	if len(origins) == 0 {
		return nil, nil
	}
	p := &corsPolicy{origins: map[string]bool{}}
	for _, o := range origins {
		o = strings.TrimRight(strings.TrimSpace(o), "/")
		if o == "" {
			continue
		}
		if o == "*" {
			return nil, &config.Error{Var: "API_CORS_ORIGINS", Msg: `"*" is not allowed: list the dashboard origins`}
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.User != nil {
			return nil, &config.Error{Var: "API_CORS_ORIGINS", Msg: fmt.Sprintf("%q: want scheme://host[:port]", o)}
		}
		p.origins[strings.ToLower(o)] = true
	}
	if len(p.origins) == 0 {
		return nil, nil
	}
	return p, nil
}

const (
	corsMethods = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
	corsHeaders = "Authorization, Content-Type"
)

func (p *corsPolicy) handler(c *fiber.Ctx) error {
	origin := c.Get(fiber.HeaderOrigin)
	if origin == "" {
		return c.Next()
	}
	allowed := p.origins[strings.ToLower(origin)]
	c.Vary(fiber.HeaderOrigin)
	preflight := c.Method() == fiber.MethodOptions && c.Get(fiber.HeaderAccessControlRequestMethod) != ""
	if !allowed {
		if preflight {
			return c.Status(fiber.StatusForbidden).JSON(errorBody{Error: "origin not allowed by CORS", Field: "Origin"})
		}
		return c.Next()
	}
	c.Set(fiber.HeaderAccessControlAllowOrigin, origin)
	if preflight {
		c.Set(fiber.HeaderAccessControlAllowMethods, corsMethods)
		c.Set(fiber.HeaderAccessControlAllowHeaders, corsHeaders)
		c.Set(fiber.HeaderAccessControlMaxAge, "600")
		return c.SendStatus(fiber.StatusNoContent)
	}
	c.Set(fiber.HeaderAccessControlExposeHeaders, "Retry-After")
	return c.Next()
}
