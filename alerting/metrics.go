package alerting

import (
	"sync"

	"github.com/VictoriaMetrics/metrics"

	"github.com/stacklens/stacklens/internal/telemetry"
)

// Prometheus metrics of the alert engine (served by the process's metrics
// server through metrics.WritePrometheus).
var (
	evaluationsTotal = metrics.NewCounter("stacklens_alerting_evaluations_total")
	cyclesTotal      = metrics.NewCounter("stacklens_alerting_cycles_total")
	cycleErrors      = metrics.NewCounter("stacklens_alerting_cycle_errors_total")
	evaluationSecs   = metrics.NewPrometheusHistogramExt("stacklens_alerting_evaluation_seconds",
		[]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10})
	finalToEvalSecs = metrics.NewPrometheusHistogramExt("stacklens_alerting_final_to_evaluation_seconds",
		[]float64{.01, .025, .05, .1, .25, .5, 1, 2, 5, 10, 30, 60})
	silencedTotal     = metrics.NewCounter("stacklens_alerting_silenced_total")
	invalidRulesGauge = metrics.NewGauge("stacklens_alerting_invalid_rules", nil)
	isLeaderGauge     = metrics.NewGauge("stacklens_alerting_is_leader", nil)
	invalidSLOsGauge  = metrics.NewGauge("stacklens_alerting_invalid_slos", nil)
	// sloEvaluationsTotal counts burn-rate policy entries evaluated.
	sloEvaluationsTotal = metrics.NewCounter("stacklens_alerting_slo_evaluations_total")
	leaseChanges        = metrics.NewCounter("stacklens_alerting_lease_acquisitions_total")
	// kafkaFenced counts Kafka transactions refused because a newer
	// dispatcher session took the transactional ID (a zombie stopped).
	kafkaFenced = metrics.NewCounter("stacklens_alerting_kafka_fenced_total")
)

func alertsCounter(state, severity string) *metrics.Counter {
	return metrics.GetOrCreateCounter(`stacklens_alerting_alerts_total{state="` + state + `",severity="` + severity + `"}`)
}

func deliveriesCounter(channel, result string) *metrics.Counter {
	c := metrics.GetOrCreateCounter(`stacklens_alerting_deliveries_total{channel="` + channel + `",result="` + result + `"}`)
	progressMu.Lock()
	deliveries[[2]string{channel, result}] = c
	progressMu.Unlock()
	return c
}

var (
	progressMu sync.Mutex
	deliveries = map[[2]string]*metrics.Counter{} // {channel, result} →
)

// ProgressFigures are the alert engine's figures for the api's
// STATS_INTERVAL_SEC progress line: evaluations, notifications delivered
// (out) and given up (dead_letters), attempts that failed and will be
// retried (delivery_errors), leader (1 on the replica that evaluates).
func ProgressFigures() []telemetry.Figure {
	var ok, failed, errs float64
	progressMu.Lock()
	for k, c := range deliveries {
		switch k[1] {
		case "ok":
			ok += float64(c.Get())
		case "failed":
			failed += float64(c.Get())
		default:
			errs += float64(c.Get())
		}
	}
	progressMu.Unlock()
	return []telemetry.Figure{
		{Name: "evaluations", Value: float64(evaluationsTotal.Get()), Total: true},
		{Name: "out", Value: ok, Total: true},
		{Name: "dead_letters", Value: failed, Total: true},
		{Name: "delivery_errors", Value: errs},
		{Name: "leader", Value: isLeaderGauge.Get()},
	}
}

var latencyBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}

// deliveryLatency: from the outbox write to the successful send.
func deliveryLatency(channel string) *metrics.PrometheusHistogram {
	return metrics.GetOrCreatePrometheusHistogramExt(`stacklens_alerting_delivery_latency_seconds{channel="`+channel+`"}`, latencyBuckets)
}

// sendSeconds: duration of one delivery attempt.
func sendSeconds(channel string) *metrics.PrometheusHistogram {
	return metrics.GetOrCreatePrometheusHistogramExt(`stacklens_alerting_send_seconds{channel="`+channel+`"}`, latencyBuckets)
}

// initMetrics creates the labelled series that can occur — alert state
// changes per severity, deliveries per configured channel and result — at
// zero. Prometheus' rate() and increase() see a series' first event only if
// it was scraped before it, so a series born at 1 hides it: the first
// abandoned notification would not trigger StackLensAlertDeliveryAbandoned
// (compose/prometheus/alerts.yml), nor show on the Alerts dashboard.
func initMetrics(senders map[string]sender) {
	for _, state := range []string{stateFiring, stateResolved} {
		for _, sev := range severities {
			alertsCounter(state, sev)
		}
	}
	for channel := range senders {
		for _, result := range []string{"ok", "error", "failed"} {
			deliveriesCounter(channel, result)
		}
		deliveryLatency(channel)
		sendSeconds(channel)
	}
}
