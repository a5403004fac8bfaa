-- 0013_change_notify: every statement that changes a table the dashboard
-- reads most — each metrics table and analytics_alerts — notifies the
-- channel stacklens_changes when its transaction commits (payload: the
-- table's name). API replicas LISTEN on it and reuse a /metrics,
-- /health-status or /alerts answer until the rows under it may have
-- changed (docs/api.md, "Answers reused until the data changes"). A
-- statement trigger costs one notification per statement, not per row,
-- and PostgreSQL folds the identical notifications of one transaction
-- into one. Chunks dropped by a TimescaleDB retention job fire no trigger:
-- the API also bounds a reused answer's age (API_CACHE_MAX_AGE).

CREATE FUNCTION stacklens_notify_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('stacklens_changes', TG_TABLE_NAME);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION stacklens_notify_change() IS
    'Statement trigger of analytics_alerts and every analytics_metrics_<window> table: NOTIFY stacklens_changes, payload the table name, at commit.';

-- Adds the trigger to every window's table that lacks it. The migrator
-- calls it after every run, after stacklens_ensure_window, so the tables
-- of windows added later (AGGREGATION_WINDOWS) get it too.
CREATE FUNCTION stacklens_watch_metrics() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_table text;
BEGIN
    FOR v_table IN SELECT metrics_table FROM analytics_windows ORDER BY name LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_trigger
                       WHERE tgrelid = format('%I', v_table)::regclass
                         AND tgname = 'stacklens_notify_change') THEN
            EXECUTE format('CREATE TRIGGER stacklens_notify_change
                AFTER INSERT OR UPDATE OR DELETE ON %I
                FOR EACH STATEMENT EXECUTE FUNCTION stacklens_notify_change()', v_table);
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION stacklens_watch_metrics() IS
    'Gives every table of analytics_windows the stacklens_notify_change statement trigger (idempotent; run by the migrator after every run).';
REVOKE EXECUTE ON FUNCTION stacklens_watch_metrics() FROM PUBLIC;

CREATE TRIGGER stacklens_notify_change
    AFTER INSERT OR UPDATE OR DELETE ON analytics_alerts
    FOR EACH STATEMENT EXECUTE FUNCTION stacklens_notify_change();
