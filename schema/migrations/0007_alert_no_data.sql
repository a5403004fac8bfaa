-- 0007_alert_no_data: rules may watch for missing data. A rule with
-- metric_name 'no_data' fires for a service that was seen (has a row in the
-- rule's window table within the lookback) and has had no row for the last
-- for_windows windows that are over; operator and threshold are ignored
-- (see docs/alerting.md, "No data").

ALTER TABLE analytics_alert_rules DROP CONSTRAINT analytics_alert_rules_metric_name_check;
ALTER TABLE analytics_alert_rules ADD CONSTRAINT analytics_alert_rules_metric_name_check CHECK (metric_name IN (
    'count', 'error_count', 'warning_count', 'error_rate',
    'throughput_per_sec', 'latency_avg_ms', 'latency_min_ms',
    'latency_max_ms', 'latency_p50_ms', 'latency_p95_ms',
    'latency_p99_ms', 'risk_score_avg', 'risk_score_max', 'no_data'));
COMMENT ON COLUMN analytics_alert_rules.metric_name IS
    'The metrics column the rule compares with threshold, or no_data: fire when a service seen before has had no row for for_windows windows (operator and threshold ignored).';
