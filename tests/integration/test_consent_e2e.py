# Consent end to end through pgveil (rules/examples/crm.yaml): opt-in
# (marketing) and opt-out (ad_sharing) purposes, grants and revocations seen
# by open sessions at their next statement, and failing closed when the
# consent data goes stale (its connection cut), recovering after.
import os
import re
import time

import psycopg
import pytest

from conftest_rules import CRM_RULES
from pgserver import Pgveil, TcpRelay

pytestmark = pytest.mark.pgveil_only

SUBJECT = 777      # changed by these tests only
SUBJECT_OUT = 778


def direct_conn(crm):
    return psycopg.connect(host=crm.pg.host, port=crm.pg.port, user="postgres",
                           dbname=crm.db, autocommit=True)


def session(port, role, purpose, db):
    return psycopg.connect(host="127.0.0.1", port=port, user=role,
                           password=role + "_pw", dbname=db,
                           options="-c pgveil.purpose=%s" % purpose,
                           autocommit=True)


def set_consent(d, subject, purpose, granted):
    if granted is None:
        d.execute("DELETE FROM consent WHERE subject_id = %s AND purpose = %s",
                  (subject, purpose))
    else:
        d.execute("INSERT INTO consent (subject_id, purpose, granted) "
                  "VALUES (%s, %s, %s) ON CONFLICT (subject_id, purpose) "
                  "DO UPDATE SET granted = EXCLUDED.granted", (subject, purpose,
                                                                granted))


def email_of(conn, subject):
    """The subject column must be in the result for consent to apply."""
    return conn.execute("SELECT id, email FROM customers WHERE id = %s",
                        (subject,)).fetchone()[1]


def wait_until(pred, timeout=3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def test_opt_in_grant_and_revoke_reach_an_open_session(crm):
    with direct_conn(crm) as d:
        real = email_of(d, SUBJECT)
        set_consent(d, SUBJECT, "marketing", None)
        with session(crm.pgveil.port, "crm_app", "marketing", crm.db) as s:
            hashed = email_of(s, SUBJECT)
            assert hashed != real and "@" in hashed       # no row: not consented
            set_consent(d, SUBJECT, "marketing", True)
            assert wait_until(lambda: email_of(s, SUBJECT) == real)
            set_consent(d, SUBJECT, "marketing", False)   # revoked
            assert wait_until(lambda: email_of(s, SUBJECT) == hashed)
            set_consent(d, SUBJECT, "marketing", True)
            assert wait_until(lambda: email_of(s, SUBJECT) == real)
            # without the subject column in the result: not consented
            assert s.execute("SELECT email FROM customers WHERE id = %s",
                             (SUBJECT,)).fetchone()[0] == hashed
            # binary and prepared paths decide per row too
            with s.cursor(binary=True) as cur:
                cur.execute("SELECT id, email FROM customers WHERE id = %s",
                            (SUBJECT,), prepare=True)
                assert cur.fetchone()[1] == real
        set_consent(d, SUBJECT, "marketing", None)


def test_opt_out_is_clear_unless_refused(crm):
    with direct_conn(crm) as d:
        real = email_of(d, SUBJECT_OUT)
        set_consent(d, SUBJECT_OUT, "ad_sharing", None)
        with session(crm.pgveil.port, "marketing", "ad_sharing", crm.db) as s:
            assert email_of(s, SUBJECT_OUT) == real       # no row: allowed
            set_consent(d, SUBJECT_OUT, "ad_sharing", False)
            assert wait_until(lambda: email_of(s, SUBJECT_OUT) is None)
            set_consent(d, SUBJECT_OUT, "ad_sharing", True)
            assert wait_until(lambda: email_of(s, SUBJECT_OUT) == real)
            # COPY decides per row as well
            set_consent(d, SUBJECT_OUT, "ad_sharing", False)
            time.sleep(0.3)
            with s.cursor() as cur:
                with cur.copy("COPY (SELECT id, email FROM customers WHERE id "
                              "= %d) TO STDOUT" % SUBJECT_OUT) as cp:
                    data = b"".join(bytes(b) for b in cp)
            assert data == b"%d\t\\N\n" % SUBJECT_OUT
        set_consent(d, SUBJECT_OUT, "ad_sharing", None)


def test_stale_consent_fails_closed_and_recovers(crm, tmp_path):
    """Consent data older than max_staleness counts as no consent; the
    control/consent connections go through a relay the test cuts."""
    rules = tmp_path / "crm.yaml"
    rules.write_text(open(CRM_RULES).read().replace("max_staleness: 5s",
                                                     "max_staleness: 1s"))
    relay = TcpRelay(crm.pg.host, crm.pg.port).start()
    dsn = "host=127.0.0.1 port=%d user=postgres dbname=%s" % (relay.port,
                                                             crm.db)
    proxy = Pgveil(crm.pg.addr, ["--rules", str(rules), "--secret-file",
                                 crm.secret_path, "--control-dsn", dsn,
                                 "--workers", "1"])
    proxy.start()
    relay2 = None
    try:
        with direct_conn(crm) as d:
            real = email_of(d, SUBJECT)
            set_consent(d, SUBJECT, "marketing", True)
            with session(proxy.port, "crm_app", "marketing", crm.db) as s:
                assert wait_until(lambda: email_of(s, SUBJECT) == real)
                relay.stop()   # cut pgveil's consent and catalog connections
                d.execute("SELECT pg_terminate_backend(pid) FROM "
                          "pg_stat_activity WHERE application_name LIKE "
                          "'pgveil%%' AND pid <> pg_backend_pid()")
                assert wait_until(lambda: email_of(s, SUBJECT) != real,
                                  timeout=6), "consent never went stale"
                assert "stale" in proxy.logs()
                relay2 = TcpRelay(crm.pg.host, crm.pg.port,
                                  port=relay.port).start()
                assert wait_until(lambda: email_of(s, SUBJECT) == real,
                                  timeout=15), "consent never recovered"
            set_consent(d, SUBJECT, "marketing", None)
    finally:
        if relay2:
            relay2.stop()
        relay.stop()
        proxy.stop()
        proxy.cleanup()
