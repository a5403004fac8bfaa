// Package loadgen produces realistic StackLens traffic: log events of many
// services with per-service latency distributions, error and warning rates,
// and optional error bursts, written to Kafka open-loop at a fixed rate.
// `stacklens loadgen`, `stacklens dev --demo` and the benchmark use it.
package loadgen

import (
	"math"
	"math/rand/v2"
	"strconv"
	"time"
)

// Names of the first services; further ones are svc-NNN.
var serviceNames = []string{
	"checkout", "payments", "search", "auth", "inventory", "shipping",
	"recommendations", "notifications", "gateway", "profile", "cart", "pricing",
}

var endpoints = []string{"/api/v1/items", "/api/v1/orders", "/api/v1/users", "/healthz", "/api/v1/search"}

// Service is one simulated service.
type Service struct {
	Name        string
	MedianMS    float64 // median latency
	Sigma       float64 // lognormal shape
	ErrorRate   float64 // 0–1
	WarningRate float64 // 0–1
}

// Burst makes one service fail: a higher error rate and slower responses
// between Start and Start+Duration (offsets from the generator's start).
type Burst struct {
	Service    string
	Start      time.Duration
	Duration   time.Duration
	ErrorRate  float64 // default 0.35
	LatencyMul float64 // default 8
}

// Generator makes events; it is deterministic for a seed. Not safe for
// concurrent use.
type Generator struct {
	rng      *rand.Rand
	services []Service
	bursts   []Burst
	start    time.Time
	seq      uint64
}

// NewGenerator returns a generator of n services (at least 1).
func NewGenerator(seed uint64, n int, start time.Time, bursts ...Burst) *Generator {
	if n < 1 {
		n = 1
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	svcs := make([]Service, n)
	for i := range svcs {
		name := "svc-" + strconv.Itoa(i)
		if i < len(serviceNames) {
			name = serviceNames[i]
		}
		svcs[i] = Service{
			Name:        name,
			MedianMS:    15 + rng.Float64()*110,
			Sigma:       0.35 + rng.Float64()*0.4,
			ErrorRate:   0.002 + rng.Float64()*0.015,
			WarningRate: 0.01 + rng.Float64()*0.04,
		}
	}
	for i := range bursts {
		if bursts[i].ErrorRate == 0 {
			bursts[i].ErrorRate = 0.35
		}
		if bursts[i].LatencyMul == 0 {
			bursts[i].LatencyMul = 8
		}
	}
	return &Generator{rng: rng, services: svcs, bursts: bursts, start: start}
}

// Services lists the simulated services.
func (g *Generator) Services() []Service { return g.services }

// Event is one generated event's aggregation-relevant fields, for checks.
type Event struct {
	Service   string
	Level     string
	LatencyMS float64
	Risk      float64
	Time      time.Time
}

// Next appends the JSON of one event at time now to dst and returns it
// with the event's fields. Latencies are multiples of 1/4 ms so that sums
// are exact in float64 (the invariant checks compare them exactly).
func (g *Generator) Next(dst []byte, now time.Time) ([]byte, Event) {
	g.seq++
	s := &g.services[g.rng.IntN(len(g.services))]
	errRate, mul := s.ErrorRate, 1.0
	since := now.Sub(g.start)
	for _, b := range g.bursts {
		if b.Service == s.Name && since >= b.Start && since < b.Start+b.Duration {
			errRate, mul = b.ErrorRate, b.LatencyMul
		}
	}
	lat := s.MedianMS * mul * math.Exp(s.Sigma*g.rng.NormFloat64())
	lat = math.Round(math.Min(lat, 60_000)*4) / 4
	level := "info"
	switch r := g.rng.Float64(); {
	case r < errRate:
		level = "error"
		if g.rng.IntN(20) == 0 {
			level = "critical"
		}
	case r < errRate+s.WarningRate:
		level = "warning"
	case r > 0.97:
		level = "debug"
	}
	risk := math.Round(g.rng.Float64()*g.rng.Float64()*1000) / 1000
	if level == "error" || level == "critical" {
		risk = math.Round((0.5+g.rng.Float64()*0.5)*1000) / 1000
	}
	ev := Event{Service: s.Name, Level: level, LatencyMS: lat, Risk: risk, Time: now.UTC()}
	dst = AppendJSON(dst, ev, endpoints[g.seq%uint64(len(endpoints))], g.seq)
	return dst, ev
}

// AppendJSON appends ev as the JSON of an input event with the extra
// fields real producers send (endpoint, host, trace_id, message).
func AppendJSON(dst []byte, ev Event, endpoint string, seq uint64) []byte {
	dst = append(dst, `{"timestamp":"`...)
	dst = ev.Time.AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","service":`...)
	dst = strconv.AppendQuote(dst, ev.Service)
	dst = append(dst, `,"level":"`...)
	dst = append(dst, ev.Level...)
	dst = append(dst, `","latency_ms":`...)
	dst = strconv.AppendFloat(dst, ev.LatencyMS, 'f', -1, 64)
	dst = append(dst, `,"risk_score":`...)
	dst = strconv.AppendFloat(dst, ev.Risk, 'f', -1, 64)
	dst = append(dst, `,"endpoint":"`...)
	dst = append(dst, endpoint...)
	dst = append(dst, `","host":"host-`...)
	dst = strconv.AppendUint(dst, seq%7, 10)
	dst = append(dst, `","trace_id":"`...)
	dst = strconv.AppendUint(dst, seq, 16)
	dst = append(dst, `","message":"request handled"}`...)
	return dst
}
