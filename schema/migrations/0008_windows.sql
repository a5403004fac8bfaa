-- 0008_windows: a metrics table for every configured window.
--
-- 0001 creates the tables of the default windows (1min, 5min, 1hour);
-- AGGREGATION_WINDOWS may name others (15min, 1day, ...). The migrator calls
-- stacklens_ensure_window(name, tier) for every configured window after the
-- migrations, which creates analytics_metrics_<name> like the others and
-- records it in analytics_windows. Retention (analytics_archive_old_data)
-- and the TimescaleDB conversion (stacklens_apply_timescale) now iterate over
-- that registry instead of a fixed list, so a new window's table is a
-- hypertable with a retention policy when TimescaleDB is enabled and is
-- archived like the others on plain PostgreSQL.

CREATE TABLE analytics_windows (
    name          text        PRIMARY KEY CHECK (name ~ '^[1-9][0-9]{0,5}(min|hour|day)$'),
    minutes       integer     NOT NULL CHECK (minutes > 0),
    tier          text        NOT NULL CHECK (tier IN ('warm', 'cold')),
    metrics_table text        GENERATED ALWAYS AS ('analytics_metrics_' || name) STORED,
    created_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE analytics_windows IS
    'Registry of the aggregation windows that have a metrics table (analytics_metrics_<name>): the defaults 1min (warm), 5min and 1hour (cold), and every window of AGGREGATION_WINDOWS the migrator ensured (stacklens_ensure_window). tier selects the retention: warm = retention_warm_days (RETENTION_WARM), cold = retention_cold_days (RETENTION_COLD). Read by analytics_archive_old_data() and the TimescaleDB policies.';

-- Like analytics_settings: written by the migrator only.
REVOKE INSERT, UPDATE, DELETE ON analytics_windows FROM stacklens_writer;

INSERT INTO analytics_windows (name, minutes, tier) VALUES
    ('1min', 1, 'warm'), ('5min', 5, 'cold'), ('1hour', 60, 'cold')
ON CONFLICT (name) DO NOTHING;

-- Creates analytics_metrics_<p_name> when missing, with the columns, primary
-- key, indexes, column comments and grants of the default window tables,
-- and records (or re-tiers) the window in analytics_windows. The name is
-- checked against the canonical window syntax before it reaches any SQL
-- text, and quoted with format(%I) anyway.
CREATE FUNCTION stacklens_ensure_window(p_name text, p_tier text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_m       text[] := regexp_match(p_name, '^([1-9][0-9]{0,5})(min|hour|day)$');
    v_minutes integer;
    v_table   text := 'analytics_metrics_' || p_name;
BEGIN
    IF v_m IS NULL THEN
        RAISE EXCEPTION 'stacklens_ensure_window: invalid window name %', quote_literal(coalesce(p_name, 'NULL'))
            USING ERRCODE = '22023';
    END IF;
    IF p_tier IS NULL OR p_tier NOT IN ('warm', 'cold') THEN
        RAISE EXCEPTION 'stacklens_ensure_window: tier must be warm or cold, got %', quote_literal(coalesce(p_tier, 'NULL'))
            USING ERRCODE = '22023';
    END IF;
    v_minutes := v_m[1]::integer * CASE v_m[2] WHEN 'min' THEN 1 WHEN 'hour' THEN 60 ELSE 1440 END;

    -- Like analytics_settings: written by the migrator only.
REVOKE INSERT, UPDATE, DELETE ON analytics_windows FROM stacklens_writer;

INSERT INTO analytics_windows (name, minutes, tier) VALUES (p_name, v_minutes, p_tier)
    ON CONFLICT (name) DO UPDATE SET tier = EXCLUDED.tier
    WHERE analytics_windows.tier IS DISTINCT FROM EXCLUDED.tier;

    IF to_regclass(format('%I', v_table)) IS NULL THEN
        EXECUTE format('CREATE TABLE %I (LIKE analytics_metrics_1min INCLUDING ALL)', v_table);
        EXECUTE format('COMMENT ON TABLE %I IS %L', v_table,
            format('Per-service %s window aggregates (%s tier, RETENTION_%s days), created for AGGREGATION_WINDOWS by the migrator. Same columns and upsert rule as analytics_metrics_1min.',
                   p_name, p_tier, upper(p_tier)));
        -- Explicit grants: the default privileges of 0006 only cover tables
        -- created by the role that ran it.
        EXECUTE format('GRANT SELECT ON %I TO stacklens_reader', v_table);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO stacklens_writer', v_table);
        EXECUTE format('GRANT ALL ON %I TO stacklens_admin', v_table);
    END IF;
END
$$;
COMMENT ON FUNCTION stacklens_ensure_window(text, text) IS
    'Internal: run by the migrator for every window of AGGREGATION_WINDOWS. Creates analytics_metrics_<name> like analytics_metrics_1min (columns, primary key, indexes, grants to stacklens_reader/writer/admin) when missing and records the window and its retention tier (warm or cold) in analytics_windows. Idempotent. The TimescaleDB conversion follows in stacklens_configure().';
REVOKE EXECUTE ON FUNCTION stacklens_ensure_window(text, text) FROM PUBLIC;

-- As in 0005, over analytics_windows instead of the three default tables.
-- Chunks: 1 day for windows under an hour, 7 days otherwise; the cold tier
-- is compressed.
CREATE OR REPLACE FUNCTION stacklens_apply_timescale() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_hot  integer := stacklens_setting_int('retention_hot_days', 1);
    v_warm integer := stacklens_setting_int('retention_warm_days', 7);
    v_cold integer := stacklens_setting_int('retention_cold_days', 30);
    v_ts   text;     -- schema of the timescaledb extension (quoted)
    r      record;
    v_drop interval;
    v_after interval;
    v_comp boolean;
BEGIN
    SELECT quote_ident(n.nspname) INTO v_ts
    FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname = 'timescaledb';
    IF v_ts IS NULL THEN
        RAISE NOTICE 'stacklens_apply_timescale: timescaledb extension not installed, nothing to do';
        RETURN;
    END IF;

    -- By schema and table name, never by casting the names in
    -- timescaledb_information to regclass (see 0005).
    FOR r IN
        SELECT t.rel, t.chunk, t.days, t.compress, n.nspname AS sch, c.relname AS relname
        FROM (SELECT 'analytics_events'::regclass AS rel, interval '1 hour' AS chunk, v_hot AS days, false AS compress
              UNION ALL
              SELECT to_regclass(format('%I', w.metrics_table)),
                     CASE WHEN w.minutes < 60 THEN interval '1 day' ELSE interval '7 days' END,
                     CASE w.tier WHEN 'warm' THEN v_warm ELSE v_cold END,
                     w.tier = 'cold'
              FROM analytics_windows w) AS t
        JOIN pg_class c ON c.oid = t.rel
        JOIN pg_namespace n ON n.oid = c.relnamespace
    LOOP
        EXECUTE format('SELECT %s.create_hypertable($1, ''timestamp'', chunk_time_interval => $2,
                                          create_default_indexes => false, if_not_exists => true,
                                          migrate_data => true)', v_ts)
            USING r.rel, r.chunk;

        v_drop := NULL;
        EXECUTE 'SELECT (j.config ->> ''drop_after'')::interval
                   FROM timescaledb_information.jobs j
                  WHERE j.proc_name = ''policy_retention''
                    AND j.hypertable_schema = $1 AND j.hypertable_name = $2'
            INTO v_drop USING r.sch, r.relname;
        IF v_drop IS DISTINCT FROM make_interval(days => r.days) THEN
            EXECUTE format('SELECT %s.remove_retention_policy($1, if_exists => true)', v_ts) USING r.rel;
            EXECUTE format('SELECT %s.add_retention_policy($1, $2, if_not_exists => true)', v_ts)
                USING r.rel, make_interval(days => r.days);
        END IF;

        IF r.compress THEN
            EXECUTE 'SELECT coalesce(bool_or(h.compression_enabled), false)
                       FROM timescaledb_information.hypertables h
                      WHERE h.hypertable_schema = $1 AND h.hypertable_name = $2'
                INTO v_comp USING r.sch, r.relname;
            IF NOT v_comp THEN
                EXECUTE format('ALTER TABLE %s SET (timescaledb.compress, '
                               'timescaledb.compress_segmentby = ''service'', '
                               'timescaledb.compress_orderby = ''"timestamp" DESC'')',
                               r.rel);
            END IF;
            v_after := NULL;
            EXECUTE 'SELECT (j.config ->> ''compress_after'')::interval
                       FROM timescaledb_information.jobs j
                      WHERE j.proc_name = ''policy_compression''
                        AND j.hypertable_schema = $1 AND j.hypertable_name = $2'
                INTO v_after USING r.sch, r.relname;
            IF v_after IS DISTINCT FROM make_interval(days => greatest(v_warm, v_hot + 1)) THEN
                EXECUTE format('SELECT %s.remove_compression_policy($1, if_exists => true)', v_ts) USING r.rel;
                EXECUTE format('SELECT %s.add_compression_policy($1, $2, if_not_exists => true)', v_ts)
                    USING r.rel, make_interval(days => greatest(v_warm, v_hot + 1));
            END IF;
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION stacklens_apply_timescale() IS
    'Internal: when the timescaledb extension is installed, makes analytics_events and every metrics table of analytics_windows hypertables (migrating existing rows; chunks of 1 day below 1hour windows, 7 days from 1hour), sets retention policies from analytics_settings (hot: events, warm/cold: per the window''s tier) and compression on the cold tier (after max(warm, hot + 1) days); policies are re-created when the days change. Idempotent. No-op without the extension.';

-- As in 0004, over analytics_windows instead of the three default tables.
CREATE OR REPLACE FUNCTION analytics_archive_old_data()
RETURNS TABLE (table_name text, rows_deleted bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_hot  timestamptz := now() - make_interval(days => stacklens_setting_int('retention_hot_days', 1));
    v_warm timestamptz := now() - make_interval(days => stacklens_setting_int('retention_warm_days', 7));
    v_cold timestamptz := now() - make_interval(days => stacklens_setting_int('retention_cold_days', 30));
    v_n    bigint;
    r      record;
BEGIN
    table_name := 'analytics_events';
    rows_deleted := stacklens_purge_before('analytics_events'::regclass, v_hot);
    RETURN NEXT;
    FOR r IN
        SELECT w.metrics_table AS tbl, w.tier, to_regclass(format('%I', w.metrics_table)) AS rel
        FROM analytics_windows w ORDER BY w.minutes
    LOOP
        CONTINUE WHEN r.rel IS NULL; -- dropped by hand: nothing to keep in bounds
        table_name := r.tbl;
        rows_deleted := stacklens_purge_before(r.rel, CASE r.tier WHEN 'warm' THEN v_warm ELSE v_cold END);
        RETURN NEXT;
    END LOOP;

    -- Outbox rows of expired alerts, and delivered/failed rows older than cold.
    DELETE FROM analytics_alert_outbox o
    WHERE o.alert_id IN (SELECT a.alert_id FROM analytics_alerts a
                         WHERE a.status = 'resolved' AND a.resolved_at < v_cold)
       OR (o.state <> 'pending' AND o.created_at < v_cold);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    table_name := 'analytics_alert_outbox'; rows_deleted := v_n; RETURN NEXT;

    DELETE FROM analytics_alerts a WHERE a.status = 'resolved' AND a.resolved_at < v_cold;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    table_name := 'analytics_alerts'; rows_deleted := v_n; RETURN NEXT;

    DELETE FROM analytics_alert_silences s WHERE s.ends_at < v_cold;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    table_name := 'analytics_alert_silences'; rows_deleted := v_n; RETURN NEXT;

    DELETE FROM analytics_alert_state s WHERE NOT s.firing AND s.updated_at < v_cold;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    table_name := 'analytics_alert_state'; rows_deleted := v_n; RETURN NEXT;
END
$$;
COMMENT ON FUNCTION analytics_archive_old_data() IS
    'Enforces retention from analytics_settings: deletes analytics_events older than retention_hot_days (RETENTION_HOT), the rows of every metrics table in analytics_windows older than its tier''s days (warm: retention_warm_days, RETENTION_WARM, windows under 5min such as 1min; cold: retention_cold_days, RETENTION_COLD, 5min, 1hour and longer), resolved alerts (with their outbox rows), expired silences and idle evaluator state older than retention_cold_days. On TimescaleDB hypertables it drops whole chunks (drop_chunks) and deletes the remainder; the retention policies do the same in the background. Returns (table_name, rows_deleted) per table. Run daily (seed: cron 0 1 * * *).';

-- CREATE OR REPLACE resets these attributes (0006): the archive runs with
-- its owner's rights and a pinned search_path so writers may call it.
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION analytics_archive_old_data() SECURITY DEFINER SET search_path = %I, pg_temp', current_schema());
END
$$;
