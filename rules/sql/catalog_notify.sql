-- pgveil catalog change notification: an event trigger that tells pgveil's
-- control thread (LISTEN pgveil_catalog) that DDL ran in this database, so it
-- re-resolves the rules' tables and columns at once instead of at its next
-- 30-second check. Run once per database pgveil serves, as a superuser
-- (event triggers require it). Idempotent.
--   psql -v ON_ERROR_STOP=1 -d crm -f rules/sql/catalog_notify.sql
--
-- The NOTIFY is transactional: pgveil hears it when the DDL commits, and its
-- catalog query then sees the committed change. The payload (the command
-- tag, e.g. "ALTER TABLE") is informational only.
SET client_min_messages = warning;

CREATE SCHEMA IF NOT EXISTS pgveil;
REVOKE ALL ON SCHEMA pgveil FROM PUBLIC;

-- search_path pinned: the function must not resolve anything through the
-- search_path of whoever runs the DDL.
CREATE OR REPLACE FUNCTION pgveil.catalog_notify()
RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
BEGIN
  PERFORM pg_catalog.pg_notify('pgveil_catalog', TG_TAG);
END
$$;
REVOKE ALL ON FUNCTION pgveil.catalog_notify() FROM PUBLIC;

DROP EVENT TRIGGER IF EXISTS pgveil_catalog_ddl;
CREATE EVENT TRIGGER pgveil_catalog_ddl ON ddl_command_end
  EXECUTE FUNCTION pgveil.catalog_notify();

-- DROP TABLE / DROP COLUMN also fire ddl_command_end; sql_drop is listed
-- too so a drop is never missed whatever the command.
DROP EVENT TRIGGER IF EXISTS pgveil_catalog_drop;
CREATE EVENT TRIGGER pgveil_catalog_drop ON sql_drop
  EXECUTE FUNCTION pgveil.catalog_notify();
