-- 0006_roles: least-privilege roles.
--
--   stacklens_reader  SELECT on every table and view (now and future),
--                     EXECUTE on the read functions. The API's query pool.
--   stacklens_writer  SELECT/INSERT/UPDATE/DELETE on the data tables, sequence
--                     usage, EXECUTE on the read functions and the archive
--                     (SECURITY DEFINER with a pinned search_path).
--                     Projections and the alert engine.
--   stacklens_admin   every privilege on the tables, sequences, functions,
--                     the schema and the database.
--
-- Roles are cluster-wide: they are created NOLOGIN when missing (a concurrent
-- creation by a migration of another database is tolerated); the migrator
-- gives them LOGIN and a password when its options carry one. Statements that
-- need the database or schema name use format(%I) on current_database() /
-- current_schema(), so the file runs in any database.

DO $$
DECLARE
    v_role text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY['stacklens_reader', 'stacklens_writer', 'stacklens_admin'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_role) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', v_role);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL; -- created concurrently by another migration run
            END;
        END IF;
    END LOOP;
END
$$;

DO $$
DECLARE
    v_db     text := current_database();
    v_schema text := current_schema();
BEGIN
    -- Database level: the migration user may not own the database; say so
    -- instead of failing the migration.
    BEGIN
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO stacklens_reader, stacklens_writer', v_db);
        EXECUTE format('GRANT ALL ON DATABASE %I TO stacklens_admin', v_db);
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE WARNING 'stacklens roles: cannot grant on database %: %', v_db, SQLERRM;
    END;
    BEGIN
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO stacklens_reader, stacklens_writer', v_schema);
        EXECUTE format('GRANT ALL ON SCHEMA %I TO stacklens_admin', v_schema);
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE WARNING 'stacklens roles: cannot grant on schema %: %', v_schema, SQLERRM;
    END;

    -- Reader: SELECT on everything, now and in the future.
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO stacklens_reader', v_schema);
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT ON TABLES TO stacklens_reader', v_schema);

    -- Writer: DML on data tables, not on migration bookkeeping or settings.
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO stacklens_writer', v_schema);
    EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO stacklens_writer', v_schema);
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO stacklens_writer', v_schema);
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT USAGE, SELECT ON SEQUENCES TO stacklens_writer', v_schema);
    REVOKE INSERT, UPDATE, DELETE ON analytics_settings FROM stacklens_writer;
    IF to_regclass('schema_migrations') IS NOT NULL THEN
        REVOKE INSERT, UPDATE, DELETE ON schema_migrations FROM stacklens_writer;
    END IF;

    -- Admin: everything.
    EXECUTE format('GRANT ALL ON ALL TABLES IN SCHEMA %I TO stacklens_admin', v_schema);
    EXECUTE format('GRANT ALL ON ALL SEQUENCES IN SCHEMA %I TO stacklens_admin', v_schema);
    EXECUTE format('GRANT ALL ON ALL FUNCTIONS IN SCHEMA %I TO stacklens_admin', v_schema);
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT ALL ON TABLES TO stacklens_admin', v_schema);
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT ALL ON SEQUENCES TO stacklens_admin', v_schema);
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT ALL ON FUNCTIONS TO stacklens_admin', v_schema);

    -- The archive runs with its owner's rights (drop_chunks needs table
    -- ownership) and a pinned search_path, so writers may call it.
    EXECUTE format('ALTER FUNCTION analytics_archive_old_data() SECURITY DEFINER SET search_path = %I, pg_temp', v_schema);
END
$$;

-- Functions: the archive and the internal helpers are not for everyone.
REVOKE EXECUTE ON FUNCTION analytics_archive_old_data() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION stacklens_purge_before(regclass, timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION stacklens_setting_int(text, integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION stacklens_apply_timescale() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION stacklens_configure() FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    analytics_calculate_sla(text, timestamptz, timestamptz, double precision, double precision),
    analytics_get_alert_stats(timestamptz, timestamptz)
TO stacklens_reader, stacklens_writer;
GRANT EXECUTE ON FUNCTION analytics_archive_old_data() TO stacklens_writer;
