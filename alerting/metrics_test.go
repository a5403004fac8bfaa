package alerting

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/telemetry"
)

// TestMetricsExistBeforeFirstEvent: an engine serves its channels'
// delivery series and the alert counters before anything happens (at zero;
// other tests of the package may have counted since: the metrics are
// process-wide), so Prometheus sees the first event of each as an increase.
func TestMetricsExistBeforeFirstEvent(t *testing.T) {
	_, err := New(Config{
		Alerting: config.Alerting{
			EvalInterval: time.Second, DeliveryTimeout: time.Second,
			SlackWebhookURL: "http://127.0.0.1:1/hook", PagerDutyKey: "KEY", PagerDutyURL: "http://127.0.0.1:1/v2/enqueue",
		},
		Kafka:         config.Kafka{BootstrapServers: []string{"127.0.0.1:1"}, OutputTopic: "alerts"},
		SingleReplica: true,
	}, Deps{Log: telemetry.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	metrics.WritePrometheus(&b, false)
	out := b.String()
	for _, want := range []string{
		`stacklens_alerting_deliveries_total{channel="pagerduty",result="failed"}`,
		`stacklens_alerting_deliveries_total{channel="slack",result="error"}`,
		`stacklens_alerting_deliveries_total{channel="kafka",result="ok"}`,
		`stacklens_alerting_delivery_latency_seconds_count{channel="slack"}`,
		`stacklens_alerting_alerts_total{state="firing",severity="critical"}`,
		`stacklens_alerting_alerts_total{state="resolved",severity="info"}`,
	} {
		if !strings.Contains(out, want+" ") {
			t.Errorf("no %s in /metrics", want)
		}
	}
}

// TestProgressFigures: the progress line sums deliveries per result over
// every channel.
func TestProgressFigures(t *testing.T) {
	get := func() map[string]float64 {
		out := map[string]float64{}
		for _, f := range ProgressFigures() {
			out[f.Name] = f.Value
		}
		return out
	}
	before := get()
	deliveriesCounter("kafka", "ok").Inc()
	deliveriesCounter("slack", "ok").Inc()
	deliveriesCounter("email", "failed").Inc()
	deliveriesCounter("pagerduty", "error").Inc()
	after := get()
	for name, want := range map[string]float64{"out": 2, "dead_letters": 1, "delivery_errors": 1} {
		if d := after[name] - before[name]; d != want {
			t.Errorf("%s rose by %v, want %v", name, d, want)
		}
	}
	for _, name := range []string{"evaluations", "leader"} {
		if _, ok := after[name]; !ok {
			t.Errorf("no %s figure", name)
		}
	}
}
