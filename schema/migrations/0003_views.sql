-- 0003_views: the six dashboard views named by the seed's schema validation.

-- Health uses the thresholds of the default alert rules:
-- unhealthy: error_rate > 20 or p99 > 1000 ms; degraded: error_rate > 5 or
-- p99 > 500 ms; healthy otherwise (boundaries are inclusive of "better").
CREATE VIEW v_service_health_current AS
SELECT DISTINCT ON (m.service)
    m.service,
    CASE
        WHEN m.error_rate > 20 OR m.latency_p99_ms > 1000 THEN 'unhealthy'
        WHEN m.error_rate > 5  OR m.latency_p99_ms > 500  THEN 'degraded'
        ELSE 'healthy'
    END                                                    AS status,
    m.error_rate,
    m.latency_p99_ms,
    m.throughput_per_sec,
    m.count,
    m.error_count,
    m.timestamp                                            AS window_start,
    LEAST(m.updated_at, m.timestamp + interval '1 minute') AS last_seen
FROM analytics_metrics_1min m
WHERE m.timestamp >= now() - interval '10 minutes'
ORDER BY m.service, m.timestamp DESC;
COMMENT ON VIEW v_service_health_current IS
    'One row per service seen in the last 10 minutes: its newest 1-minute window and status unhealthy (error_rate > 20 or latency_p99_ms > 1000), degraded (error_rate > 5 or latency_p99_ms > 500) or healthy; last_seen = when that window was last updated, capped at the window end.';

-- Hourly trend over the last 24 hours (the current hour and the 23 before).
-- Rows come from analytics_metrics_1hour; hours missing there (for example
-- when AGGREGATION_WINDOWS has no 1hour) are rolled up from 1-minute rows,
-- where p95/p99 are the worst minute's (percentiles do not add up).
CREATE VIEW v_service_performance_trend AS
WITH bounds AS (
    SELECT date_trunc('hour', now(), 'UTC') - interval '23 hours' AS since
), hourly AS (
    SELECT h.service, h.timestamp AS hour, h.count, h.error_count, h.warning_count,
           h.error_rate, h.throughput_per_sec, h.latency_avg_ms, h.latency_p50_ms,
           h.latency_p95_ms, h.latency_p99_ms, h.latency_max_ms, h.risk_score_avg,
           '1hour'::text AS source
    FROM analytics_metrics_1hour h, bounds b
    WHERE h.timestamp >= b.since
), minutes AS (
    SELECT m.service,
           date_trunc('hour', m.timestamp, 'UTC')                         AS hour,
           sum(m.count)::bigint                                           AS count,
           sum(m.error_count)::bigint                                     AS error_count,
           sum(m.warning_count)::bigint                                   AS warning_count,
           CASE WHEN sum(m.count) > 0
                THEN 100.0 * sum(m.error_count) / sum(m.count) ELSE 0 END AS error_rate,
           sum(m.count) / 3600.0                                          AS throughput_per_sec,
           CASE WHEN sum(m.count) > 0
                THEN sum(m.latency_sum) / sum(m.count) ELSE 0 END         AS latency_avg_ms,
           max(m.latency_p50_ms)                                          AS latency_p50_ms,
           max(m.latency_p95_ms)                                          AS latency_p95_ms,
           max(m.latency_p99_ms)                                          AS latency_p99_ms,
           max(m.latency_max_ms)                                          AS latency_max_ms,
           avg(m.risk_score_avg)                                          AS risk_score_avg,
           '1min'::text                                                   AS source
    FROM analytics_metrics_1min m, bounds b
    WHERE m.timestamp >= b.since
    GROUP BY m.service, date_trunc('hour', m.timestamp, 'UTC')
)
SELECT service, hour, count, error_count, warning_count,
       error_rate::double precision, throughput_per_sec::double precision,
       latency_avg_ms::double precision, latency_p50_ms, latency_p95_ms,
       latency_p99_ms, latency_max_ms, risk_score_avg, source
FROM hourly
UNION ALL
SELECT mi.service, mi.hour, mi.count, mi.error_count, mi.warning_count,
       mi.error_rate::double precision, mi.throughput_per_sec::double precision,
       mi.latency_avg_ms::double precision, mi.latency_p50_ms, mi.latency_p95_ms,
       mi.latency_p99_ms, mi.latency_max_ms, mi.risk_score_avg, mi.source
FROM minutes mi
WHERE NOT EXISTS (SELECT 1 FROM hourly h WHERE h.service = mi.service AND h.hour = mi.hour);
COMMENT ON VIEW v_service_performance_trend IS
    'Hourly per-service performance over the last 24 hours (current hour and the 23 before, UTC hours): from analytics_metrics_1hour (source = 1hour), or rolled up from 1-minute windows where no hourly row exists (source = 1min; p50/p95/p99 are then the worst minute''s). Order by service, hour.';

CREATE VIEW v_active_alerts AS
SELECT a.id, a.alert_id, a.fingerprint, a.rule_id, a.rule_name, a.service, a.severity,
       a.status, a.metric_name, a.value, a.threshold, a."window", a.window_start,
       a.message, a.fired_at, a.acknowledged_at, a.acknowledged_by, a.updated_at,
       now() - a.fired_at AS age
FROM analytics_alerts a
WHERE a.status IN ('active', 'acknowledged')
ORDER BY a.fired_at DESC, a.id DESC;
COMMENT ON VIEW v_active_alerts IS
    'Open alerts (status active or acknowledged), newest first, with their age.';

CREATE VIEW v_alert_summary AS
SELECT s.severity, st.status,
       count(a.id)::bigint AS alert_count,
       max(a.fired_at)     AS last_fired_at
FROM (VALUES ('critical', 1), ('warning', 2), ('info', 3)) AS s (severity, sev_order)
CROSS JOIN (VALUES ('active', 1), ('acknowledged', 2), ('resolved', 3)) AS st (status, st_order)
LEFT JOIN analytics_alerts a ON a.severity = s.severity AND a.status = st.status
GROUP BY s.severity, s.sev_order, st.status, st.st_order
ORDER BY s.sev_order, st.st_order;
COMMENT ON VIEW v_alert_summary IS
    'Alert counts for every severity x status pair (9 rows, zero counts included) with the newest fired_at; all alerts kept in analytics_alerts.';

CREATE VIEW v_top_error_services AS
SELECT m.service,
       sum(m.count)::bigint                                         AS count,
       sum(m.error_count)::bigint                                   AS error_count,
       (100.0 * sum(m.error_count) / sum(m.count))::double precision AS error_rate,
       max(m.timestamp)                                             AS last_window_start
FROM analytics_metrics_1min m
WHERE m.timestamp >= now() - interval '1 hour'
GROUP BY m.service
HAVING sum(m.count) >= 10 AND sum(m.error_count) > 0
ORDER BY error_rate DESC, error_count DESC, m.service
LIMIT 10;
COMMENT ON VIEW v_top_error_services IS
    'Top 10 services by error rate (percent) over the 1-minute windows of the last hour; only services with at least 10 events and at least one error.';

CREATE VIEW v_top_latency_services AS
SELECT m.service,
       sum(m.count)::bigint                                                             AS count,
       max(m.latency_p99_ms)                                                            AS latency_p99_ms,
       (sum(m.latency_p99_ms * m.count) / nullif(sum(m.count), 0))::double precision    AS latency_p99_avg_ms,
       (sum(m.latency_sum) / nullif(sum(m.count), 0))::double precision                 AS latency_avg_ms,
       max(m.latency_max_ms)                                                            AS latency_max_ms,
       max(m.timestamp)                                                                 AS last_window_start
FROM analytics_metrics_1min m
WHERE m.timestamp >= now() - interval '1 hour'
GROUP BY m.service
HAVING sum(m.count) > 0
ORDER BY latency_p99_ms DESC, m.service
LIMIT 10;
COMMENT ON VIEW v_top_latency_services IS
    'Top 10 services by p99 latency over the 1-minute windows of the last hour: latency_p99_ms is the worst minute''s p99, latency_p99_avg_ms the count-weighted mean of the minute p99s.';
