package alerting

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// BenchmarkKafkaDelivery measures outbox row committed → message visible
// to a read_committed consumer of analytics-alerts, for bursts of 1 and
// 100 alerts (the dispatcher is woken at once, as after an evaluation).
// It reports the median and p99 per burst and the time per alert.
//
//	go test -run '^$' -bench BenchmarkKafkaDelivery -benchtime 50x ./alerting/
func BenchmarkKafkaDelivery(b *testing.B) {
	for _, burst := range []int{1, 100} {
		b.Run(fmt.Sprintf("burst=%d", burst), func(b *testing.B) {
			f := newFixture(b)
			cfg := f.config()
			cfg.Alerting.SlackWebhookURL, cfg.Alerting.SMTPHost, cfg.Alerting.PagerDutyKey = "", "", ""
			cfg.Alerting.EvalInterval = time.Hour // no polling: woken by kick only
			e := f.engine(cfg, Deps{})
			f.start(e)
			seen := make(chan int, 1024)
			rd, err := kgo.NewClient(kgo.SeedBrokers(f.kafka.Brokers...), kgo.ConsumeTopics(topic),
				kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
				kgo.FetchMaxWait(10*time.Millisecond))
			if err != nil {
				b.Fatal(err)
			}
			defer rd.Close()
			ctx, cancel := context.WithCancel(f.ctx)
			defer cancel()
			go func() {
				for ctx.Err() == nil {
					if n := rd.PollFetches(ctx).NumRecords(); n > 0 {
						seen <- n
					}
				}
			}()
			var lat []time.Duration
			n := 0
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				tx, err := f.db.Begin(f.ctx)
				if err != nil {
					b.Fatal(err)
				}
				now := time.Now().UTC()
				for j := 0; j < burst; j++ {
					n++
					id := fmt.Sprintf("alr_bench%06d", n)
					ev := &Event{AlertID: id, Fingerprint: fmt.Sprintf("fp%06d", n), State: stateFiring, Rule: "bench",
						Service: "svc", Severity: "critical", Metric: "error_rate", Window: "1min", FiredAt: now, EmittedAt: now}
					if _, _, _, err := fire(f.ctx, tx, ev, []string{"kafka"}); err != nil {
						b.Fatal(err)
					}
				}
				if err := tx.Commit(f.ctx); err != nil {
					b.Fatal(err)
				}
				began := time.Now()
				e.kick()
				for got := 0; got < burst; {
					select {
					case k := <-seen:
						got += k
					case <-time.After(30 * time.Second):
						b.Fatalf("%d of %d alerts visible after 30s", got, burst)
					}
				}
				lat = append(lat, time.Since(began))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds())/1000, "p99-ms")
			var sum time.Duration
			for _, d := range lat {
				sum += d
			}
			b.ReportMetric(float64(sum.Microseconds())/1000/float64(len(lat)*burst), "ms/alert")
		})
	}
}
