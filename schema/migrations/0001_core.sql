-- 0001_core: settings, raw events and the three per-window metric tables.
--
-- Runs unchanged on plain PostgreSQL 15 and on TimescaleDB; the hypertable
-- conversion lives in 0005_timescale.sql and only runs when enabled.
-- The migrator passes its options as transaction-local settings
-- (SELECT set_config('stacklens.<name>', $1, true)); they are read here with
-- current_setting('stacklens.<name>', true), never spliced into SQL text.

-- Trigger function: keep updated_at current on UPDATE.
CREATE FUNCTION stacklens_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION stacklens_touch_updated_at() IS
    'Trigger function: sets updated_at to now() on every UPDATE.';

-- Key/value settings read by the database functions (retention days, ...).
CREATE TABLE analytics_settings (
    key        text PRIMARY KEY,
    value      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT analytics_settings_retention_days_chk
        CHECK (key NOT LIKE 'retention\_%\_days' OR value ~ '^[1-9][0-9]{0,5}$')
);
COMMENT ON TABLE analytics_settings IS
    'Key/value settings of the database side. retention_hot_days / retention_warm_days / retention_cold_days (RETENTION_HOT/WARM/COLD) are read by analytics_archive_old_data() and by the TimescaleDB retention policies. Written by the migrator (stacklens migrate) from its options.';
CREATE TRIGGER analytics_settings_touch BEFORE UPDATE ON analytics_settings
    FOR EACH ROW EXECUTE FUNCTION stacklens_touch_updated_at();

INSERT INTO analytics_settings (key, value) VALUES
    ('retention_hot_days',  coalesce(nullif(current_setting('stacklens.retention_hot_days',  true), ''), '1')),
    ('retention_warm_days', coalesce(nullif(current_setting('stacklens.retention_warm_days', true), ''), '7')),
    ('retention_cold_days', coalesce(nullif(current_setting('stacklens.retention_cold_days', true), ''), '30'))
ON CONFLICT (key) DO NOTHING;

-- Raw events, one row per valid event of the JetStream stream.
-- The primary key starts with the time column because a TimescaleDB
-- hypertable's unique indexes must include it. An event's timestamp is a
-- function of its stream sequence (the stream is immutable), so
--   INSERT ... ON CONFLICT (timestamp, stream_seq) DO NOTHING
-- is an idempotent insert keyed by the stream sequence on both back ends.
CREATE TABLE analytics_events (
    stream_seq      bigint           NOT NULL CHECK (stream_seq > 0),
    timestamp       timestamptz      NOT NULL,
    service         text             NOT NULL CHECK (octet_length(service) BETWEEN 1 AND 128),
    level           text             NOT NULL CHECK (level <> ''),
    latency_ms      double precision NOT NULL CHECK (latency_ms >= 0),
    risk_score      double precision          CHECK (risk_score >= 0 AND risk_score <= 1),
    payload         jsonb            NOT NULL DEFAULT '{}'::jsonb,
    kafka_topic     text,
    kafka_partition integer,
    kafka_offset    bigint,
    ingested_at     timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT analytics_events_pkey PRIMARY KEY (timestamp, stream_seq)
);
CREATE INDEX analytics_events_service_ts_idx ON analytics_events (service, timestamp DESC);
CREATE INDEX analytics_events_stream_seq_idx ON analytics_events (stream_seq);
COMMENT ON TABLE analytics_events IS
    'Raw valid events (hot tier, RETENTION_HOT days). Keyed by (timestamp, stream_seq): insert with ON CONFLICT (timestamp, stream_seq) DO NOTHING for idempotency; stream_seq is the JetStream sequence of the event.';
COMMENT ON COLUMN analytics_events.stream_seq IS 'JetStream sequence of the event in STACKLENS_EVENTS.';
COMMENT ON COLUMN analytics_events.timestamp IS 'Event time (UTC).';
COMMENT ON COLUMN analytics_events.level IS 'Normalised level: debug, info, notice, warning, error, critical, fatal.';
COMMENT ON COLUMN analytics_events.payload IS 'The original event object, including fields ignored by aggregation.';

-- Per-window aggregates. Column set = the API metrics row + raw sums +
-- projection bookkeeping (final, version, last_seq, updated_at).
CREATE TABLE analytics_metrics_1min (
    service            text             NOT NULL,
    timestamp          timestamptz      NOT NULL,
    count              bigint           NOT NULL DEFAULT 0 CHECK (count >= 0),
    error_count        bigint           NOT NULL DEFAULT 0 CHECK (error_count >= 0),
    warning_count      bigint           NOT NULL DEFAULT 0 CHECK (warning_count >= 0),
    error_rate         double precision NOT NULL DEFAULT 0 CHECK (error_rate >= 0 AND error_rate <= 100),
    throughput_per_sec double precision NOT NULL DEFAULT 0,
    latency_avg_ms     double precision NOT NULL DEFAULT 0,
    latency_min_ms     double precision NOT NULL DEFAULT 0,
    latency_max_ms     double precision NOT NULL DEFAULT 0,
    latency_p50_ms     double precision NOT NULL DEFAULT 0,
    latency_p95_ms     double precision NOT NULL DEFAULT 0,
    latency_p99_ms     double precision NOT NULL DEFAULT 0,
    risk_score_avg     double precision,
    risk_score_max     double precision,
    latency_sum        double precision NOT NULL DEFAULT 0,
    latency_sq_sum     double precision NOT NULL DEFAULT 0,
    risk_sum           double precision NOT NULL DEFAULT 0,
    final              boolean          NOT NULL DEFAULT false,
    version            bigint           NOT NULL DEFAULT 0,
    last_seq           bigint           NOT NULL DEFAULT 0,
    updated_at         timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (service, timestamp)
);
-- Newest-first across services. Newest-first per service is served by the
-- primary key index (service, timestamp) scanned backwards.
CREATE INDEX analytics_metrics_1min_ts_idx ON analytics_metrics_1min (timestamp DESC);

-- Column comments are copied to the 5min/1hour tables by LIKE ... INCLUDING ALL.
COMMENT ON COLUMN analytics_metrics_1min.timestamp IS 'Window start (UTC).';
COMMENT ON COLUMN analytics_metrics_1min.error_rate IS 'Errors as a percentage of count (0-100).';
COMMENT ON COLUMN analytics_metrics_1min.final IS 'True once the window is closed (end + ALLOWED_LATENESS passed and the shard caught up); corrections may still raise version.';
COMMENT ON COLUMN analytics_metrics_1min.version IS 'Monotonic aggregate version; projections only overwrite a row with a higher version.';
COMMENT ON COLUMN analytics_metrics_1min.last_seq IS 'Highest stream sequence folded into this aggregate.';

CREATE TABLE analytics_metrics_5min  (LIKE analytics_metrics_1min INCLUDING ALL);
CREATE TABLE analytics_metrics_1hour (LIKE analytics_metrics_1min INCLUDING ALL);

COMMENT ON TABLE analytics_metrics_1min IS
    'Per-service 1-minute window aggregates (warm tier, RETENTION_WARM days). timestamp = window start. Upsert with ON CONFLICT (service, timestamp) DO UPDATE ... WHERE analytics_metrics_1min.version < EXCLUDED.version.';
COMMENT ON TABLE analytics_metrics_5min IS
    'Per-service 5-minute window aggregates (cold tier, RETENTION_COLD days). Same columns and upsert rule as analytics_metrics_1min.';
COMMENT ON TABLE analytics_metrics_1hour IS
    'Per-service 1-hour window aggregates (cold tier, RETENTION_COLD days). Same columns and upsert rule as analytics_metrics_1min.';
