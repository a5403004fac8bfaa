-- 0010_slo_alerts: burn-rate alerts of SLOs in the alert tables, and the
-- SLO status view of the Grafana dashboards (docs/slo.md).
--
-- A burn-rate alert is an analytics_alerts row like a rule's, except that
-- it references an SLO and the policy entry that fired instead of a rule:
-- slo_burn_alert (the entry, {"severity","burn_rate","long","short"}) marks
-- the row as an SLO alert for good; slo_id becomes NULL when the SLO is
-- deleted (the engine then resolves the alert).
ALTER TABLE analytics_alerts
    ADD COLUMN slo_id bigint REFERENCES analytics_slos (id) ON DELETE SET NULL,
    ADD COLUMN slo_burn_alert jsonb
        CHECK (slo_burn_alert IS NULL OR jsonb_typeof(slo_burn_alert) = 'object'),
    ADD CONSTRAINT analytics_alerts_slo_chk
        CHECK (slo_burn_alert IS NULL AND slo_id IS NULL OR slo_burn_alert IS NOT NULL AND rule_id IS NULL);
CREATE INDEX analytics_alerts_slo_open_idx ON analytics_alerts (slo_id)
    WHERE status IN ('active', 'acknowledged') AND slo_burn_alert IS NOT NULL;
COMMENT ON COLUMN analytics_alerts.slo_id IS
    'Burn-rate alerts: the SLO that fired it (NULL for rule alerts, and once the SLO is deleted).';
COMMENT ON COLUMN analytics_alerts.slo_burn_alert IS
    'Burn-rate alerts: the policy entry that fired, {"severity": "page"|"ticket", "burn_rate": 14.4, "long": "1h", "short": "5m"}; NULL for rule alerts.';

-- Each SLO's figures over its period from the 1hour table: the buckets
-- starting after the current UTC hour's start minus the period (UTC: the
-- buckets are, whatever the session's TimeZone), the current
-- partial hour included — the API's GET /slos (docs/slo.md) computes the
-- same with the coarsest table that fits, so the two agree whenever that
-- is 1hour (periods of whole hours from 5h up, with the default windows).
-- A latency threshold's latency_good key is its shortest decimal form;
-- float8 text is that for thresholds from 0.0001 ms to below 10^15 ms.
CREATE VIEW v_slo_status AS
SELECT s.id, s.name, s.service, s.objective, s.latency_threshold_ms, s.target, s.period, s.enabled,
       date_trunc('hour', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - s.period + interval '1 hour' AS period_start,
       c.total_events, c.good_events, c.total_events - c.good_events AS bad_events,
       CASE WHEN c.total_events > 0 THEN 100.0 * c.good_events / c.total_events END AS compliance,
       (1 - s.target / 100) * c.total_events AS budget_events,
       CASE WHEN c.total_events > 0
            THEN ((1 - s.target / 100) * c.total_events - (c.total_events - c.good_events))
                 / ((1 - s.target / 100) * c.total_events) END AS budget_remaining_ratio,
       (SELECT count(*) FROM analytics_alerts a
         WHERE a.slo_id = s.id AND a.slo_burn_alert IS NOT NULL
           AND a.status IN ('active', 'acknowledged')) AS firing_alerts
FROM analytics_slos s
CROSS JOIN LATERAL (
    SELECT COALESCE(sum(m.count), 0)::bigint AS total_events,
           COALESCE(sum(CASE WHEN s.objective = 'availability' THEN m.count - m.error_count
                             ELSE (m.latency_good ->> s.latency_threshold_ms::text)::bigint END), 0)::bigint AS good_events
    FROM analytics_metrics_1hour m
    WHERE m.timestamp > date_trunc('hour', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - s.period
      AND (s.service IS NULL OR m.service = s.service)
      AND (s.objective = 'availability' OR m.latency_good ? s.latency_threshold_ms::text)
) c;
COMMENT ON VIEW v_slo_status IS
    'Per SLO: good, total and bad events, compliance (percent), error budget (events) and its remaining ratio over the period from analytics_metrics_1hour (current partial hour included), and the number of open burn-rate alerts. The API''s GET /slos has burn rates and more (docs/slo.md).';
