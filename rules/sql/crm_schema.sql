-- Sample CRM schema for pgveil demos and tests: tables, login roles, grants.
-- Run as a superuser in an empty database, then crm_data.sql. Idempotent.
--   createdb crm && psql -v ON_ERROR_STOP=1 -d crm -f crm_schema.sql -f crm_data.sql
SET client_min_messages = warning;

-- Login roles; each password is the role name + '_pw'.
DO $$
DECLARE r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['crm_app', 'marketing', 'support_agent', 'analyst', 'legacy_app'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
      EXECUTE format('CREATE ROLE %I LOGIN PASSWORD %L', r, r || '_pw');
    ELSE
      EXECUTE format('ALTER ROLE %I LOGIN PASSWORD %L', r, r || '_pw');
    END IF;
  END LOOP;
END $$;

DROP TABLE IF EXISTS public.consent, public.support_tickets, public.orders, public.customers CASCADE;

CREATE TABLE public.customers (
  id             integer PRIMARY KEY,
  full_name      text NOT NULL,
  email          text,
  phone          text,
  ssn            text,
  birth_date     date,
  street         text,
  city           text NOT NULL,
  zip            text,
  country        text NOT NULL,
  notes          text,
  lifetime_value numeric(12,2) NOT NULL DEFAULT 0 CHECK (lifetime_value >= 0),
  created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX customers_email_key ON public.customers (email);
COMMENT ON TABLE public.customers IS 'CRM customers: one row per data subject';

CREATE TABLE public.orders (
  id          integer PRIMARY KEY,
  customer_id integer NOT NULL REFERENCES public.customers(id),
  ordered_at  timestamptz NOT NULL,
  total       numeric(10,2) NOT NULL CHECK (total >= 0),
  status      text NOT NULL CHECK (status IN ('new', 'paid', 'shipped', 'delivered', 'returned', 'cancelled'))
);
CREATE INDEX orders_customer_idx ON public.orders (customer_id);
CREATE SEQUENCE public.orders_id_seq START 100000 OWNED BY public.orders.id;
ALTER TABLE public.orders ALTER COLUMN id SET DEFAULT nextval('public.orders_id_seq');

CREATE TABLE public.support_tickets (
  id          integer PRIMARY KEY,
  customer_id integer NOT NULL REFERENCES public.customers(id),
  opened_at   timestamptz NOT NULL,
  subject     text NOT NULL,
  body        text
);
CREATE INDEX support_tickets_customer_idx ON public.support_tickets (customer_id);
CREATE SEQUENCE public.support_tickets_id_seq START 100000 OWNED BY public.support_tickets.id;
ALTER TABLE public.support_tickets ALTER COLUMN id SET DEFAULT nextval('public.support_tickets_id_seq');

-- Consent per data subject and purpose; pgveil reads it (rules: consent.table).
CREATE TABLE public.consent (
  subject_id integer NOT NULL REFERENCES public.customers(id),
  purpose    text NOT NULL,
  granted    boolean NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (subject_id, purpose)
);

DO $$ BEGIN
  EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO crm_app, marketing, support_agent, analyst, legacy_app',
                 current_database());
END $$;
GRANT USAGE ON SCHEMA public TO crm_app, marketing, support_agent, analyst, legacy_app;
GRANT SELECT ON public.customers, public.orders, public.support_tickets, public.consent
  TO crm_app, marketing, support_agent, analyst, legacy_app;
-- The application and the support desk also write.
GRANT INSERT, UPDATE ON public.customers, public.orders, public.support_tickets TO crm_app;
GRANT INSERT, UPDATE ON public.support_tickets TO support_agent;
GRANT INSERT, UPDATE ON public.consent TO crm_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO crm_app, support_agent;
