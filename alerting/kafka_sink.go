package alerting

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/stacklens/stacklens/internal/config"
	"github.com/stacklens/stacklens/internal/faultpoint"
	"github.com/stacklens/stacklens/internal/kafkautil"
)

// Fault points of the Kafka delivery (crash and zombie tests).
const (
	// fpKafkaProduced: the batch and its position record are produced
	// inside the Kafka transaction, which is not committed yet.
	fpKafkaProduced = "alerting.kafka.produced"
	// fpKafkaCommitted: the Kafka transaction committed; the outbox rows
	// are not marked sent yet.
	fpKafkaCommitted = "alerting.kafka.committed"
)

// positionKey is the key of every record on the position topic (one key:
// compaction keeps only the newest).
const positionKey = "position"

// position is the value of a position record: the outbox ids delivered
// by the Kafka transaction that wrote it. Ids are listed, not just the
// highest: outbox ids are assigned at insert but become visible at commit,
// so a lower id can appear after a higher one was delivered.
type position struct {
	IDs    []int64   `json:"ids"`
	MaxID  int64     `json:"max_id"`
	Holder string    `json:"holder"`
	At     time.Time `json:"at"`
}

// kafkaSink delivers alert events to the output topic (analytics-alerts)
// exactly once (docs/alerting.md "Kafka exactly once"): each batch of
// events and a position record naming their outbox ids are ONE Kafka
// transaction under a transactional ID that is stable per deployment, so
// a new session fences every older one (epoch bump) and reads back, with
// read_committed, which rows the last committed transaction delivered.
// Key = fingerprint (one alert's events stay ordered on one partition,
// with kafka-go's former FNV-1a hash so partitions do not move), value =
// the Event JSON.
type kafkaSink struct {
	opts     []kgo.Opt
	topic    string
	posTopic string
	txnID    string
	holder   string
	timeout  time.Duration
	log      *slog.Logger

	cl *kgo.Client // the current session; nil: open one before the next batch
}

// positionTopic is the compacted topic holding the delivery position of
// the output topic.
func positionTopic(output string) string { return output + ".outbox-position" }

// transactionalID is the Kafka transactional ID of a deployment's alert
// dispatchers: derived from the output topic, so every replica writing
// the same topic shares it and the newest session fences the others.
func transactionalID(output string) string { return "stacklens-alerting." + output }

func fnv32a(b []byte) uint32 {
	h := fnv.New32a()
	_, _ = h.Write(b)
	return h.Sum32()
}

// partition places position records on partition 0 and alert events
// by the hash of their key (the fingerprint).
func (s *kafkaSink) partition(topic string) func(*kgo.Record, int) int {
	if topic == s.posTopic {
		return func(*kgo.Record, int) int { return 0 }
	}
	hash := kgo.SaramaCompatHasher(fnv32a)
	return func(r *kgo.Record, n int) int { return hash(r.Key, n) }
}

// kgoOpts are the connection options (brokers, TLS, SASL) of the KAFKA_*
// settings.
func kgoOpts(k config.Kafka, timeout time.Duration) ([]kgo.Opt, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(k.BootstrapServers...),
		kgo.ClientID("stacklens-alerting"),
		kgo.DialTimeout(timeout),
	}
	tc, err := kafkautil.TLSConfig(k)
	if err != nil {
		return nil, err
	}
	if tc != nil {
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	// Validated (and named on error) by kafkautil.Mechanism.
	if _, err := kafkautil.Mechanism(k); err != nil {
		return nil, err
	}
	switch strings.ToUpper(k.SASLMechanism) {
	case "PLAIN":
		opts = append(opts, kgo.SASL(plain.Auth{User: k.SASLUsername, Pass: k.SASLPassword}.AsMechanism()))
	case "SCRAM-SHA-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: k.SASLUsername, Pass: k.SASLPassword}.AsSha256Mechanism()))
	case "SCRAM-SHA-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: k.SASLUsername, Pass: k.SASLPassword}.AsSha512Mechanism()))
	}
	return opts, nil
}

func newKafkaSink(k config.Kafka, timeout time.Duration, holder string, log *slog.Logger) (*kafkaSink, error) {
	opts, err := kgoOpts(k, timeout)
	if err != nil {
		return nil, err
	}
	return &kafkaSink{opts: opts, topic: k.OutputTopic, posTopic: positionTopic(k.OutputTopic),
		txnID: transactionalID(k.OutputTopic), holder: holder, timeout: timeout, log: log}, nil
}

// send only satisfies the sender interface: Kafka needs the outbox ids
// (deliver), so a caller that has none gets a permanent error per event.
func (s *kafkaSink) send(_ context.Context, evs []*Event) []error {
	errs := make([]error, len(evs))
	for i := range errs {
		errs[i] = permanent(errors.New("kafka: events are delivered with their outbox ids (deliver)"))
	}
	return errs
}

// Close ends the session; an open transaction is aborted by the broker.
func (s *kafkaSink) Close() error {
	s.reset()
	return nil
}

// reset drops the session: the next batch opens a new one, which fences
// this one and settles the outcome of its last transaction from the
// position topic.
func (s *kafkaSink) reset() {
	if s.cl != nil {
		s.cl.Close()
		s.cl = nil
	}
}

// open reports whether a session is open.
func (s *kafkaSink) open() bool { return s.cl != nil }

// ready opens a session: a transactional producer that has fenced every
// older producer of the deployment, with the rows of the last committed
// transaction marked sent in the outbox. Every earlier transaction's rows
// were marked before the next one began, so once ready returns, a row
// still pending is not on Kafka.
func (s *kafkaSink) ready(ctx context.Context, db *pgxpool.Pool) error {
	cl, err := s.newClient()
	if err != nil {
		return fmt.Errorf("kafka session: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 3*s.timeout)
	defer cancel()
	if err := s.ensurePositionTopic(ctx, cl); err != nil {
		s.log.Warn("cannot create the position topic; expecting it to exist", "topic", s.posTopic, "err", err)
	}
	if err := s.fence(ctx, cl); err != nil {
		cl.Close()
		return fmt.Errorf("kafka session: fence: %w", err)
	}
	pos, err := s.readPosition(ctx, cl)
	if err != nil {
		cl.Close()
		return fmt.Errorf("kafka session: read position: %w", err)
	}
	if pos != nil && len(pos.IDs) > 0 {
		tag, err := db.Exec(ctx, `UPDATE analytics_alert_outbox SET state = 'sent', sent_at = coalesce(sent_at, now()),
	last_error = NULL WHERE id = ANY($1) AND channel = 'kafka' AND state <> 'sent'`, pos.IDs)
		if err != nil {
			cl.Close()
			return fmt.Errorf("kafka session: mark the last transaction's rows sent: %w", err)
		}
		if n := tag.RowsAffected(); n > 0 {
			deliveriesCounter("kafka", "ok").Add(int(n))
			s.log.Info("rows delivered by an earlier session marked sent", "rows", n, "by", pos.Holder)
		}
	}
	s.cl = cl
	return nil
}

// newClient builds the transactional producer of a session.
func (s *kafkaSink) newClient() (*kgo.Client, error) {
	opts := append(s.opts[:len(s.opts):len(s.opts)],
		kgo.TransactionalID(s.txnID),
		// A transaction open longer than this is aborted by the broker
		// (a paused or partitioned session); the rows' claims last as long.
		kgo.TransactionTimeout(claimTTL("kafka", s.timeout)),
		kgo.RecordDeliveryTimeout(s.timeout),
		kgo.ProducerLinger(0), // a batch is produced at once and committed right after
		kgo.RecordPartitioner(kgo.BasicConsistentPartitioner(s.partition)),
		kgo.AllowAutoTopicCreation(),
	)
	return kgo.NewClient(opts...)
}

// ensurePositionTopic creates the compacted, single-partition position
// topic when it does not exist.
func (s *kafkaSink) ensurePositionTopic(ctx context.Context, cl *kgo.Client) error {
	req := kmsg.NewPtrCreateTopicsRequest()
	req.TimeoutMillis = int32(s.timeout / time.Millisecond)
	t := kmsg.NewCreateTopicsRequestTopic()
	t.Topic, t.NumPartitions, t.ReplicationFactor = s.posTopic, 1, -1
	for k, v := range map[string]string{"cleanup.policy": "compact", "segment.ms": "3600000"} {
		c := kmsg.NewCreateTopicsRequestTopicConfig()
		c.Name, c.Value = k, kmsg.StringPtr(v)
		t.Configs = append(t.Configs, c)
	}
	req.Topics = append(req.Topics, t)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return err
	}
	for _, rt := range resp.Topics {
		if err := kerr.ErrorForCode(rt.ErrorCode); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return err
		}
	}
	return nil
}

// fence makes this client the deployment's producer: its first
// transactional produce initialises the producer id, which bumps the
// epoch of the transactional ID — aborting a transaction a zombie left
// open and failing its later commits — and waits for a transaction that
// was being committed to complete. The probe record is aborted.
func (s *kafkaSink) fence(ctx context.Context, cl *kgo.Client) error {
	if err := cl.BeginTransaction(); err != nil {
		return err
	}
	probe := &kgo.Record{Topic: s.posTopic, Partition: 0, Key: []byte("fence"), Value: []byte(`{"fence":true}`)}
	perr := produceSync(ctx, cl, s.timeout, probe)
	if err := cl.EndTransaction(ctx, kgo.TryAbort); err != nil {
		return err
	}
	return perr
}

// produceSync produces recs and waits for their acknowledgement, at most
// timeout (and not past ctx). kgo keeps retrying a record that may have
// reached the broker, regardless of its context, so the wait is given up
// on here; the caller then closes the client, which fails the records.
func produceSync(ctx context.Context, cl *kgo.Client, timeout time.Duration, recs ...*kgo.Record) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- cl.ProduceSync(ctx, recs...).FirstErr() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("kafka produce: no acknowledgement: %w", ctx.Err())
	}
}

// readPosition returns the newest committed position record (nil: none
// yet). It reads backwards from the last stable offset in growing steps;
// control records are kept so that reaching the end is visible.
func (s *kafkaSink) readPosition(ctx context.Context, cl *kgo.Client) (*position, error) {
	lso, start, err := s.stableOffsets(ctx, cl)
	if err != nil {
		return nil, err
	}
	for back := int64(64); ; back *= 8 {
		from := max(start, lso-back)
		if from >= lso {
			return nil, nil
		}
		pos, err := s.readRange(ctx, from, lso)
		if err != nil || pos != nil || from == start {
			return pos, err
		}
	}
}

// stableOffsets returns the last stable offset and the log start offset
// of the position partition.
func (s *kafkaSink) stableOffsets(ctx context.Context, cl *kgo.Client) (lso, start int64, err error) {
	get := func(ts int64, level int8) (int64, error) {
		req := kmsg.NewPtrListOffsetsRequest()
		req.IsolationLevel = level
		t := kmsg.NewListOffsetsRequestTopic()
		t.Topic = s.posTopic
		p := kmsg.NewListOffsetsRequestTopicPartition()
		p.Partition, p.Timestamp = 0, ts
		t.Partitions = append(t.Partitions, p)
		req.Topics = append(req.Topics, t)
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			return 0, err
		}
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
			return 0, errors.New("list offsets: unexpected response")
		}
		rp := resp.Topics[0].Partitions[0]
		if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
			return 0, err
		}
		return rp.Offset, nil
	}
	if lso, err = get(-1, 1); err != nil {
		return 0, 0, err
	}
	start, err = get(-2, 0)
	return lso, start, err
}

// readRange returns the last committed position record in [from, lso).
func (s *kafkaSink) readRange(ctx context.Context, from, lso int64) (*position, error) {
	opts := append(s.opts[:len(s.opts):len(s.opts)],
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{s.posTopic: {0: kgo.NewOffset().At(from)}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
	)
	rd, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	var last *kgo.Record
	for {
		fs := rd.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := fs.Err0(); err != nil {
			return nil, err
		}
		done := false
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset >= lso {
				done = true
				return
			}
			if !r.Attrs.IsControl() && string(r.Key) == positionKey {
				last = r
			}
			if r.Offset >= lso-1 {
				done = true
			}
		})
		if done {
			break
		}
	}
	if last == nil {
		return nil, nil
	}
	var p position
	if err := json.Unmarshal(last.Value, &p); err != nil {
		return nil, fmt.Errorf("position record at offset %d: %w", last.Offset, err)
	}
	return &p, nil
}

// deliver writes evs (the events of the outbox rows ids) and a position
// record naming ids in one Kafka transaction. On any error the session is
// dropped: whether the transaction committed is settled by the next
// session (ready), before any row is claimed again.
func (s *kafkaSink) deliver(ctx context.Context, ids []int64, evs []*Event) (err error) {
	if s.cl == nil {
		return errors.New("kafka: no session")
	}
	defer func() {
		if err != nil {
			s.reset()
		}
	}()
	pctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := s.cl.BeginTransaction(); err != nil {
		return fmt.Errorf("kafka begin: %w", err)
	}
	recs := make([]*kgo.Record, 0, len(evs)+1)
	for _, ev := range evs {
		v, _ := json.Marshal(ev)
		recs = append(recs, &kgo.Record{Topic: s.topic, Key: []byte(ev.Fingerprint), Value: v, Headers: []kgo.RecordHeader{
			{Key: "alert_id", Value: []byte(ev.AlertID)}, {Key: "state", Value: []byte(ev.State)},
		}})
	}
	pv, _ := json.Marshal(position{IDs: ids, MaxID: ids[len(ids)-1], Holder: s.holder, At: time.Now().UTC()})
	recs = append(recs, &kgo.Record{Topic: s.posTopic, Partition: 0, Key: []byte(positionKey), Value: pv})
	if err := produceSync(pctx, s.cl, s.timeout, recs...); err != nil {
		return fmt.Errorf("kafka produce: %w", err)
	}
	faultpoint.Hit(fpKafkaProduced)
	// The commit has a timeout of its own: a dispatcher that stalled
	// after producing still asks, and the broker refuses a fenced one.
	cctx, ccancel := context.WithTimeout(ctx, s.timeout)
	defer ccancel()
	if err := s.cl.EndTransaction(cctx, kgo.TryCommit); err != nil {
		if errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch) {
			kafkaFenced.Inc()
			return fmt.Errorf("kafka commit: fenced by a newer dispatcher session: %w", err)
		}
		return fmt.Errorf("kafka commit: %w", err)
	}
	faultpoint.Hit(fpKafkaCommitted)
	return nil
}
