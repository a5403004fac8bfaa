package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"

	"github.com/stacklens/stacklens/internal/harness/testenv"
	"github.com/stacklens/stacklens/internal/window"
)

// TestSLOLatencyGoodEndToEnd: events with known latencies go through
// Kafka → bridge → processor → projections, and latency_good of every
// metrics table is the exact count of events at or below each latency
// threshold the SLOs define (SLO_FILE seeds one, POST /slos adds one).
// A threshold defined after the events were processed is not in their
// windows; `stacklens replay` rebuilds them with the current thresholds,
// so PostgreSQL then holds the exact counts for history too.
func TestSLOLatencyGoodEndToEnd(t *testing.T) {
	const admin = "e2e-admin-key-0123456789abcdef"
	sloFile := filepath.Join(t.TempDir(), "slos.json")
	if err := os.WriteFile(sloFile, []byte(`[{"name":"e2e latency","objective":"latency","latency_threshold_ms":100,"target":99}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	ep := devStack(t, map[string]string{"API_ADMIN_KEYS": admin, "SLO_FILE": sloFile})
	ctx := testenv.Context(t)
	pg, err := pgx.Connect(ctx, ep.Postgres)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close(ctx)
	kw := &kafka.Writer{Addr: kafka.TCP(ep.Kafka), Topic: "stacklens-analytics", RequiredAcks: kafka.RequireAll}
	defer kw.Close()
	// Two hours back: every window is final at once, so nothing but the
	// replay writes these aggregates after their first write.
	at := time.Now().UTC().Add(-2 * time.Hour).Truncate(time.Hour).Add(7 * time.Minute)
	produce := func(service string, latencies ...float64) {
		t.Helper()
		var msgs []kafka.Message
		for i, l := range latencies {
			msgs = append(msgs, kafka.Message{Value: fmt.Appendf(nil, `{"timestamp": %q, "service": %q, "level": "info", "latency_ms": %v}`,
				at.Add(time.Duration(i)*time.Millisecond).Format(time.RFC3339Nano), service, l)})
		}
		if err := kw.WriteMessages(ctx, msgs...); err != nil {
			t.Fatal(err)
		}
	}
	good := func(table, service string) (map[string]int64, bool, error) {
		var b []byte
		var final bool
		err := pg.QueryRow(ctx, `SELECT latency_good, final FROM `+table+` WHERE service = $1`, service).Scan(&b, &final)
		if err != nil {
			return nil, false, err
		}
		m := map[string]int64{}
		return m, final, json.Unmarshal(b, &m)
	}
	// waitCounted produces probes (each a new service, so a new aggregate)
	// until one is stored counting key: the processor knows the threshold.
	probes := 0
	waitCounted := func(key string) {
		t.Helper()
		testenv.Eventually(t, time.Minute, func() error {
			probes++
			svc := fmt.Sprintf("probe-%d", probes)
			produce(svc, 1)
			var m map[string]int64
			testenv.Eventually(t, 30*time.Second, func() error {
				var err error
				m, _, err = good("analytics_metrics_1min", svc)
				return err
			})
			if _, ok := m[key]; !ok {
				return fmt.Errorf("probe %s counts %v, not %s yet", svc, m, key)
			}
			return nil
		})
	}
	waitCounted("100") // seeded from SLO_FILE

	latencies := []float64{5, 50, 100, 100.5, 250, 1000, 99.999}
	produce("slo-e2e", latencies...)
	tables := []string{"analytics_metrics_1min", "analytics_metrics_5min", "analytics_metrics_1hour"}
	expect := func(want map[string]int64) {
		t.Helper()
		for _, table := range tables {
			testenv.Eventually(t, 30*time.Second, func() error {
				m, final, err := good(table, "slo-e2e")
				if err != nil {
					return err
				}
				if !final || len(m) != len(want) {
					return fmt.Errorf("%s: latency_good %v (final %v), want %v", table, m, final, want)
				}
				for k, v := range want {
					if m[k] != v {
						return fmt.Errorf("%s: latency_good %v, want %v", table, m, want)
					}
				}
				return nil
			})
		}
	}
	expect(map[string]int64{"100": 4})

	// A threshold defined now is not counted in windows already open.
	req, _ := http.NewRequestWithContext(ctx, "POST", ep.API+"/slos",
		strings.NewReader(`{"name":"e2e p250","service":"slo-e2e","objective":"latency","latency_threshold_ms":250,"target":95,"period":"7d"}`))
	req.Header.Set("Authorization", "Bearer "+admin)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /slos: %d %s", resp.StatusCode, b)
	}
	waitCounted("250")
	expect(map[string]int64{"100": 4})

	// Replay with the current thresholds: history gets exact counts. The
	// processor is idle on these final windows, so the swap is safe here.
	env := map[string]string{"ENV_FILE": writeEmpty(t), "NATS_URL": ep.NATS, "LOG_LEVEL": "warn", "METRICS_PORT": "0"}
	if code, out, errs := runCLI(t, ctx, env, "replay", "--force", "--no-progress"); code != exitOK {
		t.Fatalf("replay: exit %d\n%s\n%s", code, out, errs)
	}
	expect(map[string]int64{"100": 4, "250": 6})
	for _, w := range []string{"1min", "5min", "1hour"} {
		start := window.MustParse(w).Start(at)
		var n int64
		if err := pg.QueryRow(ctx, `SELECT count FROM analytics_metrics_`+w+` WHERE service = 'slo-e2e' AND timestamp = $1`, start).Scan(&n); err != nil || n != int64(len(latencies)) {
			t.Errorf("%s: count %d (%v), want %d", w, n, err, len(latencies))
		}
	}
}
