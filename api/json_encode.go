package api

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"time"

	"github.com/stacklens/stacklens/internal/jsonenc"
)

// Responses are JSON without HTML escaping ("operator": ">" rather than
// "\u003e"; these are API responses, not HTML). marshalJSON is Fiber's
// encoder. Hot path: /metrics rows are encoded by hand (several times
// faster than encoding/json's reflection) with output byte-identical to
// marshalJSON for finite numbers (TestEncodeMatchesEncodingJSON);
// non-finite numbers, which encoding/json cannot encode, become null.

// marshalJSON is json.Marshal without HTML escaping.
func marshalJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return b[:len(b)-1], nil // Encode adds a newline
}

// appendFloat appends f as encoding/json does; non-finite values as null.
func appendFloat(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, "null"...)
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9
		n := len(b)
		if n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

func appendFloatPtr(b []byte, f *float64) []byte {
	if f == nil {
		return append(b, "null"...)
	}
	return appendFloat(b, *f)
}

func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

func appendMetricRow(b []byte, m *MetricRow) []byte {
	b = append(b, `{"service":`...)
	b = jsonenc.AppendString(b, m.Service)
	b = append(b, `,"window":`...)
	b = jsonenc.AppendString(b, m.Window)
	b = append(b, `,"timestamp":`...)
	b = appendTime(b, m.Timestamp)
	b = append(b, `,"count":`...)
	b = strconv.AppendInt(b, m.Count, 10)
	b = append(b, `,"error_count":`...)
	b = strconv.AppendInt(b, m.ErrorCount, 10)
	b = append(b, `,"warning_count":`...)
	b = strconv.AppendInt(b, m.WarningCount, 10)
	b = append(b, `,"error_rate":`...)
	b = appendFloat(b, m.ErrorRate)
	b = append(b, `,"throughput_per_sec":`...)
	b = appendFloat(b, m.ThroughputPerSec)
	b = append(b, `,"latency_avg_ms":`...)
	b = appendFloat(b, m.LatencyAvgMs)
	b = append(b, `,"latency_min_ms":`...)
	b = appendFloat(b, m.LatencyMinMs)
	b = append(b, `,"latency_max_ms":`...)
	b = appendFloat(b, m.LatencyMaxMs)
	b = append(b, `,"latency_p50_ms":`...)
	b = appendFloat(b, m.LatencyP50Ms)
	b = append(b, `,"latency_p95_ms":`...)
	b = appendFloat(b, m.LatencyP95Ms)
	b = append(b, `,"latency_p99_ms":`...)
	b = appendFloat(b, m.LatencyP99Ms)
	b = append(b, `,"risk_score_avg":`...)
	b = appendFloatPtr(b, m.RiskScoreAvg)
	b = append(b, `,"risk_score_max":`...)
	b = appendFloatPtr(b, m.RiskScoreMax)
	b = append(b, `,"final":`...)
	b = strconv.AppendBool(b, m.Final)
	return append(b, '}')
}

// appendMetricsResponse encodes a MetricsResponse.
func appendMetricsResponse(b []byte, r *MetricsResponse) []byte {
	b = append(b, `{"count":`...)
	b = strconv.AppendInt(b, int64(r.Count), 10)
	b = append(b, `,"window":`...)
	b = jsonenc.AppendString(b, r.Window)
	b = append(b, `,"metrics":[`...)
	for i := range r.Metrics {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendMetricRow(b, &r.Metrics[i])
	}
	return append(b, "]}"...)
}
