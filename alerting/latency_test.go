package alerting

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stacklens/stacklens/internal/harness/testenv"
)

// TestAlertLatency measures the time from a window becoming final (its
// final row committed) to the alert message on Kafka (docs/ARCHITECTURE.md §10: ≤ 1 s).
// By default a short run (20 windows, 100 ms interval); the full
// measurement runs with
//
//	STACKLENS_ALERT_LATENCY=200 STACKLENS_ALERT_INTERVAL=1s go test -run TestAlertLatency -v ./alerting/
func TestAlertLatency(t *testing.T) {
	n, interval := 20, 100*time.Millisecond
	if v := os.Getenv("STACKLENS_ALERT_LATENCY"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	if v := os.Getenv("STACKLENS_ALERT_INTERVAL"); v != "" {
		interval, _ = time.ParseDuration(v)
	}
	f := newFixture(t)
	f.rule("Burst", "error_rate", ">", 20, nil, 1, "critical")
	cfg := f.config()
	cfg.Alerting.EvalInterval = interval
	e := f.engine(cfg, Deps{})
	f.start(e)

	var mu sync.Mutex
	recv := map[string]time.Time{}
	// read_committed, as every consumer of the topic must read it.
	r, err := kgo.NewClient(kgo.SeedBrokers(f.kafka.Brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithCancel(f.ctx)
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			fs := r.PollFetches(ctx)
			at := time.Now()
			fs.EachRecord(func(m *kgo.Record) {
				var ev Event
				if json.Unmarshal(m.Value, &ev) == nil {
					mu.Lock()
					recv[ev.Service] = at
					mu.Unlock()
				}
			})
		}
	}()

	// One breaching final window per service, committed every 137 ms (not
	// aligned with the evaluation interval).
	sent := make(map[string]time.Time, n)
	tick := time.NewTicker(137 * time.Millisecond)
	defer tick.Stop()
	start := f.base.Add(5 * time.Minute)
	for i := range n {
		<-tick.C
		svc := fmt.Sprintf("svc-%04d", i)
		sent[svc] = time.Now() // before the insert: conservative
		f.row(svc, start, 50, 1)
	}
	testenv.Eventually(t, 30*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(recv) < n {
			return fmt.Errorf("%d of %d alerts on Kafka", len(recv), n)
		}
		return nil
	})
	var lat []time.Duration
	mu.Lock()
	for svc, at := range sent {
		lat = append(lat, recv[svc].Sub(at))
	}
	mu.Unlock()
	slices.Sort(lat)
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	t.Logf("final → Kafka over %d windows, eval interval %v: p50 %v p90 %v p99 %v max %v",
		n, interval, q(.5).Round(time.Millisecond), q(.9).Round(time.Millisecond),
		q(.99).Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond))
	// The same from the database's clock: metric row written (updated_at)
	// → Kafka acknowledged the message (outbox sent_at).
	rows, err := f.db.Query(f.ctx, `SELECT extract(epoch FROM o.sent_at - m.updated_at)::float8
FROM analytics_alert_outbox o JOIN analytics_alerts a USING (alert_id)
JOIN analytics_metrics_1min m ON m.service = a.service AND m.timestamp = a.window_start
WHERE o.channel = 'kafka' AND o.state = 'sent' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	var db []float64
	for rows.Next() {
		var v float64
		_ = rows.Scan(&v)
		db = append(db, v)
	}
	rows.Close()
	if len(db) == n {
		dq := func(p float64) time.Duration {
			return time.Duration(db[min(len(db)-1, int(p*float64(len(db))))] * float64(time.Second)).Round(time.Millisecond)
		}
		t.Logf("row updated_at → outbox sent_at (DB clock): p50 %v p90 %v p99 %v max %v", dq(.5), dq(.9), dq(.99), dq(1))
	}
	if q(.99) > interval+2*time.Second {
		t.Errorf("p99 %v way above the evaluation interval %v", q(.99), interval)
	}
}
