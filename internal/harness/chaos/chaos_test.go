package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stacklens/stacklens/internal/embedded"
)

var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "stacklens-chaos-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	root, _ := filepath.Abs("../../..")
	if binPath, err = BuildBinary(root, dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

func long() bool { return os.Getenv("STACKLENS_LONG_TESTS") == "1" }

// seed returns CHAOS_SEED or a fresh one; it is printed so that a failing
// schedule can be replayed.
func seed(t *testing.T) uint64 {
	if s := os.Getenv("CHAOS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CHAOS_SEED: %v", err)
		}
		return v
	}
	return uint64(time.Now().UnixNano())
}

// Run is one fault row's execution context.
type Run struct {
	T   *testing.T
	C   *Cluster
	Rng *rand.Rand
	Ctx context.Context

	Bridges, Processors []*Proc
	Projections         *Proc
	APIURL              string        // when Row.API
	Duration            time.Duration // of the workload
	mu                  sync.Mutex
	Log                 []string
}

// Note records a fault step (printed on failure).
func (r *Run) Note(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Log = append(r.Log, time.Now().Format("15:04:05.000")+" "+fmt.Sprintf(format, args...))
}

// Sleep waits up to d (or until the run's context ends).
func (r *Run) Sleep(d time.Duration) {
	select {
	case <-time.After(d):
	case <-r.Ctx.Done():
	}
}

// At returns a random moment within [lo, hi) of the workload duration.
func (r *Run) At(lo, hi float64) time.Duration {
	return time.Duration((lo + r.Rng.Float64()*(hi-lo)) * float64(r.Duration))
}

// Row is one fault scenario.
type Row struct {
	Name     string
	Short    bool // part of the default (short) run
	Links    bool // needs fault links
	Nodes    int  // NATS cluster size (default 1)
	Events   int  // valid events (short variant; long multiplies)
	Services int
	Bridges  int
	Env      map[string]string
	Fault    func(r *Run)
	// API starts the api role too (Run.APIURL); After, when set, checks
	// more once the invariants hold.
	API   bool
	After func(r *Run, truth *Truth)
}

// RowResult is a line of the results table.
type RowResult struct {
	Row       string
	Seed      uint64
	Events    int
	Res       *Result
	Converged time.Duration
	// Late is set when the row missed I5: when it converged after all
	// (LateOK), or the end of the extra 120 s of polling.
	Late   time.Duration
	LateOK bool
}

func (x RowResult) lateText() string {
	switch {
	case x.Late == 0:
		return ""
	case x.LateOK:
		return fmt.Sprintf("converged late, %v after healing (I5 violated, nothing lost in the end)", x.Late.Round(100*time.Millisecond))
	default:
		return fmt.Sprintf("still not converged %v after healing: %s", x.Late.Round(time.Second), x.Res)
	}
}

func (x RowResult) convText() string {
	if x.Late == 0 {
		return x.Converged.Round(100 * time.Millisecond).String()
	}
	if x.LateOK {
		return "> 60 s (I5 ✗): " + x.Late.Round(100*time.Millisecond).String()
	}
	return "not within " + x.Late.Round(time.Second).String()
}

var (
	resultsMu sync.Mutex
	results   []RowResult
)

func runRow(t *testing.T, row Row) {
	sd := seed(t)
	t.Logf("CHAOS_SEED=%d (replay: CHAOS_SEED=%d go test ./internal/harness/chaos -run 'TestChaos/%s$' -v)", sd, sd, row.Name)
	rng := rand.New(rand.NewPCG(sd, sd^0xa0761d6478bd642f))
	events, dur := row.Events, 10*time.Second
	if long() {
		events, dur = row.Events*4, 30*time.Second
	}
	dir, err := os.MkdirTemp("", "stacklens-chaos-")
	if err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(dir, 0o755)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c, err := Start(ctx, Options{Bin: binPath, Dir: dir, Links: row.Links, Env: row.Env, NATSNodes: row.Nodes})
	if err != nil {
		t.Fatal(err)
	}
	r := &Run{T: t, C: c, Rng: rng, Ctx: ctx, Duration: dur}
	failed := true
	defer func() {
		c.Close()
		if failed && os.Getenv("CHAOS_KEEP") == "" {
			t.Logf("fault log:\n  %s", strings.Join(r.Log, "\n  "))
			for _, p := range c.Procs() {
				t.Logf("--- %s log tail:\n%s", p.Name, p.LogTail(3000))
			}
		}
		if os.Getenv("CHAOS_KEEP") != "" {
			t.Logf("kept %s", dir)
		} else {
			_ = os.RemoveAll(dir)
		}
	}()
	nb := max(row.Bridges, 1)
	for i := range nb {
		p, err := c.Role("bridge-"+strconv.Itoa(i), "bridge", nil)
		if err != nil {
			t.Fatal(err)
		}
		r.Bridges = append(r.Bridges, p)
	}
	for i := range 2 {
		p, err := c.Role("processor-"+strconv.Itoa(i), "processor", nil)
		if err != nil {
			t.Fatal(err)
		}
		r.Processors = append(r.Processors, p)
	}
	if r.Projections, err = c.Role("projections", "projections", nil); err != nil {
		t.Fatal(err)
	}

	if row.API {
		port, err := embedded.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		r.APIURL = fmt.Sprintf("http://127.0.0.1:%d", port)
		if _, err := c.Role("api", "api", map[string]string{"API_PORT": strconv.Itoa(port)}); err != nil {
			t.Fatal(err)
		}
	}

	services := row.Services
	if services == 0 {
		services = 20
	}
	w := Workload{Events: events, Services: services, Bad: max(events/100, 16), Duration: dur,
		MaxLateness: 20 * time.Second, Seed: sd}
	var wg sync.WaitGroup
	if row.Fault != nil {
		wg.Go(func() { row.Fault(r) })
	}
	truth, err := Produce(ctx, c.KafkaAddr, w)
	if err != nil {
		t.Fatalf("produce: %v", err)
	}
	wg.Wait()
	if err := c.HealAll(); err != nil {
		t.Fatal(err)
	}
	r.Note("healed")
	healed := time.Now()
	if err := truth.Locate(ctx, c.KafkaAddr); err != nil {
		t.Fatalf("locate: %v", err)
	}
	ck := &Checker{NATSURL: c.NATSURL(), PGDSN: c.PGDSN, Truth: truth}
	res, _, err := ck.WaitConverged(ctx, 60*time.Second-time.Since(healed))
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	conv := time.Since(healed)
	rr := RowResult{Row: row.Name, Seed: sd, Events: res.Valid + res.Bad, Res: res, Converged: conv}
	if !res.OK() {
		// I5 is violated; keep polling to tell a slow recovery from a
		// permanent loss.
		late, _, err := ck.WaitConverged(ctx, 120*time.Second)
		if err == nil {
			rr.Late, rr.LateOK, rr.Res = time.Since(healed), late.OK(), late
		}
	}
	resultsMu.Lock()
	results = append(results, rr)
	resultsMu.Unlock()
	t.Logf("%s: %s; converged in %v", row.Name, res, conv.Round(100*time.Millisecond))
	if !res.OK() {
		t.Errorf("invariants violated 60s after healing (I5), CHAOS_SEED=%d:\n  %s\n%s", sd, strings.Join(res.Problems, "\n  "), rr.lateText())
		return
	}
	if row.Name == "baseline" {
		selfTest(t, ck)
	}
	if row.After != nil {
		row.After(r, truth)
		if t.Failed() {
			return
		}
	}
	failed = false
}

// selfTest makes sure the checker sees violations: a phantom produced
// event must be reported lost, and a missing one unexpected.
func selfTest(t *testing.T, ck *Checker) {
	ctx := context.Background()
	tr := ck.Truth
	phantom := &Produced{ID: 1 << 40, Valid: true, Service: "svc-0", Time: time.Now().UTC(), Latency: 0.25}
	tr.At[Coord{0, 1 << 40}] = phantom
	r, err := ck.Check(ctx)
	delete(tr.At, Coord{0, 1 << 40})
	if err != nil || r.MsgLost != 1 || r.AggLost != 1 {
		t.Errorf("checker self-test (phantom event): %v %v", r, err)
	}
	var victim Coord
	for c, p := range tr.At {
		if p.Valid {
			victim = c
			break
		}
	}
	p := tr.At[victim]
	delete(tr.At, victim)
	r, err = ck.Check(ctx)
	tr.At[victim] = p
	if err != nil || r.MsgUnexpected != 1 || r.AggDup != 1 {
		t.Errorf("checker self-test (unproduced event): %v %v", r, err)
	}
}

// killRandom kill -9s one of procs n times at random moments and restarts it.
// The kills fall in [lo, 1) of the workload's duration, one per slice.
func killRandom(procs func(r *Run) []*Proc, n int, down time.Duration, lo float64) func(r *Run) {
	return func(r *Run) {
		start := time.Now()
		slice := (1 - lo) / float64(n)
		for i := range n {
			r.Sleep(time.Until(start.Add(r.At(lo+float64(i)*slice, lo+float64(i+1)*slice))))
			ps := procs(r)
			p := ps[r.Rng.IntN(len(ps))]
			r.Note("kill -9 %s", p.Name)
			p.Kill9()
			r.Sleep(down)
			r.Note("restart %s", p.Name)
			if err := p.Start(); err != nil {
				r.T.Error(err)
			}
		}
	}
}

func bridges(r *Run) []*Proc     { return r.Bridges }
func processors(r *Run) []*Proc  { return r.Processors }
func projections(r *Run) []*Proc { return []*Proc{r.Projections} }
func allRoles(r *Run) []*Proc {
	return append(append(append([]*Proc{}, r.Bridges...), r.Processors...), r.Projections)
}

func rows() []Row {
	return []Row{
		{Name: "baseline", Short: true, Events: 10000},
		{Name: "kill9-bridge", Short: true, Events: 10000, Fault: killRandom(bridges, 1, 500*time.Millisecond, 0.3)},
		{Name: "kill9-bridge-x3", Events: 10000, Fault: killRandom(bridges, 3, 500*time.Millisecond, 0)},
		{Name: "kill9-processor", Short: true, Events: 10000, Fault: killRandom(processors, 3, 500*time.Millisecond, 0)},
		{Name: "kill9-projections", Events: 10000, Fault: killRandom(projections, 3, 500*time.Millisecond, 0)},
		{Name: "kill9-any", Events: 10000, Bridges: 2, Fault: killRandom(allRoles, 6, 300*time.Millisecond, 0)},
		{Name: "sigterm-restarts", Events: 10000, Bridges: 2, Fault: func(r *Run) {
			for i := range 4 {
				r.Sleep(r.At(0.1, 0.25))
				ps := allRoles(r)
				p := ps[r.Rng.IntN(len(ps))]
				r.Note("SIGTERM %s (%d)", p.Name, i)
				p.Stop(30 * time.Second)
				if err := p.Start(); err != nil {
					r.T.Error(err)
				}
			}
		}},
		{Name: "nats-restart", Short: true, Events: 10000, Fault: func(r *Run) {
			r.Sleep(r.At(0.2, 0.6))
			r.Note("NATS shutdown")
			r.C.StopNATS()
			r.Sleep(time.Duration(1+r.Rng.IntN(3)) * time.Second)
			r.Note("NATS start (same store)")
			if err := r.C.StartNATS(); err != nil {
				r.T.Error(err)
			}
		}},
		{Name: "postgres-stop", Short: true, Events: 10000, Fault: func(r *Run) {
			r.Sleep(r.At(0.1, 0.4))
			down := 5*time.Second + time.Duration(r.Rng.IntN(5))*time.Second
			if long() {
				down = 30*time.Second + time.Duration(r.Rng.IntN(30))*time.Second
			}
			r.Note("PostgreSQL stop for %v", down)
			if err := r.C.PG.Stop(); err != nil {
				r.T.Error(err)
			}
			r.Sleep(down)
			r.Note("PostgreSQL restart")
			if err := r.C.PG.Restart(r.Ctx); err != nil {
				r.T.Error(err)
			}
		}},
		{Name: "sigstop-processor", Short: true, Events: 10000, Fault: func(r *Run) {
			r.Sleep(r.At(0.1, 0.4))
			p := r.Processors[r.Rng.IntN(len(r.Processors))]
			r.Note("SIGSTOP %s for 6s (LEASE_TTL 2s)", p.Name)
			p.Signal(syscall.SIGSTOP)
			r.Sleep(6 * time.Second)
			r.Note("SIGCONT %s", p.Name)
			p.Signal(syscall.SIGCONT)
		}},
		{Name: "kafka-restart", Events: 10000, Fault: func(r *Run) {
			r.Sleep(r.At(0.2, 0.5))
			r.Note("Kafka broker close")
			r.C.StopKafka()
			r.Sleep(2 * time.Second)
			r.Note("Kafka broker start (same data dir)")
			if err := r.C.StartKafka(); err != nil {
				r.T.Error(err)
			}
		}},
		{Name: "kafka-redelivery", Events: 10000, Fault: func(r *Run) {
			// Graceful stop (offsets committed), rewind the group to 0,
			// restart: Kafka redelivers everything already forwarded.
			for i := range 2 {
				r.Sleep(r.At(0.2, 0.4))
				b := r.Bridges[0]
				r.Note("SIGTERM %s, rewind group to offset 0 (%d)", b.Name, i)
				b.Stop(30 * time.Second)
				if err := RewindGroup(r.Ctx, r.C.KafkaAddr, "stacklens-bridge", Topic, Partitions); err != nil {
					r.T.Errorf("rewind: %v", err)
				}
				if err := b.Start(); err != nil {
					r.T.Error(err)
				}
			}
		}},
		{Name: "nats-cluster-node-kill", Nodes: 3, Events: 10000, Fault: func(r *Run) {
			r.Sleep(r.At(0.2, 0.5))
			i := r.Rng.IntN(3)
			r.Note("NATS node %d shut down (of 3, NATS_REPLICAS=3)", i)
			r.C.StopNATSNode(i)
			r.Sleep(r.At(0.3, 0.4))
			r.Note("NATS node %d restarted (same store)", i)
			if err := r.C.StartNATSNode(i); err != nil {
				r.T.Error(err)
			}
		}},
		{Name: "cardinality-flood", Events: 10000, Services: 400, Env: map[string]string{"MAX_SERVICES": "5"}},
		{Name: "api-flood", API: true, Events: 10000, Fault: apiFlood, After: apiServesTruth},
		{Name: "link-nats", Links: true, Events: 10000, Fault: linkFaults(func(c *Cluster) *Link { return c.NATSLink })},
		{Name: "link-postgres", Links: true, Events: 10000, Fault: linkFaults(func(c *Cluster) *Link { return c.PGLink })},
		{Name: "link-kafka", Links: true, Events: 10000, Fault: linkFaults(func(c *Cluster) *Link { return c.KafkaLink })},
	}
}

// linkFaults cycles a link through latency, reset, blackhole and
// bandwidth, a few seconds each, with healthy gaps.
func linkFaults(link func(*Cluster) *Link) func(r *Run) {
	return func(r *Run) {
		l := link(r.C)
		steps := []struct {
			m     Mode
			delay time.Duration
			bps   int
		}{{Latency, 50 * time.Millisecond, 0}, {Reset, 0, 0}, {Blackhole, 0, 0}, {Bandwidth, 0, 64 << 10}}
		r.Rng.Shuffle(len(steps), func(i, j int) { steps[i], steps[j] = steps[j], steps[i] })
		for _, s := range steps {
			r.Sleep(r.At(0.02, 0.08))
			hold := time.Duration(1+r.Rng.IntN(3)) * time.Second
			r.Note("link %s: %s for %v", l.Name, s.m, hold)
			l.Set(s.m, s.delay, s.bps)
			r.Sleep(hold)
			l.Heal()
			r.Note("link %s healed", l.Name)
		}
	}
}

func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos suite: not in -short")
	}
	for _, row := range rows() {
		t.Run(row.Name, func(t *testing.T) {
			if !row.Short && !long() && os.Getenv("CHAOS_ALL") == "" {
				t.Skip("long variant only (STACKLENS_LONG_TESTS=1)")
			}
			runRow(t, row)
		})
	}
	resultsMu.Lock()
	defer resultsMu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "\n| fault | seed | messages | lost | duplicated | unexpected | converged |\n|---|---|---|---|---|---|---|\n")
	for _, x := range results {
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %d | %v |\n", x.Row, x.Seed, x.Events, x.Res.Lost(), x.Res.Duplicated(), x.Res.Unexpected(), x.convText())
	}
	t.Log(b.String())
}
