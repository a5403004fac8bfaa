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
    r      record;
    v_drop interval;
    v_comp boolean;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RAISE NOTICE 'stacklens_apply_timescale: timescaledb extension not installed, nothing to do';
        RETURN;
    END IF;

    FOR r IN
        SELECT t.tbl, t.chunk, t.days, t.compress
        FROM (VALUES ('analytics_events',        interval '1 hour',  v_hot,  false),
                     ('analytics_metrics_1min',  interval '1 day',   v_warm, false),
                     ('analytics_metrics_5min',  interval '1 day',   v_cold, true),
                     ('analytics_metrics_1hour', interval '7 days',  v_cold, true))
             AS t (tbl, chunk, days, compress)
    LOOP
        EXECUTE 'SELECT create_hypertable($1::regclass, ''timestamp'', chunk_time_interval => $2,
                                          create_default_indexes => false, if_not_exists => true,
                                          migrate_data => true)'
            USING r.tbl, r.chunk;

        -- Retention policy: (re)created when missing or when the days changed.
        EXECUTE 'SELECT (j.config ->> ''drop_after'')::interval
                   FROM timescaledb_information.jobs j
                  WHERE j.proc_name = ''policy_retention''
                    AND format(''%I.%I'', j.hypertable_schema, j.hypertable_name)::regclass = $1::regclass'
            INTO v_drop USING r.tbl;
        IF v_drop IS DISTINCT FROM make_interval(days => r.days) THEN
            EXECUTE 'SELECT remove_retention_policy($1::regclass, if_exists => true)' USING r.tbl;
            EXECUTE 'SELECT add_retention_policy($1::regclass, $2, if_not_exists => true)'
                USING r.tbl, make_interval(days => r.days);
        END IF;

        IF r.compress THEN
            EXECUTE 'SELECT coalesce(bool_or(h.compression_enabled), false)
                       FROM timescaledb_information.hypertables h
                      WHERE format(''%I.%I'', h.hypertable_schema, h.hypertable_name)::regclass = $1::regclass'
                INTO v_comp USING r.tbl;
            IF NOT v_comp THEN
                EXECUTE format('ALTER TABLE %s SET (timescaledb.compress, '
                               'timescaledb.compress_segmentby = ''service'', '
                               'timescaledb.compress_orderby = ''"timestamp" DESC'')',
                               r.tbl::regclass);
            END IF;
            -- Compress once a chunk is older than the warm tier: late
            -- corrections arrive well within it.
            EXECUTE 'SELECT add_compression_policy($1::regclass, $2, if_not_exists => true)'
                USING r.tbl, make_interval(days => greatest(v_warm, v_hot + 1));
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION stacklens_apply_timescale() IS
    'Internal: when the timescaledb extension is installed, makes analytics_events and the three metric tables hypertables (migrating existing rows), sets retention policies from analytics_settings (hot: events, warm: 1min, cold: 5min/1hour) and compression on the 5min/1hour tables. Idempotent. No-op without the extension.';

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
