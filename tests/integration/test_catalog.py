# Catalog resolution against a real PostgreSQL: `pgveil --check` on the
# shipped CRM rules, a missing column and a misfit action; the control
# thread's DDL pick-up (tests/unit/test_control.c with PGVEIL_TEST_DSN); and,
# once main wires the control thread, startup refusal and fail-closed
# sessions after a protected column is renamed.
import os
import re
import shutil
import subprocess
import tempfile
import time

import pytest

from pgserver import REPO, SUPERUSER, clean_env, pgveil_bin, run_pgveil

CRM_RULES = os.path.join(REPO, "rules", "examples", "crm.yaml")
CRM_SCHEMA = os.path.join(REPO, "rules", "sql", "crm_schema.sql")
NOTIFY_SQL = os.path.join(REPO, "rules", "sql", "catalog_notify.sql")
BUILD = os.environ.get("PGVEIL_BUILD_DIR", os.path.join(REPO, "build"))

# Enough of the sample CRM for crm.yaml, when rules/sql/crm_schema.sql is
# not there.
FALLBACK_SCHEMA = """
CREATE TABLE public.customers (id int PRIMARY KEY, full_name text, email text,
  phone text, ssn text, birth_date date, street text, city text, zip text,
  country text, notes text, lifetime_value numeric(12,2), created_at timestamptz);
CREATE TABLE public.support_tickets (id int PRIMARY KEY, customer_id int,
  opened_at timestamptz, subject text, body text);
CREATE TABLE public.consent (subject_id int, purpose text, granted boolean,
  updated_at timestamptz);
"""


def dsn(pg, dbname):
    return "host=%s port=%d user=%s dbname=%s" % (pg.host, pg.port, SUPERUSER, dbname)


def fresh_db(pg, name):
    pg.sql('DROP DATABASE IF EXISTS "%s"' % name)
    pg.createdb(name)
    if os.path.exists(CRM_SCHEMA):
        pg.sql_file(CRM_SCHEMA, dbname=name)
    else:
        pg.sql(FALLBACK_SCHEMA, dbname=name)
    return name


@pytest.fixture(scope="module")
def crmdb(pg):
    return fresh_db(pg, "crm_catalog")


@pytest.fixture
def tmpdir_():
    d = tempfile.mkdtemp(prefix="pgveil-cat-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def check_available():
    return run_pgveil(["--check", "--rules", CRM_RULES])


def run_check(rules_path, pg, db):
    p = run_pgveil(["--check", "--rules", rules_path, "--control-dsn", dsn(pg, db)],
                   timeout=60)
    return p.returncode, (p.stdout + p.stderr).decode(errors="replace")


def edited_rules(tmpdir_, old, new):
    """crm.yaml with one line changed; returns (path, 1-based line number)."""
    with open(CRM_RULES) as f:
        lines = f.read().split("\n")
    idx = [i for i, l in enumerate(lines) if l.rstrip() == old]
    assert len(idx) == 1, "crm.yaml changed: %r not found once" % old
    lines[idx[0]] = new
    path = os.path.join(tmpdir_, "rules.yaml")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path, idx[0] + 1


@pytest.mark.pgveil_only
def test_check_crm_ok(pg, crmdb, require_pgveil):
    check_available()
    rc, out = run_check(CRM_RULES, pg, crmdb)
    assert rc == 0, out
    assert "rules OK" in out
    assert re.search(r'catalog OK: database "crm_catalog", 2 relations, 11 '
                     r'protected columns', out), out


@pytest.mark.pgveil_only
def test_check_missing_column(pg, crmdb, tmpdir_, require_pgveil):
    check_available()
    path, line = edited_rules(tmpdir_, "      street:", "      streat:")
    rc, out = run_check(path, pg, crmdb)
    assert rc == 1, out
    want = '%s:%d:7: column public.customers.streat does not exist in database "crm_catalog"' % (path, line)
    assert want in out, out
    assert "catalog INVALID: 1 problem" in out, out


@pytest.mark.pgveil_only
def test_check_misfit_action(pg, crmdb, tmpdir_, require_pgveil):
    check_available()
    path, line = edited_rules(tmpdir_, "      notes: withhold              # a bare action: every purpose",
                              '      notes: "generalize(year)"')
    rc, out = run_check(path, pg, crmdb)
    assert rc == 1, out
    want = ("%s:%d:14: action generalize(year) (default) does not fit column "
            "public.customers.notes of type text" % (path, line))
    assert want in out, out


@pytest.mark.pgveil_only
def test_check_missing_table_and_db(pg, crmdb, tmpdir_, require_pgveil):
    check_available()
    path, line = edited_rules(tmpdir_, "  public.support_tickets:", "  public.tickets:")
    rc, out = run_check(path, pg, crmdb)
    assert rc == 1, out
    assert '%s:%d:3: table public.tickets does not exist in database "crm_catalog"' % (path, line) in out, out
    rc, out = run_check(CRM_RULES, pg, "no_such_db")
    assert rc == 1, out
    assert 'database "no_such_db" does not exist' in out, out


def test_control_thread(pg):
    """The C test of the control API: startup resolution, DDL through
    NOTIFY and the periodic check, lazy databases, reloads."""
    binary = os.path.join(BUILD, "tests", "test_control")
    if not os.path.exists(binary):
        pytest.skip("%s not built (make %s)" % (binary, os.path.relpath(binary, REPO)))
    db = "ctl_test"
    pg.sql('DROP DATABASE IF EXISTS "%s"' % db)
    pg.createdb(db)
    p = subprocess.run([binary], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env=clean_env({"PGVEIL_TEST_DSN": dsn(pg, db)}), timeout=120)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, out
    assert "test_control:" in out and " 0 failed" in out, out
    assert "skipped" not in out, out


# ---- With main wired: the daemon itself ---------------------------------

def serve_args(pg, db, rules, secret):
    return ["--rules", rules, "--control-dsn", dsn(pg, db), "--secret-file", secret,
            "--workers", "1"]


def write_secret(tmpdir_):
    path = os.path.join(tmpdir_, "secret")
    with open(path, "w") as f:
        f.write("0123456789abcdef0123456789abcdef\n")
    os.chmod(path, 0o600)
    return path


@pytest.mark.pgveil_only
def test_serve_refuses_missing_column(pg, crmdb, tmpdir_, require_pgveil):
    path, line = edited_rules(tmpdir_, "      street:", "      streat:")
    p = subprocess.run([pgveil_bin(), "--listen", "127.0.0.1:1", "--upstream", pg.addr]
                       + serve_args(pg, crmdb, path, write_secret(tmpdir_)),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(), timeout=60)
    assert p.returncode != 0
    err = p.stderr.decode(errors="replace")
    assert "column public.customers.streat does not exist" in err, err
    assert "%s:%d:7" % (path, line) in err, err
    assert "0123456789abcdef" not in err


@pytest.mark.pgveil_only
def test_serve_refuses_hash_without_secret(pg, crmdb, require_pgveil):
    p = subprocess.run([pgveil_bin(), "--listen", "127.0.0.1:1", "--upstream", pg.addr,
                        "--rules", CRM_RULES, "--control-dsn", dsn(pg, crmdb)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(), timeout=60)
    assert p.returncode != 0
    assert "--secret-file" in p.stderr.decode(errors="replace")


@pytest.mark.pgveil_only
def test_serve_ddl_rename_fails_closed(pg, tmpdir_, start_pgveil, require_pgveil):
    """Renaming a protected column is noticed at once (event trigger):
    new sessions to that database are refused, naming the column; renaming
    it back lets them in again."""
    import psycopg
    db = fresh_db(pg, "crm_ddl")
    pg.sql_file(NOTIFY_SQL, dbname=db)
    proxy = start_pgveil(serve_args(pg, db, CRM_RULES, write_secret(tmpdir_)), wait=False)
    proxy.start()

    def connect():
        return psycopg.connect(host=proxy.host, port=proxy.port, user=SUPERUSER,
                               dbname=db, autocommit=True, connect_timeout=10)

    def refused_with(fragment, timeout=5.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                with connect() as c:
                    c.execute("SELECT 1").fetchone()
                last = "connected"
            except psycopg.Error as e:
                last = str(e)
                if fragment in last:
                    return last
            time.sleep(0.1)
        raise AssertionError("not refused with %r; last: %s\n%s" % (fragment, last, proxy.logs()))

    with connect() as c:
        assert c.execute("SELECT count(*) FROM public.customers").fetchone() is not None
    pg.sql("ALTER TABLE public.customers RENAME COLUMN email TO email_address", dbname=db)
    msg = refused_with("public.customers.email does not exist")
    assert "crm_ddl" in msg
    pg.sql("ALTER TABLE public.customers RENAME COLUMN email_address TO email", dbname=db)
    deadline = time.monotonic() + 5
    while True:
        try:
            with connect() as c:
                c.execute("SELECT 1").fetchone()
            break
        except psycopg.Error:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    assert proxy.alive()
