package bench

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/stacklens/stacklens/internal/agg"
	"github.com/stacklens/stacklens/internal/natsutil"
)

// alertProbe measures alert latency after window close: a burst of error
// events of a dedicated service lands in a 1min window chosen to become
// final soon; the time the processor marks that window final in KV (seen
// by a KV watch) is compared with the time the alert arrives on the
// KAFKA_OUTPUT_TOPIC (seen by a consumer).
type alertProbe struct {
	service  string
	deadline time.Time // window end + ALLOWED_LATENESS
	cancel   context.CancelFunc

	mu             sync.Mutex
	tFinal, tAlert time.Time
	errs           []string
}

const alertService = "bench-alert"

func (r *run) startAlertProbe(ctx context.Context, nc *nats.Conn) *alertProbe {
	now := time.Now()
	minute := now.Truncate(time.Minute)
	lateness := r.cfg.Processor.AllowedLateness
	ws := minute
	if now.Sub(minute) < lateness-5*time.Second {
		ws = minute.Add(-time.Minute) // the previous window is still open and closes sooner
	}
	a := &alertProbe{service: alertService, deadline: ws.Add(time.Minute + lateness)}
	actx, cancel := context.WithCancel(ctx)
	a.cancel = cancel
	key := agg.Key{Service: alertService, Start: ws.Unix()}.KVKey()
	go func() { // the window marked final
		js, err := jetstream.New(nc)
		if err != nil {
			a.fail(err)
			return
		}
		var kv jetstream.KeyValue
		for actx.Err() == nil {
			if kv, err = js.KeyValue(actx, natsutil.AggBucket("1min")); err == nil {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if kv == nil {
			return
		}
		w, err := kv.Watch(actx, key)
		if err != nil {
			a.fail(err)
			return
		}
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-actx.Done():
				return
			case e := <-w.Updates():
				if e == nil || e.Operation() != jetstream.KeyValuePut {
					continue
				}
				if ag, err := agg.Decode(e.Value()); err == nil && ag.Final {
					a.mu.Lock()
					a.tFinal = time.Now()
					a.mu.Unlock()
					return
				}
			}
		}
	}()
	go func() { // the alert on Kafka, read_committed as every consumer of the topic must
		rd, err := kgo.NewClient(kgo.SeedBrokers(r.cfg.Kafka.BootstrapServers...), kgo.ConsumeTopics(r.cfg.Kafka.OutputTopic),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
			kgo.FetchMaxWait(50*time.Millisecond))
		if err != nil {
			a.fail(err)
			return
		}
		defer rd.Close()
		for actx.Err() == nil {
			found := false
			rd.PollFetches(actx).EachRecord(func(m *kgo.Record) {
				if !found && bytes.Contains(m.Value, []byte(`"`+alertService+`"`)) {
					found = true
				}
			})
			if found {
				a.mu.Lock()
				a.tAlert = time.Now()
				a.mu.Unlock()
				return
			}
		}
	}()
	if err := r.write(ctx, alertService, "error", 200, ws.Add(time.Second)); err != nil {
		a.fail(err)
	}
	r.progress("alert probe: 200 error events of %s in the 1min window of %s (final from %s)", alertService, ws.Format("15:04"), a.deadline.Format("15:04:05"))
	return a
}

func (a *alertProbe) fail(err error) {
	a.mu.Lock()
	a.errs = append(a.errs, err.Error())
	a.mu.Unlock()
}

func (a *alertProbe) done() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return !a.tFinal.IsZero() && !a.tAlert.IsZero()
}

// wait waits for both observations, at most until the window's deadline
// plus 15 s when that is within maxWait.
func (a *alertProbe) wait(ctx context.Context, r *run, maxWait time.Duration) Alert {
	defer a.cancel()
	until := a.deadline.Add(15 * time.Second)
	if !a.done() && time.Until(until) > 0 {
		if time.Until(until) > maxWait {
			until = time.Now().Add(maxWait)
		}
		r.progress("waiting up to %v for the alert of window-final %s", time.Until(until).Round(time.Second), a.deadline.Format("15:04:05"))
		for !a.done() && time.Now().Before(until) && ctx.Err() == nil {
			time.Sleep(100 * time.Millisecond)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case !a.tFinal.IsZero() && !a.tAlert.IsZero():
		return Alert{Measured: true, LatencyMS: ms(a.tAlert.Sub(a.tFinal)), SinceDeadlineMS: ms(a.tAlert.Sub(a.deadline)),
			Note: "one alert: a burst of 200 error events; final = KV watch saw the 1min aggregate marked final, alert = consumer saw the message on " + r.cfg.Kafka.OutputTopic + " (read_committed consumer, MaxWait 50 ms)"}
	case a.tFinal.IsZero() && time.Now().Before(a.deadline):
		return Alert{Note: "the burst's window did not become final before the run ended"}
	case a.tFinal.IsZero():
		return Alert{Note: fmt.Sprintf("the burst's window was not seen marked final in KV (errors: %v)", a.errs)}
	default:
		return Alert{Note: fmt.Sprintf("the window became final but no alert for %s reached %s within the wait (errors: %v)", alertService, r.cfg.Kafka.OutputTopic, a.errs)}
	}
}
