package alerting

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
)

// sender delivers events to one channel.
type sender interface {
	// send delivers evs (in order) and returns one error per event (nil:
	// delivered).
	send(ctx context.Context, evs []*Event) []error
	Close() error
}

func newSenders(cfg Config) (map[string]sender, error) {
	out := map[string]sender{}
	k, err := newKafkaSink(cfg.Kafka, cfg.Alerting.DeliveryTimeout)
	if err != nil {
		return nil, err
	}
	out["kafka"] = k
	a := cfg.Alerting
	if a.SlackWebhookURL != "" {
		s, err := newSlack(a.SlackWebhookURL, a.DeliveryTimeout)
		if err != nil {
			return nil, err
		}
		out["slack"] = s
	}
	if a.SMTPHost != "" && len(a.SMTPTo) > 0 {
		m, err := newEmail(a)
		if err != nil {
			return nil, err
		}
		out["email"] = m
	}
	if a.PagerDutyKey != "" {
		p, err := newPagerDuty(a.PagerDutyURL, a.PagerDutyKey, a.DeliveryTimeout)
		if err != nil {
			return nil, err
		}
		out["pagerduty"] = p
	}
	return out, nil
}

// outboxRow is a claimed row of analytics_alert_outbox.
type outboxRow struct {
	id       int64
	attempts int
	created  time.Time
	payload  []byte
	ev       *Event
}

// claim batch sizes per channel.
func claimLimit(channel string) int {
	if channel == "kafka" {
		return 500
	}
	return 20
}

// dispatchLoop delivers channel's due outbox rows until ctx is done: at
// once when kicked after an evaluation enqueued rows, else every poll.
func (e *Engine) dispatchLoop(ctx context.Context, channel string) {
	poll := min(time.Second, e.cfg.Alerting.EvalInterval)
	t := time.NewTimer(0)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-e.kicks[channel]:
		}
		for ctx.Err() == nil {
			n, err := e.dispatchOnce(ctx, channel)
			if err != nil {
				if ctx.Err() == nil && err.Error() != lastErr {
					e.log.Warn("alert dispatch failed; retrying", "channel", channel, "err", err)
				}
				lastErr = err.Error()
				break
			}
			lastErr = ""
			if n < claimLimit(channel) {
				break
			}
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(poll)
	}
}

// backoff is the delay before attempt number attempts+1: exponential from
// retryBase, capped at retryMax, with ±20 % jitter.
func (e *Engine) backoff(attempts int) time.Duration {
	d := e.retryBase
	for i := 1; i < attempts && d < e.retryMax; i++ {
		d *= 2
	}
	d = min(d, e.retryMax)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// dispatchOnce claims the due rows of channel (FOR UPDATE SKIP LOCKED, so
// concurrent dispatchers never share a row), sends them and records the
// outcome in the same transaction. A crash before the commit leaves the
// rows pending: they are sent again (at-least-once).
func (e *Engine) dispatchOnce(ctx context.Context, channel string) (int, error) {
	tx, err := e.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("dispatch: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	// A row waits while an older row of the same alert and channel is
	// pending, so firing is never delivered after its resolution.
	rows, err := tx.Query(ctx, `SELECT o.id, o.attempts, o.created_at, o.payload
FROM analytics_alert_outbox o
WHERE o.state = 'pending' AND o.channel = $1 AND o.next_attempt_at <= now()
	AND NOT EXISTS (SELECT 1 FROM analytics_alert_outbox p
		WHERE p.alert_id = o.alert_id AND p.channel = o.channel AND p.state = 'pending' AND p.id < o.id)
ORDER BY o.id LIMIT $2 FOR UPDATE OF o SKIP LOCKED`, channel, claimLimit(channel))
	if err != nil {
		return 0, fmt.Errorf("dispatch claim: %w", err)
	}
	claimed, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (outboxRow, error) {
		var o outboxRow
		return o, r.Scan(&o.id, &o.attempts, &o.created, &o.payload)
	})
	if err != nil {
		return 0, fmt.Errorf("dispatch claim: %w", err)
	}
	if len(claimed) == 0 {
		return 0, nil
	}
	errs := make([]error, len(claimed))
	var evs []*Event
	var idx []int
	for i := range claimed {
		ev := &Event{}
		if err := json.Unmarshal(claimed[i].payload, ev); err != nil {
			errs[i] = permanent(fmt.Errorf("bad payload: %w", err))
			continue
		}
		claimed[i].ev = ev
		evs = append(evs, ev)
		idx = append(idx, i)
	}
	s := e.senders[channel]
	if s == nil {
		for _, i := range idx {
			errs[i] = permanent(fmt.Errorf("channel %s is not configured", channel))
		}
	} else if len(evs) > 0 {
		began := time.Now()
		res := s.send(ctx, evs)
		sendSeconds(channel).UpdateDuration(began)
		for j, i := range idx {
			errs[i] = res[j]
		}
	}
	if ctx.Err() != nil {
		return 0, ctx.Err() // lost the lease mid-send: leave the rows pending
	}
	b := &pgx.Batch{}
	now := time.Now()
	for i, o := range claimed {
		err := errs[i]
		switch {
		case err == nil:
			b.Queue(`UPDATE analytics_alert_outbox SET state = 'sent', sent_at = now(), attempts = attempts + 1,
	last_error = NULL WHERE id = $1`, o.id)
			deliveriesCounter(channel, "ok").Inc()
			deliveryLatency(channel).Update(now.Sub(o.created).Seconds())
		case isPermanent(err):
			b.Queue(`UPDATE analytics_alert_outbox SET state = 'failed', attempts = attempts + 1, last_error = $2
WHERE id = $1`, o.id, truncate(err.Error(), 1000))
			deliveriesCounter(channel, "failed").Inc()
			e.log.Error("alert notification abandoned", "channel", channel, "outbox_id", o.id, "err", err)
		default:
			b.Queue(`UPDATE analytics_alert_outbox SET attempts = attempts + 1, last_error = $2,
	next_attempt_at = now() + make_interval(secs => $3::float8) WHERE id = $1`, o.id, truncate(err.Error(), 1000),
				e.backoff(o.attempts+1).Seconds())
			deliveriesCounter(channel, "error").Inc()
		}
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return 0, fmt.Errorf("dispatch record: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("dispatch commit: %w", err)
	}
	return len(claimed), nil
}

// permanentError is a delivery failure retrying cannot fix.
type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

func permanent(err error) error { return permanentError{err} }

func isPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
