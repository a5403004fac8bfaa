-- 0005_timescale: TimescaleDB hypertables, retention and compression.
--
-- Everything TimescaleDB-specific is inside stacklens_apply_timescale(),
-- which does nothing unless the timescaledb extension is installed, and is
-- only called when the migrator enabled TimescaleDB for this run
-- (stacklens.timescale = 'on'). The migrator calls stacklens_configure()
-- again after every run, so later changes of RETENTION_* reach the policies.

CREATE FUNCTION stacklens_apply_timescale() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_hot  integer := stacklens_setting_int('retention_hot_days', 1);
    v_warm integer := stacklens_setting_int('retention_warm_days', 7);
    v_cold integer := stacklens_setting_int('retention_cold_days', 30);
    v_ts   text;     -- schema of the timescaledb extension (quoted)
    r      record;
    v_rel  regclass;
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

    -- Policies and hypertables are looked up by schema and table name, never
    -- by casting the names in timescaledb_information to regclass: those
    -- views list every hypertable and job of the database, and a cast fails
    -- for a table in a schema the migration user may not use (and for jobs
    -- without a hypertable).
    FOR r IN
        SELECT t.tbl, t.chunk, t.days, t.compress, n.nspname AS sch, c.relname AS rel
        FROM (VALUES ('analytics_events',        interval '1 hour',  v_hot,  false),
                     ('analytics_metrics_1min',  interval '1 day',   v_warm, false),
                     ('analytics_metrics_5min',  interval '1 day',   v_cold, true),
                     ('analytics_metrics_1hour', interval '7 days',  v_cold, true))
             AS t (tbl, chunk, days, compress)
        JOIN pg_class c ON c.oid = t.tbl::regclass
        JOIN pg_namespace n ON n.oid = c.relnamespace
    LOOP
        v_rel := r.tbl::regclass;
        EXECUTE format('SELECT %s.create_hypertable($1, ''timestamp'', chunk_time_interval => $2,
                                          create_default_indexes => false, if_not_exists => true,
                                          migrate_data => true)', v_ts)
            USING v_rel, r.chunk;

        -- Retention policy: (re)created when missing or when the days changed.
        v_drop := NULL;
        EXECUTE 'SELECT (j.config ->> ''drop_after'')::interval
                   FROM timescaledb_information.jobs j
                  WHERE j.proc_name = ''policy_retention''
                    AND j.hypertable_schema = $1 AND j.hypertable_name = $2'
            INTO v_drop USING r.sch, r.rel;
        IF v_drop IS DISTINCT FROM make_interval(days => r.days) THEN
            EXECUTE format('SELECT %s.remove_retention_policy($1, if_exists => true)', v_ts) USING v_rel;
            EXECUTE format('SELECT %s.add_retention_policy($1, $2, if_not_exists => true)', v_ts)
                USING v_rel, make_interval(days => r.days);
        END IF;

        IF r.compress THEN
            EXECUTE 'SELECT coalesce(bool_or(h.compression_enabled), false)
                       FROM timescaledb_information.hypertables h
                      WHERE h.hypertable_schema = $1 AND h.hypertable_name = $2'
                INTO v_comp USING r.sch, r.rel;
            IF NOT v_comp THEN
                EXECUTE format('ALTER TABLE %s SET (timescaledb.compress, '
                               'timescaledb.compress_segmentby = ''service'', '
                               'timescaledb.compress_orderby = ''"timestamp" DESC'')',
                               v_rel);
            END IF;
            -- Compress once a chunk is older than the warm tier: late
            -- corrections arrive well within it. (Re)created when missing or
            -- when the retention days changed.
            v_after := NULL;
            EXECUTE 'SELECT (j.config ->> ''compress_after'')::interval
                       FROM timescaledb_information.jobs j
                      WHERE j.proc_name = ''policy_compression''
                        AND j.hypertable_schema = $1 AND j.hypertable_name = $2'
                INTO v_after USING r.sch, r.rel;
            IF v_after IS DISTINCT FROM make_interval(days => greatest(v_warm, v_hot + 1)) THEN
                EXECUTE format('SELECT %s.remove_compression_policy($1, if_exists => true)', v_ts) USING v_rel;
                EXECUTE format('SELECT %s.add_compression_policy($1, $2, if_not_exists => true)', v_ts)
                    USING v_rel, make_interval(days => greatest(v_warm, v_hot + 1));
            END IF;
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION stacklens_apply_timescale() IS
    'Internal: when the timescaledb extension is installed, makes analytics_events and the three metric tables hypertables (migrating existing rows), sets retention policies from analytics_settings (hot: events, warm: 1min, cold: 5min/1hour) and compression on the 5min/1hour tables (after max(warm, hot + 1) days); policies are re-created when the days change. Idempotent. No-op without the extension.';

-- Called by the migrator after every run, inside its transaction, with the
-- options as transaction-local settings.
CREATE FUNCTION stacklens_configure() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('stacklens.timescale', true) = 'on' THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
        PERFORM stacklens_apply_timescale();
    END IF;
END
$$;
COMMENT ON FUNCTION stacklens_configure() IS
    'Internal: run by the migrator after every migration run. When stacklens.timescale = ''on'' (transaction-local setting), installs timescaledb if needed and applies stacklens_apply_timescale().';

SELECT stacklens_configure();
