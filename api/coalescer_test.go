package api

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestCoalescer(t *testing.T) {
	co := newCoalescer(0, time.Now)
	var calls atomic.Int32
	release := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := co.do("k", "", func() ([]byte, error) {
				calls.Add(1)
				<-release
				return []byte("v"), nil
			})
			if err != nil || string(b) != "v" {
				t.Error(b, err)
			}
		}()
	}
	for calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	close(release)
	wg.Wait()
	if calls.Load() != 1 {
		t.Fatalf("%d executions", calls.Load())
	}
	co.mu.Lock()
	kept := len(co.m)
	co.mu.Unlock()
	if kept != 0 {
		t.Fatal("finished flight kept without TTL")
	}
	boom := errors.New("boom")
	if _, err := co.do("e", "", func() ([]byte, error) { return nil, boom }); err != boom {
		t.Fatal(err)
	}
	now := time.Now()
	ttl := newCoalescer(time.Second, func() time.Time { return now })
	n := 0
	get := func() string {
		b, _ := ttl.do("k", "", func() ([]byte, error) { n++; return []byte{byte('0' + n)}, nil })
		return string(b)
	}
	first, second := get(), get()
	if first != "1" || second != "1" {
		t.Fatal("ttl not reused")
	}
	now = now.Add(2 * time.Second)
	if get() != "2" {
		t.Fatal("ttl not expired")
	}
	for i := 0; i < 1100; i++ {
		_, _ = ttl.do(itoa(int64(i)), "", func() ([]byte, error) { return nil, nil })
	}
	now = now.Add(2 * time.Second)
	_, _ = ttl.do("sweep", "", func() ([]byte, error) { return nil, nil })
	if len(ttl.m) > 2 {
		t.Fatalf("%d entries after sweep", len(ttl.m))
	}
	func() {
		defer func() { _ = recover() }()
		_, _ = ttl.do("panic", "", func() ([]byte, error) { panic("x") })
	}()
	if _, ok := ttl.m["panic"]; ok {
		t.Fatal("panicked flight kept")
	}
}

func benchRows() MetricsResponse {
	rows := make([]MetricRow, 100)
	risk := 0.25
	for i := range rows {
		rows[i] = MetricRow{Service: "svc-" + itoa(int64(i%50)), Window: "1min", Timestamp: time.Unix(1764378000-int64(i/50)*60, 0).UTC(),
			Count: 1234, ErrorCount: 12, WarningCount: 3, ErrorRate: 0.9724473257698542, ThroughputPerSec: 20.566666666666666,
			LatencyAvgMs: 41.2, LatencyMinMs: 1, LatencyMaxMs: 1234.5, LatencyP50Ms: 35.1, LatencyP95Ms: 420.7, LatencyP99Ms: 880.3,
			RiskScoreAvg: &risk, RiskScoreMax: &risk, Final: true}
	}
	return MetricsResponse{Count: 100, Window: "1min", Metrics: rows}
}

// BenchmarkEncodeMetrics: 100 rows by hand vs encoding/json.
func BenchmarkEncodeMetrics(b *testing.B) {
	r := benchRows()
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 64<<10)
		for b.Loop() {
			buf = appendMetricsResponse(buf[:0], &r)
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = marshalJSON(r)
		}
	})
}
