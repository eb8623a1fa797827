# Failures around pgveil: clients vanishing mid-result, backends killed,
# upstream down, connection limits. pgveil must keep serving afterwards.
import socket
import struct
import threading
import time

import psycopg
import pytest

import pgwire
from conftest import endpoint_of
from pgserver import TcpRelay, free_port

BIG = "SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 1000000) g"


def backends(direct, app):
    with direct.connect(dbname="postgres") as d:
        return [r[0] for r in d.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,)).fetchall()]


def wait_backends_gone(direct, app, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not backends(direct, app):
            return True
        time.sleep(0.1)
    return False


def serves(ep):
    with ep.connect() as c:
        return c.execute("SELECT 'ok', count(*) FROM generate_series(1, 1000)").fetchone() == ("ok", 1000)


@pytest.mark.parametrize("how", ["close", "reset"])
def test_client_disconnects_mid_result(direct, pgveil, how):
    app = "pv_disc_%s" % how
    c = pgwire.connect(pgveil.host, pgveil.port, application_name=app)
    c.send(pgwire.query(BIG))
    got = 0
    while got < 1000:
        tag, _ = c.read_msg()
        got += tag == b"D"
    assert backends(direct, app), "backend should be busy streaming"
    if how == "reset":  # RST instead of FIN
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    # the upstream backend must not be left streaming into the void
    assert wait_backends_gone(direct, app), "upstream backend still alive after client left"
    pgveil.assert_alive()
    assert serves(pgveil)


def test_client_disconnects_psycopg_midstream(direct, pgveil):
    """A driver client that closes while a server-side stream is running."""
    app = "pv_disc_pg3"
    conn = pgveil.connect(application_name=app)
    cur = conn.cursor()
    gen = cur.stream(BIG)
    for i, _ in zip(range(5000), gen):
        pass
    conn.pgconn.finish()  # drop the socket without reading the rest
    assert wait_backends_gone(direct, app)
    pgveil.assert_alive()
    assert serves(pgveil)


def test_upstream_terminated_mid_result(direct, pgveil):
    app = "pv_victim"
    c = pgwire.connect(pgveil.host, pgveil.port, application_name=app, timeout=20)
    try:
        c.send(pgwire.query(BIG))
        got = 0
        while got < 1000:
            tag, _ = c.read_msg()
            got += tag == b"D"
        pids = backends(direct, app)
        assert len(pids) == 1
        with direct.connect(dbname="postgres") as d:
            assert d.execute("SELECT pg_terminate_backend(%s)", (pids[0],)).fetchone() == (True,)
        others, rows, eof = c.read_until_eof(limit_seconds=20)
        assert eof, "client connection not closed after the backend died"
        assert got + rows < 1000000  # the result was cut short
        tags = [t for t, _ in others]
        assert b"Z" not in tags  # no ReadyForQuery from a dead backend
        errs = [pgwire.parse_fields(p) for t, p in others if t == b"E"]
        for e in errs:  # if an error is relayed it must be the server's
            assert e.get("C") in ("57P01", "08006", "08003", "57P02", "57P03"), e
    finally:
        c.close()
    pgveil.assert_alive()
    assert serves(pgveil)
    assert wait_backends_gone(direct, app)


def test_upstream_terminated_while_idle(direct, pgveil):
    app = "pv_idle_victim"
    with pgveil.connect(application_name=app) as v:
        pids = backends(direct, app)
        assert len(pids) == 1
        with direct.connect(dbname="postgres") as d:
            d.execute("SELECT pg_terminate_backend(%s)", (pids[0],))
        time.sleep(0.3)
        with pytest.raises(psycopg.OperationalError):
            v.execute("SELECT 1")
    pgveil.assert_alive()
    assert serves(pgveil)


def test_unreachable_upstream_psycopg(start_pgveil):
    dead = free_port()
    proxy = start_pgveil(["--passthrough"], upstream="127.0.0.1:%d" % dead)
    ep = endpoint_of(proxy)
    for _ in range(2):
        t0 = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as ei:
            psycopg.connect(**ep.kwargs())
        assert time.monotonic() - t0 < 10, "client hung"
        assert str(ei.value).strip()
    assert proxy.alive(), proxy.logs()


def test_unreachable_upstream_error_response(start_pgveil):
    """The client is told why (an ErrorResponse), not just dropped."""
    dead = free_port()
    proxy = start_pgveil(["--passthrough"], upstream="127.0.0.1:%d" % dead)
    c = pgwire.Conn(proxy.host, proxy.port, timeout=10)
    try:
        c.send(pgwire.startup("postgres", "test"))
        t0 = time.monotonic()
        tag, payload = c.read_msg()
        assert time.monotonic() - t0 < 10
        assert tag == b"E", (tag, payload)
        fields = pgwire.parse_fields(payload)
        assert fields.get("S") == "FATAL"
        assert fields.get("C", "").startswith("08") or fields.get("C") == "57P03", fields
        assert fields.get("M")
        with pytest.raises(EOFError):
            c.read_msg()
    finally:
        c.close()
    assert proxy.alive(), proxy.logs()


def test_upstream_comes_back(pg, start_pgveil):
    """Connects fail while the upstream is down and work once it is back."""
    relay = TcpRelay(pg.host, pg.port)
    proxy = start_pgveil(["--passthrough"], upstream="127.0.0.1:%d" % relay.port)
    ep = endpoint_of(proxy)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(**ep.kwargs())
    relay.start()
    try:
        assert serves(ep)
    finally:
        relay.stop()
    assert proxy.alive(), proxy.logs()


def test_max_clients(pgveil, start_pgveil):
    proxy = start_pgveil(["--passthrough", "--max-clients", "2"])
    ep = endpoint_of(proxy)
    a = ep.connect()
    b = ep.connect()
    try:
        t0 = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as ei:
            psycopg.connect(**ep.kwargs())
        assert time.monotonic() - t0 < 10
        assert str(ei.value).strip()
        assert a.execute("SELECT 1").fetchone() == (1,)
    finally:
        a.close()
    deadline = time.monotonic() + 5
    while True:  # the slot is released once pgveil sees the close
        try:
            with ep.connect() as c:
                assert c.execute("SELECT 2").fetchone() == (2,)
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    b.close()
    assert proxy.alive()


def test_many_workers_many_clients(start_pgveil):
    proxy = start_pgveil(["--passthrough", "--workers", "4"])
    ep = endpoint_of(proxy)
    errors = []

    def worker(k):
        try:
            for _ in range(3):
                with ep.connect() as c:
                    for i in range(10):
                        assert c.execute("SELECT %s::int + %s", (k, i)).fetchone() == (k + i,)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert proxy.alive()
