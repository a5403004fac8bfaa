package alerting

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/stacklens/stacklens/internal/faultpoint"
)

// sender delivers events to one channel.
type sender interface {
	// send delivers evs (in order) and returns one error per event (nil:
	// delivered).
	send(ctx context.Context, evs []*Event) []error
	Close() error
}

func newSenders(cfg Config, holder string, log *slog.Logger) (map[string]sender, error) {
	out := map[string]sender{}
	k, err := newKafkaSink(cfg.Kafka, cfg.Alerting.DeliveryTimeout, holder, log)
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
	if k, ok := e.senders[channel].(*kafkaSink); ok {
		// Each leadership term opens a new Kafka session, fencing whoever
		// dispatched in between.
		k.reset()
	}
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

// claimTTL is how long a claim keeps channel's rows from other
// dispatchers: the send of a whole claimed batch plus recording its
// outcome. Kafka sends a batch in one transaction, bounded by
// ALERT_DELIVERY_TIMEOUT; Slack, email and PagerDuty post its events one
// after another, each bounded by it. A claim must outlast the send, or a
// second dispatcher could deliver a later transition of an alert (its
// resolution) before the first one reaches the earlier (its firing). A
// dispatcher that vanishes mid-send holds its rows no longer than this.
func claimTTL(channel string, deliveryTimeout time.Duration) time.Duration {
	if channel == "kafka" {
		return 2 * deliveryTimeout
	}
	return time.Duration(claimLimit(channel)+1) * deliveryTimeout
}

// fpClaimed: rows are claimed but the claim is not committed (tests
// pause here to strand an open transaction, as a vanished host would).
const fpClaimed = "alerting.dispatch.claimed"

// claim takes up to claimLimit due rows of channel for this dispatcher in
// a short transaction of its own: a row is due when pending and its
// next_attempt_at has passed; claiming moves next_attempt_at to the claim's
// expiry and counts the attempt. No lock or transaction outlives the claim,
// so another dispatcher takes the rows over once the claim expires. A row
// waits while an older row of the same alert and channel is pending, so
// firing is never delivered after its resolution.
func (e *Engine) claim(ctx context.Context, channel string) ([]outboxRow, error) {
	tx, err := e.dpool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("dispatch claim: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	rows, err := tx.Query(ctx, `UPDATE analytics_alert_outbox o SET attempts = o.attempts + 1,
	next_attempt_at = now() + make_interval(secs => $3::float8)
FROM (SELECT c.id FROM analytics_alert_outbox c
	WHERE c.state = 'pending' AND c.channel = $1 AND c.next_attempt_at <= now()
		AND NOT EXISTS (SELECT 1 FROM analytics_alert_outbox p
			WHERE p.alert_id = c.alert_id AND p.channel = c.channel AND p.state = 'pending' AND p.id < c.id)
	ORDER BY c.id LIMIT $2 FOR UPDATE SKIP LOCKED) due
WHERE o.id = due.id
RETURNING o.id, o.attempts, o.created_at, o.payload`, channel, claimLimit(channel), claimTTL(channel, e.cfg.Alerting.DeliveryTimeout).Seconds())
	if err != nil {
		return nil, fmt.Errorf("dispatch claim: %w", err)
	}
	claimed, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (outboxRow, error) {
		var o outboxRow
		return o, r.Scan(&o.id, &o.attempts, &o.created, &o.payload)
	})
	if err != nil {
		return nil, fmt.Errorf("dispatch claim: %w", err)
	}
	if len(claimed) == 0 {
		return nil, nil // nothing changed: the deferred rollback ends it
	}
	faultpoint.Hit(fpClaimed)
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("dispatch claim commit: %w", err)
	}
	slices.SortFunc(claimed, func(a, b outboxRow) int { return cmp.Compare(a.id, b.id) })
	return claimed, nil
}

// dispatchOnce claims channel's due rows (claim), sends them with no
// transaction open, then records each outcome. Slack, email and PagerDuty
// are at least once: a crash between send and record sends the rows again
// once their claim expires. Kafka is exactly once (kafkaSink): the rows of
// a committed Kafka transaction are marked sent by the next session even
// when this one could not record them.
func (e *Engine) dispatchOnce(ctx context.Context, channel string) (int, error) {
	s := e.senders[channel]
	k, _ := s.(*kafkaSink)
	claimed, err := e.claim(ctx, channel)
	if err != nil || len(claimed) == 0 {
		return 0, err
	}
	var sessionErr error
	if k != nil && !k.open() {
		if claimed, sessionErr = e.openKafkaSession(ctx, k, claimed); sessionErr == nil && len(claimed) == 0 {
			return 0, nil
		}
	}
	errs := make([]error, len(claimed))
	var evs []*Event
	var ids []int64
	var idx []int
	for i := range claimed {
		ev := &Event{}
		if err := json.Unmarshal(claimed[i].payload, ev); err != nil {
			errs[i] = permanent(fmt.Errorf("bad payload: %w", err))
			continue
		}
		claimed[i].ev = ev
		evs = append(evs, ev)
		ids = append(ids, claimed[i].id)
		idx = append(idx, i)
	}
	switch {
	case sessionErr != nil:
		for _, i := range idx {
			errs[i] = sessionErr
		}
	case s == nil:
		for _, i := range idx {
			errs[i] = permanent(fmt.Errorf("channel %s is not configured", channel))
		}
	case len(evs) == 0:
	case k != nil:
		began := time.Now()
		err := k.deliver(ctx, ids, evs)
		sendSeconds(channel).UpdateDuration(began)
		for _, i := range idx {
			errs[i] = err
		}
	default:
		began := time.Now()
		res := s.send(ctx, evs)
		sendSeconds(channel).UpdateDuration(began)
		for j, i := range idx {
			errs[i] = res[j]
		}
	}
	// The outcome is recorded even when ctx ended mid-send (lost lease,
	// shutdown): what was sent must not be sent again.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.cfg.Alerting.DeliveryTimeout)
	defer cancel()
	if err := e.record(rctx, channel, claimed, errs); err != nil {
		if k != nil {
			k.reset() // the next session marks the committed rows sent
		}
		return 0, err
	}
	return len(claimed), nil
}

// openKafkaSession opens a Kafka session (kafkaSink.ready) for rows
// claimed before it: opening it marks sent the rows the previous session
// delivered but could not record, so the claimed rows are re-read and only
// those still pending are returned.
func (e *Engine) openKafkaSession(ctx context.Context, k *kafkaSink, claimed []outboxRow) ([]outboxRow, error) {
	if err := k.ready(ctx, e.dpool); err != nil {
		return claimed, err
	}
	ids := make([]int64, len(claimed))
	for i, o := range claimed {
		ids[i] = o.id
	}
	rows, err := e.dpool.Query(ctx, `SELECT id FROM analytics_alert_outbox WHERE id = ANY($1) AND state = 'pending'`, ids)
	if err != nil {
		k.reset()
		return claimed, fmt.Errorf("dispatch: re-read claimed rows: %w", err)
	}
	pending, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		k.reset()
		return claimed, fmt.Errorf("dispatch: re-read claimed rows: %w", err)
	}
	return slices.DeleteFunc(claimed, func(o outboxRow) bool { return !slices.Contains(pending, o.id) }), nil
}

// record stores the outcome of a claimed batch in one statement batch
// (no explicit transaction: each row's update stands alone). A retry is
// recorded only while the claim is still this dispatcher's (attempts
// unchanged): a dispatcher that overran its claim leaves the row to the
// one that took it over.
func (e *Engine) record(ctx context.Context, channel string, claimed []outboxRow, errs []error) error {
	b := &pgx.Batch{}
	now := time.Now()
	for i, o := range claimed {
		err := errs[i]
		switch {
		case err == nil:
			b.Queue(`UPDATE analytics_alert_outbox SET state = 'sent', sent_at = now(), last_error = NULL
WHERE id = $1 AND state = 'pending'`, o.id)
			deliveriesCounter(channel, "ok").Inc()
			deliveryLatency(channel).Update(now.Sub(o.created).Seconds())
		case isPermanent(err):
			b.Queue(`UPDATE analytics_alert_outbox SET state = 'failed', last_error = $2
WHERE id = $1 AND state = 'pending' AND attempts = $3`, o.id, truncate(err.Error(), 1000), o.attempts)
			deliveriesCounter(channel, "failed").Inc()
			e.log.Error("alert notification abandoned", "channel", channel, "outbox_id", o.id, "err", err)
		default:
			b.Queue(`UPDATE analytics_alert_outbox SET last_error = $2,
	next_attempt_at = now() + make_interval(secs => $3::float8) WHERE id = $1 AND state = 'pending' AND attempts = $4`,
				o.id, truncate(err.Error(), 1000), e.backoff(o.attempts).Seconds(), o.attempts)
			deliveriesCounter(channel, "error").Inc()
		}
	}
	if err := e.dpool.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("dispatch record: %w", err)
	}
	return nil
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
