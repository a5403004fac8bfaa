-- 0002_alerting: alert rules (with the seed's defaults), alerts, silences,
-- the transactional outbox and the evaluator's per-fingerprint state.
--
-- Note: "window" is a reserved word in PostgreSQL; the column must be quoted
-- in queries: SELECT "window" FROM analytics_alert_rules.

CREATE TABLE analytics_alert_rules (
    id                    bigserial PRIMARY KEY,
    rule_name             text             NOT NULL UNIQUE CHECK (btrim(rule_name) <> ''),
    metric_name           text             NOT NULL CHECK (metric_name IN (
                              'count', 'error_count', 'warning_count', 'error_rate',
                              'throughput_per_sec', 'latency_avg_ms', 'latency_min_ms',
                              'latency_max_ms', 'latency_p50_ms', 'latency_p95_ms',
                              'latency_p99_ms', 'risk_score_avg', 'risk_score_max')),
    operator              text             NOT NULL CHECK (operator IN ('>', '>=', '<', '<=', '==', '!=')),
    threshold             double precision NOT NULL,
    severity              text             NOT NULL DEFAULT 'warning'
                              CHECK (severity IN ('info', 'warning', 'critical')),
    notification_channels text[]           NOT NULL DEFAULT '{}'
                              CHECK (notification_channels <@ ARRAY['slack', 'email', 'pagerduty']::text[]),
    enabled               boolean          NOT NULL DEFAULT true,
    "window"              text             NOT NULL DEFAULT '1min' CHECK ("window" ~ '^[1-9][0-9]*[a-z]+$'),
    for_windows           integer          NOT NULL DEFAULT 1 CHECK (for_windows >= 1),
    resolve_threshold     double precision,
    description           text             NOT NULL DEFAULT '',
    created_at            timestamptz      NOT NULL DEFAULT now(),
    updated_at            timestamptz      NOT NULL DEFAULT now()
);
CREATE TRIGGER analytics_alert_rules_touch BEFORE UPDATE ON analytics_alert_rules
    FOR EACH ROW EXECUTE FUNCTION stacklens_touch_updated_at();
COMMENT ON TABLE analytics_alert_rules IS
    'Alert rules: fire when <metric_name> <operator> <threshold> holds for for_windows consecutive windows of "window"; resolve when the condition no longer holds, or, with resolve_threshold set, when the metric crosses resolve_threshold (hysteresis). Editable through the API.';
COMMENT ON COLUMN analytics_alert_rules."window" IS 'Aggregation window the rule evaluates (1min, 5min, 1hour, ...). Reserved word: quote it.';
COMMENT ON COLUMN analytics_alert_rules.for_windows IS 'Consecutive windows the condition must hold before the alert fires.';
COMMENT ON COLUMN analytics_alert_rules.resolve_threshold IS 'Hysteresis: when set, a firing alert resolves only once the metric is on the good side of this value. NULL: resolve when the firing condition is false.';

-- The seed's default production rules; the seed's own
-- INSERT ... ON CONFLICT DO NOTHING is a no-op after this.
INSERT INTO analytics_alert_rules
    (rule_name, metric_name, operator, threshold, severity, notification_channels, enabled, description)
VALUES
    ('High Error Rate',      'error_rate',     '>', 5.0,    'warning',  ARRAY['slack', 'email'], true,
     'Error rate above 5 % of events in a window.'),
    ('Critical Error Rate',  'error_rate',     '>', 20.0,   'critical', ARRAY['slack', 'email', 'pagerduty'], true,
     'Error rate above 20 % of events in a window.'),
    ('High P99 Latency',     'latency_p99_ms', '>', 500,    'warning',  ARRAY['slack', 'email'], true,
     'p99 latency above 500 ms in a window.'),
    ('Critical P99 Latency', 'latency_p99_ms', '>', 1000,   'critical', ARRAY['slack', 'email', 'pagerduty'], true,
     'p99 latency above 1000 ms in a window.')
ON CONFLICT DO NOTHING;

CREATE TABLE analytics_alerts (
    id              bigserial PRIMARY KEY,
    alert_id        text             NOT NULL UNIQUE,
    fingerprint     text             NOT NULL,
    rule_id         bigint           REFERENCES analytics_alert_rules (id) ON DELETE SET NULL,
    rule_name       text             NOT NULL,
    service         text             NOT NULL,
    severity        text             NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    status          text             NOT NULL DEFAULT 'active'
                        CHECK (status IN ('active', 'acknowledged', 'resolved')),
    metric_name     text             NOT NULL,
    value           double precision,
    threshold       double precision,
    "window"        text             NOT NULL DEFAULT '1min',
    window_start    timestamptz,
    message         text             NOT NULL DEFAULT '',
    fired_at        timestamptz      NOT NULL DEFAULT now(),
    acknowledged_at timestamptz,
    acknowledged_by text,
    resolved_at     timestamptz,
    updated_at      timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT analytics_alerts_resolved_at_chk CHECK (status <> 'resolved' OR resolved_at IS NOT NULL),
    CONSTRAINT analytics_alerts_acknowledged_at_chk CHECK (status <> 'acknowledged' OR acknowledged_at IS NOT NULL)
);
-- At most one open (active or acknowledged) alert per fingerprint.
CREATE UNIQUE INDEX analytics_alerts_open_fingerprint_uq ON analytics_alerts (fingerprint)
    WHERE status IN ('active', 'acknowledged');
CREATE INDEX analytics_alerts_fired_at_idx ON analytics_alerts (fired_at DESC);
CREATE INDEX analytics_alerts_status_fired_at_idx ON analytics_alerts (status, fired_at DESC);
CREATE INDEX analytics_alerts_service_fired_at_idx ON analytics_alerts (service, fired_at DESC);
CREATE INDEX analytics_alerts_resolved_at_idx ON analytics_alerts (resolved_at) WHERE status = 'resolved';
CREATE TRIGGER analytics_alerts_touch BEFORE UPDATE ON analytics_alerts
    FOR EACH ROW EXECUTE FUNCTION stacklens_touch_updated_at();
COMMENT ON TABLE analytics_alerts IS
    'Alert instances. alert_id is stable (consumers de-duplicate on it); fingerprint identifies rule + service, with at most one open alert per fingerprint. Resolved alerts are kept RETENTION_COLD days.';
COMMENT ON COLUMN analytics_alerts."window" IS 'Window of the evaluation that fired the alert. Reserved word: quote it.';

CREATE TABLE analytics_alert_silences (
    id          bigserial PRIMARY KEY,
    rule_name   text,
    service     text,
    severity    text        CHECK (severity IN ('info', 'warning', 'critical')),
    starts_at   timestamptz NOT NULL DEFAULT now(),
    ends_at     timestamptz NOT NULL,
    created_by  text        NOT NULL DEFAULT '',
    comment     text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT analytics_alert_silences_period_chk CHECK (ends_at > starts_at)
);
CREATE INDEX analytics_alert_silences_ends_at_idx ON analytics_alert_silences (ends_at);
COMMENT ON TABLE analytics_alert_silences IS
    'Silences: while now() is in [starts_at, ends_at), alerts matching every non-NULL matcher (rule_name, service, severity) are recorded but not notified. NULL matches anything.';

CREATE TABLE analytics_alert_outbox (
    id              bigserial PRIMARY KEY,
    alert_id        text        NOT NULL REFERENCES analytics_alerts (alert_id) ON DELETE CASCADE,
    channel         text        NOT NULL CHECK (channel IN ('kafka', 'slack', 'email', 'pagerduty')),
    transition      text        NOT NULL CHECK (transition IN ('firing', 'acknowledged', 'resolved')),
    payload         jsonb       NOT NULL,
    state           text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    CONSTRAINT analytics_alert_outbox_once_uq UNIQUE (alert_id, channel, transition)
);
CREATE INDEX analytics_alert_outbox_pending_idx ON analytics_alert_outbox (next_attempt_at)
    WHERE state = 'pending';
COMMENT ON TABLE analytics_alert_outbox IS
    'Transactional outbox: one row per (alert, channel, transition), written in the same transaction as the alert change and delivered (Kafka analytics-alerts, Slack, email, PagerDuty) with retries. UNIQUE (alert_id, channel, transition) makes re-evaluation harmless.';

CREATE TABLE analytics_alert_state (
    fingerprint       text        PRIMARY KEY,
    rule_id           bigint      REFERENCES analytics_alert_rules (id) ON DELETE CASCADE,
    service           text        NOT NULL,
    consecutive       integer     NOT NULL DEFAULT 0 CHECK (consecutive >= 0),
    last_window_start timestamptz,
    firing            boolean     NOT NULL DEFAULT false,
    alert_id          text,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER analytics_alert_state_touch BEFORE UPDATE ON analytics_alert_state
    FOR EACH ROW EXECUTE FUNCTION stacklens_touch_updated_at();
COMMENT ON TABLE analytics_alert_state IS
    'Evaluator state per fingerprint (rule + service): consecutive windows the condition held (for for_windows), the last evaluated window start, whether it is firing and its open alert_id.';
