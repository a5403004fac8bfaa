package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/segmentio/kafka-go"

	"github.com/stacklens/stacklens/bridge"
	"github.com/stacklens/stacklens/internal/embedded"
	"github.com/stacklens/stacklens/internal/harness/devstack"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/telemetry"
	"github.com/stacklens/stacklens/processor"
	"github.com/stacklens/stacklens/projections"
)

func runCLI(t *testing.T, ctx context.Context, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := dispatch(ctx, &cli{args: args, stdout: &out, stderr: &errb, env: func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}})
	return code, out.String(), errb.String()
}

func TestMain(m *testing.M) { testenv.Main(m) }

func TestHelpListsEveryCommand(t *testing.T) {
	code, out, _ := runCLI(t, context.Background(), nil, "--help")
	if code != exitOK {
		t.Fatalf("exit %d", code)
	}
	for _, c := range commands() {
		if !strings.Contains(out, "  "+c.name+" ") || c.summary == "" {
			t.Errorf("help lacks %q with a summary:\n%s", c.name, out)
		}
	}
	for _, want := range []string{"dev", "config", "migrate", "version"} {
		if !strings.Contains(out, "  "+want+" ") {
			t.Errorf("help lacks %s", want)
		}
	}
	if code, _, errs := runCLI(t, context.Background(), nil); code != exitConfig || !strings.Contains(errs, "Usage") {
		t.Errorf("no args: exit %d, %q", code, errs)
	}
	if code, _, errs := runCLI(t, context.Background(), nil, "frobnicate"); code != exitConfig || !strings.Contains(errs, `unknown command "frobnicate"`) {
		t.Errorf("unknown: exit %d, %q", code, errs)
	}
}

func TestVersion(t *testing.T) {
	for _, arg := range []string{"version", "--version"} {
		code, out, _ := runCLI(t, context.Background(), nil, arg)
		if code != exitOK || !strings.HasPrefix(out, "stacklens dev (commit ") {
			t.Errorf("%s: exit %d %q", arg, code, out)
		}
	}
	gitCommit = "abc1234"
	defer func() { gitCommit = "" }()
	if _, out, _ := runCLI(t, context.Background(), nil, "version"); !strings.Contains(out, "commit abc1234") {
		t.Errorf("linker commit not shown: %q", out)
	}
}

func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"ENV_FILE": filepath.Join(dir, "missing-is-error")}
	code, _, errs := runCLI(t, context.Background(), env, "config", "check")
	if code != exitConfig || !strings.Contains(errs, "ENV_FILE") {
		t.Fatalf("exit %d %q", code, errs)
	}
	_ = os.WriteFile(filepath.Join(dir, ".env"), []byte("DB_HOST=pg\n"), 0o600)
	env = map[string]string{"ENV_FILE": filepath.Join(dir, ".env"), "DB_PASSWORD": "hunter2"}
	code, out, errs := runCLI(t, context.Background(), env, "config", "check", "--db-port", "6543")
	if code != exitOK || !strings.Contains(errs, "configuration OK") {
		t.Fatalf("exit %d %q", code, errs)
	}
	for _, want := range []string{"DB_HOST=pg  # env-file", "DB_PORT=6543  # flag", "DB_PASSWORD=****  # env"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "hunter2") {
		t.Error("secret printed")
	}
	// The acceptance check: one line naming DB_PORT, exit 2.
	env["DB_PORT"] = "abc"
	code, out, errs = runCLI(t, context.Background(), env, "config", "check")
	if code != exitConfig || out != "" || strings.Count(errs, "\n") != 1 || !strings.Contains(errs, "DB_PORT") {
		t.Fatalf("bad DB_PORT: exit %d stdout %q stderr %q", code, out, errs)
	}
	// Windows: any whole number of minutes, hours or days shorter than its
	// retention passes; anything else is one line naming AGGREGATION_WINDOWS.
	delete(env, "DB_PORT")
	env["AGGREGATION_WINDOWS"] = "1min,15min,1day"
	if code, out, errs := runCLI(t, context.Background(), env, "config", "check"); code != exitOK || !strings.Contains(out, "AGGREGATION_WINDOWS=1min,15min,1day") {
		t.Fatalf("windows 1min,15min,1day: exit %d %q %q", code, out, errs)
	}
	for _, bad := range []string{"90s", "1.5hour", "15min,900s", "1week", "30day", "15min,1d,24hour"} {
		env["AGGREGATION_WINDOWS"] = bad
		code, out, errs := runCLI(t, context.Background(), env, "config", "check")
		if code != exitConfig || out != "" || strings.Count(errs, "\n") != 1 || !strings.Contains(errs, "AGGREGATION_WINDOWS") {
			t.Errorf("AGGREGATION_WINDOWS=%s: exit %d stdout %q stderr %q", bad, code, out, errs)
		}
	}
	delete(env, "AGGREGATION_WINDOWS")
	if code, _, _ := runCLI(t, context.Background(), env, "config", "check", "-h"); code != exitOK {
		t.Errorf("-h exit %d", code)
	}
	if code, out, _ := runCLI(t, context.Background(), nil, "config", "vars"); code != exitOK || !strings.Contains(out, "`KAFKA_BOOTSTRAP_SERVERS`") {
		t.Errorf("vars: %d %q", code, out)
	}
	for _, args := range [][]string{{"config"}, {"config", "nope"}, {"migrate"}, {"migrate", "sideways"}} {
		if code, _, _ := runCLI(t, context.Background(), nil, args...); code != exitConfig {
			t.Errorf("%v: exit %d, want %d", args, code, exitConfig)
		}
	}
}

// TestDevInfraOnly brings up the embedded stack the way `stacklens dev
// --infra-only` does, checks every server answers with our client
// libraries and the endpoints file is right, then interrupts it and checks
// nothing is left running.
func TestDevInfraOnly(t *testing.T) {
	dataDir, err := os.MkdirTemp("", "stacklens-dev-")
	if err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(dataDir, 0o755)
	t.Cleanup(func() { _ = os.RemoveAll(dataDir) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ep, done := startDevInfra(t, ctx, dataDir)

	nc, err := nats.Connect(ep.NATS)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	if st, err := js.Stream(ctx, "STACKLENS_EVENTS"); err != nil || !st.CachedInfo().Config.AllowAtomicPublish {
		t.Errorf("events stream not provisioned: %v", err)
	}
	nc.Close()

	conn, err := kafka.DialLeader(ctx, "tcp", ep.Kafka, "stacklens-analytics", 11)
	if err != nil {
		t.Fatalf("partition 11 of stacklens-analytics (12 partitions): %v", err)
	}
	_ = conn.Close()

	pg, err := pgx.Connect(ctx, ep.Postgres)
	if err != nil {
		t.Fatal(err)
	}
	var views int
	if err := pg.QueryRow(ctx, "SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'v_%' AND table_schema = 'public'").Scan(&views); err != nil || views != 6 {
		t.Errorf("migrations not applied: %d views, %v", views, err)
	}
	_ = pg.Close(ctx)

	pidBytes, err := os.ReadFile(filepath.Join(dataDir, "postgres", "data", "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pgPid, _ := strconv.Atoi(strings.SplitN(string(pidBytes), "\n", 2)[0])

	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("dev exit %d", code)
		}
	case <-time.After(time.Minute):
		t.Fatal("dev did not stop within a minute")
	}
	if err := syscall.Kill(pgPid, 0); err == nil {
		t.Errorf("postgres (pid %d) still running after dev stopped", pgPid)
	}
	for _, addr := range []string{strings.TrimPrefix(ep.NATS, "nats://"), ep.Kafka} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after dev stopped", addr)
		}
	}
	if _, err := os.Stat(filepath.Join(dataDir, "endpoints.json")); err == nil {
		t.Error("endpoints.json left behind")
	}
}

func TestRoleMetricsServerAndOrderedShutdown(t *testing.T) {
	vars := map[string]string{"ENV_FILE": writeEmpty(t), "METRICS_PORT": "0", "LOG_FORMAT": "json"}
	cfg, code := loadConfig(&cli{args: nil, stderr: &bytes.Buffer{}, env: func(k string) (string, bool) { v, ok := vars[k]; return v, ok }}, "t", "t", nil)
	if cfg == nil {
		t.Fatalf("config: %d", code)
	}
	var logs testenv.SyncBuffer
	e := newEnv(&cli{stderr: &logs}, cfg, "test")
	ctx, cancel := context.WithCancel(context.Background())
	var order []string
	mk := func(name string) component {
		return component{name: name, run: func(ctx context.Context, e *env) error {
			e.health.Set(name, nil)
			<-ctx.Done()
			order = append(order, name)
			return nil
		}}
	}
	done := make(chan int)
	go func() { done <- runComponents(ctx, e, mk("intake"), mk("middle"), mk("last")) }()
	var addr string
	testenv.Eventually(t, 10*time.Second, func() error {
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, "metrics server listening") {
				var m map[string]any
				_ = json.Unmarshal([]byte(line), &m)
				addr, _ = m["addr"].(string)
			}
		}
		if addr == "" {
			return fmt.Errorf("metrics server not announced")
		}
		return nil
	})
	testenv.Eventually(t, 10*time.Second, func() error {
		resp, err := http.Get(addr + "/health")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var h struct {
			Status string         `json:"status"`
			Checks map[string]any `json:"checks"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&h)
		if h.Status != "healthy" || len(h.Checks) != 3 {
			return fmt.Errorf("health %+v", h)
		}
		return nil
	})
	resp, err := http.Get(addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body := new(bytes.Buffer)
	_, _ = body.ReadFrom(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if !strings.Contains(body.String(), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	cancel()
	if code := <-done; code != exitOK {
		t.Fatalf("exit %d", code)
	}
	if got := strings.Join(order, ","); got != "intake,middle,last" {
		t.Errorf("shutdown order %s", got)
	}
}

func writeEmpty(t *testing.T) string {
	f := filepath.Join(t.TempDir(), ".env")
	_ = os.WriteFile(f, nil, 0o600)
	return f
}

// TestBridgeRoleProgressLine: `stacklens bridge` with STATS_INTERVAL_SEC=1
// logs a progress line each second whose figures match what it did: six
// messages in, five events out, one dead letter (the counters are the
// process's, so the test compares with their values before it started).
func TestBridgeRoleProgressLine(t *testing.T) {
	broker := testenv.Kafka(t, 3, "progress-in")
	ns := testenv.NATS(t)
	base := map[string]float64{}
	for _, f := range bridge.ProgressFigures() {
		base[f.Name] = f.Value
	}
	env := map[string]string{
		"ENV_FILE": writeEmpty(t), "METRICS_PORT": "0", "LOG_FORMAT": "json", "STATS_INTERVAL_SEC": "1",
		"KAFKA_BOOTSTRAP_SERVERS": strings.Join(broker.Brokers, ","), "KAFKA_INPUT_TOPIC": "progress-in",
		"KAFKA_GROUP_ID": "progress-" + testenv.Name(t), "NATS_URL": ns.URL,
	}
	var logs testenv.SyncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- dispatch(ctx, &cli{args: []string{"bridge"}, stdout: io.Discard, stderr: &logs, env: func(k string) (string, bool) {
			v, ok := env[k]
			return v, ok
		}})
	}()
	defer func() {
		cancel()
		if code := <-done; code != exitOK {
			t.Errorf("bridge exit %d", code)
		}
	}()
	now := time.Now().UTC().Format(time.RFC3339Nano)
	var msgs []kafka.Message
	for i := range 5 {
		msgs = append(msgs, kafka.Message{Value: []byte(fmt.Sprintf(`{"timestamp":%q,"service":"svc%d","level":"info","latency_ms":1}`, now, i))})
	}
	msgs = append(msgs, kafka.Message{Value: []byte("not json")})
	broker.Produce(t, "progress-in", msgs...)

	want := map[string]float64{"in": 6, "out": 5, "dead_letters": 1}
	var seen map[string]any
	testenv.Eventually(t, 60*time.Second, func() error {
		var last map[string]any
		for _, line := range strings.Split(logs.String(), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "progress" && m["component"] == "bridge" {
				last = m
			}
		}
		if last == nil {
			return fmt.Errorf("no progress line yet")
		}
		for k, v := range want {
			if got, _ := last[k].(float64); got-base[k] != v {
				return fmt.Errorf("%s = %v (base %v), want +%v: %v", k, last[k], base[k], v, last)
			}
		}
		for _, k := range []string{"lag", "in_per_sec", "out_per_sec", "role"} {
			if _, ok := last[k]; !ok {
				return fmt.Errorf("no %s in %v", k, last)
			}
		}
		seen = last
		return nil
	})
	t.Logf("progress line: %v", seen)
}

// TestDevProgressLinesEveryRole: in `stacklens dev` with
// STATS_INTERVAL_SEC=1 every long-running role logs its progress line, and
// one event shows up in each stage's figures (counted from the process's
// counters before the test).
func TestDevProgressLinesEveryRole(t *testing.T) {
	base := map[string]map[string]float64{}
	for name, figs := range map[string][]telemetry.Figure{
		"bridge": bridge.ProgressFigures(), "processor": processor.ProgressFigures(), "projections": projections.ProgressFigures(),
	} {
		base[name] = map[string]float64{}
		for _, f := range figs {
			base[name][f.Name] = f.Value
		}
	}
	dataDir, err := os.MkdirTemp("", "stacklens-progress-")
	if err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(dataDir, 0o755)
	t.Cleanup(func() { _ = os.RemoveAll(dataDir) })
	dbPort, _ := embedded.FreePort()
	apiPort, _ := embedded.FreePort()
	env := map[string]string{
		"DATA_DIR": dataDir, "METRICS_PORT": "0", "API_PORT": strconv.Itoa(apiPort), "DB_PORT": strconv.Itoa(dbPort),
		"ENV_FILE": writeEmpty(t), "LOG_FORMAT": "json", "STATS_INTERVAL_SEC": "1", "FLUSH_INTERVAL": "100ms",
	}
	var logs testenv.SyncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- dispatch(ctx, &cli{args: []string{"dev", "--nats-port", "-1", "--kafka-port", "-1"}, stdout: io.Discard, stderr: &logs,
			env: func(k string) (string, bool) { v, ok := env[k]; return v, ok }})
	}()
	defer func() {
		cancel()
		if code := <-done; code != exitOK {
			t.Errorf("dev exit %d", code)
		}
	}()
	var ep devstack.Endpoints
	testenv.Eventually(t, 2*time.Minute, func() error {
		b, err := os.ReadFile(filepath.Join(dataDir, "endpoints.json"))
		if err != nil {
			return err
		}
		return json.Unmarshal(b, &ep)
	})
	msg := fmt.Sprintf(`{"timestamp":%q,"service":"progress-svc","level":"info","latency_ms":5}`, time.Now().UTC().Format(time.RFC3339Nano))
	w := &kafka.Writer{Addr: kafka.TCP(ep.Kafka), Topic: "stacklens-analytics", RequiredAcks: kafka.RequireAll}
	if err := w.WriteMessages(ctx, kafka.Message{Value: []byte(msg)}); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()

	// The event, once through each stage; the api's line is there with its figures.
	want := map[string]map[string]float64{
		"bridge": {"in": 1, "out": 1, "dead_letters": 0}, "processor": {"in": 1}, "projections": {"in": 1},
	}
	testenv.Eventually(t, time.Minute, func() error {
		last := map[string]map[string]any{}
		for _, line := range strings.Split(logs.String(), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "progress" {
				c, _ := m["component"].(string)
				last[c] = m
			}
		}
		for comp, figs := range want {
			l := last[comp]
			if l == nil {
				return fmt.Errorf("no progress line from %s", comp)
			}
			for k, v := range figs {
				if got, _ := l[k].(float64); got-base[comp][k] != v {
					return fmt.Errorf("%s: %s = %v (base %v), want +%v", comp, k, l[k], base[comp][k], v)
				}
			}
		}
		a := last["api"]
		if a == nil {
			return fmt.Errorf("no progress line from the api")
		}
		for _, k := range []string{"in", "in_per_sec", "evaluations", "out", "dead_letters", "leader"} {
			if _, ok := a[k]; !ok {
				return fmt.Errorf("api line lacks %s: %v", k, a)
			}
		}
		return nil
	})
}

// startDevInfra runs `stacklens dev --infra-only` on dataDir until ctx
// ends; it returns the endpoints once they are written, and the channel the
// command's exit code arrives on.
func startDevInfra(t *testing.T, ctx context.Context, dataDir string) (devstack.Endpoints, <-chan int) {
	t.Helper()
	dbPort, _ := embedded.FreePort()
	env := map[string]string{
		"DATA_DIR": dataDir, "METRICS_PORT": "0", "DB_PORT": strconv.Itoa(dbPort),
		"ENV_FILE": writeEmpty(t), "LOG_LEVEL": "warn",
	}
	done := make(chan int, 1)
	go func() {
		code, _, errs := runCLI(t, ctx, env, "dev", "--infra-only", "--nats-port", "-1", "--kafka-port", "-1")
		if code != exitOK {
			t.Logf("dev stderr:\n%s", errs)
		}
		done <- code
	}()
	var ep devstack.Endpoints
	testenv.Eventually(t, 2*time.Minute, func() error {
		select {
		case code := <-done:
			t.Fatalf("dev exited early with %d", code)
		default:
		}
		b, err := os.ReadFile(filepath.Join(dataDir, "endpoints.json"))
		if err != nil {
			return err
		}
		return json.Unmarshal(b, &ep)
	})
	return ep, done
}
