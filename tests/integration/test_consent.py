# Consent store against a real PostgreSQL: rules/sql/consent_notify.sql on
# the sample CRM, and the C driver tests/unit/test_consent_store.c (full
# load, revocation within 100 ms, 100k-change burst, TRUNCATE, connection
# killed -> stale -> fresh). Once session.c consults the consent store, the
# end-to-end checks through pgveil below run too.
import os
import subprocess

import pytest

from pgserver import REPO, SUPERUSER, clean_env

BUILD = os.environ.get("PGVEIL_BUILD_DIR", os.path.join(REPO, "build"))
SQL = os.path.join(REPO, "rules", "sql")


def dsn(pg, dbname):
    return "host=%s port=%d user=%s dbname=%s" % (pg.host, pg.port, SUPERUSER, dbname)


@pytest.fixture(scope="module")
def crm(pg):
    db = "crm_consent"
    pg.sql('DROP DATABASE IF EXISTS "%s"' % db)
    pg.createdb(db)
    for f in ("crm_schema.sql", "crm_data.sql", "consent_notify.sql"):
        pg.sql_file(os.path.join(SQL, f), dbname=db)
    return db


def listener(pg, db):
    import psycopg2
    c = psycopg2.connect(dsn(pg, db))
    c.autocommit = True
    c.cursor().execute("LISTEN pgveil_consent")
    return c


def collect(conn, secs=1.0, want=None):
    """Payloads heard within secs (or as soon as `want` have arrived)."""
    import select
    import time
    got, end = [], time.monotonic() + secs
    while time.monotonic() < end and (want is None or len(got) < want):
        select.select([conn], [], [], 0.05)
        conn.poll()
        while conn.notifies:
            got.append(conn.notifies.pop(0).payload)
    return got


def strip_seq(p):
    """'1St|<n>|purpose|subject' -> '1St|purpose|subject'."""
    parts = p.split("|", 2)
    assert len(parts) == 3 and parts[1].isdigit(), p
    return parts[0] + "|" + parts[2]


def test_trigger_payloads(pg, crm):
    """The trigger's payloads for insert, update, key change, delete, NULL
    granted and TRUNCATE, as the store parses them."""
    import psycopg
    lc = listener(pg, crm)
    with psycopg.connect(dsn(pg, crm), autocommit=True) as wc:
        wc.execute("DELETE FROM public.consent WHERE subject_id IN (1, 2)")
        wc.execute("INSERT INTO public.consent (subject_id, purpose, granted) "
                   "VALUES (1, 'marketing', true)")
        wc.execute("UPDATE public.consent SET granted = false "
                   "WHERE subject_id = 1 AND purpose = 'marketing'")
        wc.execute("UPDATE public.consent SET subject_id = 2 "
                   "WHERE subject_id = 1 AND purpose = 'marketing'")
        wc.execute("DELETE FROM public.consent WHERE subject_id = 2 "
                   "AND purpose = 'marketing'")
        with wc.transaction():
            wc.execute("INSERT INTO public.consent (subject_id, purpose, granted) "
                       "VALUES (3, 'a|b', true)")  # not a purpose name: not sent
            wc.execute("DELETE FROM public.consent WHERE purpose = 'a|b'")
        got = collect(lc, 1.0)
    lc.close()
    got = [strip_seq(p) for p in got]
    # crm_data.sql: subjects 1 and 2 have marketing and support rows
    assert sorted(got[:4]) == ["1D-|marketing|1", "1D-|marketing|2",
                               "1D-|support|1", "1D-|support|2"], got
    assert got[4:] == ["1St|marketing|1", "1Sf|marketing|1", "1D-|marketing|1",
                       "1Sf|marketing|2", "1D-|marketing|2"], got
    assert not any("a|b" in p for p in got), got


def test_trigger_truncate(pg, crm):
    import psycopg
    lc = listener(pg, crm)
    with psycopg.connect(dsn(pg, crm), autocommit=True) as wc:
        with wc.transaction():
            wc.execute("TRUNCATE public.consent")
            raise psycopg.Rollback()
        with wc.transaction():
            wc.execute("CREATE TEMP TABLE keep AS SELECT * FROM public.consent")
            wc.execute("TRUNCATE public.consent")
            wc.execute("INSERT INTO public.consent SELECT * FROM keep")
        got = collect(lc, 1.0)
    lc.close()
    # the rolled-back TRUNCATE says nothing; the committed one says R
    # first, then the re-inserted rows
    n = int(pg.sql("SELECT count(*) FROM public.consent", dbname=crm))
    seqs = [int(p.split("|")[1]) for p in got[1:]]
    assert seqs == list(range(1, n + 1)), seqs[:5]  # one counter per transaction
    assert got[0] == "1R" and got.count("1R") == 1, got[:5]
    assert len(got) == 1 + n and all(p.startswith("1S") for p in got[1:]), got[:5]


def test_consent_store(pg):
    """The C driver of the store API against this server."""
    binary = os.path.join(BUILD, "tests", "test_consent_store")
    if not os.path.exists(binary):
        pytest.skip("%s not built (make %s)" % (binary, os.path.relpath(binary, REPO)))
    db = "consent_store"
    pg.sql('DROP DATABASE IF EXISTS "%s"' % db)
    pg.createdb(db)
    p = subprocess.run([binary], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env=clean_env({"PGVEIL_TEST_DSN": dsn(pg, db)}), timeout=120)
    out = p.stdout.decode(errors="replace")
    print(out)  # timings, shown with pytest -s
    assert p.returncode == 0, out
    assert "test_consent_store:" in out and " 0 failed" in out, out
    assert "skipped" not in out, out
