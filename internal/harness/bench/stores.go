package bench

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/segmentio/kafka-go"

	"github.com/stacklens/stacklens/internal/natsutil"
)

// Storage is what the run's events cost in every store, per event of the
// run (every message of the input topic) and against the average
// original message.
type Storage struct {
	Events       int64        `json:"events"`            // messages in the input topic at the end
	MessageBytes float64      `json:"avg_message_bytes"` // average Kafka value, over a sample of the input topic
	Sampled      int          `json:"messages_sampled"`
	Stores       []StoreBytes `json:"stores"`
}

// StoreBytes is one store's size at the end of the run.
type StoreBytes struct {
	Store string `json:"store"`
	// Bytes on disk (files' apparent size; for PostgreSQL the relation
	// sizes, for the WAL the bytes generated since the roles started).
	Bytes    int64   `json:"bytes"`
	PerEvent float64 `json:"bytes_per_event"`
	Ratio    float64 `json:"ratio_to_message"`
	// Logical: the stream's own count (StreamInfo State.Bytes, what
	// EVENTS_MAX_BYTES counts), for JetStream streams only.
	Logical         int64   `json:"logical_bytes,omitempty"`
	LogicalPerEvent float64 `json:"logical_bytes_per_event,omitempty"`
	Note            string  `json:"note,omitempty"`
	Error           string  `json:"error,omitempty"`
}

// walLSN is PostgreSQL's current WAL insert position ("" if unknown).
func walLSN(ctx context.Context, dsn string) string {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(cctx, dsn)
	if err != nil {
		return ""
	}
	defer c.Close(context.Background())
	var lsn string
	if err := c.QueryRow(cctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
		return ""
	}
	return lsn
}

// stores measures the bytes per event of every store once the pipeline
// has caught up (the lag drained, so each store holds what it will).
func (r *run) stores(ctx context.Context, nc *nats.Conn) {
	if ctx.Err() != nil {
		return
	}
	if r.drain(ctx, 30*time.Second) < 0 {
		r.rep.Notes = append(r.rep.Notes, "bytes per event: measured with a backlog left (it did not drain within 30 s)")
	}
	st := &Storage{}
	r.rep.Storage = st
	events, err := r.topicEnd(ctx, r.cfg.Kafka.InputTopic)
	if err != nil || events == 0 {
		r.progress("bytes per event: no event count: %v", err)
		return
	}
	st.Events = events
	st.MessageBytes, st.Sampled = r.sampleMessageBytes(ctx)
	add := func(s StoreBytes) {
		s.PerEvent = float64(s.Bytes) / float64(events)
		s.LogicalPerEvent = float64(s.Logical) / float64(events)
		if st.MessageBytes > 0 {
			s.Ratio = s.PerEvent / st.MessageBytes
		}
		st.Stores = append(st.Stores, s)
	}

	// JetStream: the event stream and the KV buckets (streams KV_<bucket>).
	if js, err := jetstream.New(nc); err != nil {
		add(StoreBytes{Store: "JetStream", Error: err.Error()})
	} else {
		var names []string
		for n := range js.StreamNames(ctx).Name() {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			label := ""
			switch {
			case n == natsutil.StreamEvents:
				label = "JetStream stream " + n
			case strings.HasPrefix(n, "KV_"):
				label = "JetStream KV " + strings.TrimPrefix(n, "KV_")
			default:
				continue
			}
			s := StoreBytes{Store: label}
			if info, err := js.Stream(ctx, n); err != nil {
				s.Error = err.Error()
			} else {
				s.Logical = int64(info.CachedInfo().State.Bytes)
				s.Note = fmt.Sprintf("%d messages", info.CachedInfo().State.Msgs)
			}
			dirs, _ := filepath.Glob(filepath.Join(r.dir, "nats", "jetstream", "*", "streams", n))
			for _, d := range dirs {
				s.Bytes += dirSize(d)
			}
			add(s)
		}
	}

	// PostgreSQL: relation sizes (over the partitions, if any) and WAL.
	for _, s := range pgSizes(ctx, r.cfg.DB.DSN(), r.walStart) {
		add(s)
	}

	// The Kafka broker's log of the input topic.
	dirs, _ := filepath.Glob(filepath.Join(r.dir, "kafka", "partitions", url.PathEscape(r.cfg.Kafka.InputTopic)+"-*"))
	var kb int64
	for _, d := range dirs {
		if _, err := strconv.Atoi(d[strings.LastIndexByte(d, '-')+1:]); err == nil {
			kb += dirSize(d)
		}
	}
	add(StoreBytes{Store: "Kafka broker log of " + r.cfg.Kafka.InputTopic, Bytes: kb,
		Note: "kfake's segment and index files, as written (not compressed)"})
	r.progress("bytes per event over %d events (average message %.0f B): %s", events, st.MessageBytes, storageText(st))
}

// eventRelations is analytics_events and, if it is partitioned, its
// partitions (pg_partition_tree lists nothing for a plain table). A
// TimescaleDB hypertable's chunks are not among them; the bench's private
// cluster has no TimescaleDB.
const eventRelations = `(SELECT 'analytics_events'::regclass AS r
	UNION SELECT relid FROM pg_partition_tree('analytics_events')) t`

// pgSizes measures the raw-event table and its indexes, the metrics
// tables, and the WAL generated since walStart.
func pgSizes(ctx context.Context, dsn, walStart string) []StoreBytes {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(cctx, dsn)
	if err != nil {
		return []StoreBytes{{Store: "PostgreSQL", Error: err.Error()}}
	}
	defer c.Close(context.Background())
	q := func(store, note, sql string, args ...any) StoreBytes {
		s := StoreBytes{Store: store, Note: note}
		var v *int64
		if err := c.QueryRow(cctx, sql, args...).Scan(&v); err != nil {
			s.Error = err.Error()
		} else if v != nil {
			s.Bytes = *v
		}
		return s
	}
	out := []StoreBytes{
		q("PostgreSQL analytics_events table", "heap and TOAST (pg_table_size)",
			"SELECT sum(pg_table_size(r))::bigint FROM "+eventRelations),
		q("PostgreSQL analytics_events indexes", "primary key and the two indexes (pg_indexes_size)",
			"SELECT sum(pg_indexes_size(r))::bigint FROM "+eventRelations),
		q("PostgreSQL metrics tables", "every analytics_metrics_* table with its indexes (pg_total_relation_size)",
			`SELECT sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			 WHERE c.relkind IN ('r', 'p') AND c.relname LIKE 'analytics\_metrics\_%' AND n.nspname = current_schema()`),
	}
	if walStart != "" {
		out = append(out, q("PostgreSQL WAL generated", "pg_current_wal_lsn() now − before the roles started (every write of the run: events, metric rows, alerts, settings)",
			"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint", walStart))
	} else {
		out = append(out, StoreBytes{Store: "PostgreSQL WAL generated", Error: "no WAL position from before the roles started"})
	}
	return out
}

// sampleMessageBytes averages the value size of up to 1 MB of messages
// from the start of every partition of the input topic.
func (r *run) sampleMessageBytes(ctx context.Context) (float64, int) {
	var total, n int
	for p := range r.cfg.Kafka.Partitions {
		conn, err := kafka.DialLeader(ctx, "tcp", r.cfg.Kafka.BootstrapServers[0], r.cfg.Kafka.InputTopic, p)
		if err != nil {
			continue
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Seek(0, kafka.SeekAbsolute); err == nil {
			b := conn.ReadBatch(1, 1<<20)
			for {
				m, err := b.ReadMessage()
				if err != nil {
					break
				}
				total += len(m.Value)
				n++
			}
			_ = b.Close()
		}
		_ = conn.Close()
	}
	if n == 0 {
		return 0, 0
	}
	return float64(total) / float64(n), n
}

func storageText(st *Storage) string {
	var parts []string
	for _, s := range st.Stores {
		if s.Error != "" {
			parts = append(parts, s.Store+": "+s.Error)
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %.1f B (%.2f×)", s.Store, s.PerEvent, s.Ratio))
	}
	return strings.Join(parts, ", ")
}
