# Query cancellation (protocol CancelRequest through pgveil) and relayed auth.
# Uses roles scram_user / md5_user that the harness creates.
import os
import signal
import subprocess
import threading
import time

import psycopg
import pytest

import pgserver
import pgwire
from pgserver import MD5_PASSWORD, MD5_USER, SCRAM_PASSWORD, SCRAM_USER


def test_cancel_psycopg3(pgveil):
    with pgveil.connect() as v:
        timer = threading.Timer(1.0, v.cancel)  # CancelRequest to pgveil's address
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled) as ei:
            v.execute("SELECT pg_sleep(30)")
        elapsed = time.monotonic() - t0
        timer.join()
        assert ei.value.sqlstate == "57014"
        assert elapsed < 6, elapsed
        # the session is usable afterwards
        assert v.execute("SELECT 'still here'").fetchone() == ("still here",)


def test_cancel_psql_sigint(pgveil):
    p = subprocess.Popen(pgveil.psql_cmd() + ["-c", "SELECT pg_sleep(30)"], env=pgserver.clean_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1.5)
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=10)
    assert time.monotonic() - t0 < 6
    assert p.returncode == 1
    assert b"canceling statement due to user request" in err, err


def test_cancel_raw_protocol(pgveil):
    """CancelRequest with the BackendKeyData the client was given; a wrong key
    must not cancel anything."""
    with pgwire.connect(pgveil.host, pgveil.port) as c:
        assert c.pid and c.key
        c.send(pgwire.query("SELECT pg_sleep(3)"))
        time.sleep(0.5)
        wrong = bytes([c.key[0] ^ 0xFF]) + c.key[1:]
        with pgwire.Conn(pgveil.host, pgveil.port) as k:
            k.send(pgwire.cancel_request(c.pid, wrong))
        t0 = time.monotonic()
        res = c.read_result()
        assert res.errors == [] and time.monotonic() - t0 > 1.5  # not cancelled
        c.send(pgwire.query("SELECT pg_sleep(30)"))
        time.sleep(0.5)
        with pgwire.Conn(pgveil.host, pgveil.port) as k:
            k.send(pgwire.cancel_request(c.pid, c.key))
            k.sock.settimeout(5)
            assert k.sock.recv(100) == b""  # server closes the cancel connection
        t0 = time.monotonic()
        res = c.read_result()
        assert time.monotonic() - t0 < 5
        assert [e["C"] for e in res.errors] == ["57014"]
        assert c.simple("SELECT 7").rows() == [[b"7"]]


def test_auth_scram(pgveil):
    with pgveil.connect(user=SCRAM_USER, password=SCRAM_PASSWORD) as v:
        assert v.execute("SELECT current_user, 40 + 2").fetchone() == (SCRAM_USER, 42)
    with pytest.raises(psycopg.OperationalError) as ei:
        psycopg.connect(**pgveil.kwargs(user=SCRAM_USER, password="wrong"))
    assert "password authentication failed" in str(ei.value)
    with pytest.raises(pgwire.ServerError) as ei:
        pgwire.connect(pgveil.host, pgveil.port, user=SCRAM_USER, password="wrong")
    assert ei.value.sqlstate == "28P01"
    with pgwire.connect(pgveil.host, pgveil.port, user=SCRAM_USER, password=SCRAM_PASSWORD) as c:
        assert c.simple("SELECT current_user").rows() == [[SCRAM_USER.encode()]]


def test_auth_md5(pgveil):
    with pgveil.connect(user=MD5_USER, password=MD5_PASSWORD) as v:
        assert v.execute("SELECT current_user").fetchone() == (MD5_USER,)
    with pytest.raises(pgwire.ServerError) as ei:
        pgwire.connect(pgveil.host, pgveil.port, user=MD5_USER, password="wrong")
    assert ei.value.sqlstate == "28P01"
    with pgwire.connect(pgveil.host, pgveil.port, user=MD5_USER, password=MD5_PASSWORD) as c:
        assert c.simple("SELECT current_user").rows() == [[MD5_USER.encode()]]


def test_auth_psql_with_password(pgveil):
    env = pgserver.clean_env({"PGPASSWORD": SCRAM_PASSWORD})
    p = subprocess.run(pgveil.psql_cmd(user=SCRAM_USER) + ["-A", "-t", "-c", "SELECT current_user"],
                       env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"scram_user\n"


def test_unknown_role_and_database(pgveil):
    with pytest.raises(pgwire.ServerError) as ei:
        pgwire.connect(pgveil.host, pgveil.port, user="no_such_role")
    assert ei.value.sqlstate == "28000"
    with pytest.raises(pgwire.ServerError) as ei:
        pgwire.connect(pgveil.host, pgveil.port, database="no_such_db")
    assert ei.value.sqlstate == "3D000"
    pgveil.assert_alive()
