// Package api is StackLens' dashboard HTTP API (docs/ARCHITECTURE.md §2.5, §9): a Fiber
// app serving metrics, service health, alerts, SLA reports, alert rules and
// silences from PostgreSQL, plus /health, /ready, /stats and /openapi.json.
//
// Every route is described once, in the route table (routes.go), which both
// registers the Fiber handlers and generates the OpenAPI document, so the two
// cannot drift apart. Each route runs the same chain: instrumentation
// (per-route Prometheus metrics, /stats counters, access log, panic
// recovery) → rate limit → authentication and role check → strict query
// validation → handler.
//
// Reads go through a read-only pool that queries as stacklens_reader with a
// statement timeout; writes (rules, silences, acknowledgements) through a
// small writer pool. No SQL text is ever built from request input.
//
// The alert engine (alerting, built separately) plugs in through Hooks;
// the web dashboard through Deps.Mount / Server.Route.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/telemetry"
	"github.com/stacklens/stacklens/internal/window"
)

// Config is what the API needs from the process configuration.
type Config struct {
	API config.API
	DB  config.DB
	// NATS configures the stacklens_config bucket the SLO latency
	// thresholds are written to (replicas).
	NATS config.NATS
	// SLOSyncInterval is how often the SLO latency thresholds are
	// reconciled from PostgreSQL into NATS (0: DefaultSLOSyncInterval).
	SLOSyncInterval time.Duration
	// Windows are the configured aggregation windows (AGGREGATION_WINDOWS),
	// smallest first; /metrics and rule validation accept only these.
	// Empty: window.Defaults().
	Windows []window.Window
	// Version and Environment are reported by /health and /stats.
	Version     string
	Environment string
	// StaleAfter: /health reports the pipeline "stale" (status degraded)
	// when the newest metric row was last updated longer ago than this.
	// 0: 5 minutes.
	StaleAfter time.Duration
	// DisableCoalescing turns off sharing of identical concurrent reads
	// (see coalescer): every request then runs its own query.
	DisableCoalescing bool
	// CacheTTL additionally reuses a read's response for this long after
	// it was produced (0: only concurrent requests share). Keep it well
	// below the freshness target (docs/ARCHITECTURE.md §10: produced → visible ≤ 1 s).
	CacheTTL time.Duration
	// AllowAnonymous lets requests without credentials act as readers even
	// on a non-loopback address when no credentials are configured. Off by
	// default; loopback addresses allow it implicitly (see docs/api.md).
	AllowAnonymous bool
}

// Connectivity is what /health needs from the NATS connection
// (*nats.Conn satisfies it).
type Connectivity interface {
	IsConnected() bool
}

// Hooks let the alert engine (alerting) follow changes made through the
// API. All are optional.
type Hooks struct {
	// RulesChanged runs after a rule was created, updated or deleted
	// (after commit); change is "created", "updated" or "deleted".
	RulesChanged func(ctx context.Context, ruleID int64, change string)
	// SilencesChanged runs after a silence was created, updated or deleted
	// (change "created", "updated" or "deleted").
	SilencesChanged func(ctx context.Context, silenceID int64, change string)
	// OnAcknowledge runs inside the transaction that acknowledges an alert,
	// after the UPDATE, so the engine can enqueue outbox rows atomically;
	// an error rolls the acknowledgement back (the client gets 503).
	OnAcknowledge func(ctx context.Context, tx pgx.Tx, a Alert) error
}

// Deps are the server's collaborators. The database pools are created from
// Config.DB (reader: DB_READER_USER with DB_READER_PASSWORD, else the main
// DSN with SET ROLE; writer: the main DSN) and closed when Run returns.
type Deps struct {
	Log  *slog.Logger
	NATS Connectivity // nil: the NATS check is "disabled"
	// Pipeline reports lag and dead letters for /health (a
	// *PipelineProbe); nil: /health's pipeline object is "disabled".
	Pipeline PipelineReporter
	Health   *telemetry.Health // optional: the API reports readiness into it
	// JetStream is where the SLO latency thresholds are published for the
	// processors (docs/processor.md); nil: they are not published.
	JetStream jetstream.JetStream
	Hooks     Hooks
	// Mount registers extra routes (the web dashboard) through
	// Server.Route before the fallback; a route for GET / replaces the
	// placeholder page.
	Mount func(s *Server) error
	// Now is the clock (tests); nil: time.Now.
	Now func() time.Time
}

// Server is the API. Build it with New, serve it with Run, or drive App
// directly in tests.
type Server struct {
	cfg      Config
	log      *slog.Logger
	app      *fiber.App
	st       *store
	auth     *authenticator
	limiter  *limiter
	cors     *corsPolicy
	stats    *statsRegistry
	nats     Connectivity
	pipeline PipelineReporter
	health   *telemetry.Health
	hooks    Hooks
	now      func() time.Time
	windows  map[string]window.Window
	winNames []string
	started  time.Time
	ownPools []*pgxpool.Pool
	routes   []*routeEntry
	hasRoot  bool
	openapi  []byte
	coalesce *coalescer
	// sloCache serves GET /slos and /slos/{id}: coalesced like the other
	// reads and, with API_SLO_CACHE_TTL, reused for that long (a status
	// sums windows of 5 minutes and more; see docs/slo.md).
	sloCache *coalescer
	// readCache serves GET /metrics, /health-status and /alerts: coalesced
	// and, with API_CACHE_MAX_AGE, reused until the tables they read
	// change (watch follows their notifications) or for at most that long.
	readCache *coalescer
	watch     *changeWatch
	slos      *sloSync
}

// New validates the configuration, builds the pools (lazily connecting) and
// the Fiber app. It refuses a non-loopback listen address without
// credentials.
func New(cfg Config, deps Deps) (*Server, error) {
	if len(cfg.Windows) == 0 {
		cfg.Windows = window.Defaults()
	}
	if cfg.StaleAfter <= 0 {
		cfg.StaleAfter = 5 * time.Minute
	}
	// The defaults of configuration variables live in internal/config only;
	// a zero here is a caller that skipped it, not a request for a default.
	if cfg.API.QueryTimeout <= 0 {
		return nil, &config.Error{Var: "API_QUERY_TIMEOUT", Msg: fmt.Sprintf("%v: must be positive", cfg.API.QueryTimeout)}
	}
	if cfg.API.MaxBodyBytes <= 0 {
		return nil, &config.Error{Var: "API_MAX_BODY_BYTES", Msg: fmt.Sprintf("%d: must be positive", cfg.API.MaxBodyBytes)}
	}
	if cfg.DB.PoolMax <= 0 {
		return nil, &config.Error{Var: "DB_POOL_MAX", Msg: fmt.Sprintf("%d: must be positive", cfg.DB.PoolMax)}
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	if cfg.SLOSyncInterval <= 0 {
		cfg.SLOSyncInterval = DefaultSLOSyncInterval
	}
	seeds, periods, err := loadSLOFile(cfg.API.SLOFile)
	if err != nil {
		return nil, err
	}
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	creds, err := cfg.API.Credentials()
	if err != nil {
		return nil, err
	}
	anonymous := false
	if creds.Empty() {
		if !isLoopback(cfg.API.Host) && !cfg.AllowAnonymous {
			return nil, fmt.Errorf("api: refusing to listen on non-loopback address %s without credentials: set API_READER_KEYS, API_ADMIN_KEYS or API_USERS (or listen on a loopback address such as API_HOST=127.0.0.1)",
				net.JoinHostPort(cfg.API.Host, strconv.Itoa(cfg.API.Port)))
		}
		anonymous = true
	}
	cors, err := newCORS(cfg.API.CORSOrigins)
	if err != nil {
		return nil, err
	}
	now := deps.Now
	if now == nil {
		now = time.Now
	}
	s := &Server{
		cfg:      cfg,
		log:      log.With("component", "api"),
		auth:     newAuthenticator(creds, anonymous),
		limiter:  newLimiter(cfg.API.RateLimit, now),
		cors:     cors,
		stats:    newStatsRegistry(),
		nats:     deps.NATS,
		pipeline: deps.Pipeline,
		health:   deps.Health,
		hooks:    deps.Hooks,
		now:      now,
		windows:  map[string]window.Window{},
		started:  now(),
	}
	if !cfg.DisableCoalescing {
		s.coalesce = newCoalescer(cfg.CacheTTL, now)
		s.sloCache = newCoalescer(max(cfg.CacheTTL, cfg.API.SLOCacheTTL), now)
	}
	for _, w := range cfg.Windows {
		s.windows[w.Name] = w
		s.winNames = append(s.winNames, w.Name)
	}

	reader, err := newReaderPool(cfg)
	if err != nil {
		return nil, err
	}
	writer, err := newWriterPool(cfg)
	if err != nil {
		reader.Close()
		return nil, err
	}
	s.ownPools = []*pgxpool.Pool{reader, writer}
	s.readCache = s.coalesce
	if s.coalesce != nil && cfg.API.CacheMaxAge > 0 {
		cc := reader.Config().ConnConfig.Copy()
		cc.RuntimeParams["application_name"] = "stacklens-api-changes"
		tables := []string{alertsTable, healthStatusTable}
		for _, w := range cfg.Windows {
			tables = append(tables, metricsTable(w))
		}
		s.watch = newChangeWatch(func(ctx context.Context) (*pgx.Conn, error) {
			return pgx.ConnectConfig(ctx, cc.Copy())
		}, tables, s.log.With("part", "changes"))
		s.readCache = newCoalescer(cfg.API.CacheMaxAge, now)
		s.readCache.changes = s.watch
	}
	s.st = newStore(reader, writer, cfg.API.QueryTimeout, cfg.Windows)
	s.slos = &sloSync{st: s.st, js: deps.JetStream, natsCfg: cfg.NATS, log: s.log.With("part", "slos"),
		interval: cfg.SLOSyncInterval, seeds: seeds, periods: periods, onChange: s.sloCache.drop}

	s.app = fiber.New(fiber.Config{
		AppName:               "stacklens-api",
		BodyLimit:             cfg.API.MaxBodyBytes,
		DisableStartupMessage: true,
		ErrorHandler:          s.errorHandler,
		JSONEncoder:           marshalJSON,
		ReadTimeout:           30 * time.Second,
		WriteTimeout:          30 * time.Second,
		IdleTimeout:           120 * time.Second,
		ReadBufferSize:        8192,
	})
	if s.cors != nil {
		s.app.Use(s.cors.handler)
	}
	for _, spec := range routeTable() {
		s.register(spec)
	}
	if deps.Mount != nil {
		if err := deps.Mount(s); err != nil {
			s.closePools()
			return nil, fmt.Errorf("api: mount: %w", err)
		}
	}
	if !s.hasRoot {
		s.Route(fiber.MethodGet, "/", AccessReader, s.placeholderRoot)
	}
	fallback := s.stats.route("unmatched", "ANY")
	s.app.Use(s.instrument(fallback, true, func(c *fiber.Ctx) error {
		return &apiError{Status: fiber.StatusNotFound, Msg: "no such route: " + c.Method() + " " + truncate(c.Path(), 200)}
	}))
	doc, err := buildOpenAPI(s)
	if err != nil {
		s.closePools()
		return nil, err
	}
	s.openapi = doc
	return s, nil
}

// Windows returns the configured aggregation windows, smallest first.
func (s *Server) Windows() []window.Window { return slices.Clone(s.cfg.Windows) }

// App is the Fiber app (tests drive it with App().Test).
func (s *Server) App() *fiber.App { return s.app }

// Addr is the configured listen address.
func (s *Server) Addr() string {
	return net.JoinHostPort(s.cfg.API.Host, strconv.Itoa(s.cfg.API.Port))
}

// Run listens on the configured address and serves until ctx is cancelled,
// then shuts down gracefully: stop accepting, drain in-flight requests (up
// to 10 s), close the pools it created.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.Addr())
	if err != nil {
		s.closePools()
		return fmt.Errorf("api: listen %s: %w", s.Addr(), err)
	}
	return s.Serve(ctx, ln)
}

// Serve is Run on an existing listener (tests use port 0).
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	defer s.closePools()
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	if err := s.st.ping(pctx); err != nil {
		s.log.Warn("database not reachable yet; /ready reports not ready until it is", "err", err)
	}
	cancel()
	if s.health != nil {
		s.health.Register("api", func(ctx context.Context) error { return s.st.ping(ctx) })
		defer s.health.Remove("api")
	}
	defer background(ctx, s.slos.run)()
	if s.watch != nil {
		defer background(ctx, s.watch.run)()
	}
	errc := make(chan error, 1)
	go func() { errc <- s.app.Listener(ln) }()
	mode := "credentials"
	if s.auth.anonymous {
		mode = "anonymous readers (no credentials configured, loopback listener)"
	}
	s.log.Info("api listening", "addr", "http://"+ln.Addr().String(), "auth", mode,
		"rate_limit_per_client", s.cfg.API.RateLimit, "windows", strings.Join(s.winNames, ","))
	select {
	case err := <-errc:
		if err != nil {
			return fmt.Errorf("api: serve: %w", err)
		}
		return nil
	case <-ctx.Done():
	}
	s.log.Info("api stopping: draining in-flight requests")
	if err := s.app.ShutdownWithTimeout(10 * time.Second); err != nil {
		s.log.Warn("api shutdown", "err", err)
	}
	<-errc
	s.log.Info("api stopped", "requests_served", s.stats.total.Load())
	return nil
}

// background runs fn in a goroutine until the returned stop is called;
// stop cancels fn's context and waits for fn to return.
func background(ctx context.Context, fn func(context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// DatabaseSize is the size of the StackLens database in bytes, read
// through the reader pool: the PipelineProbe's DatabaseSize.
func (s *Server) DatabaseSize(ctx context.Context) (int64, error) {
	n, err := s.st.databaseSize(ctx)
	if err != nil {
		return 0, fmt.Errorf("pg_database_size: %w", err)
	}
	return n, nil
}

func (s *Server) closePools() {
	for _, p := range s.ownPools {
		p.Close()
	}
	s.ownPools = nil
}

// Access is the least role a route needs.
type Access int

// Route access levels.
const (
	AccessPublic Access = iota // no credentials, no rate limit (probes)
	AccessReader               // reader or admin (anonymous on loopback without credentials)
	AccessAdmin                // admin only
)

// routeEntry is one registered route.
type routeEntry struct {
	method, path string
	access       Access
	spec         *routeSpec // nil for routes added through Route
}

// Route registers an extra route (the dashboard) with the standard chain:
// instrumentation, rate limit (unless public), authentication for access.
// Call it from Deps.Mount.
func (s *Server) Route(method, path string, access Access, h fiber.Handler) {
	if method == fiber.MethodGet && path == "/" {
		s.hasRoot = true
	}
	s.routes = append(s.routes, &routeEntry{method: method, path: path, access: access})
	rs := s.stats.route(path, method)
	s.app.Add(method, path, s.instrument(rs, access != AccessPublic, s.authorize(access, h)))
}

func (s *Server) register(spec *routeSpec) {
	h := spec.handler(s)
	allowed := spec.queryNames()
	inner := func(c *fiber.Ctx) error {
		if err := checkQuery(c, allowed); err != nil {
			return err
		}
		return h(c)
	}
	s.routes = append(s.routes, &routeEntry{method: spec.method, path: spec.path, access: spec.access, spec: spec})
	rs := s.stats.route(spec.path, spec.method)
	s.app.Add(spec.method, spec.path, s.instrument(rs, spec.access != AccessPublic, s.authorize(spec.access, inner)))
}

// placeholderRoot is GET / until the dashboard is mounted.
func (s *Server) placeholderRoot(c *fiber.Ctx) error {
	c.Set(fiber.HeaderContentType, fiber.MIMETextHTMLCharsetUTF8)
	return c.SendString(`<!doctype html><html><head><meta charset="utf-8"><title>StackLens API</title></head>` +
		`<body><h1>StackLens API</h1><p>The dashboard is not installed in this build. ` +
		`The API is described by <a href="/openapi.json">/openapi.json</a>.</p></body></html>`)
}

// isLoopback reports whether host is a loopback address or "localhost".
func isLoopback(host string) bool {
	h := strings.Trim(host, "[]")
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// errorHandler turns handler errors into the JSON error shape.
func (s *Server) errorHandler(c *fiber.Ctx, err error) error {
	status, body := s.classify(err)
	c.Status(status)
	return c.JSON(body)
}

// classify maps an error to a status and the {"error","field"} body.
func (s *Server) classify(err error) (int, errorBody) {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.Status, errorBody{Error: ae.Msg, Field: ae.Field}
	}
	var fe *fiber.Error
	if errors.As(err, &fe) {
		msg := fe.Message
		if fe.Code == fiber.StatusRequestEntityTooLarge {
			msg = fmt.Sprintf("request body larger than %d bytes", s.cfg.API.MaxBodyBytes)
		}
		return fe.Code, errorBody{Error: msg}
	}
	if st, msg, ok := classifyDBError(err); ok {
		if st >= 500 {
			s.log.Warn("database error", "err", err)
		}
		return st, errorBody{Error: msg}
	}
	s.log.Error("internal error", "err", err)
	return fiber.StatusInternalServerError, errorBody{Error: "internal error"}
}
