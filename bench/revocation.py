#!/usr/bin/python3
"""bench/revocation.py: time from the COMMIT of a consent revocation to the
first row pgveil re-masks, p50 and p99 (target: p99 <= 100 ms).

A throwaway PostgreSQL with the sample CRM (rules/sql/) and pgveil with
rules/examples/crm.yaml. A marketing session polls one consented subject's
email through pgveil as fast as it can; the bench revokes (UPDATE ...
granted = false) directly, takes the time right after COMMIT returns, and
the poller notes when the email first comes back hashed. Then it grants
again and waits for clear before the next round.
Usage: bench/revocation.py  (ROUNDS=200)"""
import os
import statistics
import sys
import tempfile
import threading
import time

import psycopg

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "harness"))
from pgserver import Pgveil, PgServer  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", "200"))
SUBJECT = 5


def main():
    tmp = tempfile.mkdtemp(prefix="pgveil-revbench-")
    secret = os.path.join(tmp, "secret")
    with open(secret, "w") as f:
        f.write(os.urandom(32).hex())
    os.chmod(secret, 0o600)
    pg = PgServer()
    proxy = None
    try:
        pg.start()
        pg.createdb("crm")
        for f in ("crm_schema.sql", "crm_data.sql", "catalog_notify.sql",
                  "consent_notify.sql"):
            pg.sql_file(os.path.join(ROOT, "rules", "sql", f), dbname="crm")
        dsn = "host=127.0.0.1 port=%d user=postgres dbname=crm" % pg.port
        proxy = Pgveil(pg.addr, ["--rules", os.path.join(
            ROOT, "rules", "examples", "crm.yaml"), "--secret-file", secret,
            "--control-dsn", dsn, "--workers", "2"])
        proxy.start()
        d = psycopg.connect(dsn, autocommit=True)
        real = d.execute("SELECT email FROM customers WHERE id = %s",
                         (SUBJECT,)).fetchone()[0]
        s = psycopg.connect(host="127.0.0.1", port=proxy.port, user="crm_app",
                            dbname="crm", autocommit=True,
                            options="-c pgveil.purpose=marketing")
        state = {"clear": None, "seen_masked": None, "stop": False}

        def poll():
            while not state["stop"]:
                v = s.execute("SELECT id, email FROM customers WHERE id = %s",
                              (SUBJECT,)).fetchone()[1]
                now = time.monotonic()
                state["clear"] = v == real
                if v != real and state["seen_masked"] is None:
                    state["seen_masked"] = now

        def set_granted(g):
            d.execute("INSERT INTO consent (subject_id, purpose, granted) "
                      "VALUES (%s, 'marketing', %s) ON CONFLICT (subject_id, "
                      "purpose) DO UPDATE SET granted = EXCLUDED.granted",
                      (SUBJECT, g))

        t = threading.Thread(target=poll, daemon=True)
        t.start()
        lat = []
        for _ in range(ROUNDS):
            set_granted(True)
            deadline = time.monotonic() + 5
            while state["clear"] is not True and time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(0.005)
            state["seen_masked"] = None
            set_granted(False)
            t0 = time.monotonic()
            while state["seen_masked"] is None and time.monotonic() < t0 + 5:
                time.sleep(0.0002)
            if state["seen_masked"] is not None:
                lat.append(max(0.0, state["seen_masked"] - t0) * 1000)
        state["stop"] = True
        t.join()
        lat.sort()
        p50 = statistics.median(lat)
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        text = ("# Revocation latency (bench/revocation.py)\n\n"
                "ROUNDS=%d, nproc %d: COMMIT of a revocation -> first re-masked "
                "row through pgveil\n\n| p50 | p99 | max | target p99 |\n"
                "|---|---|---|---|\n| %.1f ms | %.1f ms | %.1f ms | <= 100 ms "
                "(%s) |\n" % (len(lat), os.cpu_count(), p50, p99, lat[-1],
                              "met" if p99 <= 100 else "MISSED"))
        os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
        with open(os.path.join(HERE, "out", "revocation.md"), "w") as f:
            f.write(text)
        print(text)
    finally:
        if proxy:
            proxy.stop()
            proxy.cleanup()
        pg.stop()


if __name__ == "__main__":
    main()
