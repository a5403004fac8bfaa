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
