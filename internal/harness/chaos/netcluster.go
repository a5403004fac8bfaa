package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stacklens/stacklens/internal/embedded"
	"github.com/stacklens/stacklens/internal/harness/netns"
	"github.com/stacklens/stacklens/internal/natsutil"
	"github.com/stacklens/stacklens/schema"
)

// Ports every host uses (each host has its own addresses).
const (
	natsPort    = 4222
	routePort   = 6222
	kafkaPort   = 9092
	pgPort      = 5432
	metricsPort = 8004
	apiPort     = 8005
)

// chaosAdminKey is the API replicas' admin bearer key.
const chaosAdminKey = "chaos-admin-key-0123456789"

// NetOptions of a partition topology.
type NetOptions struct {
	Bin    string // the stacklens binary
	Dir    string // private directory
	Subnet int    // the /24 of 10.77.0.0/16
	Env    map[string]string
	Log    *slog.Logger
}

// NetCluster is the partition tests' topology (docs/CHAOS.md): every
// process on a host of its own — three NATS nodes (a JetStream cluster,
// NATS_REPLICAS=3), the Kafka broker, PostgreSQL, two bridges, three
// processors, two projections and two API replicas, all the real binary —
// plus the host "ctl" from which the test produces and checks.
type NetCluster struct {
	o   NetOptions
	Net *netns.Net
	Ctl *netns.Host

	NATS, Bridges, Processors, Projections, APIs []*Proc
	Kafka, PG                                    *Proc

	mu    sync.Mutex
	procs []*Proc
}

// StartNet builds the network and starts every process, returning when
// each reports ready.
func StartNet(ctx context.Context, o NetOptions) (_ *NetCluster, err error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	n, err := netns.New(o.Subnet)
	if err != nil {
		return nil, err
	}
	c := &NetCluster{o: o, Net: n}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if c.Ctl, err = n.AddHost("ctl"); err != nil {
		return nil, err
	}
	_ = os.WriteFile(filepath.Join(o.Dir, "empty.env"), nil, 0o644)

	if err := c.startPG(ctx); err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	var natsHosts []*netns.Host
	for i := range 3 {
		h, err := n.AddHost("nats" + strconv.Itoa(i))
		if err != nil {
			return nil, err
		}
		natsHosts = append(natsHosts, h)
	}
	var routes []string
	for _, h := range natsHosts {
		routes = append(routes, fmt.Sprintf("nats-route://%s:%d", h.IP, routePort))
	}
	for i, h := range natsHosts {
		p := c.proc("nats"+strconv.Itoa(i), "nats-server", h, nil)
		p.Args = []string{"--host", h.IP, "--port", strconv.Itoa(natsPort), "--store", filepath.Join(o.Dir, "nats"+strconv.Itoa(i)),
			"--name", "nats" + strconv.Itoa(i), "--cluster-name", "chaos", "--cluster-port", strconv.Itoa(routePort),
			"--routes", strings.Join(routes, ",")}
		c.NATS = append(c.NATS, p)
	}
	kh, err := n.AddHost("kafka")
	if err != nil {
		return nil, err
	}
	c.Kafka = c.proc("kafka", "kafka-broker", kh, map[string]string{"KAFKA_PARTITIONS": strconv.Itoa(Partitions)})
	c.Kafka.Args = []string{"--host", kh.IP, "--port", strconv.Itoa(kafkaPort), "--dir", filepath.Join(o.Dir, "kafka")}
	for _, p := range append(append([]*Proc{}, c.NATS...), c.Kafka) {
		if err := p.Start(); err != nil {
			return nil, err
		}
	}
	if err := c.WaitReady(ctx, append(append([]*Proc{}, c.NATS...), c.Kafka), time.Minute); err != nil {
		return nil, err
	}

	roles := []struct {
		name, role string
		n          int
		into       *[]*Proc
	}{{"bridge", "bridge", 2, &c.Bridges}, {"proc", "processor", 3, &c.Processors},
		{"proj", "projections", 2, &c.Projections}, {"api", "api", 2, &c.APIs}}
	for _, r := range roles {
		for i := range r.n {
			name := r.name + strconv.Itoa(i)
			h, err := n.AddHost(name)
			if err != nil {
				return nil, err
			}
			extra := map[string]string{}
			switch r.role {
			case "processor":
				extra["PROCESSOR_ID"] = name
			case "api": // a non-loopback listener needs credentials
				extra["API_READER_KEYS"], extra["API_ADMIN_KEYS"] = "chaos-reader-key-0123456789", chaosAdminKey
			}
			p := c.proc(name, r.role, h, extra)
			if err := p.Start(); err != nil {
				return nil, err
			}
			*r.into = append(*r.into, p)
		}
	}
	if err := c.WaitReady(ctx, c.Procs(), 2*time.Minute); err != nil {
		return nil, err
	}
	return c, nil
}

// startPG initialises the cluster and migrates it on this machine's
// loopback (embedded.StartPostgres), then serves the same data directory
// from the host "pg" on its address.
func (c *NetCluster) startPG(ctx context.Context) error {
	dir := filepath.Join(c.o.Dir, "pg")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	_ = os.Chmod(c.o.Dir, 0o755)
	pg, err := embedded.StartPostgres(ctx, embedded.PostgresOptions{Dir: dir, HBA: []string{"host all all 10.77.0.0/16 trust"}, Log: c.o.Log})
	if err != nil {
		return err
	}
	err = func() error {
		admin, err := pgx.Connect(ctx, pg.DSN("postgres", "postgres"))
		if err != nil {
			return err
		}
		_, err = admin.Exec(ctx, "CREATE DATABASE stacklens")
		_ = admin.Close(ctx)
		if err != nil {
			return err
		}
		db, err := pgx.Connect(ctx, pg.DSN("postgres", "stacklens"))
		if err != nil {
			return err
		}
		defer db.Close(ctx)
		_, err = schema.Up(ctx, db, schema.Options{Timescale: "off"}, c.o.Log)
		return err
	}()
	if serr := pg.Stop(); err == nil {
		err = serr
	}
	if err != nil {
		return err
	}
	bin, err := embedded.FindPostgresBin()
	if err != nil {
		return err
	}
	h, err := c.Net.AddHost("pg")
	if err != nil {
		return err
	}
	// PostgreSQL refuses to run as root: setpriv drops to its user inside
	// the namespace (ip netns exec needs root itself).
	p := c.proc("pg", "", h, nil)
	// The credential change clears the parent-death signal: setpriv sets
	// it again, so the server dies with the test like every other process.
	p.Cmd = []string{"setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--pdeathsig", "KILL", filepath.Join(bin, "postgres"),
		"-D", pg.DataDir(), "-c", "listen_addresses=" + h.IP, "-p", strconv.Itoa(pgPort),
		"-c", "unix_socket_directories=", "-c", "max_connections=200", "-c", "fsync=off", "-c", "full_page_writes=off"}
	p.dir = filepath.Dir(pg.DataDir())
	c.PG = p
	if err := p.Start(); err != nil {
		return err
	}
	deadline := time.Now().Add(time.Minute)
	for {
		if err := c.pingPG(ctx); err == nil {
			return nil
		} else if time.Now().After(deadline) || !p.Running() {
			return fmt.Errorf("not accepting connections on %s: %w\n%s", h.IP, err, p.LogTail(2000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *NetCluster) pingPG(ctx context.Context) error {
	cfg, err := pgx.ParseConfig(c.PGDSN())
	if err != nil {
		return err
	}
	cfg.DialFunc = c.Ctl.DialContext
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	db, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		return err
	}
	return db.Close(ctx)
}

// PGDSN is the superuser DSN of the stacklens database.
func (c *NetCluster) PGDSN() string {
	return fmt.Sprintf("postgres://postgres@%s:%d/stacklens?sslmode=disable", c.PG.Host.IP, pgPort)
}

// NATSURL lists the three nodes' client URLs.
func (c *NetCluster) NATSURL() string {
	var urls []string
	for _, p := range c.NATS {
		urls = append(urls, fmt.Sprintf("nats://%s:%d", p.Host.IP, natsPort))
	}
	return strings.Join(urls, ",")
}

// KafkaAddr is the broker's address.
func (c *NetCluster) KafkaAddr() string {
	return net.JoinHostPort(c.Kafka.Host.IP, strconv.Itoa(kafkaPort))
}

// proc makes (does not start) a process on host h.
func (c *NetCluster) proc(name, role string, h *netns.Host, extra map[string]string) *Proc {
	env := map[string]string{
		"PATH":                    os.Getenv("PATH"),
		"HOME":                    c.o.Dir,
		"ENV_FILE":                filepath.Join(c.o.Dir, "empty.env"),
		"DATA_DIR":                filepath.Join(c.o.Dir, name),
		"KAFKA_INPUT_TOPIC":       Topic,
		"METRICS_HOST":            h.IP,
		"METRICS_PORT":            strconv.Itoa(metricsPort),
		"API_HOST":                h.IP,
		"API_PORT":                strconv.Itoa(apiPort),
		"LOG_LEVEL":               "INFO",
		"LOG_FORMAT":              "text",
		"ALLOWED_LATENESS":        "1s",
		"FLUSH_INTERVAL":          "100ms",
		"LEASE_TTL":               "2s",
		"MAX_EVENT_BYTES":         "4096",
		"KAFKA_BATCH_SIZE":        "200",
		"NATS_REPLICAS":           "3",
		"NATS_URL":                "",
		"KAFKA_BOOTSTRAP_SERVERS": "",
		"DATABASE_URL":            "",
	}
	if c.PG != nil {
		env["DATABASE_URL"] = c.PGDSN()
	}
	if len(c.NATS) == 3 {
		env["NATS_URL"] = c.NATSURL()
	}
	if c.Kafka != nil {
		env["KAFKA_BOOTSTRAP_SERVERS"] = c.KafkaAddr()
	}
	for k, v := range c.o.Env {
		env[k] = v
	}
	for k, v := range extra {
		env[k] = v
	}
	var list []string
	for k, v := range env {
		if v != "" {
			list = append(list, k+"="+v)
		}
	}
	p := &Proc{Name: name, Role: role, bin: c.o.Bin, env: list, dir: c.o.Dir, logPath: filepath.Join(c.o.Dir, name+".log"), Host: h}
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	return p
}

// Procs lists every process of the topology (PostgreSQL included).
func (c *NetCluster) Procs() []*Proc {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Proc(nil), c.procs...)
}

// httpClient talks to the hosts from ctl.
func (c *NetCluster) httpClient() *http.Client {
	return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: c.Ctl.DialContext, DisableKeepAlives: true}}
}

// WaitReady polls each process's /ready (PostgreSQL: a connection).
func (c *NetCluster) WaitReady(ctx context.Context, procs []*Proc, d time.Duration) error {
	hc := c.httpClient()
	deadline := time.Now().Add(d)
	for _, p := range procs {
		for {
			var err error
			if p == c.PG {
				err = c.pingPG(ctx)
			} else {
				err = c.ready(ctx, hc, p)
			}
			if err == nil {
				break
			}
			if !p.Running() || time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("%s not ready: %w\n%s", p.Name, err, p.LogTail(3000))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

func (c *NetCluster) ready(ctx context.Context, hc *http.Client, p *Proc) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s:%d/ready", p.Host.IP, metricsPort), nil)
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/ready: %s", resp.Status)
	}
	return nil
}

// Heal undoes every network fault, makes deleted hosts again and restarts
// processes that are not running.
func (c *NetCluster) Heal() error {
	var errs []error
	for _, h := range c.Net.Hosts() {
		errs = append(errs, h.Heal())
	}
	for _, p := range c.Procs() {
		p.Signal(syscall.SIGCONT)
		if !p.Running() {
			errs = append(errs, p.Start())
		}
	}
	return errors.Join(errs...)
}

// Close stops every process and removes the network.
func (c *NetCluster) Close() {
	var wg sync.WaitGroup
	for _, p := range c.Procs() {
		if p != c.PG {
			wg.Go(func() { p.Stop(5 * time.Second) })
		}
	}
	wg.Wait()
	if c.PG != nil {
		c.PG.Stop(10 * time.Second)
	}
	c.Net.Close()
}

// JetStream connects to the cluster from ctl.
func (c *NetCluster) JetStream() (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(c.NATSURL(), nats.Timeout(5*time.Second), nats.SetCustomDialer(natsDialer(c.Ctl.DialContext)))
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// StreamLeader names the NATS node leading the event stream.
func (c *NetCluster) StreamLeader(ctx context.Context) (*Proc, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second) // see Checker.PassTimeout
	defer cancel()
	nc, js, err := c.JetStream()
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	st, err := js.Stream(ctx, natsutil.StreamEvents)
	if err != nil {
		return nil, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, err
	}
	if info.Cluster == nil {
		return nil, errors.New("stream has no cluster info")
	}
	for _, p := range c.NATS {
		if p.Name == info.Cluster.Leader {
			return p, nil
		}
	}
	return nil, fmt.Errorf("stream leader %q is not a node of the topology", info.Cluster.Leader)
}

// LeaseOwners reads the owners of the keys of a lease bucket whose names
// start with prefix (shard leases: "lease."; the alert evaluator:
// "evaluator").
func (c *NetCluster) LeaseOwners(ctx context.Context, bucket, prefix string) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second) // see Checker.PassTimeout
	defer cancel()
	nc, js, err := c.JetStream()
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, err
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for k := range lister.Keys() {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue
		}
		var l struct {
			Owner   string    `json:"owner"`
			Expires time.Time `json:"expires"`
		}
		if json.Unmarshal(e.Value(), &l) == nil && l.Owner != "" && l.Expires.After(time.Now()) {
			out[k] = l.Owner
		}
	}
	return out, nil
}

// Pid is the process's id (0 when it never started).
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}
