# Rules reload on SIGHUP (a good file takes effect for new sessions and at the
# next statement of open ones; a bad one is logged and the old rules stay) and
# `pgveil --check` against the live CRM catalog.
import os
import re
import shutil
import signal
import tempfile
import time

import psycopg
import pytest

from conftest_rules import CRM_RULES, connect3
from pgserver import Endpoint, Pgveil, run_pgveil

pytestmark = pytest.mark.pgveil_only

SSN_1 = "489-54-7718"   # customers.id = 1 in rules/sql/crm_data.sql


@pytest.fixture
def tmpdir_():
    d = tempfile.mkdtemp(prefix="pgveil-reload-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def crm_lines():
    with open(CRM_RULES) as f:
        return f.read().split("\n")


def edit(lines, after, old, new):
    """lines with the first `old` line that follows the line `after` replaced;
    returns (new lines, 1-based line number of the change)."""
    start = lines.index(after)
    for i in range(start + 1, len(lines)):
        if lines[i] == old:
            out = list(lines)
            out[i] = new
            return out, i + 1
    raise AssertionError("crm.yaml changed: %r after %r not found" % (old, after))


def write(path, lines):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines))
    os.replace(tmp, path)


def ssn_of_1(ep):
    with connect3(ep, "none") as c:
        return c.execute("SELECT ssn FROM customers WHERE id = 1").fetchone()[0]


def wait_for(pred, timeout=5.0, what=""):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError("timed out waiting for %s (last %r)" % (what, last))


@pytest.fixture
def reload_proxy(crm, tmpdir_):
    """(proxy, endpoint, rules path, crm.yaml lines): a second pgveil serving
    a copy of crm.yaml; stopped at the end, and must exit 0."""
    rules = os.path.join(tmpdir_, "rules.yaml")
    lines = crm_lines()
    write(rules, lines)
    proxy = Pgveil(crm.pg.addr, crm.serve_args(rules=rules, workers=1))
    try:
        proxy.start()
        yield proxy, Endpoint(proxy.host, proxy.port, proxy, "pgveil-reload"), rules, lines
    finally:
        rc = proxy.stop()
        logs = proxy.logs()
        proxy.cleanup()
    assert rc == 0, logs[-3000:]


def ssn_held(conn):
    return conn.execute("SELECT ssn FROM customers WHERE id = 1").fetchone()[0]


def test_reload_sighup(reload_proxy):
    proxy, ep, rules, lines = reload_proxy
    assert ssn_of_1(ep) is None                          # default: withhold
    held = connect3(ep, "none")                          # a session open across the reloads
    held_seen = []                                       # (step, ssn the held session saw)
    try:
        assert ssn_held(held) is None

        good, _ = edit(lines, "      ssn:", "        default: withhold",
                       '        default: "mask(keep_last=4)"')
        write(rules, good)
        proxy.proc.send_signal(signal.SIGHUP)
        masked = "*******" + SSN_1[-4:]
        wait_for(lambda: ssn_of_1(ep) == masked, what="new sessions to see mask(keep_last=4)")
        held_seen.append(("after the good reload", ssn_held(held)))
        n_logs = len(proxy.logs())

        # Bad YAML, then an unknown action: logged, old (mask) rules stay.
        bad_yaml = good + ["tables: { public.x: [unclosed"]
        bad_action, bad_line = edit(lines, "      ssn:", "        default: withhold",
                                    "        default: scramble")
        for bad, needle in ((bad_yaml, "YAML"), (bad_action, "scramble")):
            write(rules, bad)
            proxy.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: needle in proxy.logs()[n_logs:],
                     what="pgveil to log the rejected file (%s)" % needle)
            time.sleep(0.3)
            new_logs = proxy.logs()[n_logs:]
            n_logs = len(proxy.logs())
            assert rules in new_logs, new_logs
            if needle == "scramble":
                assert "%s:%d:" % (rules, bad_line) in new_logs, new_logs
            assert proxy.alive(), proxy.logs()
            assert ssn_of_1(ep) == masked, "rules changed after a rejected reload (%s)" % needle
            held_seen.append(("after the rejected reload (%s)" % needle, ssn_held(held)))
        # Other columns still follow the kept rules.
        with connect3(ep, "none") as c:
            row = c.execute("SELECT full_name, phone FROM customers WHERE id = 1").fetchone()
        assert row[0] is None and row[1] == "*************19"
    finally:
        held.close()
    assert proxy.alive()
    # rules/README.md section 14: sessions pick up new rules at their next
    # statement, also when it repeats an earlier statement's text.
    wrong = [(step, v) for step, v in held_seen if v != masked]
    assert not wrong, "open session kept the old rules: %r" % wrong


def test_reload_tightens_open_sessions(reload_proxy):
    """A reload that makes a column stricter applies to a session that was
    open before it, at its next statement, even for a statement it ran
    before (pools keep sessions and repeat statements for hours)."""
    proxy, ep, rules, lines = reload_proxy
    with connect3(ep, "support") as held:
        assert ssn_held(held) == "*******" + SSN_1[-4:]    # support: mask(keep_last=4)
        stricter, _ = edit(lines, "      ssn:", '        support: "mask(keep_last=4)"',
                           "        support: withhold")
        write(rules, stricter)
        proxy.proc.send_signal(signal.SIGHUP)
        with connect3(ep, "support") as probe:
            wait_for(lambda: probe.execute(
                "SELECT ssn, id FROM customers WHERE id = 1").fetchone()[0] is None,
                what="the stricter rules")
        other_text = held.execute("SELECT ssn, id FROM customers WHERE id = 1").fetchone()[0]
        same_text = ssn_held(held)
    assert other_text is None
    assert same_text is None, "open session still sees %r after ssn became withhold" % same_text


# ---- pgveil --check ---------------------------------------------------------------

def test_check_crm_ok(crm):
    p = run_pgveil(["--check", "--rules", CRM_RULES, "--control-dsn", crm.control_dsn],
                   timeout=60)
    out = (p.stdout + p.stderr).decode(errors="replace")
    assert p.returncode == 0, out
    assert "rules OK" in out, out


def test_check_missing_column(crm, tmpdir_):
    rules = os.path.join(tmpdir_, "rules.yaml")
    lines, line = edit(crm_lines(), "  public.customers:", "      street:", "      streat:")
    write(rules, lines)
    p = run_pgveil(["--check", "--rules", rules, "--control-dsn", crm.control_dsn], timeout=60)
    out = (p.stdout + p.stderr).decode(errors="replace")
    assert p.returncode == 1, out
    assert re.search(r"%s:%d:7: .*streat" % (re.escape(rules), line), out), out
    # Without the DSN the file alone is fine.
    p = run_pgveil(["--check", "--rules", rules], timeout=60)
    assert p.returncode == 0, (p.stdout + p.stderr).decode(errors="replace")


def test_check_misfit_action(crm, tmpdir_):
    """generalize(year) on a text column is refused against the catalog."""
    rules = os.path.join(tmpdir_, "rules.yaml")
    lines, line = edit(crm_lines(), "      street:", "        default: withhold",
                       '        default: "generalize(year)"')
    write(rules, lines)
    p = run_pgveil(["--check", "--rules", rules, "--control-dsn", crm.control_dsn], timeout=60)
    out = (p.stdout + p.stderr).decode(errors="replace")
    assert p.returncode == 1, out
    assert "%s:%d:" % (rules, line) in out and "street" in out and "text" in out, out
