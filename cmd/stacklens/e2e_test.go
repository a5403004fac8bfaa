package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"

	"github.com/stacklens/stacklens/internal/embedded"
	"github.com/stacklens/stacklens/internal/harness/devstack"
	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/window"
)

// devStack runs `stacklens dev` in-process on free ports with a private
// data dir and returns its endpoints; it is stopped at test end.
func devStack(t *testing.T, extra map[string]string, args ...string) devstack.Endpoints {
	t.Helper()
	dataDir, err := os.MkdirTemp("", "stacklens-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(dataDir, 0o755)
	dbPort, _ := embedded.FreePort()
	apiPort, _ := embedded.FreePort()
	env := map[string]string{
		"DATA_DIR": dataDir, "METRICS_PORT": "0", "API_PORT": strconv.Itoa(apiPort), "DB_PORT": strconv.Itoa(dbPort),
		"ENV_FILE": writeEmpty(t), "LOG_LEVEL": "warn", "ALLOWED_LATENESS": "1s", "FLUSH_INTERVAL": "100ms",
	}
	for k, v := range extra {
		env[k] = v
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		code, _, errs := runCLI(t, ctx, env, append([]string{"dev", "--nats-port", "-1", "--kafka-port", "-1"}, args...)...)
		if code != exitOK {
			fmt.Fprintf(os.Stderr, "dev stderr:\n%s\n", errs)
		}
		done <- code
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != exitOK {
				t.Errorf("dev exit %d", code)
			}
		case <-time.After(time.Minute):
			t.Error("dev did not stop within a minute")
		}
		_ = os.RemoveAll(dataDir)
	})
	var ep devstack.Endpoints
	testenv.Eventually(t, 2*time.Minute, func() error {
		b, err := os.ReadFile(filepath.Join(dataDir, "endpoints.json"))
		if err != nil {
			return err
		}
		return json.Unmarshal(b, &ep)
	})
	testenv.Eventually(t, time.Minute, func() error {
		_, err := getJSON(ep.API + "/health")
		return err
	})
	return ep
}

func getJSON(url string) (map[string]any, error) { return getJSONAs(url, "") }

// getJSONAs is getJSON with a bearer key ("" for none).
func getJSONAs(url, key string) (map[string]any, error) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return nil, err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %d %s", url, resp.StatusCode, b)
	}
	if resp.StatusCode >= 400 {
		return m, fmt.Errorf("%s: %d %s", url, resp.StatusCode, b)
	}
	return m, nil
}

// TestSeedChecklistEndToEnd runs the seed checklist's post-deployment
// validation against the product as `go tool task up` starts it: schema
// validation queries, the API endpoint tests, and the data-flow test (a
// message produced to Kafka shows up in /metrics).
func TestSeedChecklistEndToEnd(t *testing.T) {
	ep := devStack(t, nil)
	ctx := testenv.Context(t)

	// Schema validation.
	pg, err := pgx.Connect(ctx, ep.Postgres)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(ctx)
	var n int
	if err := pg.QueryRow(ctx, `SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'v_%' AND table_schema = 'public'`).Scan(&n); err != nil || n != 6 {
		t.Errorf("views: %d %v", n, err)
	}
	if err := pg.QueryRow(ctx, `SELECT count(*) FROM information_schema.routines WHERE routine_schema = 'public' AND routine_name LIKE 'analytics_%'`).Scan(&n); err != nil || n != 3 {
		t.Errorf("functions: %d %v", n, err)
	}

	// API endpoint tests (jq '.count', '.requests_served', '.status').
	for _, path := range []string{"/metrics?window=1min&limit=1", "/health-status", "/alerts?status=active"} {
		m, err := getJSON(ep.API + path)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := m["count"].(float64); !ok {
			t.Errorf("%s: no numeric .count in %v", path, m)
		}
	}
	if m, err := getJSON(ep.API + "/stats"); err != nil || m["requests_served"] == nil {
		t.Errorf("/stats: %v %v", m, err)
	}

	// Data flow: the seed's message, with Python's isoformat() timestamp.
	msg := fmt.Sprintf(`{"timestamp": "%s", "service": "deployment-test-service", "level": "info", "latency_ms": 50.0, "risk_score": 0.1}`,
		time.Now().UTC().Format("2006-01-02T15:04:05.000000"))
	w := &kafka.Writer{Addr: kafka.TCP(ep.Kafka), Topic: "stacklens-analytics", RequiredAcks: kafka.RequireAll}
	if err := w.WriteMessages(ctx, kafka.Message{Value: []byte(msg)}); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	start := time.Now()
	var row map[string]any
	testenv.Eventually(t, 30*time.Second, func() error {
		m, err := getJSON(ep.API + "/metrics?service=deployment-test-service&limit=1")
		if err != nil {
			return err
		}
		rows, _ := m["metrics"].([]any)
		if len(rows) == 0 {
			return fmt.Errorf("no metrics yet: %v", m)
		}
		row = rows[0].(map[string]any)
		return nil
	})
	t.Logf("produced → visible through the API in %v", time.Since(start).Round(time.Millisecond))
	if row["service"] != "deployment-test-service" || row["count"] != 1.0 || row["latency_p99_ms"].(float64) < 49.5 || row["latency_p99_ms"].(float64) > 50.5 || row["risk_score_avg"] != 0.1 {
		t.Errorf("metrics[0] = %v", row)
	}
	if h, err := getJSON(ep.API + "/health"); err != nil || h["status"] != "healthy" {
		t.Errorf("/health: %v %v", h, err)
	}

	// /health's pipeline object on the running stack: every shard consumed
	// by the processor, the projections' consumers listed, and a message
	// without a service counted as a bridge dead letter within the minute.
	w = &kafka.Writer{Addr: kafka.TCP(ep.Kafka), Topic: "stacklens-analytics", RequiredAcks: kafka.RequireAll}
	if err := w.WriteMessages(ctx, kafka.Message{Value: []byte(`{"timestamp": "` + time.Now().UTC().Format(time.RFC3339) + `", "level": "info", "latency_ms": 1}`)}); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	testenv.Eventually(t, 45*time.Second, func() error {
		h, err := getJSON(ep.API + "/health")
		if err != nil {
			return err
		}
		p, _ := h["pipeline"].(map[string]any)
		pr, _ := p["processor"].(map[string]any)
		dl, _ := p["dead_letters"].(map[string]any)
		if p["status"] != "ok" || pr == nil || dl == nil {
			return fmt.Errorf("pipeline %v", p)
		}
		if pr["shards"] != 16.0 || pr["unconsumed"] != 0.0 {
			return fmt.Errorf("processor %v", pr)
		}
		names := map[string]bool{}
		for _, c := range p["projections"].([]any) {
			names[c.(map[string]any)["consumer"].(string)] = true
		}
		if !names["stacklens_projections_1min"] || !names["stacklens_projections_events"] {
			return fmt.Errorf("projections %v", p["projections"])
		}
		reasons, _ := dl["reasons"].([]any)
		if dl["last_minute"] != 1.0 || len(reasons) != 1 || reasons[0].(map[string]any)["stage"] != "bridge" {
			return fmt.Errorf("dead letters %v", dl)
		}
		return nil
	})
}

// TestSeedEnvProdDataFlow runs the seed's data-flow check against the
// pipeline configured by the seed's own .env.prod (KAFKA_BATCH_TIMEOUT_MS
// =10000): after the services report healthy, one message is produced, the
// test sleeps the seed's fixed 5 s, and queries /metrics once.
func TestSeedEnvProdDataFlow(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0)) // the file sets MAX_THREADS=8
	// The seed checklist's .env.prod (Deployment Steps, Step 1) verbatim;
	// its ${DB_PASSWORD} comes from the environment, as in the seed.
	envFile := "../../internal/config/testdata/seed.env.prod"
	broker := testenv.Kafka(t, 12, "stacklens-analytics", "analytics-alerts")
	metricsPort, _ := embedded.FreePort()
	ep := devStack(t, map[string]string{
		"ENV_FILE": envFile, "DB_PASSWORD": "not-the-generated-secret", "KAFKA_BOOTSTRAP_SERVERS": strings.Join(broker.Brokers, ","),
		"METRICS_PORT": strconv.Itoa(metricsPort), "DB_HOST": "127.0.0.1",
		// devStack's test speed-ups, back to the defaults the seed runs with.
		"ALLOWED_LATENESS": "30s", "FLUSH_INTERVAL": "250ms",
	})
	ctx := testenv.Context(t)
	// Step 5, "Wait for Health": the services answer (here: are ready).
	testenv.Eventually(t, time.Minute, func() error {
		_, err := getJSON("http://127.0.0.1:" + strconv.Itoa(metricsPort) + "/ready")
		return err
	})

	msg := fmt.Sprintf(`{"timestamp": "%s", "service": "deployment-test-service", "level": "info", "latency_ms": 50.0, "risk_score": 0.1}`,
		time.Now().UTC().Format("2006-01-02T15:04:05.000000"))
	w := &kafka.Writer{Addr: kafka.TCP(ep.Kafka), Topic: "stacklens-analytics", RequiredAcks: kafka.RequireAll}
	if err := w.WriteMessages(ctx, kafka.Message{Value: []byte(msg)}); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	time.Sleep(5 * time.Second) // the seed's `sleep 5` is what is under test
	m, err := getJSON(ep.API + "/metrics?service=deployment-test-service&limit=1")
	if err != nil {
		t.Fatal(err)
	}
	rows, _ := m["metrics"].([]any)
	if len(rows) == 0 {
		t.Fatalf("5 s after the message, /metrics has nothing for deployment-test-service: %v", m)
	}
	if row := rows[0].(map[string]any); row["service"] != "deployment-test-service" || row["count"] != 1.0 {
		t.Errorf("metrics[0] = %v", row)
	}
}

// TestCustomWindowsEndToEnd: every window `config check` accepts works end
// to end, not only the three whose tables 0001 creates. With
// AGGREGATION_WINDOWS=1min,15min,1day, `stacklens dev` (which migrates)
// creates analytics_metrics_15min and _1day, events produced to Kafka are
// counted in /metrics?window=15min and ?window=1day, the dashboard offers
// the three windows, and an alert rule on 15min can be created. Before,
// the projections retried forever on the missing tables and /metrics
// answered 400 for 15min.
func TestCustomWindowsEndToEnd(t *testing.T) {
	const admin = "e2e-admin-key-0123456789abcdef"
	ep := devStack(t, map[string]string{"AGGREGATION_WINDOWS": "1min,15min,1day", "API_ADMIN_KEYS": admin})
	ctx := testenv.Context(t)

	pg, err := pgx.Connect(ctx, ep.Postgres)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(ctx)
	var reg string
	if err := pg.QueryRow(ctx, `SELECT string_agg(name || ':' || tier, ',' ORDER BY minutes) FROM analytics_windows
	    WHERE to_regclass(metrics_table) IS NOT NULL`).Scan(&reg); err != nil || reg != "1min:warm,5min:cold,15min:cold,1hour:cold,1day:cold" {
		t.Errorf("analytics_windows with tables: %q %v", reg, err)
	}

	// Events at one instant, so each window has them in one bucket.
	ts := time.Now().UTC()
	const n = 7
	w := &kafka.Writer{Addr: kafka.TCP(ep.Kafka), Topic: "stacklens-analytics", RequiredAcks: kafka.RequireAll}
	var msgs []kafka.Message
	for i := range n {
		level := "info"
		if i < 2 {
			level = "error"
		}
		msgs = append(msgs, kafka.Message{Value: fmt.Appendf(nil, `{"timestamp": %q, "service": "windows-e2e", "level": %q, "latency_ms": %d}`,
			ts.Format(time.RFC3339Nano), level, 10*(i+1))})
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
	for _, win := range []string{"1min", "15min", "1day"} {
		start := window.MustParse(win).Start(ts)
		testenv.Eventually(t, 30*time.Second, func() error {
			m, err := getJSONAs(ep.API+"/metrics?window="+win+"&service=windows-e2e&limit=5", admin)
			if err != nil {
				return err
			}
			rows, _ := m["metrics"].([]any)
			if len(rows) != 1 {
				return fmt.Errorf("%s: %d rows: %v", win, len(rows), m)
			}
			row := rows[0].(map[string]any)
			if row["count"] != float64(n) || row["error_count"] != 2.0 || row["timestamp"] != start.Format(time.RFC3339) {
				return fmt.Errorf("%s: row %v, want count %d, 2 errors, window start %s", win, row, n, start.Format(time.RFC3339))
			}
			return nil
		})
	}

	// The dashboard offers the configured windows.
	resp, err := http.Get(ep.API + "/dashboard/windows.json")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if want := `{"windows":[{"name":"1min","seconds":60},{"name":"15min","seconds":900},{"name":"1day","seconds":86400}]}`; string(b) != want {
		t.Errorf("windows.json = %s, want %s", b, want)
	}

	// An alert rule on 15min (the API checks the window against the
	// configured ones; the engine evaluates analytics_metrics_15min).
	req, _ := http.NewRequestWithContext(ctx, "POST", ep.API+"/alert-rules",
		strings.NewReader(`{"rule_name": "quarter-hour errors", "metric_name": "error_count", "operator": ">", "threshold": 100, "window": "15min"}`))
	req.Header.Set("Authorization", "Bearer "+admin)
	req.Header.Set("Content-Type", "application/json")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	var rule struct {
		ID     int64  `json:"id"`
		Window string `json:"window"`
	}
	if err := json.Unmarshal(b, &rule); resp.StatusCode != http.StatusCreated || err != nil || rule.Window != "15min" || rule.ID == 0 {
		t.Fatalf("POST /alert-rules on 15min: %d %s", resp.StatusCode, b)
	}
	// A window that is not configured is still refused.
	if m, err := getJSONAs(ep.API+"/metrics?window=5min", admin); err == nil || !strings.Contains(err.Error(), ": 400 ") {
		t.Errorf("window=5min (not configured) answered %v", m)
	}
	// The archive covers the new tables.
	var tables string
	if err := pg.QueryRow(ctx, `SELECT string_agg(table_name, ',') FROM analytics_archive_old_data() WHERE table_name LIKE 'analytics_metrics_%'`).Scan(&tables); err != nil ||
		!strings.Contains(tables, "analytics_metrics_15min") || !strings.Contains(tables, "analytics_metrics_1day") {
		t.Errorf("archive covers %q (%v)", tables, err)
	}
}
