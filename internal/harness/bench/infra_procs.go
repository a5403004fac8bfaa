package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/embedded"
	"github.com/stacklens/stacklens/internal/harness/loadgen"
)

// The NATS server, the Kafka broker and the load generator run as
// processes of their own (`stacklens nats-server`, `stacklens
// kafka-broker`, `stacklens loadgen --metrics`), like the roles, so that
// every CPU-second of the run has an owner and every process can be
// profiled (docs/PERFORMANCE.md "What runs where").

// baseEnv is the environment every subprocess gets: the settings given to
// the bench by flag or .env (the subprocesses run in the temporary
// directory, with no .env), and the run's own endpoints.
func (r *run) baseEnv() map[string]string {
	m := map[string]string{}
	for _, v := range config.Vars() {
		if src, ok := r.o.Config.Sources[v.Env]; ok && src != config.SourceDefault {
			m[v.Env] = r.o.Config.Value(v.Env, false)
		}
	}
	cfg := r.cfg
	for k, v := range map[string]string{
		"KAFKA_BOOTSTRAP_SERVERS": strings.Join(cfg.Kafka.BootstrapServers, ","),
		"NATS_URL":                cfg.NATS.URL,
		"DATABASE_URL":            cfg.DB.DSN(),
		"DATA_DIR":                r.dir,
		"API_RATE_LIMIT":          "0",
		"API_READER_KEYS":         "", // loopback only: anonymous reads
		"API_ADMIN_KEYS":          "",
		"API_USERS":               "",
		"LOG_LEVEL":               "WARN",
		"LOG_FORMAT":              "text",
	} {
		m[k] = v
	}
	return m
}

// startInfra starts the NATS server and the Kafka broker as subprocesses
// on free ports and points the run's configuration at them.
func (r *run) startInfra(ctx context.Context) error {
	natsPort, err := embedded.FreePort()
	if err != nil {
		return err
	}
	kafkaPort, err := embedded.FreePort()
	if err != nil {
		return err
	}
	env := r.baseEnv()
	delete(env, "NATS_URL")
	delete(env, "KAFKA_BOOTSTRAP_SERVERS")
	r.natsProc, err = startRole(r.o.Exe, r.dir, "nats-server", "nats-server", env,
		"--port", strconv.Itoa(natsPort), "--store", filepath.Join(r.dir, "nats"), "--name", "stacklens-bench")
	if err != nil {
		return err
	}
	r.kafkaProc, err = startRole(r.o.Exe, r.dir, "kafka-broker", "kafka-broker", r.baseEnv(),
		"--port", strconv.Itoa(kafkaPort), "--dir", filepath.Join(r.dir, "kafka"))
	if err != nil {
		return err
	}
	for _, p := range r.infra() {
		if err := p.waitReady(ctx, r.hc, 60*time.Second); err != nil {
			return err
		}
	}
	r.cfg.NATS.URL = "nats://127.0.0.1:" + strconv.Itoa(natsPort)
	r.cfg.Kafka.BootstrapServers = []string{"127.0.0.1:" + strconv.Itoa(kafkaPort)}
	// Given, not defaults: devstack then starts only PostgreSQL.
	r.cfg.Sources["NATS_URL"] = config.SourceFlag
	r.cfg.Sources["KAFKA_BOOTSTRAP_SERVERS"] = config.SourceFlag
	r.kc = &kafka.Client{Addr: kafka.TCP(r.cfg.Kafka.BootstrapServers...), Timeout: 10 * time.Second}
	return nil
}

func (r *run) infra() []*roleProc {
	var out []*roleProc
	for _, p := range []*roleProc{r.natsProc, r.kafkaProc} {
		if p != nil {
			out = append(out, p)
		}
	}
	return out
}

// stopInfra stops the broker, then the NATS server (the roles are stopped
// before).
func (r *run) stopInfra() {
	for _, p := range []*roleProc{r.kafkaProc, r.natsProc} {
		if p != nil {
			if err := p.stop(); err != nil {
				r.progress("%v", err)
			}
		}
	}
}

// topicEnd is the number of messages in topic: the sum of its partitions'
// end offsets. It is the harness's count of events produced, whoever
// produced them (the load generator's processes, the probes).
func (r *run) topicEnd(ctx context.Context, topic string) (int64, error) {
	offs := make([]kafka.OffsetRequest, r.cfg.Kafka.Partitions)
	for p := range offs {
		offs[p] = kafka.LastOffsetOf(p)
	}
	resp, err := r.kc.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: offs}})
	if err != nil {
		return 0, fmt.Errorf("list offsets of %s: %w", topic, err)
	}
	parts := resp.Topics[topic]
	if len(parts) != len(offs) {
		return 0, fmt.Errorf("list offsets of %s: %d of %d partitions", topic, len(parts), len(offs))
	}
	var n int64
	for _, p := range parts {
		if p.Error != nil {
			return 0, fmt.Errorf("list offsets of %s[%d]: %w", topic, p.Partition, p.Error)
		}
		n += p.LastOffset
	}
	return n, nil
}

// loadgenResult matches the last line `stacklens loadgen` prints.
var loadgenResult = regexp.MustCompile(`produced (\d+) events in (\S+) \([0-9.]+/s\), (\d+) failed`)

// parseLoadgen reads the generator's figures from its output.
func parseLoadgen(out string) (loadgen.Stats, error) {
	m := loadgenResult.FindAllStringSubmatch(out, -1)
	if len(m) == 0 {
		return loadgen.Stats{}, errors.New("no result line in its output")
	}
	last := m[len(m)-1]
	var st loadgen.Stats
	var err error
	if st.Produced, err = strconv.ParseUint(last[1], 10, 64); err != nil {
		return st, err
	}
	if st.Elapsed, err = time.ParseDuration(last[2]); err != nil {
		return st, err
	}
	st.Failed, err = strconv.ParseUint(last[3], 10, 64)
	return st, err
}

// load runs the open-loop generator at rate for d as a subprocess
// (`stacklens loadgen`) and returns its figures.
func (r *run) load(ctx context.Context, rate float64, d time.Duration, seed uint64) (loadgen.Stats, error) {
	r.lgMu.Lock()
	name := "loadgen-" + strconv.Itoa(len(r.loadgens))
	r.lgMu.Unlock()
	p, err := startRole(r.o.Exe, r.dir, "loadgen", name, r.baseEnv(), "--metrics",
		"--rate", strconv.FormatFloat(rate, 'f', -1, 64), "--duration", d.String(),
		"--services", strconv.Itoa(r.o.Services), "--seed", strconv.FormatUint(seed, 10))
	if err != nil {
		return loadgen.Stats{}, err
	}
	r.lgMu.Lock()
	r.loadgens = append(r.loadgens, p)
	hook := r.onLoadgen
	r.lgMu.Unlock()
	if hook != nil {
		hook(p)
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		_ = p.stop()
	}
	st, perr := parseLoadgen(p.logTail(4096))
	if perr != nil {
		return st, fmt.Errorf("%s: %w:\n%s", name, perr, p.logTail(1500))
	}
	if st.Failed > 0 {
		return st, fmt.Errorf("%s: %d writes failed", name, st.Failed)
	}
	return st, nil
}

// loadgenUsage sums the CPU of every generator process so far (finished
// ones from their rusage) and returns the largest peak RSS.
func (r *run) loadgenUsage() (ProcUsage, int) {
	r.lgMu.Lock()
	ps := append([]*roleProc(nil), r.loadgens...)
	r.lgMu.Unlock()
	var u ProcUsage
	for _, p := range ps {
		pu := p.usage()
		u.CPU += pu.CPU
		u.PeakRSS = max(u.PeakRSS, pu.PeakRSS)
	}
	return u, len(ps)
}

// dirSize is the apparent size of the files under path.
func dirSize(path string) int64 {
	var n int64
	_ = filepath.Walk(path, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}
