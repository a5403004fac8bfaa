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
// delivery series and the alert counters at zero before anything happens,
// so Prometheus sees the first event of each as an increase.
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
		`stacklens_alerting_deliveries_total{channel="pagerduty",result="failed"} 0`,
		`stacklens_alerting_deliveries_total{channel="slack",result="error"} 0`,
		`stacklens_alerting_deliveries_total{channel="kafka",result="ok"} 0`,
		`stacklens_alerting_delivery_latency_seconds_count{channel="slack"} 0`,
		`stacklens_alerting_alerts_total{state="firing",severity="critical"} 0`,
		`stacklens_alerting_alerts_total{state="resolved",severity="info"} 0`,
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("no %s in /metrics", want)
		}
	}
	if strings.Contains(out, `channel="email"`) {
		t.Error("series for email, which is not configured")
	}
}
