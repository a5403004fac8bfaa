// Package bench is the benchmark harness behind `stacklens bench`
// (docs/ARCHITECTURE.md §10, docs/PERFORMANCE.md). It starts the embedded
// NATS server and Kafka broker as subprocesses of the stacklens binary and
// a private PostgreSQL, with a private data directory and free ports,
// measures the bare ceilings of that infrastructure (kafka-go fetch,
// JetStream async and atomic-batch publish, consume-and-ack, pgx CopyFrom,
// the Fiber app on static JSON) and the bridge alone draining a backlog,
// then runs every role and the load generator as subprocesses and drives
// open-loop load at increasing fixed rates. It reports the highest rate
// whose end-to-end lag stayed bounded, freshness and API latency while
// ingesting, alert latency, CPU seconds and peak RSS per process per
// million events, each stage against its ceiling, and the bytes per event
// of every store.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/segmentio/kafka-go"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/embedded"
	"github.com/stacklens/stacklens/internal/harness/devstack"
	"github.com/stacklens/stacklens/internal/harness/loadgen"
	"github.com/stacklens/stacklens/internal/harness/procstat"
)

// Options of a run.
type Options struct {
	// Config is the base configuration (pipeline settings such as SHARDS
	// and FLUSH_INTERVAL); the infrastructure endpoints are replaced by the
	// embedded servers of the run.
	Config *config.Loaded
	// Exe is the stacklens binary the roles run from (os.Executable()).
	Exe string
	// Provision applies the migrations and creates the event stream.
	Provision func(ctx context.Context, cfg *config.Loaded) error
	// StaticCommand is the command (after Exe) that runs ServeStatic in a
	// subprocess, given the listen address as its last argument, e.g.
	// ["bench", "--serve-static"]. Empty: the static JSON ceiling is
	// served by the bench process itself.
	StaticCommand []string
	// Quick: shorter holds, fewer steps, smaller ceilings (CI size).
	Quick      bool
	Processors int           // processor processes (default 1)
	Rates      []float64     // nil: the mode's steps
	Hold       time.Duration // 0: the mode's hold (60 s full, 10 s quick)
	// CeilingMessages: messages of the ceilings and of the isolated
	// bridge's backlog (0: the mode's, 200 000 full, 50 000 quick).
	CeilingMessages int
	Services        int          // simulated services (default 20)
	Progress        io.Writer    // progress lines (nil: none)
	Log             *slog.Logger // infrastructure logs (nil: discarded)
	KeepDir         bool         // keep the temporary data directory (role logs)
	// ProfileDir, when set, adds a hold at the sustainable rate (half the
	// first step if none) after the ramp during which CPU profiles of every
	// process but PostgreSQL are written there.
	ProfileDir string
	// NoAlert skips the alert-latency probe (and its wait of up to 45 s,
	// 120 s in full mode, for its window to become final).
	NoAlert bool
}

// Modes.
var (
	fullRates  = []float64{2000, 5000, 10_000, 20_000, 40_000, 80_000, 120_000}
	quickRates = []float64{2000, 5000, 10_000, 20_000, 40_000}
)

const clients = 32

type run struct {
	o   Options
	cfg *config.Loaded
	dir string
	rep *Report
	t0  time.Time
	hc  *http.Client
	kc  *kafka.Client

	natsProc, kafkaProc *roleProc
	lgMu                sync.Mutex
	loadgens            []*roleProc       // every load generator process, in start order
	onLoadgen           func(p *roleProc) // called as each generator starts (profiling)
	walStart            string            // PostgreSQL WAL position before the roles start
	alone               *BridgeAlone      // the isolated bridge phase

	bridge, projections, api *roleProc
	processors               []*roleProc
	apiBase                  string
	probeW                   *kafka.Writer
	seq                      atomic.Uint64
	staticRes                HTTPResult // the ceiling, pipeline idle
	staticURL                string
	staticStop               func()
	staticWhere              string
	steadyStep               Step
	pgPID                    int
	procPerCore              float64
	// sustainedStep: the snapshots around the ramp step of the sustained
	// rate (its hold and drain).
	sustainedStep *[2]snap
}

func (r *run) progress(format string, args ...any) {
	if r.o.Progress != nil {
		fmt.Fprintf(r.o.Progress, "[bench %4.0fs] %s\n", time.Since(r.t0).Seconds(), fmt.Sprintf(format, args...))
	}
}

// Run runs the benchmark and returns its report. The report is returned
// (partly filled) with the error when a phase fails after the start.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Config == nil || o.Exe == "" || o.Provision == nil {
		return nil, errors.New("bench: Config, Exe and Provision are required")
	}
	if o.Processors <= 0 {
		o.Processors = 1
	}
	if o.Services <= 0 {
		o.Services = 20
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	mode, rates, hold, ceilN := "full", fullRates, 60*time.Second, 200_000
	if o.Quick {
		mode, rates, hold, ceilN = "quick", quickRates, 10*time.Second, 50_000
	}
	if len(o.Rates) > 0 {
		rates = o.Rates
	}
	if o.Hold > 0 {
		hold = o.Hold
	}
	if o.CeilingMessages > 0 {
		ceilN = o.CeilingMessages
	}
	r := &run{o: o, t0: time.Now(), hc: newHTTPClient(clients)}
	defer r.hc.CloseIdleConnections()
	r.rep = &Report{Mode: mode, StartedAt: r.t0.UTC(), Machine: DescribeMachine()}
	r.rep.Settings = Settings{Processors: o.Processors, Services: o.Services, Rates: rates, HoldSeconds: hold.Seconds(),
		CeilingMessages: ceilN, Clients: clients}
	defer func() {
		r.rep.Seconds = time.Since(r.t0).Seconds()
		r.rep.Machine.LoadAtEnd = procstat.LoadAvg()
	}()
	r.progress("machine: %d CPUs (%s), load average %s", r.rep.Machine.CPUs, r.rep.Machine.CPUModel, r.rep.Machine.LoadAtStart)

	// A private data directory, traversable by the postgres OS user.
	dir, err := os.MkdirTemp("", "stacklens-bench-")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	r.dir = dir
	if o.KeepDir {
		r.progress("data directory and role logs: %s (kept)", dir)
	} else {
		defer os.RemoveAll(dir)
	}

	// Configuration: the base one with every endpoint private to the run.
	cfg := *o.Config
	c := *o.Config.Config
	cfg.Config = &c
	cfg.Sources = map[string]config.Source{}
	for k, v := range o.Config.Sources {
		cfg.Sources[k] = v
	}
	cfg.Sources["NATS_URL"] = config.SourceDefault
	cfg.Sources["KAFKA_BOOTSTRAP_SERVERS"] = config.SourceDefault
	cfg.Runtime.DataDir = dir
	cfg.DB.URL = ""
	cfg.DB.Host = "127.0.0.1"
	if cfg.DB.Port, err = embedded.FreePort(); err != nil {
		return nil, err
	}
	r.cfg = &cfg
	r.rep.Settings.Shards = cfg.NATS.Shards
	r.rep.Settings.Partitions = cfg.Kafka.Partitions

	r.progress("starting the infrastructure (stacklens nats-server and kafka-broker as subprocesses, private PostgreSQL) in %s", dir)
	err = r.startInfra(ctx)
	defer r.stopInfra()
	if err != nil {
		return nil, err
	}
	stack, err := devstack.Start(ctx, &cfg, devstack.Ports{NATS: -1, Kafka: -1}, o.Log)
	if err != nil {
		return nil, err
	}
	defer stack.Stop(o.Log)
	if err := o.Provision(ctx, &cfg); err != nil {
		return nil, fmt.Errorf("bench: provision: %w", err)
	}
	nc, err := nats.Connect(cfg.NATS.URL, nats.MaxReconnects(-1))
	if err != nil {
		return nil, err
	}
	defer nc.Close()

	err = r.ceilings(ctx, nc, ceilN)
	if r.staticStop != nil {
		defer r.staticStop()
	}
	if err != nil {
		return r.rep, err
	}
	if err := r.bridgeAlone(ctx, nc, ceilN); err != nil {
		return r.rep, err
	}
	r.walStart = walLSN(ctx, cfg.DB.DSN())
	if err := r.startRoles(ctx); err != nil {
		r.stopRoles()
		return r.rep, err
	}
	defer r.stopRoles()
	r.probeW = &kafka.Writer{Addr: kafka.TCP(cfg.Kafka.BootstrapServers...), Topic: cfg.Kafka.InputTopic, Balancer: &kafka.Hash{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	defer r.probeW.Close()

	var alert *alertProbe
	if !o.NoAlert {
		alert = r.startAlertProbe(ctx, nc)
	}
	if err := r.warmUp(ctx); err != nil {
		return r.rep, err
	}
	usage0 := r.snapshot()
	r.ramp(ctx, rates, hold)
	r.profileHold(ctx, r.steadyRate(), hold)
	r.steady(ctx, hold)
	usage1 := r.snapshot()
	if alert != nil {
		r.rep.Alert = alert.wait(ctx, r, map[bool]time.Duration{true: 45 * time.Second, false: 120 * time.Second}[o.Quick])
	} else {
		r.rep.Alert = Alert{Note: "skipped (--no-alert)"}
	}
	r.resources(usage0, usage1)
	r.stores(ctx, nc)
	r.stages()
	r.cpuBound()
	r.targets()
	r.rep.CostTargets = costTargets(r.rep)
	r.progress("done")
	return r.rep, ctx.Err()
}

// ceilings measures the bare clients.
func (r *run) ceilings(ctx context.Context, nc *nats.Conn, n int) error {
	cfg := r.cfg
	c := newCorpus(n, r.o.Services)
	add := func(key string, cl Ceiling) {
		cl.Key = key
		r.rep.Ceilings = append(r.rep.Ceilings, cl)
		if cl.Error != "" {
			r.progress("ceiling %s: failed: %s", cl.Name, cl.Error)
		} else {
			r.progress("ceiling %s: %s %s", cl.Name, num(cl.Rate), cl.Unit)
		}
	}
	r.progress("ceilings on %d messages", n)
	add(ceilKafka, kafkaFetchDrain(ctx, cfg.Kafka.BootstrapServers, cfg.Kafka.Partitions, c))
	add(ceilAsync, jsAsyncPublish(ctx, nc, cfg.NATS, c))
	add(ceilBatch, jsBatchPublish(ctx, nc, cfg.NATS, c, cfg.Kafka.BatchSize))
	add(ceilConsume, consumeAck(ctx, nc, cfg.NATS.Shards, n))
	add(ceilCopy, copyFrom(ctx, cfg.DB.DSN(), n))
	d := 2 * time.Second
	if !r.o.Quick {
		d = 5 * time.Second
	}
	where := "bench process"
	var (
		url  string
		stop func()
		err  error
	)
	if len(r.o.StaticCommand) > 0 {
		where = "own process"
		url, stop, err = r.startStatic(ctx)
	} else {
		url, stop, err = staticServer(ctx, cfg, r.o.Log)
	}
	if err != nil {
		add(ceilStatic, Ceiling{Name: "Fiber static JSON", Unit: "req/s", Error: err.Error()})
	} else {
		r.staticURL, r.staticStop, r.staticWhere = url, stop, where
		st := LoadHTTP(ctx, r.hc, "static JSON ("+where+", pipeline idle)", url, clients, d)
		r.rep.Ceilings = append(r.rep.Ceilings, Ceiling{Key: ceilStatic, Name: fmt.Sprintf("Fiber static JSON, %d clients (p50 %.2f ms, p99 %.2f ms)", clients, st.P50ms, st.P99ms),
			N: st.Requests, Seconds: st.Seconds, Rate: st.RPS, Unit: "req/s", Note: "the StackLens API app with a static route, " + where})
		r.staticRes = st
		r.progress("ceiling static JSON: %s req/s, p50 %.2f ms, p99 %.2f ms", num(st.RPS), st.P50ms, st.P99ms)
	}
	// Free the scratch streams' memory and disk before the pipeline runs.
	if js, err := jetstream.New(nc); err == nil {
		_ = js.DeleteStream(ctx, "BENCH_ASYNC")
		_ = js.DeleteStream(ctx, "BENCH_BATCH")
	}
	return ctx.Err()
}

// startStatic runs the static JSON server as a subprocess and waits until
// it answers.
func (r *run) startStatic(ctx context.Context) (string, func(), error) {
	port, err := embedded.FreePort()
	if err != nil {
		return "", nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	env := map[string]string{"DATABASE_URL": r.cfg.DB.DSN(), "LOG_LEVEL": "WARN", "API_READER_KEYS": "", "API_ADMIN_KEYS": "", "API_USERS": ""}
	args := append(append([]string(nil), r.o.StaticCommand[1:]...), addr)
	p, err := startRole(r.o.Exe, r.dir, r.o.StaticCommand[0], "static", env, args...)
	if err != nil {
		return "", nil, err
	}
	stop := func() { _ = p.stop() }
	url := "http://" + addr + StaticPath
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		if resp, err := r.hc.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == 200 {
				return url, stop, nil
			}
		}
		if !p.alive() || time.Now().After(deadline) || ctx.Err() != nil {
			stop()
			return "", nil, fmt.Errorf("static JSON server did not answer:\n%s", p.logTail(1500))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startRoles runs bridge, processors, projections and api as subprocesses.
func (r *run) startRoles(ctx context.Context) error {
	cfg := r.cfg
	apiPort, err := embedded.FreePort()
	if err != nil {
		return err
	}
	start := func(role, name string, extra map[string]string) (*roleProc, error) {
		env := r.baseEnv()
		env["API_HOST"] = "127.0.0.1"
		env["API_PORT"] = strconv.Itoa(apiPort)
		for k, v := range extra {
			env[k] = v
		}
		return startRole(r.o.Exe, r.dir, role, name, env)
	}
	r.progress("starting the roles: bridge, %d processor(s), projections, api (subprocesses of %s)", r.o.Processors, r.o.Exe)
	if r.bridge, err = start("bridge", "bridge", nil); err != nil {
		return err
	}
	for i := range r.o.Processors {
		p, err := start("processor", "processor-"+strconv.Itoa(i), map[string]string{"PROCESSOR_ID": "bench-processor-" + strconv.Itoa(i)})
		if err != nil {
			return err
		}
		r.processors = append(r.processors, p)
	}
	if r.projections, err = start("projections", "projections", nil); err != nil {
		return err
	}
	if r.api, err = start("api", "api", nil); err != nil {
		return err
	}
	r.apiBase = "http://127.0.0.1:" + strconv.Itoa(apiPort)
	for _, p := range r.all() {
		if err := p.waitReady(ctx, r.hc, 60*time.Second); err != nil {
			return err
		}
	}
	// Every shard owned before load starts.
	deadline := time.Now().Add(60 * time.Second)
	for {
		owned := 0.0
		for _, p := range r.processors {
			if m, err := scrape(ctx, r.hc, p.metricsURL(), "stacklens_processor_owned_shards"); err == nil {
				owned += m["stacklens_processor_owned_shards"]
			}
		}
		if int(owned) >= cfg.NATS.Shards {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: processors own %v of %d shards after 60s", owned, cfg.NATS.Shards)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	r.progress("roles ready; API on %s", r.apiBase)
	return nil
}

func (r *run) all() []*roleProc {
	out := []*roleProc{r.bridge}
	out = append(out, r.processors...)
	return append(out, r.projections, r.api)
}

func (r *run) stopRoles() {
	// Intake first, as the product stops.
	for _, p := range r.all() {
		if p != nil {
			if err := p.stop(); err != nil {
				r.progress("%v", err)
			}
		}
	}
}

// counters is one sample of the pipeline's counters.
type counters struct {
	t         time.Time
	produced  float64
	forwarded float64 // bridge: events published to the stream
	folded    float64 // processors: events folded into the aggregates
	inserted  float64 // projections: raw events inserted
	upserted  float64 // projections: metric rows upserted
	err       error
}

func (c counters) lag() float64 { return c.produced - c.folded }

func (r *run) sample(ctx context.Context) counters {
	c := counters{t: time.Now()}
	var mu sync.Mutex
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		n, err := r.topicEnd(ctx, r.cfg.Kafka.InputTopic)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			c.err = err
			return
		}
		c.produced = float64(n)
	}()
	get := func(p *roleProc, f func(m map[string]float64), names ...string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := scrape(ctx, r.hc, p.metricsURL(), names...)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				c.err = err
				return
			}
			f(m)
		}()
	}
	get(r.bridge, func(m map[string]float64) { c.forwarded += m["stacklens_bridge_forwarded_total"] }, "stacklens_bridge_forwarded_total")
	for _, p := range r.processors {
		// Events the processor dead-letters as too late are accounted for
		// (none are expected: the load is current).
		get(p, func(m map[string]float64) {
			c.folded += m["stacklens_processor_events_folded_total"] + m["stacklens_processor_too_late_total"]
		}, "stacklens_processor_events_folded_total", "stacklens_processor_too_late_total")
	}
	get(r.projections, func(m map[string]float64) {
		c.inserted += m["stacklens_projections_events_inserted_total"]
		c.upserted += m["stacklens_projections_rows_upserted_total"]
	}, "stacklens_projections_events_inserted_total", "stacklens_projections_rows_upserted_total")
	wg.Wait()
	return c
}

// sampleOK retries sample until every scrape succeeded (at most 5 tries).
func (r *run) sampleOK(ctx context.Context) counters {
	var c counters
	for range 5 {
		if c = r.sample(ctx); c.err == nil || ctx.Err() != nil {
			return c
		}
		time.Sleep(100 * time.Millisecond)
	}
	return c
}

// write produces events of one service straight to the input topic.
func (r *run) write(ctx context.Context, service, level string, n int, at time.Time) error {
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		ev := loadgen.Event{Service: service, Level: level, LatencyMS: 12.5, Risk: 0.5, Time: at}
		msgs[i] = kafka.Message{Key: []byte(service), Value: loadgen.AppendJSON(nil, ev, "/bench", r.seq.Add(1))}
	}
	return r.probeW.WriteMessages(ctx, msgs...)
}

// drain waits until the lag is back to (almost) zero; it returns the time
// it took, or -1 after limit.
func (r *run) drain(ctx context.Context, limit time.Duration) float64 {
	t0 := time.Now()
	for time.Since(t0) < limit && ctx.Err() == nil {
		c := r.sample(ctx)
		if c.err == nil && c.lag() <= 10 {
			return time.Since(t0).Seconds()
		}
		time.Sleep(200 * time.Millisecond)
	}
	return -1
}

// warmUp runs a short low-rate load (consumer-group join, connections,
// caches) and checks that events make it through.
func (r *run) warmUp(ctx context.Context) error {
	d := 5 * time.Second
	if !r.o.Quick {
		d = 15 * time.Second
	}
	r.progress("warm-up: 1000 events/s for %v", d)
	if _, err := r.load(ctx, 1000, d, 7); err != nil {
		return err
	}
	if r.drain(ctx, 60*time.Second) < 0 {
		c := r.sample(ctx)
		return fmt.Errorf("bench: warm-up did not drain within 60s: produced %.0f, bridged %.0f, folded %.0f (scrape error: %v); bridge log:\n%s\nprocessor log:\n%s",
			c.produced, c.forwarded, c.folded, c.err, r.bridge.logTail(1500), r.processors[0].logTail(1500))
	}
	return nil
}

// hold runs the generator at rate for d, sampling the counters every
// second, and returns the step (without a verdict on the generator).
func (r *run) hold(ctx context.Context, rate float64, d time.Duration, seed uint64, label string) Step {
	st := Step{Target: rate}
	c0 := r.sampleOK(ctx)
	done := make(chan loadgen.Stats, 1)
	go func() {
		s, err := r.load(ctx, rate, d, seed)
		if err != nil {
			r.progress("%s: load generator: %v", label, err)
		}
		done <- s
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last := c0
	var gs loadgen.Stats
	lastPrint := time.Now()
loop:
	for {
		select {
		case gs = <-done:
			break loop
		case <-ctx.Done():
			gs = <-done
			break loop
		case <-tick.C:
			c := r.sample(ctx)
			if c.err != nil {
				continue
			}
			last = c
			st.Samples = append(st.Samples, LagSample{T: c.t.Sub(c0.t), Lag: c.lag()})
			if time.Since(lastPrint) >= 2*time.Second {
				lastPrint = time.Now()
				r.progress("%s: %2.0f/%.0f s, offered %s/s, lag %s events", label, c.t.Sub(c0.t).Seconds(), d.Seconds(),
					num((c.produced-c0.produced)/c.t.Sub(c0.t).Seconds()), num(c.lag()))
			}
		}
	}
	c1 := r.sampleOK(ctx)
	if c1.err == nil {
		last = c1
		st.Samples = append(st.Samples, LagSample{T: c1.t.Sub(c0.t), Lag: c1.lag()})
	}
	el := last.t.Sub(c0.t).Seconds()
	if el <= 0 {
		el = d.Seconds()
	}
	st.Seconds = el
	st.Produced = float64(gs.Produced)
	st.Achieved = gs.Rate()
	st.BridgeRate = (last.forwarded - c0.forwarded) / el
	st.ProcessorRate = (last.folded - c0.folded) / el
	st.ProjectionRows = (last.inserted + last.upserted - c0.inserted - c0.upserted) / el
	st.Lag = JudgeLag(st.Samples, rate)
	return st
}

// ramp holds increasing rates until one is not sustainable.
func (r *run) ramp(ctx context.Context, rates []float64, d time.Duration) {
	drainLimit := max(10*time.Second, d/2)
	r.rep.StopReason = "every step was sustainable"
	for i, rate := range rates {
		label := fmt.Sprintf("ramp %d/%d at %s ev/s", i+1, len(rates), num(rate))
		r.progress("%s: holding %v", label, d)
		s0 := r.snapshot()
		st := r.hold(ctx, rate, d, uint64(100+i), label)
		st.DrainSeconds = r.drain(ctx, drainLimit)
		s1 := r.snapshot()
		st.GeneratorLimited = st.Achieved < 0.9*rate
		st.Sustainable = st.Lag.Bounded && st.DrainSeconds >= 0 && !st.GeneratorLimited
		r.rep.Steps = append(r.rep.Steps, st)
		r.progress("%s: offered %s/s, bridge %s/s, processor %s/s, lag slope %s/s, max lag %s → %s", label, num(st.Achieved),
			num(st.BridgeRate), num(st.ProcessorRate), num(st.Lag.Slope), num(st.Lag.MaxLag), map[bool]string{true: "sustainable", false: "NOT sustainable"}[st.Sustainable])
		if ctx.Err() != nil {
			r.rep.StopReason = "interrupted"
			return
		}
		if st.GeneratorLimited {
			r.rep.StopReason = fmt.Sprintf("the load generator reached only %s of %s events/s: the harness, not the pipeline, is the limit from here", num(st.Achieved), num(rate))
			return
		}
		if !st.Sustainable {
			why := st.Lag.Reason
			if st.Lag.Bounded {
				why = fmt.Sprintf("backlog not drained within %v", drainLimit)
			}
			r.rep.StopReason = fmt.Sprintf("stopped at %s events/s: %s", num(rate), why)
			if st.DrainSeconds < 0 { // let the backlog go before the steady hold
				r.progress("waiting for the backlog to drain")
				r.drain(ctx, 3*drainLimit)
			}
			return
		}
		r.rep.Sustained = rate
		r.sustainedStep = &[2]snap{s0, s1}
	}
}

// steadyRate is the rate of the profile and steady holds: the highest
// sustainable one, else half the first step (a loaded machine may sustain
// none, and the costs per event are still worth a profile and a look).
func (r *run) steadyRate() float64 {
	if r.rep.Sustained > 0 {
		return r.rep.Sustained
	}
	if len(r.rep.Settings.Rates) > 0 {
		return r.rep.Settings.Rates[0] / 2
	}
	return 0
}

// steady holds the highest sustainable rate (else the lowest step) while
// probes measure freshness and 32 clients load the API.
func (r *run) steady(ctx context.Context, d time.Duration) {
	rate := r.steadyRate()
	if rate == 0 || ctx.Err() != nil {
		return
	}
	label := fmt.Sprintf("steady at %s ev/s", num(rate))
	// Before the hold, so the API load's time is not spent on it.
	if err := seedSLOs(ctx, r.cfg.DB.DSN()); err != nil {
		r.progress("seeding SLOs for /slos: %v", err)
	}
	r.progress("%s: freshness probes every 250 ms and API load (%d clients) for %v", label, clients, d)
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var produced []time.Duration // probes' Kafka writes
	var seenProbes []probe       // probes written and then seen at /metrics
	var loadFrom time.Time       // the API load's start: read after apiRes
	probes := 0
	const poll = 50 * time.Millisecond
	wg.Add(1)
	go func() { // probes
		defer wg.Done()
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-sctx.Done():
				return
			case <-tick.C:
			}
			svc := "bench-probe-" + strconv.Itoa(i)
			mu.Lock()
			probes++
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				t0 := time.Now()
				if err := r.write(ctx, svc, "info", 1, t0); err != nil {
					return
				}
				pt := time.Since(t0)
				mu.Lock()
				produced = append(produced, pt)
				mu.Unlock()
				url := r.apiBase + "/metrics?service=" + svc + "&limit=1"
				for time.Since(t0) < 30*time.Second && ctx.Err() == nil {
					if r.visible(ctx, url) {
						now := time.Now()
						mu.Lock()
						seenProbes = append(seenProbes, probe{t0, now})
						mu.Unlock()
						return
					}
					time.Sleep(poll)
				}
			}()
		}
	}()
	apiRes := make(chan []HTTPResult, 1)
	go func() {
		// The API load from 3/10 of the hold, the five endpoints d/8 each,
		// so the last one ends before the hold does; before it, the
		// probes measure the pipeline's own freshness.
		time.Sleep(d * 3 / 10)
		per := max(time.Second, d/8)
		var out []HTTPResult
		loadFrom = time.Now()
		if r.staticURL != "" {
			out = append(out, LoadHTTP(sctx, r.hc, staticName+" ("+r.staticWhere+", ingesting)", r.staticURL, clients, per))
		}
		for _, e := range []struct{ name, path string }{
			{"/metrics (1min, 100 rows)", "/metrics?window=1min&limit=100"},
			{"/health-status", "/health-status"},
			{"/alerts", "/alerts"},
			{"/slos (4 SLOs)", "/slos"},
		} {
			if sctx.Err() != nil {
				break
			}
			out = append(out, LoadHTTP(sctx, r.hc, e.name, r.apiBase+e.path, clients, per))
		}
		apiRes <- out
	}()
	d0 := r.delaySnapshot(ctx)
	st := r.hold(ctx, rate, d, 999, label)
	delays := stageDelays(d0, r.delaySnapshot(ctx))
	cancel()
	api := <-apiRes
	// Probes in flight are polled up to 30 s; wait for them.
	wg.Wait()
	s := &Steady{Rate: rate, Seconds: st.Seconds, Lag: st.Lag, Probes: probes, Seen: len(seenProbes), PollMS: ms(poll), API: api, Stages: delays}
	s.ProduceP50ms, s.ProduceP99ms = ms(Percentile(produced, 0.5)), ms(Percentile(produced, 0.99))
	s.setFreshness(seenProbes, loadFrom)
	r.rep.Steady = s
	r.steadyStep = st
	r.progress("%s: freshness p50 %.0f ms p99 %.0f ms (%d/%d probes; their Kafka write p50 %.0f ms p99 %.0f ms; seen before the API load p99 %.0f ms of %d, with it %.0f ms of %d); per stage (mean, p99 per batch): %s",
		label, s.FreshP50ms, s.FreshP99ms, s.Seen, probes, s.ProduceP50ms, s.ProduceP99ms, s.FreshBeforeP99ms, s.BeforeProbes, s.FreshWithP99ms, s.WithProbes, stageDelayText(delays))
}

// visible reports whether /metrics?service=… returns a row.
func (r *run) visible(ctx context.Context, url string) bool {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return false
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var body struct {
		Count int `json:"count"`
	}
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&body) != nil {
		return false
	}
	return body.Count > 0
}

// seedSLOs defines four SLOs — every service and one loadgen service, by
// availability and by latency — so /slos sums real metrics rows (once per
// run: the names are unique).
func seedSLOs(ctx context.Context, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, `INSERT INTO analytics_slos (name, service, objective, latency_threshold_ms, target, period) VALUES
	('bench: all available', NULL, 'availability', NULL, 99.9, '30 days'),
	('bench: all fast', NULL, 'latency', 300, 99, '7 days'),
	('bench: one available', (SELECT service FROM analytics_metrics_1min ORDER BY timestamp DESC LIMIT 1), 'availability', NULL, 99.5, '30 days'),
	('bench: one fast', (SELECT service FROM analytics_metrics_1min ORDER BY timestamp DESC LIMIT 1), 'latency', 500, 99, '1 day')
	ON CONFLICT (name) DO NOTHING`)
	if err != nil {
		return fmt.Errorf("insert: %w", err)
	}
	return nil
}
