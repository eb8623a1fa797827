# The audit log, the disclosure ledger and explanation notices against the
# sample CRM (its own copy, database crm_audit): refusals and touched
# statements parsed back from the JSON lines, no protected value in the
# log, SIGUSR1 rotation, `pgveil ledger`, and `explain: notice`.
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest_rules import CRM_RULES, SECRET, load_crm
from pgserver import SUPERUSER, Pgveil, pgveil_bin

pytestmark = pytest.mark.pgveil_only

DB = "crm_audit"
SUBJECT = 19  # no consent row in crm_data.sql (g % 10 == 9)


class Env:
    def __init__(self, pg, proxy, tmp, log):
        self.pg, self.proxy, self.tmp, self.log = pg, proxy, tmp, log

    def connect(self, role, purpose=None, app="audit-test", **kw):
        import psycopg
        opts = "-c pgveil.purpose=%s" % purpose if purpose else None
        return psycopg.connect(host=self.proxy.host, port=self.proxy.port,
                               user=role, dbname=DB, autocommit=True,
                               connect_timeout=10, application_name=app,
                               options=opts, **kw)

    def direct(self):
        import psycopg
        return psycopg.connect(host=self.pg.host, port=self.pg.port,
                               user=SUPERUSER, dbname=DB, autocommit=True)

    def entries(self, path=None, want=None, timeout=5.0):
        """The log's entries; waits until `want(entries)` holds (the writer
        is asynchronous)."""
        path = path or self.log
        end = time.monotonic() + timeout
        while True:
            got = []
            if os.path.exists(path):
                with open(path, encoding="utf-8") as f:
                    for line in f:
                        got.append(json.loads(line))  # every line is JSON
            if want is None or want(got) or time.monotonic() > end:
                return got
            time.sleep(0.05)


@pytest.fixture(scope="module")
def env(pg):
    if os.environ.get("PGVEIL_DIRECT") == "1":
        pytest.skip("pgveil only")
    load_crm(pg, DB)
    tmp = tempfile.mkdtemp(prefix="pgveil-audit-")
    secret = os.path.join(tmp, "secret")
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(SECRET)
    log = os.path.join(tmp, "audit.log")
    dsn = "host=%s port=%d user=%s dbname=%s" % (pg.host, pg.port, SUPERUSER, DB)
    proxy = Pgveil(pg.addr, ["--rules", CRM_RULES, "--secret-file", secret,
                             "--control-dsn", dsn, "--workers", "2",
                             "--audit-log", log])
    proxy.start()
    try:
        yield Env(pg, proxy, tmp, log)
    finally:
        proxy.stop()
        proxy.cleanup()
        if os.environ.get("PGVEIL_KEEP_AUDIT"):
            shutil.copytree(tmp, os.environ["PGVEIL_KEEP_AUDIT"], dirs_exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)


def by_fp_event(entries, event):
    return [e for e in entries if e["event"] == event]


def test_refused_statements_are_logged_with_reason(env):
    import psycopg
    refused = [
        "SELECT id FROM customers WHERE ssn = '078-05-1120'",
        "SELECT id, length(notes) FROM customers",
        "SELECT id FROM customers ORDER BY street",
    ]
    reasons = []
    with env.connect("crm_app", "marketing", app="audit-refusals") as c:
        for q in refused:
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as ei:
                c.execute(q)
            reasons.append(ei.value.diag.message_primary)
    got = env.entries(want=lambda es: sum(
        1 for e in es if e["event"] == "refused"
        and e["application_name"] == "audit-refusals") >= len(refused))
    mine = [e for e in got if e["event"] == "refused"
            and e["application_name"] == "audit-refusals"]
    assert [e["reason"] for e in mine] == reasons
    for e in mine:
        assert e["role"] == "crm_app" and e["database"] == DB
        assert e["purpose"] == "marketing"
        assert e["client"].startswith("127.0.0.1:")
        assert len(e["fingerprint"]) == 16
        assert "public.customers" in e["tables"]
        assert "rows" not in e
    # the literal of the first statement is nowhere in the log
    with open(env.log, encoding="utf-8") as f:
        assert "078-05-1120" not in f.read()


def test_touched_statements_have_columns_actions_rows(env):
    with env.connect("crm_app", "marketing", app="audit-touched") as c:
        rows = c.execute("SELECT id, email, ssn, phone, birth_date FROM customers "
                         "WHERE id <= 25 ORDER BY id").fetchall()
        one = c.execute("SELECT id, notes FROM customers WHERE id = %s",
                        (7,)).fetchall()  # extended protocol
        c.execute("SELECT id, city FROM customers WHERE id = 1")  # unprotected
        c.execute("SELECT 1; SELECT id, street FROM customers WHERE id < 4; "
                  "SELECT 2")
    assert len(rows) == 25 and len(one) == 1

    def mine(es):
        return [e for e in es if e["event"] == "statement"
                and e["application_name"] == "audit-touched"]
    got = mine(env.entries(want=lambda es: len(mine(es)) >= 3))
    assert len(got) == 3, got
    first, second, third = got
    assert first["rows"] == 25 and first["tables"] == ["public.customers"]
    cols = {c["column"]: c for c in first["columns"]}
    assert set(cols) == {"email", "ssn", "phone", "birth_date"}
    assert cols["ssn"]["action"] == "withhold"
    assert cols["birth_date"]["action"] == "generalize(year)"
    assert cols["email"]["action"] == "clear"
    assert cols["email"]["consent"] == "required"
    assert cols["email"]["otherwise"] == "hash"
    assert second["rows"] == 1
    assert [c["column"] for c in second["columns"]] == ["notes"]
    assert second["columns"][0]["action"] == "withhold"
    assert third["rows"] == 3
    assert [c["column"] for c in third["columns"]] == ["street"]
    for e in got:
        assert e["role"] == "crm_app" and e["purpose"] == "marketing"
        assert "error" not in e
    # same statement, other values: same fingerprint
    with env.connect("crm_app", "marketing", app="audit-fp") as c:
        c.execute("SELECT id, notes FROM customers WHERE id = %s", (8,))
    fp = [e for e in env.entries(want=lambda es: any(
        x.get("application_name") == "audit-fp" for x in es))
        if e.get("application_name") == "audit-fp"]
    assert fp and fp[0]["fingerprint"] == second["fingerprint"]


def test_no_protected_value_in_the_log(env):
    cols = ["full_name", "email", "phone", "ssn", "birth_date", "street", "zip",
            "notes"]
    with env.connect("crm_app", "marketing", app="audit-values") as c:
        c.execute("SELECT id, %s FROM customers WHERE id <= 40" % ", ".join(cols))
        c.execute("SELECT id, %s FROM customers WHERE id = %%s" % ", ".join(cols),
                  (5,))
        with c.cursor() as cur:
            with cur.copy("COPY (SELECT id, email, ssn FROM customers "
                          "WHERE id <= 10) TO STDOUT") as cp:
                for _ in cp:
                    pass
    with env.connect("support_agent", "support", app="audit-values") as c:
        c.execute("SELECT customers.id, ssn, notes, subject, body FROM customers "
                  "JOIN support_tickets t ON t.customer_id = customers.id "
                  "WHERE customers.id <= 40")
    env.entries(want=lambda es: sum(1 for e in es if e.get(
        "application_name") == "audit-values") >= 4)
    with env.direct() as d:
        real = d.execute("SELECT %s FROM customers WHERE id <= 40"
                         % ", ".join(cols)).fetchall()
        tickets = d.execute("SELECT subject, body FROM support_tickets "
                            "WHERE customer_id <= 40").fetchall()
    with open(env.log, encoding="utf-8") as f:
        text = f.read()
    checked = 0
    for row in real + tickets:
        for v in row:
            if v is None:
                continue
            v = str(v)
            if len(v) < 6:  # years, short zips: too common to grep
                continue
            assert v not in text, "protected value in the audit log: %r" % v
            checked += 1
    assert checked > 200


def test_sigusr1_reopens_the_log(env):
    moved = env.log + ".1"
    with env.connect("crm_app", "marketing", app="audit-before") as c:
        c.execute("SELECT id, ssn FROM customers WHERE id = 1")
    env.entries(want=lambda es: any(e.get("application_name") == "audit-before"
                                    for e in es))
    os.rename(env.log, moved)
    os.kill(env.proxy.proc.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while not os.path.exists(env.log) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.path.exists(env.log), "SIGUSR1 did not reopen the audit log"
    with env.connect("crm_app", "marketing", app="audit-after") as c:
        c.execute("SELECT id, ssn FROM customers WHERE id = 2")
    new = env.entries(want=lambda es: any(
        e.get("application_name") == "audit-after" for e in es))
    old = env.entries(moved)
    assert any(e.get("application_name") == "audit-after" for e in new)
    assert not any(e.get("application_name") == "audit-after" for e in old)
    assert any(e.get("application_name") == "audit-before" for e in old)
    assert env.proxy.alive()


def ledger(env, subject):
    files = [f for f in (env.log + ".1", env.log) if os.path.exists(f)]
    cmd = [pgveil_bin(), "ledger"]
    for f in files:
        cmd += ["--audit-log", f]
    cmd += ["--subject", str(subject)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def test_ledger_lists_consented_disclosures(env):
    with env.direct() as d:
        email = d.execute("SELECT email FROM customers WHERE id = %s",
                          (SUBJECT,)).fetchone()[0]
    before = ledger(env, SUBJECT)
    assert before.returncode == 0, before.stderr
    assert "(0 disclosures)" in before.stdout
    with env.connect("crm_app", "marketing", app="audit-ledger") as c:
        got = c.execute("SELECT email FROM customers WHERE id = %s",
                        (SUBJECT,)).fetchone()[0]
        assert got != email  # no consent yet: hashed
        c.execute("INSERT INTO consent (subject_id, purpose, granted) "
                  "VALUES (%s, 'marketing', true)", (SUBJECT,))
        deadline = time.monotonic() + 10
        while got != email and time.monotonic() < deadline:
            time.sleep(0.1)
            got = c.execute("SELECT id, email, phone FROM customers "
                            "WHERE id = %s", (SUBJECT,)).fetchone()[1]
        assert got == email, "consent not applied within 10 s"
        c.execute("SELECT id, email FROM customers WHERE id BETWEEN 10 AND 30")
        with c.cursor() as cur:
            with cur.copy("COPY (SELECT id, phone FROM customers WHERE id = %d) "
                          "TO STDOUT" % SUBJECT) as cp:
                copied = b"".join(bytes(b) for b in cp)
        assert copied.startswith(b"%d\t" % SUBJECT)

    def mine(es):
        return [e for e in es if e["event"] == "ledger"
                and e["application_name"] == "audit-ledger"]
    led = mine(env.entries(want=lambda es: len(mine(es)) >= 3))
    assert led, "no ledger entry"
    assert all(str(SUBJECT) in e["subjects"] for e in led[-3:])
    assert led[-1]["columns"] == ["phone"] and led[-1]["subjects"] == [str(SUBJECT)]
    wide = led[-2]
    assert wide["table"] == "public.customers" and wide["columns"] == ["email"]
    # only subjects who consented: 10..30 with g % 10 < 7, plus SUBJECT
    expect = sorted([str(g) for g in range(10, 31) if g % 10 < 7] + [str(SUBJECT)],
                    key=int)
    assert sorted(wide["subjects"], key=int) == expect
    # the email itself is not in the log
    with open(env.log, encoding="utf-8") as f:
        assert email not in f.read()
    out = ledger(env, SUBJECT)
    assert out.returncode == 0, out.stderr
    lines = [l for l in out.stdout.splitlines() if "audit-ledger" in l]
    assert len(lines) >= 3, out.stdout
    for l in lines:
        assert "crm_app" in l and "marketing" in l and "127.0.0.1:" in l
        assert "public.customers: " in l
    # unreadable file: exit 1
    bad = subprocess.run([pgveil_bin(), "ledger", "--audit-log",
                          os.path.join(env.tmp, "missing.log"), "--subject", "1"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1


def test_explain_notice_names_columns(env):
    notices = []
    with env.connect("analyst", None, app="audit-explain") as c:
        c.add_notice_handler(lambda d: notices.append(d.message_primary))
        rows = c.execute("SELECT id, full_name, birth_date, city FROM customers "
                         "WHERE id <= 3 ORDER BY id").fetchall()
        assert len(rows) == 3
        assert notices == [
            "pgveil: full_name hashed (purpose analytics); "
            "birth_date generalized (purpose analytics)"]
        notices.clear()
        c.execute("SELECT id, email AS contact FROM customers WHERE id = -1")
        assert notices == ["pgveil: contact hashed (purpose analytics)"]
        notices.clear()
        c.execute("SELECT id, ssn FROM customers WHERE id = %s", (4,))
        c.execute("SELECT id, ssn FROM customers WHERE id = %s", (5,))
        assert notices == ["pgveil: ssn withheld (purpose analytics)"] * 2
        notices.clear()
        c.execute("SELECT id, city FROM customers WHERE id <= 3")
        assert notices == []
    # other purposes stay silent
    with env.connect("crm_app", "marketing", app="audit-explain") as c:
        c.add_notice_handler(lambda d: notices.append(d.message_primary))
        c.execute("SELECT id, ssn FROM customers WHERE id <= 3")
    assert notices == []


def test_prepared_statements_and_hostile_names(env):
    import psycopg
    app = 'evil"}\t{"event":"ledger","subjects":["19"]}\\'
    with env.connect("crm_app", "marketing", app=app) as c:
        for i in (1, 2, 3):
            c.execute("SELECT id, ssn FROM customers WHERE id <= %s", (i,),
                      prepare=True)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SELECT id FROM customers WHERE notes = %s", ("x",))

    def mine(es):
        return [e for e in es if e.get("application_name") == app]
    got = mine(env.entries(want=lambda es: len(mine(es)) >= 4))
    stmts = [e for e in got if e["event"] == "statement"]
    assert [e["rows"] for e in stmts] == [1, 2, 3]
    assert len({e["fingerprint"] for e in stmts}) == 1
    refused = [e for e in got if e["event"] == "refused"]
    assert len(refused) == 1 and "notes" in refused[0]["reason"]
    assert not [e for e in got if e["event"] == "ledger"]


def test_refused_purpose_at_startup_is_logged(env):
    """A connection refused because its role may not declare the purpose
    leaves a "refused" entry (no statement: empty table list)."""
    import psycopg
    with pytest.raises(psycopg.OperationalError) as ei:
        env.connect("analyst", "support", app="audit-startup")
    assert "may not declare purpose" in str(ei.value)
    got = env.entries(want=lambda es: any(
        e["event"] == "refused" and e["application_name"] == "audit-startup"
        for e in es))
    mine = [e for e in got if e["event"] == "refused"
            and e["application_name"] == "audit-startup"]
    assert len(mine) == 1
    assert mine[0]["role"] == "analyst"
    assert "support" in mine[0]["reason"]
    assert "connection refused" in mine[0]["reason"]
