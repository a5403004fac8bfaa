-- 0004_functions: SLA, alert statistics and retention (archive) functions.
-- The seed expects exactly three public routines named analytics_%; internal
-- helpers are named stacklens_%.

-- Integer setting from analytics_settings, or p_default when missing.
CREATE FUNCTION stacklens_setting_int(p_key text, p_default integer) RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT value::integer FROM analytics_settings WHERE key = p_key), p_default)
$$;
COMMENT ON FUNCTION stacklens_setting_int(text, integer) IS
    'Internal: integer value of an analytics_settings key, or the given default.';

-- Deletes rows of p_table whose "timestamp" is before p_cutoff and returns how
-- many there were. On a TimescaleDB hypertable whole chunks are dropped with
-- drop_chunks() first, and rows left in the chunk straddling the cutoff are
-- deleted; the count is taken before either.
CREATE FUNCTION stacklens_purge_before(p_table regclass, p_cutoff timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_rows  bigint;
    v_ts    text;    -- schema of the timescaledb extension (quoted), NULL without it
    v_hyper boolean := false;
BEGIN
    SELECT quote_ident(n.nspname) INTO v_ts
    FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
    WHERE e.extname = 'timescaledb';
    IF v_ts IS NOT NULL THEN
        -- By name, not by casting every hypertable's name to regclass (which
        -- fails for hypertables in schemas the caller may not use).
        EXECUTE 'SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables h
                                  JOIN pg_namespace n ON n.nspname = h.hypertable_schema
                                  JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = h.hypertable_name
                                 WHERE c.oid = $1)'
            INTO v_hyper USING p_table;
    END IF;
    IF v_hyper THEN
        EXECUTE format('SELECT count(*) FROM %s WHERE "timestamp" < $1', p_table) INTO v_rows USING p_cutoff;
        EXECUTE format('SELECT count(*) FROM %s.drop_chunks($1, older_than => $2)', v_ts) USING p_table, p_cutoff;
        EXECUTE format('DELETE FROM %s WHERE "timestamp" < $1', p_table) USING p_cutoff;
    ELSE
        EXECUTE format('DELETE FROM %s WHERE "timestamp" < $1', p_table) USING p_cutoff;
        GET DIAGNOSTICS v_rows = ROW_COUNT;
    END IF;
    RETURN v_rows;
END
$$;
COMMENT ON FUNCTION stacklens_purge_before(regclass, timestamptz) IS
    'Internal: deletes rows of a time table older than the cutoff (drop_chunks + DELETE on a TimescaleDB hypertable, DELETE otherwise) and returns the number of rows removed.';

CREATE FUNCTION analytics_calculate_sla(
    p_service        text,
    p_from           timestamptz,
    p_to             timestamptz,
    p_latency_slo_ms double precision DEFAULT 500,
    p_error_slo_pct  double precision DEFAULT 1)
RETURNS TABLE (
    service                    text,
    period_start               timestamptz,
    period_end                 timestamptz,
    total_events               bigint,
    error_events               bigint,
    warning_events             bigint,
    availability_pct           double precision,
    error_rate_pct             double precision,
    latency_avg_ms             double precision,
    latency_p99_max_ms         double precision,
    windows_total              bigint,
    windows_within_latency_slo bigint,
    latency_slo_compliance_pct double precision,
    latency_slo_ms             double precision,
    error_slo_pct              double precision,
    allowed_error_events       double precision,
    error_budget_remaining_pct double precision,
    error_slo_met              boolean)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
BEGIN
    IF p_from IS NULL OR p_to IS NULL OR p_to <= p_from THEN
        RAISE EXCEPTION 'analytics_calculate_sla: need p_from < p_to (got % .. %)', p_from, p_to
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_latency_slo_ms IS NULL OR p_latency_slo_ms < 0 THEN
        RAISE EXCEPTION 'analytics_calculate_sla: p_latency_slo_ms must be >= 0 (got %)', p_latency_slo_ms
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_error_slo_pct IS NULL OR p_error_slo_pct <= 0 OR p_error_slo_pct > 100 THEN
        RAISE EXCEPTION 'analytics_calculate_sla: p_error_slo_pct must be in (0, 100] (got %)', p_error_slo_pct
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    RETURN QUERY
    WITH w1 AS (
        SELECT m.service, m.timestamp AS ts, 1 AS minutes, m.count, m.error_count,
               m.warning_count, m.latency_sum, m.latency_p99_ms
        FROM analytics_metrics_1min m
        WHERE (p_service IS NULL OR m.service = p_service)
          AND m.timestamp >= p_from AND m.timestamp < p_to AND m.count > 0
    ), w5 AS (
        SELECT m.service, m.timestamp AS ts, 5 AS minutes, m.count, m.error_count,
               m.warning_count, m.latency_sum, m.latency_p99_ms
        FROM analytics_metrics_5min m
        WHERE (p_service IS NULL OR m.service = p_service)
          AND m.timestamp >= p_from AND m.timestamp < p_to AND m.count > 0
          AND NOT EXISTS (SELECT 1 FROM w1 WHERE w1.service = m.service
                            AND w1.ts >= m.timestamp AND w1.ts < m.timestamp + interval '5 minutes')
    ), w60 AS (
        SELECT m.service, m.timestamp AS ts, 60 AS minutes, m.count, m.error_count,
               m.warning_count, m.latency_sum, m.latency_p99_ms
        FROM analytics_metrics_1hour m
        WHERE (p_service IS NULL OR m.service = p_service)
          AND m.timestamp >= p_from AND m.timestamp < p_to AND m.count > 0
          AND NOT EXISTS (SELECT 1 FROM w1 WHERE w1.service = m.service
                            AND w1.ts >= m.timestamp AND w1.ts < m.timestamp + interval '1 hour')
          AND NOT EXISTS (SELECT 1 FROM w5 WHERE w5.service = m.service
                            AND w5.ts >= m.timestamp AND w5.ts < m.timestamp + interval '1 hour')
    ), w AS (
        SELECT * FROM w1 UNION ALL SELECT * FROM w5 UNION ALL SELECT * FROM w60
    ), agg AS (
        SELECT w.service,
               sum(w.count)::bigint                                              AS total,
               sum(w.error_count)::bigint                                        AS errors,
               sum(w.warning_count)::bigint                                      AS warnings,
               sum(w.latency_sum)                                                AS lat_sum,
               max(w.latency_p99_ms)                                             AS p99_max,
               sum(w.minutes)::bigint                                            AS minutes,
               coalesce(sum(w.minutes) FILTER (WHERE w.latency_p99_ms <= p_latency_slo_ms), 0)::bigint AS ok_minutes
        FROM w
        GROUP BY w.service
    ), res AS (
        SELECT * FROM agg
        UNION ALL
        SELECT p_service, 0::bigint, 0::bigint, 0::bigint, 0::double precision,
               NULL::double precision, 0::bigint, 0::bigint
        WHERE p_service IS NOT NULL AND NOT EXISTS (SELECT 1 FROM agg)
    )
    SELECT r.service,
           p_from,
           p_to,
           r.total,
           r.errors,
           r.warnings,
           CASE WHEN r.total > 0 THEN 100.0 * (r.total - r.errors) / r.total END::double precision,
           CASE WHEN r.total > 0 THEN 100.0 * r.errors / r.total END::double precision,
           CASE WHEN r.total > 0 THEN r.lat_sum / r.total END::double precision,
           r.p99_max,
           r.minutes,
           r.ok_minutes,
           CASE WHEN r.minutes > 0 THEN 100.0 * r.ok_minutes / r.minutes END::double precision,
           p_latency_slo_ms,
           p_error_slo_pct,
           (r.total * p_error_slo_pct / 100.0)::double precision,
           CASE WHEN r.total > 0
                THEN 100.0 - 100.0 * (100.0 * r.errors / r.total) / p_error_slo_pct END::double precision,
           CASE WHEN r.total > 0 THEN 100.0 * r.errors / r.total <= p_error_slo_pct END
    FROM res r
    ORDER BY r.service;
END
$$;
COMMENT ON FUNCTION analytics_calculate_sla(text, timestamptz, timestamptz, double precision, double precision) IS
    'SLA report for windows starting in [p_from, p_to): one row for p_service (zeros and NULL percentages when it has no data), or one row per service when p_service is NULL. Uses 1-minute windows, falling back to 5-minute then 1-hour windows where finer ones have expired. availability_pct = 100 * non-error events / events; latency_slo_compliance_pct = share of window minutes whose p99 <= p_latency_slo_ms (windows_* count minutes: a 5min window counts 5); error_budget_remaining_pct = 100 - 100 * error_rate / p_error_slo_pct (negative when overspent). Raises 22023 on bad arguments.';

CREATE FUNCTION analytics_get_alert_stats(
    p_from timestamptz DEFAULT now() - interval '24 hours',
    p_to   timestamptz DEFAULT now())
RETURNS TABLE (
    severity                         text,
    total_alerts                     bigint,
    active_alerts                    bigint,
    acknowledged_alerts              bigint,
    resolved_alerts                  bigint,
    services_affected                bigint,
    mean_time_to_acknowledge_seconds double precision,
    mean_time_to_resolve_seconds     double precision)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
BEGIN
    IF p_from IS NULL OR p_to IS NULL OR p_to <= p_from THEN
        RAISE EXCEPTION 'analytics_get_alert_stats: need p_from < p_to (got % .. %)', p_from, p_to
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    WITH a AS (
        SELECT * FROM analytics_alerts a WHERE a.fired_at >= p_from AND a.fired_at < p_to
    ), sev (severity, ord) AS (
        VALUES ('critical', 1), ('warning', 2), ('info', 3), ('all', 4)
    )
    SELECT s.severity,
           count(a.id)::bigint,
           count(a.id) FILTER (WHERE a.status = 'active')::bigint,
           count(a.id) FILTER (WHERE a.status = 'acknowledged')::bigint,
           count(a.id) FILTER (WHERE a.status = 'resolved')::bigint,
           count(DISTINCT a.service)::bigint,
           avg(extract(epoch FROM a.acknowledged_at - a.fired_at))::double precision,
           avg(extract(epoch FROM a.resolved_at - a.fired_at))::double precision
    FROM sev s
    LEFT JOIN a ON s.severity = 'all' OR a.severity = s.severity
    GROUP BY s.severity, s.ord
    ORDER BY s.ord;
END
$$;
COMMENT ON FUNCTION analytics_get_alert_stats(timestamptz, timestamptz) IS
    'Alert statistics for alerts fired in [p_from, p_to) (default: the last 24 hours): one row per severity (critical, warning, info) and a total row "all", with counts by status, distinct services, mean time to acknowledge and to resolve in seconds (NULL when none). Raises 22023 on bad arguments.';

CREATE FUNCTION analytics_archive_old_data()
RETURNS TABLE (table_name text, rows_deleted bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_hot  timestamptz := now() - make_interval(days => stacklens_setting_int('retention_hot_days', 1));
    v_warm timestamptz := now() - make_interval(days => stacklens_setting_int('retention_warm_days', 7));
    v_cold timestamptz := now() - make_interval(days => stacklens_setting_int('retention_cold_days', 30));
    v_n    bigint;
BEGIN
    table_name := 'analytics_events';
    rows_deleted := stacklens_purge_before('analytics_events'::regclass, v_hot);
    RETURN NEXT;
    table_name := 'analytics_metrics_1min';
    rows_deleted := stacklens_purge_before('analytics_metrics_1min'::regclass, v_warm);
    RETURN NEXT;
    table_name := 'analytics_metrics_5min';
    rows_deleted := stacklens_purge_before('analytics_metrics_5min'::regclass, v_cold);
    RETURN NEXT;
    table_name := 'analytics_metrics_1hour';
    rows_deleted := stacklens_purge_before('analytics_metrics_1hour'::regclass, v_cold);
    RETURN NEXT;

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
    'Enforces retention from analytics_settings: deletes analytics_events older than retention_hot_days (RETENTION_HOT), analytics_metrics_1min older than retention_warm_days (RETENTION_WARM), analytics_metrics_5min/1hour, resolved alerts (with their outbox rows), expired silences and idle evaluator state older than retention_cold_days (RETENTION_COLD). On TimescaleDB hypertables it drops whole chunks (drop_chunks) and deletes the remainder; the retention policies do the same in the background. Returns (table_name, rows_deleted) per table. Run daily (seed: cron 0 1 * * *).';
