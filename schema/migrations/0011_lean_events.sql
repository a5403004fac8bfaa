-- 0011_lean_events: a leaner analytics_events row (docs/SCHEMA.md,
-- docs/PERFORMANCE.md "Raw events in PostgreSQL").
--
-- * payload becomes json (text, checked for syntax; no jsonb conversion on
--   every insert) and, for rows written from now on, holds only the
--   members the columns do not give back (docs/projections.md). The
--   original event is stacklens_event_payload(e), below, for old and new
--   rows alike: old rows keep their full payload, whose own members win.
-- * kafka_topic goes: it is KAFKA_INPUT_TOPIC for every row.
-- * ingested_at goes: no reader; the projections' delay histogram
--   (stacklens_projections_delay_seconds) measures the same lag.
-- * the (stream_seq) index goes: no query looks a row up by stream_seq
--   alone; the idempotent insert uses the primary key (timestamp, stream_seq).
-- * the (service, timestamp DESC) index becomes (service): events arrive
--   in time order per service, so the two-column index split its pages
--   in the middle of each service's range (about 61 B per row at half-full
--   pages), while equal keys of a one-column index are deduplicated into
--   posting lists (about 7 B per row). Time ranges are served by the
--   primary key, which starts with timestamp; a per-service time range
--   combines both (bitmap AND); a rare service's rows come from (service).
--
-- Plain PostgreSQL and TimescaleDB alike: CREATE/DROP INDEX, DROP COLUMN
-- and ALTER COLUMN ... TYPE work on a hypertable (they are applied to
-- every chunk); analytics_events is never compressed (0008), which ALTER ...
-- TYPE would need decompressed. The type change rewrites the table (hot
-- tier only: RETENTION_HOT days of events) under an exclusive lock;
-- the projections retry their inserts meanwhile.

DROP INDEX IF EXISTS analytics_events_stream_seq_idx;
DROP INDEX IF EXISTS analytics_events_service_ts_idx;
CREATE INDEX analytics_events_service_idx ON analytics_events (service);
ALTER TABLE analytics_events DROP COLUMN IF EXISTS kafka_topic;
ALTER TABLE analytics_events DROP COLUMN IF EXISTS ingested_at;
ALTER TABLE analytics_events ALTER COLUMN payload DROP DEFAULT;
ALTER TABLE analytics_events ALTER COLUMN payload TYPE json USING payload::json;
ALTER TABLE analytics_events ALTER COLUMN payload SET DEFAULT '{}'::json;

COMMENT ON TABLE analytics_events IS
    'Raw valid events (hot tier, RETENTION_HOT days). Keyed by (timestamp, stream_seq): insert with ON CONFLICT (timestamp, stream_seq) DO NOTHING for idempotency; stream_seq is the JetStream sequence of the event. The original event is stacklens_event_payload(e).';
COMMENT ON COLUMN analytics_events.payload IS
    'The members of the original event object that the columns do not give back (all of them in rows written before 0011_lean_events). Read the whole event with stacklens_event_payload(e).';

-- The original event of a row: the payload's members, plus each of
-- timestamp, service, level, latency_ms and risk_score that the payload
-- lacks, from its column in the canonical form the projections strip
-- (docs/projections.md): RFC 3339 UTC with trimmed microseconds, the
-- strings as stored, the numbers as the shortest decimals that read back
-- as the float8 values (extra_float_digits >= 1, pinned here). risk_score
-- is added only when its column is not NULL.
CREATE FUNCTION stacklens_event_payload(e analytics_events) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE
SET extra_float_digits = 1
AS $$
    SELECT jsonb_build_object(
               'timestamp',
               to_char(e.timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
                   || rtrim(rtrim(to_char(e.timestamp AT TIME ZONE 'UTC', '.US'), '0'), '.') || 'Z',
               'service', e.service,
               'level', e.level,
               'latency_ms', e.latency_ms)
           || CASE WHEN e.risk_score IS NULL THEN '{}'::jsonb
                   ELSE jsonb_build_object('risk_score', e.risk_score) END
           || e.payload::jsonb
$$;
COMMENT ON FUNCTION stacklens_event_payload(analytics_events) IS
    'The original event object of an analytics_events row, as jsonb (equal to the event as sent, as JSON values): the stored payload plus the members the columns give back. Usage: SELECT stacklens_event_payload(e) FROM analytics_events e WHERE ...';
GRANT EXECUTE ON FUNCTION stacklens_event_payload(analytics_events) TO stacklens_reader, stacklens_writer;
