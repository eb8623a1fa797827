# Our own adversarial cases, beyond the shared corpus (tests/leakcases): each
# statement must be refused with SQLSTATE 42501 or answer without any
# protected value (ssn, email, phone, street, notes, full_name, birth date)
# of the marketing purpose in clear. Schema and rules: the leak corpus's.
import os
import re

import psycopg
import pytest


pytestmark = pytest.mark.pgveil_only

# Attacks that try to read values: refused, or no value in clear comes back.
ATTACKS = [
    # predicates and ordering through aliases, ordinals, subqueries
    "SELECT ssn FROM customers ORDER BY 1",
    # expressions, casts, aggregates, whole rows
    "SELECT (SELECT ssn FROM customers LIMIT 1)",
    "SELECT max(ssn) FROM customers",
    "SELECT array_agg(email) FROM customers",
    "SELECT string_agg(phone, ',') FROM customers",
    "SELECT ssn::text FROM customers",
    "SELECT ssn || '' FROM customers",
    "SELECT pg_catalog.textcat(ssn, '') FROM customers",
    "SELECT lower(x) FROM (SELECT ssn x FROM customers) q",
    "SELECT to_json(c.*) FROM customers c",
    "SELECT jsonb_build_object('s', ssn) FROM customers",
    "SELECT xmlelement(name x, ssn) FROM customers",
    "SELECT ROW(c.*)::text FROM customers c",
    "SELECT format('%s', email) FROM customers",
    "SELECT encode(convert_to(ssn, 'UTF8'), 'base64') FROM customers",
    "SELECT md5(ssn) FROM customers",
    "SELECT reverse(email) FROM customers",
    # set operations and recursion (RowDescription loses the table)
    "SELECT ssn FROM customers UNION SELECT 'x'",
    "SELECT ssn FROM customers UNION ALL SELECT ssn FROM customers",
    "WITH RECURSIVE r(s) AS (SELECT ssn FROM customers UNION ALL SELECT s FROM r WHERE false) SELECT s FROM r",
    # views over protected columns
    "SELECT upper(email) FROM customer_contacts",
    # copies, DDL, functions, cursors, prepared statements
    "CREATE TEMP TABLE t_x AS SELECT ssn FROM customers",
    "SELECT ssn INTO TEMP t_y FROM customers",
    "COPY (SELECT upper(ssn) FROM customers) TO STDOUT",
    "COPY customers TO STDOUT (FORMAT binary)",
    "DO $$ BEGIN RAISE NOTICE '%', (SELECT ssn FROM customers LIMIT 1); END $$",
    "DECLARE c1 CURSOR WITH HOLD FOR SELECT upper(ssn) FROM customers",
    "SELECT query_to_xml('select ssn from customers', true, true, '')",
    "SELECT pg_notify('ch', ssn) FROM customers",
    "SELECT lo_from_bytea(0, convert_to((SELECT ssn FROM customers LIMIT 1), 'UTF8'))",
    # whole rows taken apart, composites, arrays, windows
    "SELECT (c).ssn FROM customers c",
    "SELECT (customers).* FROM customers",
    "SELECT (c.*).email FROM customers c",
    "SELECT id, lag(ssn) OVER () FROM customers",
    "SELECT ARRAY[ssn] FROM customers",
    "SELECT COALESCE(ssn) FROM customers",
    "SELECT CASE WHEN true THEN ssn END FROM customers",
    "SELECT ssn::varchar FROM customers",
    "SELECT pg_column_size(notes) FROM customers",
    "VALUES ((SELECT ssn FROM customers LIMIT 1))",
    "SELECT * FROM (VALUES (1)) v, LATERAL (SELECT upper(email) FROM customers LIMIT 1) s",
    # identifier tricks
    'SELECT U&"\\0073sn" || \'\' FROM customers',
]

# Inference through predicates, ordering, grouping, error oracles and
# statistics: the output carries no protected value, so only a refusal is
# a pass.
INFERENCE = [
    "SELECT * FROM (SELECT ssn AS x FROM customers) s WHERE x LIKE '1%'",
    "SELECT id FROM customers ORDER BY ssn",
    "SELECT id FROM customers WHERE id IN (SELECT id FROM customers WHERE ssn > '5')",
    "SELECT id FROM customers c WHERE EXISTS (SELECT 1 FROM customers d WHERE d.id = c.id AND d.ssn LIKE '4%')",
    "SELECT id FROM customers LIMIT (SELECT count(*) FROM customers WHERE ssn LIKE '1%')",
    "SELECT 1/(CASE WHEN ssn LIKE '1%' THEN 0 ELSE 1 END) FROM customers",
    "SELECT id FROM customers GROUP BY id, ssn",
    "SELECT DISTINCT ON (ssn) id FROM customers",
    "SELECT id, row_number() OVER (ORDER BY ssn) FROM customers",
    "SELECT c.id FROM customers c JOIN customers d ON c.ssn = d.ssn",
    "SELECT id FROM customers WHERE customers = customers",
    "SELECT email FROM customer_contacts WHERE email LIKE '%a%'",
    "PREPARE p1 AS SELECT id FROM customers WHERE ssn = $1",
    "SELECT * FROM pg_stats WHERE tablename = 'customers'",
    "EXPLAIN (VERBOSE, ANALYZE) SELECT ssn FROM customers WHERE ssn = '1'",
    "SELECT set_config('pgveil.purpose', 'support', false)",
    "SELECT * FROM customers c1 NATURAL JOIN customers c2",
    "SELECT count(*) FILTER (WHERE ssn LIKE '1%') FROM customers",
    "SELECT id FROM customers ORDER BY phone COLLATE \"C\"",
    "SELECT id FROM customers WHERE ssn IS NULL",
    "SELECT id FROM customers WHERE (customers.*)::text LIKE '%1%'",
    "SELECT ssn FROM customers GROUP BY ssn",
    "SELECT ssn, count(*) OVER (PARTITION BY ssn) FROM customers",
    "SELECT id FROM customers WHERE ssn BETWEEN '1' AND '5'",
    "SELECT id FROM customers WHERE starts_with(ssn, '1')",
    "SELECT id FROM customers c WHERE c.ssn SIMILAR TO '1%'",
    "SELECT id FROM customers WHERE id IN (SELECT customer_id FROM support_tickets WHERE body LIKE '%a%')",
    "SELECT tax_ref FROM customer_risk WHERE tax_ref LIKE '1%'",
    "SELECT id FROM customers LIMIT 1 OFFSET (SELECT length(ssn) FROM customers LIMIT 1)",
    # a unique-violation oracle: does some customer have this email?
    "INSERT INTO customers (id, full_name, email, city, country) VALUES (99999, 'x', 'guess@ex.test', 'c', 'd')",
    "UPDATE customers SET email = 'guess@ex.test' WHERE id = 1",
    'SELECT "ssn" FROM "public"."customers" WHERE "ssn" = \'x\'',
    "SELECT ssn FROM customers WHERE ssn = ANY (ARRAY['1','2'])",
]

# Plain references: allowed, and every protected value comes back treated.
PLAIN = [
    "SELECT id, ssn, email, phone, street, notes FROM customers ORDER BY id",
    "TABLE customers",
    "SELECT c.ssn, o.total FROM customers c JOIN orders o ON o.customer_id = c.id",
    "SELECT * FROM customer_contacts",
    'SELECT U&"\\0073sn" FROM customers',
    "SELECT ssn FROM ONLY public.customers",
    "WITH x AS (SELECT email, phone FROM customers) SELECT * FROM x",
    "WITH x AS MATERIALIZED (SELECT ssn, notes FROM customers) SELECT * FROM x",
    "SELECT generate_series(1, 1), ssn FROM customers",
    "SELECT ssn FROM (TABLE customers) t",
    "SELECT SSN, NOTES FROM CUSTOMERS",
    "SELECT * FROM customer_risk",
    "SELECT * FROM customer_overview",
    "SELECT * FROM (VALUES (1)) v, LATERAL (SELECT ssn, street FROM customers) s",
]

SECRET_COLS = ("full_name", "email", "phone", "ssn", "street", "notes")


@pytest.fixture(scope="module")
def secrets(pg, leakdb):
    with psycopg.connect(host=pg.host, port=pg.port, user="postgres",
                         dbname=leakdb) as c:
        rows = c.execute("SELECT %s FROM customers" % ", ".join(SECRET_COLS)
                         ).fetchall()
        dates = c.execute("SELECT birth_date::text FROM customers").fetchall()
    vals = {v for r in rows for v in r if v and len(v) >= 6}
    vals |= {d for (d,) in dates if d}
    return vals


def connect(proxy, leakdb):
    return psycopg.connect(host="127.0.0.1", port=proxy.port, user="crm_app",
                           password="crm_app_pw", dbname=leakdb,
                           options="-c pgveil.purpose=marketing",
                           autocommit=True)


def leaked(rows, secrets):
    text = "\n".join(str(v) for r in rows for v in r)
    low = text.lower()
    digits = re.sub(r"\D", "", text)
    for s in secrets:
        if s in text or s.lower() in low or s[::-1] in text:
            return s
        sd = re.sub(r"\D", "", s)
        if len(sd) >= 8 and sd in digits:
            return s
    return None


@pytest.mark.parametrize("sql", ATTACKS)
def test_attack_refused_or_harmless(leak_pgveil, leakdb, secrets, sql):
    with connect(leak_pgveil, leakdb) as c:
        try:
            cur = c.execute(sql)
            rows = cur.fetchall() if cur.description else []
        except psycopg.Error as e:
            assert e.sqlstate in ("42501", "42P01", "42703", "0A000"), (
                sql, e.sqlstate, str(e))
            assert leaked([(str(e),)], secrets) is None, sql
            return
        assert leaked(rows, secrets) is None, (sql, rows[:3])


@pytest.mark.parametrize("sql", INFERENCE)
def test_inference_refused(leak_pgveil, leakdb, secrets, sql):
    with connect(leak_pgveil, leakdb) as c:
        with pytest.raises(psycopg.Error) as ei:
            c.execute(sql)
    assert ei.value.sqlstate == "42501", (sql, str(ei.value))
    assert leaked([(str(ei.value),)], secrets) is None


@pytest.mark.parametrize("sql", PLAIN)
def test_plain_reference_is_masked(leak_pgveil, leakdb, secrets, sql):
    with connect(leak_pgveil, leakdb) as c:
        rows = c.execute(sql).fetchall()
    assert rows, sql
    assert leaked(rows, secrets) is None, (sql, rows[:3])


def test_attack_in_extended_protocol_and_binary(leak_pgveil, leakdb, secrets):
    with connect(leak_pgveil, leakdb) as c:
        with pytest.raises(psycopg.Error) as ei:
            c.execute("SELECT id FROM customers WHERE ssn = %s", ("x",))
        assert ei.value.sqlstate == "42501"
        with c.cursor(binary=True) as cur:
            cur.execute("SELECT ssn, email, phone FROM customers WHERE id = %s",
                        (1,), prepare=True)
            rows = cur.fetchall()
        assert rows and leaked(rows, secrets) is None


def test_refusal_keeps_session_and_transaction_semantics(leak_pgveil, leakdb):
    with connect(leak_pgveil, leakdb) as c:
        c.autocommit = False
        c.execute("SELECT 1")
        with pytest.raises(psycopg.Error) as ei:
            c.execute("SELECT upper(ssn) FROM customers")
        assert ei.value.sqlstate == "42501"
        assert "ssn" in str(ei.value)
        # like any error, the refusal aborts the transaction block
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            c.execute("SELECT 1")
        c.rollback()
        assert c.execute("SELECT count(*) FROM orders").fetchone()[0] > 0


@pytest.mark.parametrize("opt,val", [("standard_conforming_strings", "off"),
                                     ("client_encoding", "SJIS")])
def test_server_reading_sql_differently_is_refused(leak_pgveil, leakdb, opt,
                                                   val):
    """The guard parses like a UTF-8 server with standard strings; a session
    set otherwise at startup (options) gets every statement refused."""
    with psycopg.connect(host="127.0.0.1", port=leak_pgveil.port,
                         user="crm_app", password="crm_app_pw", dbname=leakdb,
                         options="-c pgveil.purpose=marketing -c %s=%s"
                         % (opt, val), autocommit=True) as c:
        with pytest.raises(psycopg.Error) as ei:
            c.execute("SELECT count(*) FROM orders")
        assert ei.value.sqlstate == "42501"


def test_unprotected_writes_still_work(leak_pgveil, leakdb):
    with connect(leak_pgveil, leakdb) as c:
        c.autocommit = False
        assert c.execute("UPDATE customers SET city = city WHERE id = 1"
                         ).rowcount == 1
        c.rollback()
