package chaos

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stacklens/stacklens/internal/kafkautil"
	"github.com/twmb/franz-go/pkg/kgo"
)

// AlertsTopic is the alert engine's Kafka output (KAFKA_OUTPUT_TOPIC).
const AlertsTopic = "analytics-alerts"

// AlertResult compares the alert transitions PostgreSQL committed (the
// Kafka rows of analytics_alert_outbox) with what analytics-alerts holds
// for a read_committed consumer: each must be there exactly once
// (docs/alerting.md, "Outbox and delivery guarantees").
type AlertResult struct {
	Firing, Resolved, Acknowledged int // transitions committed in PostgreSQL
	Pending                        int // outbox rows not delivered yet
	Lost, Dup, Unexpected          int
	Messages                       int // read from Kafka
	Problems                       []string
}

// OK reports whether every committed transition is on Kafka exactly once
// and nothing else is.
func (r *AlertResult) OK() bool { return r.Pending+r.Lost+r.Dup+r.Unexpected == 0 }

func (r *AlertResult) String() string {
	return fmt.Sprintf("transitions firing=%d resolved=%d acknowledged=%d pending=%d | kafka messages=%d lost=%d dup=%d unexpected=%d",
		r.Firing, r.Resolved, r.Acknowledged, r.Pending, r.Messages, r.Lost, r.Dup, r.Unexpected)
}

func (r *AlertResult) problem(format string, args ...any) {
	if len(r.Problems) < 20 {
		r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
	}
}

// AlertChecker reads the outbox and the alert topic.
type AlertChecker struct {
	PGDSN, KafkaAddr string
	Dial             func(ctx context.Context, network, addr string) (net.Conn, error)
}

type transition struct{ alertID, state string }

// Check compares once.
func (c *AlertChecker) Check(ctx context.Context) (*AlertResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second) // see Checker.PassTimeout
	defer cancel()
	r := &AlertResult{}
	cfg, err := pgx.ParseConfig(c.PGDSN)
	if err != nil {
		return nil, err
	}
	if c.Dial != nil {
		cfg.DialFunc = c.Dial
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	db, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, err
	}
	defer db.Close(ctx)
	rows, err := db.Query(cctx, `SELECT alert_id, transition, state FROM analytics_alert_outbox WHERE channel = 'kafka'`)
	if err != nil {
		return nil, err
	}
	committed := map[transition]string{}
	for rows.Next() {
		var t transition
		var state string
		if err := rows.Scan(&t.alertID, &t.state, &state); err != nil {
			rows.Close()
			return nil, err
		}
		committed[t] = state
		switch t.state {
		case "firing":
			r.Firing++
		case "resolved":
			r.Resolved++
		default:
			r.Acknowledged++
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	got, err := c.readTopic(ctx, r)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", AlertsTopic, err)
	}
	for t, state := range committed {
		n := got[t]
		switch {
		case state == "pending" && n == 0:
			r.Pending++
		case n == 0:
			r.Lost++
			r.problem("%s %s: outbox %s, not on Kafka", t.alertID, t.state, state)
		case n > 1:
			r.Dup += n - 1
			r.problem("%s %s: %d times on Kafka", t.alertID, t.state, n)
		}
	}
	for t, n := range got {
		if _, ok := committed[t]; !ok {
			r.Unexpected += n
			r.problem("%s %s: on Kafka (%d), never committed in PostgreSQL", t.alertID, t.state, n)
		}
	}
	return r, nil
}

// readTopic counts every committed message of the alert topic by its
// alert_id and state headers, as a read_committed consumer (records of
// aborted transactions, a fenced dispatcher's, are not counted).
func (c *AlertChecker) readTopic(ctx context.Context, r *AlertResult) (map[transition]int, error) {
	var opts []kgo.Opt
	if c.Dial != nil {
		opts = append(opts, kgo.Dialer(c.Dial))
	}
	recs, err := kafkautil.ReadCommitted(ctx, []string{c.KafkaAddr}, AlertsTopic, opts...)
	if err != nil {
		return nil, err
	}
	out := map[transition]int{}
	for _, m := range recs {
		var t transition
		for _, h := range m.Headers {
			switch h.Key {
			case "alert_id":
				t.alertID = string(h.Value)
			case "state":
				t.state = string(h.Value)
			}
		}
		r.Messages++
		out[t]++
	}
	return out, nil
}

// Wait polls Check until every committed transition is delivered (or d
// passes) and returns the last result.
func (c *AlertChecker) Wait(ctx context.Context, d time.Duration) (*AlertResult, time.Duration, error) {
	start := time.Now()
	for {
		r, err := c.Check(ctx)
		if err == nil && (r.OK() || r.Pending == 0 && r.Lost == 0) {
			return r, time.Since(start), nil
		}
		if time.Since(start) > d || ctx.Err() != nil {
			return r, time.Since(start), err
		}
		time.Sleep(time.Second)
	}
}
