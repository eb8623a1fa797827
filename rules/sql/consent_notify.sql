-- pgveil consent change notification: a row trigger on the consent table
-- that tells pgveil's consent store (LISTEN <notify_channel>) about every
-- committed insert, update and delete, so a revocation reaches rewriting
-- within ~100 ms instead of at the next resync. Run once per database, as
-- the owner of the consent table or a superuser. Idempotent.
--   psql -v ON_ERROR_STOP=1 -d crm -f rules/sql/consent_notify.sql
--
-- Adapting it: the triggers at the end name the sample table public.consent
-- and pass four arguments: the channel (rules: consent.notify_channel,
-- default pgveil_consent), and the subject, purpose and granted column
-- names (rules: consent.subject_column / purpose_column / granted_column).
-- Change the table and the arguments to match your rules file.
--
-- Payload (at most 8000 bytes, as pg_notify allows), version digit first:
--   1St|<n>|<purpose>|<subject>   row (subject, purpose) says granted = true
--   1Sf|<n>|<purpose>|<subject>   ... granted = false
--   1D-|<n>|<purpose>|<subject>   no row (deleted, or granted is NULL)
--   1R                            reload everything (TRUNCATE, oversized key)
-- <n> counts the notifications of the transaction (a transaction-local
-- setting, pgveil.consent_seq). It is there because PostgreSQL drops a
-- NOTIFY whose payload equals an earlier one of the same transaction: a
-- row set true, false, true again in one transaction would otherwise end
-- as false at pgveil. pgveil ignores its value.
-- <subject> is the column's text form (to_jsonb(...) ->> col: the same as
-- ::text for integer, uuid and text subjects); it is last, so it may hold
-- '|'. Rows whose purpose holds '|' are not valid purpose names and are
-- ignored by pgveil, so they are not sent. An UPDATE that changes the
-- subject or the purpose sends a D for the old key first. NOTIFY is
-- transactional: pgveil hears nothing until COMMIT, and nothing of a
-- rolled-back transaction.
SET client_min_messages = warning;

CREATE SCHEMA IF NOT EXISTS pgveil;

CREATE OR REPLACE FUNCTION pgveil.consent_notify()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog
AS $$
DECLARE
  chan text := TG_ARGV[0];
  scol text := TG_ARGV[1];
  pcol text := TG_ARGV[2];
  gcol text := TG_ARGV[3];
  o jsonb;
  n jsonb;
  payload text;
  g text;
  seq bigint;
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    PERFORM pg_catalog.pg_notify(chan, '1R');
    RETURN NULL;
  END IF;
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    o := pg_catalog.to_jsonb(OLD);
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    n := pg_catalog.to_jsonb(NEW);
  END IF;
  -- the old key disappears: deleted, or moved to another subject/purpose
  IF o IS NOT NULL AND (o ->> scol) IS NOT NULL AND (o ->> pcol) IS NOT NULL
     AND strpos(o ->> pcol, '|') = 0
     AND (n IS NULL OR (o ->> scol) IS DISTINCT FROM (n ->> scol)
          OR (o ->> pcol) IS DISTINCT FROM (n ->> pcol)) THEN
    seq := coalesce(nullif(current_setting('pgveil.consent_seq', true), ''), '0')::bigint + 1;
    PERFORM set_config('pgveil.consent_seq', seq::text, true);
    payload := '1D-|' || seq || '|' || (o ->> pcol) || '|' || (o ->> scol);
    IF octet_length(payload) >= 8000 THEN
      payload := '1R';
    END IF;
    PERFORM pg_catalog.pg_notify(chan, payload);
  END IF;
  IF n IS NOT NULL AND (n ->> scol) IS NOT NULL AND (n ->> pcol) IS NOT NULL
     AND strpos(n ->> pcol, '|') = 0 THEN
    g := CASE (n ->> gcol)::boolean WHEN true THEN 'St' WHEN false THEN 'Sf'
                                   ELSE 'D-' END;
    seq := coalesce(nullif(current_setting('pgveil.consent_seq', true), ''), '0')::bigint + 1;
    PERFORM set_config('pgveil.consent_seq', seq::text, true);
    payload := '1' || g || '|' || seq || '|' || (n ->> pcol) || '|' || (n ->> scol);
    IF octet_length(payload) >= 8000 THEN
      payload := '1R';
    END IF;
    PERFORM pg_catalog.pg_notify(chan, payload);
  END IF;
  RETURN NULL;
END
$$;

-- Adapt here: table, channel, subject/purpose/granted columns.
DROP TRIGGER IF EXISTS pgveil_consent_notify ON public.consent;
CREATE TRIGGER pgveil_consent_notify
  AFTER INSERT OR UPDATE OR DELETE ON public.consent
  FOR EACH ROW
  EXECUTE FUNCTION pgveil.consent_notify('pgveil_consent', 'subject_id', 'purpose', 'granted');

DROP TRIGGER IF EXISTS pgveil_consent_truncate ON public.consent;
CREATE TRIGGER pgveil_consent_truncate
  AFTER TRUNCATE ON public.consent
  FOR EACH STATEMENT
  EXECUTE FUNCTION pgveil.consent_notify('pgveil_consent', 'subject_id', 'purpose', 'granted');
