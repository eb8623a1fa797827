# Raw-socket protocol cases drivers can't express: byte-at-a-time writes, many
# messages per write, oversized messages, SSL/GSSENC negotiation probes.
import socket
import struct
import time

import pytest

import pgwire
from conftest import endpoint_of

Q = "SELECT g, 'row ' || g AS label FROM generate_series(1, 5) g"
EXPECT = [[str(g).encode(), b"row %d" % g] for g in range(1, 6)]


def test_query_one_byte_at_a_time(pgveil):
    c = pgwire.Conn(pgveil.host, pgveil.port)
    try:
        c.startup(bytewise=True)
        c.send_bytewise(pgwire.query(Q))
        res = c.read_result(raise_error=True)
        assert res.rows() == EXPECT
        assert res.status == b"I"
        # extended protocol, byte by byte, no pauses this time
        c.send_bytewise(pgwire.parse("SELECT $1::int * 2", param_oids=(23,)) + pgwire.bind(["21"])
                        + pgwire.describe(b"P") + pgwire.execute() + pgwire.sync(), pause=0)
        res = c.read_result(raise_error=True)
        assert res.rows() == [[b"42"]]
    finally:
        c.close()


def test_many_messages_in_one_write(pgveil):
    with pgwire.connect(pgveil.host, pgveil.port) as c:
        n = 300
        c.send(b"".join(pgwire.query("SELECT %d AS i" % i) for i in range(n)))
        got = [c.read_result(raise_error=True).rows() for _ in range(n)]
        assert got == [[[str(i).encode()]] for i in range(n)]
        # extended: many Parse/Bind/Execute and one Sync in one write
        batch = b"".join(pgwire.parse("SELECT %d, repeat('z', %d)" % (i, i)) + pgwire.bind() + pgwire.execute()
                         for i in range(200))
        c.send(batch + pgwire.sync())
        res = c.read_result(raise_error=True)
        rows = [r for s in res.sets for r in s["rows"]]
        assert rows == [[str(i).encode(), b"z" * i] for i in range(200)]


def test_startup_and_query_in_one_write(pgveil):
    """A client that does not wait for ReadyForQuery before its first query."""
    c = pgwire.Conn(pgveil.host, pgveil.port)
    try:
        c.send(pgwire.startup("postgres", "test") + pgwire.query("SELECT 'eager'"))
        while True:
            tag, _ = c.read_msg()
            if tag == b"Z":
                break
        assert c.read_result(raise_error=True).rows() == [[b"eager"]]
    finally:
        c.close()


def test_large_messages_pass(pgveil):
    """Messages of a few MB in both directions (below the default limit)."""
    with pgwire.connect(pgveil.host, pgveil.port) as c:
        big = "y" * (3 * 1024 * 1024)
        res = c.simple("SELECT length('%s'), repeat('q', 4000000)" % big)
        assert res.rows() == [[b"3145728", b"q" * 4000000]]


def test_ssl_request_declined(pgveil):
    c = pgwire.Conn(pgveil.host, pgveil.port)
    try:
        c.send(pgwire.ssl_request())
        assert c.read_byte() == b"N"
        c.startup()
        assert c.simple(Q).rows() == EXPECT
    finally:
        c.close()


@pytest.mark.pgveil_only  # Debian's PostgreSQL itself answers 'G' (built with GSSAPI)
def test_gssenc_request_declined(pgveil):
    c = pgwire.Conn(pgveil.host, pgveil.port)
    try:
        c.send(pgwire.gssenc_request())
        assert c.read_byte() == b"N"
        # then SSLRequest too, then a plain startup: the libpq fallback order
        c.send(pgwire.ssl_request())
        assert c.read_byte() == b"N"
        c.startup()
        assert c.simple(Q).rows() == EXPECT
    finally:
        c.close()


def test_libpq_sslmode_prefer_and_gssencmode(pgveil):
    """Real libpq negotiation (sslmode=prefer, gssencmode=prefer) succeeds."""
    with pgveil.connect(sslmode="prefer", gssencmode="prefer") as v:
        assert v.execute("SELECT 1").fetchone() == (1,)
        assert v.pgconn.ssl_in_use is False


def test_negotiate_protocol_version(pgveil):
    """A 3.2 client with an unknown _pq_ option: the server's
    NegotiateProtocolVersion reaches the client and the session works."""
    c = pgwire.Conn(pgveil.host, pgveil.port)
    try:
        params = {"_pq_.pgveil_test": "1"}
        c.send(pgwire.startup("postgres", "test", version=(3 << 16) | 2, **params))
        seen = []
        while True:
            tag, payload = c.read_msg()
            seen.append(tag)
            if tag == b"v":
                newest, n = struct.unpack_from("!Ii", payload)
                assert newest >> 16 == 3 and n == 1
                assert payload[8:].rstrip(b"\0") == b"_pq_.pgveil_test"
            if tag in (b"Z", b"E"):
                break
        assert b"v" in seen and seen[-1] == b"Z", seen
        assert c.simple(Q).rows() == EXPECT
    finally:
        c.close()


def test_terminate_message(pgveil):
    c = pgwire.connect(pgveil.host, pgveil.port)
    c.send(pgwire.terminate())
    c.sock.settimeout(5)
    assert c.sock.recv(10) == b""
    c.close()
    pgveil.assert_alive()


@pytest.fixture(scope="module")
def small_limit(pg):
    from conftest import DIRECT
    from pgserver import Pgveil
    if DIRECT:
        pytest.skip("needs bin/pgveil (PGVEIL_DIRECT=1)")
    proxy = Pgveil(pg.addr, ["--passthrough", "--max-message-bytes", "65536"])
    try:
        proxy.start()
        yield endpoint_of(proxy)
    finally:
        proxy.cleanup()


def expect_error_and_close(c):
    c.sock.settimeout(10)
    t0 = time.monotonic()
    msgs = []
    while True:
        try:
            tag, payload = c.read_msg()
        except (EOFError, ConnectionResetError):
            break
        msgs.append((tag, payload))
        assert time.monotonic() - t0 < 10
    errs = [pgwire.parse_fields(p) for t, p in msgs if t == b"E"]
    assert errs, "no ErrorResponse before close: %r" % [t for t, _ in msgs]
    return errs[-1]


@pytest.mark.pgveil_only
def test_oversized_client_message(small_limit, pgveil):
    c = pgwire.connect(small_limit.host, small_limit.port)
    try:
        assert c.simple("SELECT length('%s')" % ("a" * 60000)).rows() == [[b"60000"]]
        try:
            c.send(pgwire.query("SELECT '%s'" % ("a" * 100000)))
        except (BrokenPipeError, ConnectionResetError):
            pass
        err = expect_error_and_close(c)
        assert err.get("S") in ("FATAL", "ERROR")
        text = (err.get("M", "") + " " + err.get("D", "")).lower()
        assert "65536" in text or "too large" in text or "exceeds" in text or "size" in text, err
    finally:
        c.close()
    # the same proxy keeps serving others
    with pgwire.connect(small_limit.host, small_limit.port) as c2:
        assert c2.simple(Q).rows() == EXPECT
    small_limit.assert_alive()


@pytest.mark.pgveil_only
def test_oversized_length_header_only(small_limit):
    """A header announcing 1 GB is rejected at once, without waiting for it."""
    c = pgwire.connect(small_limit.host, small_limit.port)
    try:
        c.send(b"Q" + struct.pack("!I", 1 << 30) + b"SELECT")
        err = expect_error_and_close(c)
        assert err.get("M")
    finally:
        c.close()
    with pgwire.connect(small_limit.host, small_limit.port) as c2:
        assert c2.simple("SELECT 1").rows() == [[b"1"]]


@pytest.mark.pgveil_only
def test_oversized_server_message(small_limit):
    """A server message over the limit: the client gets an error, not garbage
    nor a crash, and the proxy keeps serving (or it is streamed unchanged)."""
    c = pgwire.connect(small_limit.host, small_limit.port)
    try:
        c.send(pgwire.query("SELECT repeat('s', 200000)"))
        msgs = []
        try:
            while True:
                tag, payload = c.read_msg()
                msgs.append((tag, payload))
                if tag == b"Z":
                    break
        except (EOFError, ConnectionResetError):
            pass
        rows = [pgwire.parse_data_row(p) for t, p in msgs if t == b"D"]
        errs = [t for t, _ in msgs if t == b"E"]
        # either relayed intact or refused with an error; never truncated
        assert rows == [[b"s" * 200000]] or errs, [t for t, _ in msgs]
    finally:
        c.close()
    with pgwire.connect(small_limit.host, small_limit.port) as c2:
        assert c2.simple("SELECT 2").rows() == [[b"2"]]
    small_limit.assert_alive()


def test_oversized_startup_packet(pgveil):
    """A 100 kB startup packet is refused (PostgreSQL itself caps it at 10000)."""
    c = pgwire.Conn(pgveil.host, pgveil.port, timeout=10)
    try:
        body = struct.pack("!I", pgwire.PROTO_3_0) + b"user\0postgres\0options\0" + b"x" * 100000 + b"\0\0"
        try:
            c.send(struct.pack("!I", len(body) + 4) + body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        others, rows, eof = c.read_until_eof(10)
        assert eof
        assert b"Z" not in [t for t, _ in others]
    finally:
        c.close()
    pgveil.assert_alive()
    with pgwire.connect(pgveil.host, pgveil.port) as c2:
        assert c2.simple("SELECT 3").rows() == [[b"3"]]


def test_garbage_instead_of_startup(pgveil):
    for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00\x00\x00\x08\x00\x00\x00\x00",
                 b"\x00\x00\x00\x02", b"\xff" * 64):
        c = pgwire.Conn(pgveil.host, pgveil.port, timeout=10)
        try:
            try:
                c.send(junk)
                c.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            others, rows, eof = c.read_until_eof(10)
            assert eof, junk
            assert rows == 0
        finally:
            c.close()
    pgveil.assert_alive()
    with pgwire.connect(pgveil.host, pgveil.port) as c2:
        assert c2.simple("SELECT 4").rows() == [[b"4"]]


def test_function_call_and_flush(pgveil):
    """Flush mid-stream returns results before Sync."""
    with pgwire.connect(pgveil.host, pgveil.port) as c:
        c.send(pgwire.parse("SELECT 'flushed'") + pgwire.bind() + pgwire.execute() + pgwire.flush())
        seen = []
        while b"C" not in seen:
            tag, _ = c.read_msg()
            seen.append(tag)
        assert seen == [b"1", b"2", b"D", b"C"]
        c.send(pgwire.sync())
        assert c.read_result().status == b"I"


def test_copy_both_directions_raw(pgveil):
    with pgwire.connect(pgveil.host, pgveil.port) as c:
        c.simple("DROP TABLE IF EXISTS raw_copy; CREATE TABLE raw_copy (a int, b text)")
        c.send(pgwire.query("COPY raw_copy FROM STDIN"))
        tag, _ = c.read_msg()
        assert tag == b"G"
        # CopyData split arbitrarily across rows, many in one write
        payload = b"".join(b"%d\tv%d\n" % (i, i) for i in range(10000))
        chunks = [payload[i:i + 777] for i in range(0, len(payload), 777)]
        c.send(b"".join(pgwire.copy_data(ch) for ch in chunks) + pgwire.copy_done())
        res = c.read_result(raise_error=True)
        assert res.sets[0]["tag"] == "COPY 10000"
        c.send(pgwire.query("COPY (SELECT * FROM raw_copy ORDER BY a) TO STDOUT"))
        out = bytearray()
        while True:
            tag, p = c.read_msg()
            if tag == b"d":
                out += p
            elif tag == b"Z":
                break
        assert bytes(out) == payload
