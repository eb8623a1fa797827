# TLS on both legs of pgveil: client leg (--tls-cert/--tls-key/--require-tls),
# upstream leg (--upstream-tls/--upstream-ca), and SCRAM channel binding.
# Owns a test CA made with the openssl CLI and a PostgreSQL with ssl=on.
import os
import pwd
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time

import psycopg
import pytest

import pgserver
from pgserver import SCRAM_PASSWORD, SCRAM_USER, PgServer

pytestmark = pytest.mark.pgveil_only

SSL_REQUEST = struct.pack("!II", 8, 80877103)
GSSENC_REQUEST = struct.pack("!II", 8, 80877104)


def _openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _make_ca(d, name):
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=pgveil test %s" % name, "-keyout", name + ".key",
             "-out", name + ".crt", cwd=d)


def _make_leaf(d, ca, name, cn, san):
    ext = os.path.join(d, name + ".ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=%s\nbasicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\n" % san)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=" + cn,
             "-keyout", name + ".key", "-out", name + ".csr", cwd=d)
    _openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".crt",
             "-CAkey", ca + ".key", "-CAcreateserial", "-days", "2",
             "-extfile", ext, "-out", name + ".crt", cwd=d)


class Certs:
    """ca: the test CA; other: an unrelated CA; server: CN=localhost
    (DNS:localhost, IP:127.0.0.1) signed by ca, used by pgveil's client leg;
    pg: another leaf from ca for PostgreSQL."""

    def __init__(self, d):
        self.dir = d
        _make_ca(d, "ca")
        _make_ca(d, "other")
        _make_leaf(d, "ca", "server", "localhost", "DNS:localhost,IP:127.0.0.1")
        _make_leaf(d, "ca", "pg", "localhost", "DNS:localhost,IP:127.0.0.1")
        for n in os.listdir(d):
            if n.endswith(".key"):
                os.chmod(os.path.join(d, n), 0o600)

    def path(self, name):
        return os.path.join(self.dir, name)


@pytest.fixture(scope="module")
def certs():
    d = tempfile.mkdtemp(prefix="pgveil-tls-")
    try:
        yield Certs(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _enable_ssl(server, cert, key):
    """Turns ssl on in a running PgServer with the given cert and key."""
    for src, dst in ((cert, "server.crt"), (key, "server.key")):
        p = os.path.join(server.datadir, dst)
        shutil.copy(src, p)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(p, pw.pw_uid, pw.pw_gid)
        os.chmod(p, 0o600)
    server.sql("ALTER SYSTEM SET ssl = on")
    server.sql("SELECT pg_reload_conf()")
    for _ in range(50):
        if server.sql("SHOW ssl").strip() == "on":
            return
        time.sleep(0.1)
    raise RuntimeError("ssl did not turn on:\n" + server.log()[-2000:])


@pytest.fixture(scope="module")
def pg_ssl(certs):
    """A PostgreSQL with ssl=on and the `pg` certificate from the test CA."""
    server = PgServer()
    try:
        server.start()
        server.createdb("test")
        _enable_ssl(server, certs.path("pg.crt"), certs.path("pg.key"))
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def pg_ssl_same(certs):
    """A PostgreSQL with ssl=on serving the certificate pgveil serves."""
    server = PgServer()
    try:
        server.start()
        server.createdb("test")
        _enable_ssl(server, certs.path("server.crt"), certs.path("server.key"))
        yield server
    finally:
        server.stop()


def tls_args(certs, *extra):
    return ["--passthrough", "--workers", "1",
            "--tls-cert", certs.path("server.crt"),
            "--tls-key", certs.path("server.key")] + list(extra)


def verify_full(certs, proxy, **kw):
    """libpq keywords for sslmode=verify-full against the test CA; the host
    name is checked as "localhost" while the address is 127.0.0.1."""
    out = dict(host="localhost", hostaddr=proxy.host, port=proxy.port,
               user="postgres", dbname="test", connect_timeout=10,
               sslmode="verify-full", sslrootcert=certs.path("ca.crt"))
    out.update(kw)
    return out


def libpq_env():
    return pgserver.clean_env({"PGSSLCERT": "/nonexistent",
                               "PGSSLKEY": "/nonexistent"})


# ---- client leg --------------------------------------------------------


def test_verify_full_psycopg(certs, start_pgveil):
    proxy = start_pgveil(tls_args(certs))
    with psycopg.connect(autocommit=True, **verify_full(certs, proxy)) as c:
        assert c.pgconn.ssl_in_use
        assert c.execute("SELECT 1 + 41, 'ünïcode'").fetchone() == (42, "ünïcode")
        # a result bigger than a TLS record and than one read buffer
        rows = c.execute("SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g").fetchall()
        assert len(rows) == 20000 and rows[-1] == (20000, "x" * 200)
        # extended protocol, parameters
        assert c.execute("SELECT %s::int * 2", (21,)).fetchone() == (42,)
        # COPY both ways
        c.execute("CREATE TEMP TABLE t (a int, b text)")
        with c.cursor().copy("COPY t FROM STDIN") as cp:
            for i in range(5000):
                cp.write_row((i, "row %d" % i))
        assert c.execute("SELECT count(*), sum(a) FROM t").fetchone() == (5000, sum(range(5000)))
        out = bytearray()
        with c.cursor().copy("COPY t TO STDOUT") as cp:
            for chunk in cp:
                out += chunk
        assert out.count(b"\n") == 5000 and b"4999\trow 4999\n" in out
    assert proxy.alive()


def test_verify_full_psql(certs, start_pgveil):
    proxy = start_pgveil(tls_args(certs))
    dsn = ("host=localhost hostaddr=%s port=%d user=postgres dbname=test "
           "sslmode=verify-full sslrootcert=%s"
           % (proxy.host, proxy.port, certs.path("ca.crt")))
    p = subprocess.run([pgserver.pg_bin("psql"), "-X", "-A", "-t", "-d", dsn, "-c",
                        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                        "-c", "SELECT string_agg(g::text, ',') FROM generate_series(1,5) g"],
                       env=libpq_env(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    assert p.returncode == 0, p.stderr
    # the upstream leg is plaintext: PostgreSQL sees no TLS
    assert p.stdout.decode().split() == ["f", "1,2,3,4,5"]
    p = subprocess.run([pgserver.pg_bin("psql"), "-X", "-d", dsn, "-c", r"\conninfo"],
                       env=libpq_env(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    assert p.returncode == 0, p.stderr
    assert b"SSL connection (protocol: TLSv1." in p.stdout


def test_wrong_ca_refused(certs, start_pgveil):
    proxy = start_pgveil(tls_args(certs))
    with pytest.raises(psycopg.OperationalError) as ei:
        psycopg.connect(**verify_full(certs, proxy, sslrootcert=certs.path("other.crt")))
    assert "certificate verify failed" in str(ei.value)
    assert proxy.alive()


def test_wrong_host_name_refused(certs, start_pgveil):
    proxy = start_pgveil(tls_args(certs))
    with pytest.raises(psycopg.OperationalError) as ei:
        psycopg.connect(**verify_full(certs, proxy, host="pgveil.invalid"))
    assert "does not match host name" in str(ei.value)


def test_require_tls_refuses_plaintext(certs, start_pgveil):
    proxy = start_pgveil(tls_args(certs, "--require-tls"))
    with pytest.raises(psycopg.OperationalError) as ei:
        psycopg.connect(host=proxy.host, port=proxy.port, user="postgres",
                        dbname="test", sslmode="disable", connect_timeout=10)
    assert "pgveil: TLS required" in str(ei.value)
    # raw: the FATAL carries SQLSTATE 28000, then the connection closes
    with socket.create_connection((proxy.host, proxy.port), timeout=10) as s:
        s.sendall(_startup("postgres", "test"))
        data = _read_all(s)
    assert data[:1] == b"E" and b"C28000\x00" in data and b"pgveil: TLS required" in data
    # TLS clients are served
    with psycopg.connect(autocommit=True, **verify_full(certs, proxy)) as c:
        assert c.execute("SELECT 7").fetchone() == (7,)


def test_prefer_without_tls_cert(start_pgveil):
    proxy = start_pgveil(["--passthrough", "--workers", "1"])
    with psycopg.connect(autocommit=True, host=proxy.host, port=proxy.port,
                         user="postgres", dbname="test", sslmode="prefer",
                         connect_timeout=10) as c:
        assert not c.pgconn.ssl_in_use
        assert c.execute("SELECT 'plain'").fetchone() == ("plain",)
    # raw: SSLRequest answered 'N'
    with socket.create_connection((proxy.host, proxy.port), timeout=10) as s:
        s.sendall(SSL_REQUEST)
        assert s.recv(1) == b"N"


def test_gssenc_declined(certs, start_pgveil):
    proxy = start_pgveil(tls_args(certs))
    with socket.create_connection((proxy.host, proxy.port), timeout=10) as s:
        s.sendall(GSSENC_REQUEST)
        assert s.recv(1) == b"N"
        s.sendall(SSL_REQUEST)
        assert s.recv(1) == b"S"


def test_pipelined_after_sslrequest_refused(certs, start_pgveil):
    """SSLRequest and a plaintext StartupMessage in one write: the bytes were
    never encrypted (CVE-2021-23214 class): refused and closed, no 'S'."""
    proxy = start_pgveil(tls_args(certs))
    with socket.create_connection((proxy.host, proxy.port), timeout=10) as s:
        s.sendall(SSL_REQUEST + _startup("postgres", "test"))
        data = _read_all(s)
    assert not data.startswith(b"S")
    assert data[:1] == b"E" and b"unencrypted data after SSLRequest" in data
    assert b"C08P01\x00" in data
    assert proxy.alive()


def test_plaintext_after_s_fails_handshake(certs, start_pgveil):
    """A client that ignores 'S' and talks plaintext: the handshake fails and
    pgveil closes without relaying anything."""
    proxy = start_pgveil(tls_args(certs))
    with socket.create_connection((proxy.host, proxy.port), timeout=10) as s:
        s.sendall(SSL_REQUEST)
        assert s.recv(1) == b"S"
        s.sendall(_startup("postgres", "test"))
        data = _read_all(s)
    assert b"ReadyForQuery" not in data and not data.startswith(b"R")
    assert proxy.alive()
    assert "client TLS" in proxy.logs()


def test_many_tls_clients(certs, start_pgveil):
    proxy = start_pgveil(tls_args(certs))
    conns = [psycopg.connect(autocommit=True, **verify_full(certs, proxy)) for _ in range(20)]
    try:
        for i, c in enumerate(conns):
            assert c.execute("SELECT %s::int", (i,)).fetchone() == (i,)
    finally:
        for c in conns:
            c.close()


def test_bad_cert_file_exits(certs):
    p = pgserver.run_pgveil(["--listen", "127.0.0.1:%d" % pgserver.free_port(),
                             "--upstream", "127.0.0.1:1", "--passthrough",
                             "--tls-cert", certs.path("ca.crt"),
                             "--tls-key", certs.path("server.key")])
    assert p.returncode == 2
    assert b"--tls-key" in p.stderr and b"key values mismatch" in p.stderr, p.stderr
    p = pgserver.run_pgveil(["--listen", "127.0.0.1:%d" % pgserver.free_port(),
                             "--upstream", "127.0.0.1:1", "--passthrough",
                             "--tls-cert", certs.path("nope.crt"),
                             "--tls-key", certs.path("server.key")])
    assert p.returncode == 2 and b"--tls-cert" in p.stderr and b"nope.crt" in p.stderr


# ---- upstream leg ------------------------------------------------------


def _server_ssl(conn):
    return conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()[0]


def test_upstream_verify_full(certs, pg_ssl, start_pgveil):
    proxy = start_pgveil(["--passthrough", "--workers", "1", "--upstream-tls", "verify-full",
                          "--upstream-ca", certs.path("ca.crt")], upstream=pg_ssl.addr)
    with psycopg.connect(autocommit=True, host=proxy.host, port=proxy.port, user="postgres",
                         dbname="test", sslmode="disable", connect_timeout=10) as c:
        assert _server_ssl(c) is True
        rows = c.execute("SELECT g FROM generate_series(1, 50000) g").fetchall()
        assert len(rows) == 50000 and rows[-1] == (50000,)
        c.execute("CREATE TEMP TABLE u (a int)")
        with c.cursor().copy("COPY u FROM STDIN") as cp:
            for i in range(3000):
                cp.write_row((i,))
        assert c.execute("SELECT count(*) FROM u").fetchone() == (3000,)


def test_upstream_verify_full_wrong_ca(certs, pg_ssl, start_pgveil):
    proxy = start_pgveil(["--passthrough", "--workers", "1", "--upstream-tls", "verify-full",
                          "--upstream-ca", certs.path("other.crt")], upstream=pg_ssl.addr)
    t0 = time.monotonic()
    with pytest.raises(psycopg.OperationalError) as ei:
        psycopg.connect(host=proxy.host, port=proxy.port, user="postgres", dbname="test",
                        sslmode="disable", connect_timeout=10)
    assert time.monotonic() - t0 < 5
    msg = str(ei.value)
    assert "TLS with upstream" in msg and "certificate verify failed" in msg, msg
    assert proxy.alive()


class _Relay2(pgserver.TcpRelay):
    """TcpRelay listening on 127.0.0.2 (loopback, absent from the cert)."""

    def start(self):
        import threading
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.2", self.port))
        self.lsock.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()
        return self


def test_upstream_verify_full_wrong_host(certs, pg_ssl, start_pgveil):
    """The certificate names localhost/127.0.0.1; pgveil reaches the server
    as 127.0.0.2 (a relay): the host check fails."""
    try:
        relay = _Relay2(pg_ssl.host, pg_ssl.port).start()
    except OSError:
        pytest.skip("cannot listen on 127.0.0.2")
    try:
        proxy = start_pgveil(["--passthrough", "--workers", "1", "--upstream-tls",
                              "verify-full", "--upstream-ca", certs.path("ca.crt")],
                             upstream="127.0.0.2:%d" % relay.port)
        with pytest.raises(psycopg.OperationalError) as ei:
            psycopg.connect(host=proxy.host, port=proxy.port, user="postgres", dbname="test",
                            sslmode="disable", connect_timeout=10)
        msg = str(ei.value)
        assert "certificate verify failed: IP address mismatch" in msg, msg
    finally:
        relay.stop()


def test_upstream_require(pg_ssl, start_pgveil):
    proxy = start_pgveil(["--passthrough", "--workers", "1", "--upstream-tls", "require"],
                         upstream=pg_ssl.addr)
    with psycopg.connect(autocommit=True, host=proxy.host, port=proxy.port, user="postgres",
                         dbname="test", sslmode="disable", connect_timeout=10) as c:
        assert _server_ssl(c) is True
        assert c.execute("SELECT 'up'").fetchone() == ("up",)


def test_upstream_require_against_plain_server(pg, start_pgveil):
    proxy = start_pgveil(["--passthrough", "--workers", "1", "--upstream-tls", "require"])
    with pytest.raises(psycopg.OperationalError) as ei:
        psycopg.connect(host=proxy.host, port=proxy.port, user="postgres", dbname="test",
                        sslmode="disable", connect_timeout=10)
    assert "does not accept TLS" in str(ei.value)


def test_upstream_prefer_plain_server(pg, start_pgveil):
    proxy = start_pgveil(["--passthrough", "--workers", "1", "--upstream-tls", "prefer"])
    with psycopg.connect(autocommit=True, host=proxy.host, port=proxy.port, user="postgres",
                         dbname="test", sslmode="disable", connect_timeout=10) as c:
        assert _server_ssl(c) is False
        assert c.execute("SELECT 'plain upstream'").fetchone() == ("plain upstream",)


def test_upstream_prefer_ssl_server(pg_ssl, start_pgveil):
    proxy = start_pgveil(["--passthrough", "--workers", "1", "--upstream-tls", "prefer"],
                         upstream=pg_ssl.addr)
    with psycopg.connect(autocommit=True, host=proxy.host, port=proxy.port, user="postgres",
                         dbname="test", sslmode="disable", connect_timeout=10) as c:
        assert _server_ssl(c) is True


def test_both_legs_and_cancel(certs, pg_ssl, start_pgveil):
    proxy = start_pgveil(tls_args(certs, "--upstream-tls", "verify-full",
                                  "--upstream-ca", certs.path("ca.crt")),
                         upstream=pg_ssl.addr)
    with psycopg.connect(autocommit=True, **verify_full(certs, proxy)) as c:
        assert c.pgconn.ssl_in_use and _server_ssl(c) is True
        rows = c.execute("SELECT g, md5(g::text) FROM generate_series(1, 20000) g").fetchall()
        assert len(rows) == 20000
        import threading
        t = threading.Timer(1.0, c.cancel)
        t.start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            c.execute("SELECT pg_sleep(30)")
        t.join()
        assert c.execute("SELECT 'after cancel'").fetchone() == ("after cancel",)


def test_upstream_tls_error_before_close_reaches_client(pg_ssl, start_pgveil):
    """PostgreSQL sends its FATAL and then close_notify in one go: the error
    must still reach the client."""
    proxy = start_pgveil(["--passthrough", "--workers", "1", "--upstream-tls", "require"],
                         upstream=pg_ssl.addr)
    with pytest.raises(psycopg.OperationalError) as ei:
        psycopg.connect(host=proxy.host, port=proxy.port, user=SCRAM_USER, password="wrong",
                        dbname="test", sslmode="disable", connect_timeout=10)
    assert "password authentication failed" in str(ei.value)
    with pytest.raises(psycopg.OperationalError) as ei:
        psycopg.connect(host=proxy.host, port=proxy.port, user="postgres",
                        dbname="no_such_db", sslmode="disable", connect_timeout=10)
    assert 'database "no_such_db" does not exist' in str(ei.value)


def test_upstream_tls_handshake_timeout(start_pgveil):
    """A server that accepts the SSLRequest and then says nothing: the client
    gets an error after --connect-timeout, not a hang."""
    import threading
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(4)
    held = []

    def serve():
        try:
            c, _ = ls.accept()
        except OSError:
            return
        held.append(c)
        c.recv(8)
        c.sendall(b"S")

    threading.Thread(target=serve, daemon=True).start()
    try:
        proxy = start_pgveil(["--passthrough", "--workers", "1", "--upstream-tls", "require",
                              "--connect-timeout", "1"],
                             upstream="127.0.0.1:%d" % ls.getsockname()[1])
        t0 = time.monotonic()
        with pytest.raises(psycopg.OperationalError) as ei:
            psycopg.connect(host=proxy.host, port=proxy.port, user="postgres", dbname="test",
                            sslmode="disable", connect_timeout=10)
        assert time.monotonic() - t0 < 5
        assert "TLS with upstream" in str(ei.value) and "timed out" in str(ei.value)
    finally:
        ls.close()
        for c in held:
            c.close()


# ---- SCRAM and channel binding -----------------------------------------


def test_scram_tls_client_leg_prefer(certs, start_pgveil):
    proxy = start_pgveil(tls_args(certs))
    with psycopg.connect(autocommit=True, **verify_full(
            certs, proxy, user=SCRAM_USER, password=SCRAM_PASSWORD,
            channel_binding="prefer")) as c:
        assert c.execute("SELECT current_user").fetchone() == (SCRAM_USER,)


def test_scram_channel_binding_require_fails_clearly(certs, start_pgveil):
    proxy = start_pgveil(tls_args(certs))
    t0 = time.monotonic()
    with pytest.raises(psycopg.OperationalError) as ei:
        psycopg.connect(**verify_full(certs, proxy, user=SCRAM_USER, password=SCRAM_PASSWORD,
                                      channel_binding="require"))
    assert time.monotonic() - t0 < 5
    assert "channel binding" in str(ei.value)
    assert proxy.alive()


def test_scram_upstream_tls_plus_stripped(certs, pg_ssl, start_pgveil):
    """Plain client, TLS upstream: the server offers SCRAM-SHA-256-PLUS, the
    client must not see it."""
    proxy = start_pgveil(["--passthrough", "--workers", "1", "--upstream-tls", "require"],
                         upstream=pg_ssl.addr)
    mechs = _sasl_mechanisms(proxy.host, proxy.port, SCRAM_USER)
    assert mechs == [b"SCRAM-SHA-256"]
    direct = _sasl_mechanisms_tls(pg_ssl.host, pg_ssl.port, SCRAM_USER)
    assert b"SCRAM-SHA-256-PLUS" in direct  # the server did offer it
    with psycopg.connect(autocommit=True, host=proxy.host, port=proxy.port, user=SCRAM_USER,
                         password=SCRAM_PASSWORD, dbname="test", sslmode="disable",
                         connect_timeout=10) as c:
        assert _server_ssl(c) is True
        assert c.execute("SELECT current_user").fetchone() == (SCRAM_USER,)


def test_scram_both_legs_different_certs(certs, pg_ssl, start_pgveil):
    """Both legs TLS, different certificates: binding cannot work. The
    default (prefer) gets pgveil's explanation; disable works."""
    proxy = start_pgveil(tls_args(certs, "--upstream-tls", "verify-full",
                                  "--upstream-ca", certs.path("ca.crt")),
                         upstream=pg_ssl.addr)
    kw = dict(user=SCRAM_USER, password=SCRAM_PASSWORD)
    with pytest.raises(psycopg.OperationalError) as ei:
        psycopg.connect(**verify_full(certs, proxy, channel_binding="prefer", **kw))
    assert "channel_binding=disable" in str(ei.value)
    with pytest.raises(psycopg.OperationalError) as ei:
        psycopg.connect(**verify_full(certs, proxy, channel_binding="require", **kw))
    assert "channel binding" in str(ei.value)
    with psycopg.connect(autocommit=True, **verify_full(
            certs, proxy, channel_binding="disable", **kw)) as c:
        assert c.execute("SELECT current_user").fetchone() == (SCRAM_USER,)
    assert proxy.alive()


def test_scram_both_legs_same_cert_binds(certs, pg_ssl_same, start_pgveil):
    """pgveil serves the server's own certificate: tls-server-end-point is the
    same on both legs, so SCRAM-SHA-256-PLUS passes and binding works."""
    proxy = start_pgveil(tls_args(certs, "--upstream-tls", "verify-full",
                                  "--upstream-ca", certs.path("ca.crt")),
                         upstream=pg_ssl_same.addr)
    with psycopg.connect(autocommit=True, **verify_full(
            certs, proxy, user=SCRAM_USER, password=SCRAM_PASSWORD,
            channel_binding="require")) as c:
        assert c.execute("SELECT current_user").fetchone() == (SCRAM_USER,)


# ---- raw helpers -------------------------------------------------------


def _startup(user, dbname):
    body = struct.pack("!I", 196608)
    for k, v in (("user", user), ("database", dbname)):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def _read_all(s, timeout=10):
    s.settimeout(timeout)
    out = b""
    while True:
        try:
            d = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not d:
            break
        out += d
    return out


def _read_msg(f):
    hdr = f.read(5)
    t, n = hdr[:1], struct.unpack("!I", hdr[1:])[0]
    return t, f.read(n - 4)


def _mechs_from(f):
    t, body = _read_msg(f)
    assert t == b"R", (t, body)
    assert struct.unpack("!I", body[:4])[0] == 10
    return [m for m in body[4:].split(b"\0") if m]


def _sasl_mechanisms(host, port, user):
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(_startup(user, "test"))
        return _mechs_from(s.makefile("rb"))


def _sasl_mechanisms_tls(host, port, user):
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=10) as raw:
        raw.sendall(SSL_REQUEST)
        assert raw.recv(1) == b"S"
        with ctx.wrap_socket(raw) as s:
            s.sendall(_startup(user, "test"))
            return _mechs_from(s.makefile("rb"))


def _served_cn(proxy):
    """The subject CN pgveil's client leg presents (openssl's postgres
    STARTTLS)."""
    p = subprocess.run(["openssl", "s_client", "-connect",
                        "127.0.0.1:%d" % proxy.port, "-starttls", "postgres",
                        "-servername", "localhost"],
                       input=b"", capture_output=True, timeout=20)
    m = re.search(rb"subject=.*?CN\s*=\s*([^,\n/]+)", p.stdout)
    return m.group(1).decode().strip() if m else None


def test_sighup_reloads_certificates(certs, start_pgveil, tmp_path):
    """Certificate rotation: new files + SIGHUP, new connections get the new
    certificate, open sessions go on; a broken file keeps the old one."""
    import signal
    crt, key = tmp_path / "live.crt", tmp_path / "live.key"
    shutil.copy(certs.path("server.crt"), crt)
    shutil.copy(certs.path("server.key"), key)
    _make_leaf(certs.dir, "ca", "rotated", "rotated.localhost",
               "DNS:localhost,IP:127.0.0.1")
    proxy = start_pgveil(["--passthrough", "--workers", "1", "--tls-cert",
                          str(crt), "--tls-key", str(key)])
    assert _served_cn(proxy) == "localhost"
    with psycopg.connect(**verify_full(certs, proxy)) as held:
        shutil.copy(certs.path("rotated.crt"), crt)
        shutil.copy(certs.path("rotated.key"), key)
        proxy.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while _served_cn(proxy) != "rotated.localhost":
            assert time.monotonic() < deadline, proxy.logs()
            time.sleep(0.1)
        assert held.execute("SELECT 7").fetchone() == (7,)
        with psycopg.connect(**verify_full(certs, proxy)) as fresh:
            assert fresh.execute("SELECT 8").fetchone() == (8,)
    crt.write_text("not a certificate\n")
    proxy.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while "not reloaded" not in proxy.logs():
        assert time.monotonic() < deadline, proxy.logs()
        time.sleep(0.1)
    assert _served_cn(proxy) == "rotated.localhost"
    assert proxy.alive()
