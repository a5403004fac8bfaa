-- 0009_slos: service-level objectives and the exact counts they need.
--
-- An SLO counts good events against all events of a service (or of every
-- service) over a rolling period (docs/slo.md):
--   availability  good = events whose level is not error, critical or fatal,
--                 i.e. count - error_count of the metrics tables;
--   latency       good = events with latency_ms <= latency_threshold_ms,
--                 counted exactly by the processor per threshold and stored
--                 in latency_good of every metrics table (below).

CREATE TABLE analytics_slos (
    id                   bigserial        PRIMARY KEY,
    name                 text             NOT NULL UNIQUE CHECK (btrim(name) <> ''),
    -- NULL: every service together.
    service              text             CHECK (service IS NULL OR btrim(service) <> ''),
    objective            text             NOT NULL CHECK (objective IN ('availability', 'latency')),
    latency_threshold_ms double precision CHECK (latency_threshold_ms IS NULL OR latency_threshold_ms >= 0),
    target               double precision NOT NULL CHECK (target > 0 AND target < 100),
    period               interval         NOT NULL DEFAULT '30 days'
                             CHECK (period >= interval '1 hour' AND period <= interval '366 days'),
    -- Burn-rate alert policy; NULL: the SRE workbook's defaults (docs/slo.md).
    burn_alerts          jsonb            CHECK (burn_alerts IS NULL OR jsonb_typeof(burn_alerts) = 'array'),
    notification_channels text[]          NOT NULL DEFAULT '{}'
                             CHECK (notification_channels <@ ARRAY['slack', 'email', 'pagerduty']::text[]),
    enabled              boolean          NOT NULL DEFAULT true,
    description          text             NOT NULL DEFAULT '',
    created_at           timestamptz      NOT NULL DEFAULT now(),
    updated_at           timestamptz      NOT NULL DEFAULT now(),
    CHECK ((objective = 'latency') = (latency_threshold_ms IS NOT NULL))
);
CREATE TRIGGER analytics_slos_touch BEFORE UPDATE ON analytics_slos
    FOR EACH ROW EXECUTE FUNCTION stacklens_touch_updated_at();
COMMENT ON TABLE analytics_slos IS
    'Service-level objectives: target percent of good events of service (NULL: all services) over a rolling period. availability: good = count - error_count; latency: good = events with latency_ms <= latency_threshold_ms (latency_good of the metrics tables). Editable through the API (admin).';
COMMENT ON COLUMN analytics_slos.target IS 'Objective in percent of good events, e.g. 99.9.';
COMMENT ON COLUMN analytics_slos.burn_alerts IS
    'Multiwindow burn-rate alert policy: array of {"severity","burn_rate","long","short"} (durations like "1h", "5m"). NULL: page 14.4x over 1h and 5m, page 6x over 6h and 30m, ticket 3x over 1d and 2h, ticket 1x over 3d and 6h.';

-- Exact latency good-event counts, per threshold the SLOs define: a JSON
-- object from the threshold in milliseconds (shortest decimal form, e.g.
-- "300", "2.5") to the number of the window's events with latency_ms <= it.
-- A threshold is counted from the first window the processor opens after
-- it was defined; a window without its key was not counted for it.
ALTER TABLE analytics_metrics_1min ADD COLUMN latency_good jsonb NOT NULL DEFAULT '{}'
    CHECK (jsonb_typeof(latency_good) = 'object');
COMMENT ON COLUMN analytics_metrics_1min.latency_good IS
    'Exact count of events with latency_ms <= threshold, per SLO latency threshold in ms ({"300": 1234}). A threshold missing from a window was not counted in it.';

-- Every other metrics table (5min, 1hour and any AGGREGATION_WINDOWS one
-- that stacklens_ensure_window created) gets the same column; tables made
-- later copy it through LIKE analytics_metrics_1min INCLUDING ALL.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT metrics_table FROM analytics_windows WHERE name <> '1min' LOOP
        IF to_regclass(format('%I', r.metrics_table)) IS NOT NULL THEN
            EXECUTE format('ALTER TABLE %I ADD COLUMN IF NOT EXISTS latency_good jsonb NOT NULL DEFAULT %L CHECK (jsonb_typeof(latency_good) = %L)',
                           r.metrics_table, '{}', 'object');
        END IF;
    END LOOP;
END
$$;
