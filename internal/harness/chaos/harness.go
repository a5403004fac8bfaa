// Package chaos is StackLens's fault-injection suite (docs/ARCHITECTURE.md §3, §8): it
// runs the real binary's roles as subprocesses against in-process NATS
// JetStream, an in-process Kafka-protocol broker and a private PostgreSQL,
// injects faults while a workload with known content flows, and checks
// after healing that nothing was lost, doubled or invented. See
// docs/CHAOS.md.
package chaos

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/stacklens/stacklens/internal/embedded"
	"github.com/stacklens/stacklens/internal/harness/netns"
	"github.com/stacklens/stacklens/schema"
)

// Topic is the Kafka input topic the suite produces to.
const Topic = "stacklens-analytics"

// Partitions of the input topic.
const Partitions = 12

// BuildBinary compiles ./cmd/stacklens into dir and returns its path.
func BuildBinary(moduleRoot, dir string) (string, error) {
	out := filepath.Join(dir, "stacklens")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/stacklens")
	cmd.Dir = moduleRoot
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build: %w", err)
	}
	return out, nil
}

// Options of a cluster.
type Options struct {
	Bin string // the stacklens binary
	Dir string // private directory (removed by Close)
	// Links puts fault proxies on the NATS and PostgreSQL links and a fault
	// listener on the Kafka broker.
	Links bool
	// Env is added to every role's environment (after the defaults).
	Env map[string]string
	// NATSNodes > 1 runs a JetStream cluster of that many in-process
	// servers (roles get every URL and NATS_REPLICAS = NATSNodes).
	NATSNodes int
	Log       *slog.Logger
}

// Cluster is the infrastructure of one run plus the role processes.
type Cluster struct {
	o Options

	natsPorts, routePorts []int
	natsDir               string
	// NATS holds the servers (one, or the cluster's nodes; nil when down).
	NATS []*server.Server

	kafkaPort int
	kafkaDir  string
	Kafka     *embedded.Kafka
	KafkaAddr string

	PG    *embedded.Postgres
	PGDSN string // superuser DSN of the stacklens database (direct)

	// Fault links (nil without Options.Links).
	NATSLink, PGLink, KafkaLink *Link

	mu    sync.Mutex
	procs []*Proc
}

// Start brings up NATS, Kafka and PostgreSQL (with the migrations applied).
func Start(ctx context.Context, o Options) (_ *Cluster, err error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	c := &Cluster{o: o, natsDir: filepath.Join(o.Dir, "nats"), kafkaDir: filepath.Join(o.Dir, "kafka")}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	nodes := max(o.NATSNodes, 1)
	c.NATS = make([]*server.Server, nodes)
	for range nodes {
		p, err := embedded.FreePort()
		if err != nil {
			return nil, err
		}
		c.natsPorts = append(c.natsPorts, p)
		if nodes > 1 {
			if p, err = embedded.FreePort(); err != nil {
				return nil, err
			}
			c.routePorts = append(c.routePorts, p)
		}
	}
	if err := c.StartNATS(); err != nil {
		return nil, err
	}
	if c.kafkaPort, err = embedded.FreePort(); err != nil {
		return nil, err
	}
	if err := c.StartKafka(); err != nil {
		return nil, err
	}
	pgDir := filepath.Join(o.Dir, "pg")
	if err := os.MkdirAll(pgDir, 0o755); err != nil {
		return nil, err
	}
	_ = os.Chmod(o.Dir, 0o755)
	_ = os.Chmod(pgDir, 0o755)
	c.PG, err = embedded.StartPostgres(ctx, embedded.PostgresOptions{Dir: pgDir, Fsync: false})
	if err != nil {
		return nil, err
	}
	admin, err := pgx.Connect(ctx, c.PG.DSN("postgres", "postgres"))
	if err != nil {
		return nil, err
	}
	_, err = admin.Exec(ctx, "CREATE DATABASE stacklens")
	_ = admin.Close(ctx)
	if err != nil {
		return nil, err
	}
	c.PGDSN = c.PG.DSN("postgres", "stacklens")
	db, err := pgx.Connect(ctx, c.PGDSN)
	if err != nil {
		return nil, err
	}
	_, err = schema.Up(ctx, db, schema.Options{Timescale: "off"}, o.Log)
	_ = db.Close(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	if o.Links {
		if c.NATSLink, err = NewLink("nats", "", fmt.Sprintf("127.0.0.1:%d", c.natsPorts[0])); err != nil {
			return nil, err
		}
		if c.PGLink, err = NewLink("postgres", "", fmt.Sprintf("127.0.0.1:%d", c.PG.Port())); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// StartNATS (re)starts every NATS server that is down, on its fixed
// ports and store.
func (c *Cluster) StartNATS() error {
	var wg sync.WaitGroup
	errs := make([]error, len(c.NATS))
	for i := range c.NATS {
		if c.NATS[i] != nil {
			continue
		}
		wg.Go(func() { errs[i] = c.StartNATSNode(i) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// StartNATSNode starts node i.
func (c *Cluster) StartNATSNode(i int) error {
	o := embedded.NATSOptions{Port: c.natsPorts[i], StoreDir: filepath.Join(c.natsDir, strconv.Itoa(i)), Name: "chaos-" + strconv.Itoa(i), Log: c.o.Log}
	if len(c.routePorts) > 0 {
		o.ClusterName, o.ClusterPort = "chaos", c.routePorts[i]
		for _, p := range c.routePorts {
			o.Routes = append(o.Routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
		}
	}
	s, err := embedded.StartNATS(o)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.NATS[i] = s
	c.mu.Unlock()
	return nil
}

// StopNATS shuts every NATS server down (stores stay).
func (c *Cluster) StopNATS() {
	for i := range c.NATS {
		c.StopNATSNode(i)
	}
}

// StopNATSNode shuts node i down.
func (c *Cluster) StopNATSNode(i int) {
	c.mu.Lock()
	s := c.NATS[i]
	c.NATS[i] = nil
	c.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// NATSURL is the direct URL list of the NATS servers (the checker's).
func (c *Cluster) NATSURL() string {
	var urls []string
	for _, p := range c.natsPorts {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	return strings.Join(urls, ",")
}

// StartKafka (re)starts the broker on its fixed port and data directory.
func (c *Cluster) StartKafka() error {
	var opts []kfake.Opt
	if c.o.Links {
		opts = append(opts, kfake.ListenFn(func(network, address string) (net.Listener, error) {
			ln, err := net.Listen(network, address)
			if err != nil {
				return nil, err
			}
			link, wrapped := WrapListener("kafka", ln)
			if c.KafkaLink != nil { // a restart keeps the link's mode
				m, d, b, _ := c.KafkaLink.state()
				link.Set(m, d, b)
			}
			c.KafkaLink = link
			return wrapped, nil
		}))
	}
	k, err := embedded.StartKafka(embedded.KafkaOptions{Port: c.kafkaPort, DataDir: c.kafkaDir, Partitions: Partitions,
		Topics: []string{Topic, "analytics-alerts"}, Opts: opts})
	if err != nil {
		return err
	}
	c.Kafka = k
	c.KafkaAddr = k.ListenAddrs()[0]
	return nil
}

// StopKafka closes the broker (its log stays in the data directory).
func (c *Cluster) StopKafka() {
	if c.Kafka != nil {
		c.Kafka.Close()
		c.Kafka = nil
	}
}

// RoleEnv is the environment of a role process.
func (c *Cluster) RoleEnv(extra map[string]string) []string {
	natsURL, pgPort := c.NATSURL(), c.PG.Port()
	if c.NATSLink != nil {
		natsURL = "nats://" + c.NATSLink.Addr()
	}
	if c.PGLink != nil {
		_, p, _ := net.SplitHostPort(c.PGLink.Addr())
		pgPort, _ = strconv.Atoi(p)
	}
	env := map[string]string{
		"PATH":                    os.Getenv("PATH"),
		"HOME":                    c.o.Dir,
		"ENV_FILE":                filepath.Join(c.o.Dir, "empty.env"),
		"NATS_URL":                natsURL,
		"KAFKA_BOOTSTRAP_SERVERS": c.KafkaAddr,
		"KAFKA_INPUT_TOPIC":       Topic,
		"DATABASE_URL":            fmt.Sprintf("postgres://postgres@127.0.0.1:%d/stacklens?sslmode=disable", pgPort),
		"METRICS_PORT":            "0",
		"LOG_LEVEL":               "INFO",
		"LOG_FORMAT":              "text",
		"ALLOWED_LATENESS":        "1s",
		"FLUSH_INTERVAL":          "100ms",
		"LEASE_TTL":               "2s",
		"MAX_EVENT_BYTES":         "4096",
		"NATS_REPLICAS":           strconv.Itoa(max(c.o.NATSNodes, 1)),
		"KAFKA_BATCH_SIZE":        "200",
	}
	for k, v := range c.o.Env {
		env[k] = v
	}
	for k, v := range extra {
		env[k] = v
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

// Role starts a role process (bridge, processor, projections, api) named
// name (its PROCESSOR_ID for processors).
func (c *Cluster) Role(name, role string, extra map[string]string) (*Proc, error) {
	if extra == nil {
		extra = map[string]string{}
	}
	if role == "processor" {
		extra["PROCESSOR_ID"] = name
	}
	_ = os.WriteFile(filepath.Join(c.o.Dir, "empty.env"), nil, 0o644)
	p := &Proc{Name: name, Role: role, bin: c.o.Bin, env: c.RoleEnv(extra), dir: c.o.Dir,
		logPath: filepath.Join(c.o.Dir, name+".log")}
	if err := p.Start(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	return p, nil
}

// Procs lists the role processes started so far.
func (c *Cluster) Procs() []*Proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Proc(nil), c.procs...)
}

// HealAll puts every link back to Pass, resumes stopped processes and
// restarts dead ones.
func (c *Cluster) HealAll() error {
	for _, l := range []*Link{c.NATSLink, c.PGLink, c.KafkaLink} {
		if l != nil {
			l.Heal()
		}
	}
	if err := c.StartNATS(); err != nil {
		return err
	}
	for _, p := range c.Procs() {
		p.Signal(syscall.SIGCONT)
		if !p.Running() {
			if err := p.Start(); err != nil {
				return err
			}
		}
	}
	return nil
}

// Close stops everything and removes the directory unless keep.
func (c *Cluster) Close() {
	for _, p := range c.Procs() {
		p.Signal(syscall.SIGCONT)
		p.Stop(10 * time.Second)
	}
	for _, l := range []*Link{c.NATSLink, c.PGLink} {
		if l != nil {
			l.Close()
		}
	}
	c.StopKafka()
	c.StopNATS()
	if c.PG != nil {
		_ = c.PG.Stop()
	}
}

// Proc is one role process of the stacklens binary.
type Proc struct {
	Name, Role string
	bin, dir   string
	env        []string
	logPath    string
	// Host is the network namespace the process runs in (nil: this
	// machine's); Args follow the role on the command line; Cmd, when set,
	// is the whole command line instead of the binary and role.
	Host *netns.Host
	Args []string
	Cmd  []string

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{}
	Starts   int
	ExitCode int
}

// Start runs the process (again), appending to its log.
func (p *Proc) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "----- start %d at %s\n", p.Starts+1, time.Now().Format(time.RFC3339Nano))
	argv := append([]string{p.bin, p.Role}, p.Args...)
	if p.Cmd != nil {
		argv = p.Cmd
	}
	if p.Host != nil {
		argv = append(p.Host.Argv(), argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = p.env
	cmd.Dir = p.dir
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = f.Close()
		p.mu.Lock()
		p.ExitCode = cmd.ProcessState.ExitCode()
		p.mu.Unlock()
		close(done)
	}()
	p.cmd, p.done = cmd, done
	p.Starts++
	return nil
}

// Running reports whether the process has not exited.
func (p *Proc) Running() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// Signal sends sig to the process when it runs.
func (p *Proc) Signal(sig syscall.Signal) {
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if cmd != nil && p.Running() {
		_ = cmd.Process.Signal(sig)
	}
}

// Kill9 kills the process with SIGKILL and waits for it.
func (p *Proc) Kill9() {
	p.Signal(syscall.SIGKILL)
	p.wait(10 * time.Second)
}

// Stop sends SIGTERM and waits up to grace, then SIGKILL.
func (p *Proc) Stop(grace time.Duration) {
	p.Signal(syscall.SIGTERM)
	if !p.wait(grace) {
		p.Kill9()
	}
}

func (p *Proc) wait(d time.Duration) bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return true
	}
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// LogTail returns the last n bytes of the process's log.
func (p *Proc) LogTail(n int64) string {
	f, err := os.Open(p.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, _ := f.Stat()
	if st.Size() > n {
		_, _ = f.Seek(st.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// DumpGoroutines makes a running Go process print its goroutines and exit
// (SIGQUIT) and returns the last n bytes of its log: what a stalled role
// was waiting on, for a failure message.
func (p *Proc) DumpGoroutines(n int64) string {
	if !p.Running() {
		return p.LogTail(n)
	}
	p.Signal(syscall.SIGQUIT)
	p.wait(10 * time.Second)
	return p.LogTail(n)
}
