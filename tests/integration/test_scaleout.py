# Scale-out (DESIGN.md §8, docs/production.md): two pgveil instances with the
# same rules in front of one PostgreSQL, each following consent through its
# own LISTEN. A revocation committed directly in the database reaches both
# within a second. Owns only the two pgveil processes it starts.
import time
import urllib.request

import pytest

from conftest_rules import connect2, consented_subjects, hash_shape_ok
from pgserver import Endpoint, Pgveil, free_port

pytestmark = pytest.mark.pgveil_only

REVOKE_WITHIN = 1.0  # seconds


def metric(port, name):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


@pytest.fixture
def two_instances(crm):
    started = []
    try:
        for _ in range(2):
            aport = free_port()
            px = Pgveil(crm.pg.addr, crm.serve_args() + ["--admin", "127.0.0.1:%d" % aport])
            px.start()
            started.append((px, aport))
        yield [(Endpoint(px.host, px.port, px, "pgveil"), aport) for px, aport in started]
    finally:
        for px, _ in started:
            px.stop()
            px.cleanup()


def logs_of(ep):
    return "\n".join(ep.proxy.logs().splitlines()[-30:])


def email_of(conn, subject):
    """The email as the session sees it; the subject column (id) must be in
    the result for consent to apply (else nobody has consented)."""
    cur = conn.cursor()
    cur.execute("SELECT id, email FROM customers WHERE id = %d" % subject)
    return cur.fetchone()[1]


def test_revocation_reaches_every_instance(crm, two_instances):
    subject = min(consented_subjects(crm.direct, "marketing"))
    clear = crm.pg.sql("SELECT email FROM customers WHERE id = %d" % subject,
                       dbname="crm").strip()
    assert "@" in clear
    # Each instance has its own consent connection (LISTEN).
    listeners = int(crm.pg.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = 'crm' AND "
        "application_name = 'pgveil-consent'").strip())
    assert listeners >= 3  # the suite's instance and these two

    conns = [connect2(ep, "marketing") for ep, _ in two_instances]
    notifies = [metric(aport, "pgveil_consent_notifies_total")
                for _, aport in two_instances]
    try:
        for c, (ep, _) in zip(conns, two_instances):
            assert email_of(c, subject) == clear, logs_of(ep)  # consented
        crm.pg.sql("UPDATE consent SET granted = false WHERE subject_id = %d "
                   "AND purpose = 'marketing'" % subject, dbname="crm")
        t0 = time.monotonic()
        seen = [None, None]
        while None in seen and time.monotonic() - t0 < 5:
            for i, c in enumerate(conns):
                if seen[i] is None:
                    got = email_of(c, subject)
                    if got != clear:
                        assert hash_shape_ok(clear, got), got  # hashed, not clear
                        seen[i] = time.monotonic() - t0
            time.sleep(0.02)
        assert None not in seen, "revocation not seen by every instance: %r" % seen
        assert max(seen) < REVOKE_WITHIN, seen
        # Each instance heard the change on its own LISTEN connection.
        for (_, aport), before in zip(two_instances, notifies):
            assert metric(aport, "pgveil_consent_notifies_total") > before
        # New sessions on either instance agree.
        for ep, _ in two_instances:
            c = connect2(ep, "marketing")
            assert email_of(c, subject) != clear
            c.close()
    finally:
        crm.pg.sql("UPDATE consent SET granted = true WHERE subject_id = %d "
                   "AND purpose = 'marketing'" % subject, dbname="crm")
    # And a grant comes back to both the same way.
    t0 = time.monotonic()
    while time.monotonic() - t0 < 5:
        if all(email_of(c, subject) == clear for c in conns):
            break
        time.sleep(0.02)
    assert all(email_of(c, subject) == clear for c in conns)
    assert time.monotonic() - t0 < REVOKE_WITHIN
    for c in conns:
        c.close()
