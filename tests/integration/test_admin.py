# The admin endpoint (--admin): /metrics values after known traffic through
# pgveil serving crm.yaml, /healthz, /readyz (503 while consent is stale),
# and a strict HTTP server that refuses oversized or malformed requests
# without falling over. Owns only the pgveil processes and relays it starts.
import os
import re
import shutil
import signal
import socket
import tempfile
import time
import urllib.error
import urllib.request

import pytest

from conftest_rules import CRM_RULES, connect2, connect3
from pgserver import Endpoint, Pgveil, TcpRelay, free_port

pytestmark = pytest.mark.pgveil_only


# ---- helpers -----------------------------------------------------------------

def http_get(port, path, timeout=5):
    """(status, body) of GET http://127.0.0.1:port/path."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path),
                                    timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$")


def scrape(port):
    """{series: float} from /metrics; also checks the exposition format."""
    status, body = http_get(port, "/metrics")
    assert status == 200
    out = {}
    typed = set()
    for line in body.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("# HELP ") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, "not an exposition line: %r" % line
        name = re.sub(r"_(bucket|sum|count)$", "", m.group(1).split("{")[0])
        assert name in typed or m.group(1).split("{")[0] in typed, line
        out[m.group(1)] = float(m.group(2))
    return out


def wait_for(fn, timeout=10.0, step=0.1):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(step)
    return last


def raw_http(port, data, timeout=8):
    """Sends raw bytes, returns everything the server answers."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        chunks = []
        while True:
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                break
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks)
    finally:
        s.close()


def status_of(resp):
    m = re.match(rb"HTTP/1\.1 (\d{3}) ", resp)
    return int(m.group(1)) if m else None


# ---- fixtures ------------------------------------------------------------------

@pytest.fixture(scope="module")
def admin_px(crm):
    """pgveil with crm.yaml and --admin; yields (proxy, endpoint, admin port,
    rules path) where rules is a private copy the tests may rewrite."""
    tmp = tempfile.mkdtemp(prefix="pgveil-admin-")
    rules = os.path.join(tmp, "crm.yaml")
    shutil.copy(CRM_RULES, rules)
    aport = free_port()
    proxy = Pgveil(crm.pg.addr, crm.serve_args(rules=rules) +
                   ["--admin", "127.0.0.1:%d" % aport])
    proxy.start()
    try:
        assert wait_for(lambda: http_get(aport, "/readyz")[0] == 200), \
            http_get(aport, "/readyz")
        yield proxy, Endpoint(proxy.host, proxy.port, proxy, "pgveil"), aport, rules
    finally:
        proxy.stop()
        proxy.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def delta(before, after, series):
    return after.get(series, 0) - before.get(series, 0)


# ---- endpoints -------------------------------------------------------------------

def test_healthz_readyz_and_404(admin_px):
    proxy, ep, aport, _ = admin_px
    assert http_get(aport, "/healthz") == (200, "ok\n")
    assert http_get(aport, "/readyz") == (200, "ready\n")
    assert http_get(aport, "/healthz?verbose=1")[0] == 200
    status, body = http_get(aport, "/nope")
    assert status == 404 and "/metrics" in body


def test_static_gauges(admin_px, crm):
    _, _, aport, _ = admin_px
    m = scrape(aport)
    assert m["pgveil_workers"] == 2
    assert m["pgveil_rules_loaded"] == 1
    assert m["pgveil_passthrough"] == 0
    assert m["pgveil_rules_generation"] >= 1
    info = [k for k in m if k.startswith("pgveil_rules_info{")]
    assert len(info) == 1 and re.fullmatch(
        r'pgveil_rules_info\{fingerprint="[0-9a-f]{16}"\}', info[0]), info
    assert m['pgveil_catalog_resolved{database="crm"}'] == 1
    assert m['pgveil_catalog_protected_columns{database="crm"}'] >= 9
    assert m['pgveil_catalog_relations{database="crm"}'] >= 2
    assert m["pgveil_consent_configured"] == 1
    assert m["pgveil_consent_loaded"] == 1
    assert m["pgveil_consent_stale"] == 0
    assert m["pgveil_consent_connected"] == 1
    assert m["pgveil_consent_age_seconds"] < 5
    granted = int(crm.pg.sql("SELECT count(DISTINCT subject_id) FROM consent",
                             dbname="crm").strip())
    assert m["pgveil_consent_subjects"] == granted
    assert m["pgveil_consent_bytes"] > 0


def test_statements_sessions_and_bytes(admin_px):
    _, ep, aport, _ = admin_px
    before = scrape(aport)
    c = connect2(ep, "support")   # psycopg2: simple protocol
    cur = c.cursor()
    for i in range(7):
        cur.execute("SELECT %d" % i)
        assert cur.fetchone() == (i,)
    during = scrape(aport)
    assert during["pgveil_sessions"] >= 1
    c.close()
    c3 = connect3(ep, "support")  # psycopg 3: extended protocol
    for i in range(3):
        assert c3.execute("SELECT %s::int", (i,)).fetchone() == (i,)
    c3.close()
    after = wait_for(lambda: (lambda m: m if m["pgveil_sessions"] == 0 else None)(
        scrape(aport)))
    assert after, "sessions gauge did not go back to 0"
    assert delta(before, after, 'pgveil_statements_total{protocol="simple"}') == 7
    assert delta(before, after, 'pgveil_statements_total{protocol="extended"}') == 3
    assert delta(before, after, "pgveil_sessions_total") == 2
    assert delta(before, after, 'pgveil_bytes_received_total{from="client"}') > 7 * 10
    assert delta(before, after, 'pgveil_bytes_received_total{from="server"}') > 10 * 20


REFUSALS = [
    ("predicate", "SELECT id FROM customers WHERE email = 'x@example.com'"),
    ("whole_row", "SELECT c FROM customers c"),
    ("function", "SELECT public.some_udf(id) FROM customers"),
    ("expression", "SELECT md5(email) FROM customers"),
    ("copy", "COPY (SELECT email FROM customers) TO STDOUT (FORMAT binary)"),
    ("purpose_denied", "SET pgveil.purpose = 'analytics'"),
]


@pytest.mark.parametrize("reason,sql", REFUSALS, ids=[r for r, _ in REFUSALS])
def test_refusal_reasons(admin_px, reason, sql):
    import psycopg2
    _, ep, aport, _ = admin_px
    before = scrape(aport)
    c = connect2(ep, "marketing")
    try:
        with pytest.raises(psycopg2.Error) as ei:
            c.cursor().execute(sql)
        assert ei.value.pgcode == "42501", ei.value
    finally:
        c.close()
    after = scrape(aport)
    got = {r: delta(before, after, 'pgveil_refusals_total{reason="%s"}' % r)
           for r in ("expression", "predicate", "whole_row", "function", "copy",
                     "ddl", "analysis_failed", "purpose_denied", "other")}
    assert got[reason] == 1, (got, str(ei.value))
    assert sum(got.values()) == 1, got


def test_rows_rewritten_per_action(admin_px):
    _, ep, aport, _ = admin_px
    before = scrape(aport)
    # No purpose (postgres): email hash, full_name withhold, phone mask,
    # zip generalize, city untouched.
    c = connect2(ep, "none")
    cur = c.cursor()
    cur.execute("SELECT id, email, full_name, phone, zip, city FROM customers "
                "ORDER BY id LIMIT 10")
    assert len(cur.fetchall()) == 10
    cur.execute("SELECT id, city FROM customers ORDER BY id LIMIT 10")
    assert len(cur.fetchall()) == 10   # nothing protected: not rewritten
    # Many rows on one session, so the 1-in-64 latency sample sees some.
    cur.execute("SELECT email FROM customers, generate_series(1, 3) g")
    assert len(cur.fetchall()) == 3000
    c.close()
    after = scrape(aport)
    d = lambda s: delta(before, after, s)  # noqa: E731
    assert d("pgveil_rows_rewritten_total") == 3010
    assert d('pgveil_rows_rewritten_by_action_total{action="hash"}') == 3010
    assert d('pgveil_rows_rewritten_by_action_total{action="withhold"}') == 10
    assert d('pgveil_rows_rewritten_by_action_total{action="mask"}') == 10
    assert d('pgveil_rows_rewritten_by_action_total{action="generalize"}') == 10
    assert d('pgveil_rows_rewritten_by_action_total{action="clear"}') == 0
    n = d("pgveil_row_rewrite_seconds_count")
    assert 3010 // 64 - 1 <= n <= 3010 // 64 + 1, n
    assert d('pgveil_row_rewrite_seconds_bucket{le="+Inf"}') == n
    assert 0 < d("pgveil_row_rewrite_seconds_sum") < n * 0.01


def test_marketing_rows_clear_for_consented(admin_px, crm):
    _, ep, aport, _ = admin_px
    granted = int(crm.pg.sql(
        "SELECT count(*) FROM consent WHERE purpose = 'marketing' AND granted "
        "AND subject_id <= 100", dbname="crm").strip())
    before = scrape(aport)
    c = connect2(ep, "marketing")
    cur = c.cursor()
    cur.execute("SELECT id, email FROM customers WHERE id <= 100")
    assert len(cur.fetchall()) == 100
    c.close()
    after = scrape(aport)
    assert delta(before, after, "pgveil_rows_rewritten_total") == 100
    assert delta(before, after,
                 'pgveil_rows_rewritten_by_action_total{action="clear"}') == granted
    assert delta(before, after,
                 'pgveil_rows_rewritten_by_action_total{action="hash"}') == 100 - granted


def test_reload_counters(admin_px):
    proxy, _, aport, rules = admin_px
    good = open(rules).read()
    before = scrape(aport)
    try:
        with open(rules, "w") as f:
            f.write("version: 1\npurposes: [\n")   # broken YAML
        proxy.proc.send_signal(signal.SIGHUP)
        m = wait_for(lambda: (lambda m: m if m["pgveil_rules_reload_failures_total"]
                              > before["pgveil_rules_reload_failures_total"] else None)(
            scrape(aport)))
        assert m, "reload failure not counted"
        assert m["pgveil_rules_last_reload_failed"] == 1
        assert m["pgveil_rules_reloads_total"] == before["pgveil_rules_reloads_total"]
        # The old rules stay in force: still ready.
        assert http_get(aport, "/readyz")[0] == 200
    finally:
        with open(rules, "w") as f:
            f.write(good)
    time.sleep(0.5)  # let the file-change debounce pass
    proxy.proc.send_signal(signal.SIGHUP)
    m = wait_for(lambda: (lambda m: m if m["pgveil_rules_reloads_total"]
                          > before["pgveil_rules_reloads_total"] else None)(scrape(aport)))
    assert m, "reload not counted"
    assert m["pgveil_rules_last_reload_failed"] == 0
    assert m["pgveil_rules_generation"] > before["pgveil_rules_generation"]


# ---- a strict HTTP server ----------------------------------------------------------

BAD_REQUESTS = [
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 20000 + b"\r\n\r\n", 431),
    (b"BLAH\r\n\r\n", 400),
    (b"GET /healthz\r\n\r\n", 400),
    (b"GET  /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", 400),
    (b"DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    (b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    (b"GET /healthz HTTP/1.1\r\n\r\n", 400),                 # no Host
    (b"GET /healthz HTTP/1.1\nHost: x\n\n\r\n\r\n", 400),     # bare LF
    (b"GET /health\x00z HTTP/1.1\r\nHost: x\r\n\r\n", 400),   # NUL
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"GET healthz HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.0\r\n\r\n", 200),                  # 1.0 needs no Host
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 200),
]


@pytest.mark.parametrize("req,status", BAD_REQUESTS,
                         ids=[str(i) for i in range(len(BAD_REQUESTS))])
def test_http_strictness(admin_px, req, status):
    _, _, aport, _ = admin_px
    resp = raw_http(aport, req)
    assert status_of(resp) == status, resp[:200]
    assert b"\r\nConnection: close\r\n" in resp
    assert http_get(aport, "/healthz")[0] == 200   # still serving


def test_head_has_no_body(admin_px):
    _, _, aport, _ = admin_px
    resp = raw_http(aport, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = resp.partition(b"\r\n\r\n")
    assert status_of(resp) == 200 and body == b""
    assert int(re.search(rb"Content-Length: (\d+)", head).group(1)) > 1000


def test_request_in_pieces_and_idle_timeout(admin_px):
    _, _, aport, _ = admin_px
    s = socket.create_connection(("127.0.0.1", aport), timeout=10)
    for piece in (b"GET /hea", b"lthz HTTP/1.1\r", b"\nHost: x\r\n", b"\r\n"):
        s.sendall(piece)
        time.sleep(0.05)
    assert status_of(s.recv(4096)) == 200
    s.close()
    # A client that sends nothing is dropped after the timeout (5 s).
    idle = socket.create_connection(("127.0.0.1", aport), timeout=10)
    t0 = time.monotonic()
    assert idle.recv(100) == b""
    assert 4 <= time.monotonic() - t0 < 9
    idle.close()


def test_many_connections(admin_px):
    _, _, aport, _ = admin_px
    socks = [socket.create_connection(("127.0.0.1", aport), timeout=5)
             for _ in range(100)]
    try:
        # Over the limit (64) the server closes new connections at once.
        closed = 0
        for s in socks[70:]:
            try:
                s.settimeout(2)
                closed += s.recv(10) == b""
            except (ConnectionResetError, socket.timeout):
                pass
        assert closed >= 20
    finally:
        for s in socks:
            s.close()
    assert wait_for(lambda: http_get(aport, "/healthz")[0] == 200)


def test_admin_port_in_use(crm):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    proxy = Pgveil(crm.pg.addr, ["--passthrough", "--admin", "127.0.0.1:%d" % port])
    try:
        try:
            proxy.start(timeout=5, attempts=1)
        except Exception:
            pass  # exited before its port accepted
        # (or its port accepted for a moment before the admin bind failed)
        assert proxy.proc.wait(10) == 2
        assert "--admin" in proxy.logs()
    finally:
        proxy.cleanup()
        blocker.close()


def test_passthrough_metrics(pg):
    aport = free_port()
    proxy = Pgveil(pg.addr, ["--passthrough", "--workers", "1",
                             "--admin", "127.0.0.1:%d" % aport])
    proxy.start()
    try:
        assert wait_for(lambda: http_get(aport, "/readyz")[0] == 200)
        m = scrape(aport)
        assert m["pgveil_passthrough"] == 1 and m["pgveil_rules_loaded"] == 0
        assert m["pgveil_consent_configured"] == 0
        ep = Endpoint(proxy.host, proxy.port, proxy, "pgveil")
        c = ep.connect2()
        c.autocommit = True
        cur = c.cursor()
        for _ in range(5):
            cur.execute("SELECT 1")
        c.close()
        m2 = scrape(aport)
        assert delta(m, m2, 'pgveil_statements_total{protocol="simple"}') == 5
        assert delta(m, m2, "pgveil_rows_rewritten_total") == 0
    finally:
        proxy.stop()
        proxy.cleanup()


# ---- /readyz follows consent freshness --------------------------------------------

def test_readyz_503_when_consent_stale(crm):
    """Consent and control connections go through a relay we can cut; with
    max_staleness 1s, /readyz turns 503 once the consent data is older than
    that, and 200 again when the store reconnects."""
    tmp = tempfile.mkdtemp(prefix="pgveil-stale-")
    rules = os.path.join(tmp, "crm.yaml")
    text = open(CRM_RULES).read()
    assert "max_staleness: 5s" in text
    with open(rules, "w") as f:
        f.write(text.replace("max_staleness: 5s", "max_staleness: 1s"))
    relay = TcpRelay(crm.pg.host, crm.pg.port).start()
    dsn = "host=127.0.0.1 port=%d user=postgres dbname=crm" % relay.port
    aport = free_port()
    proxy = Pgveil(crm.pg.addr, ["--rules", rules, "--secret-file", crm.secret_path,
                                 "--control-dsn", dsn, "--workers", "1",
                                 "--admin", "127.0.0.1:%d" % aport])
    relay2 = None
    try:
        proxy.start()
        assert wait_for(lambda: http_get(aport, "/readyz")[0] == 200), \
            http_get(aport, "/readyz")
        # Cut the consent source: pgveil's consent connection (the one
        # through the relay) terminated, and no new connection possible.
        ports = [s.getsockname()[1] for s in relay.conns[1::2]]
        relay.stopped = True
        relay.lsock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        relay.lsock.close()
        n = crm.pg.sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                       "WHERE application_name LIKE 'pgveil-consent%%' AND "
                       "client_port IN (%s)" % ",".join(map(str, ports)))
        assert int(n) >= 1, (n, ports)
        for s in relay.conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        got = wait_for(lambda: (lambda r: r if r[0] == 503 else None)(
            http_get(aport, "/readyz")), timeout=8)
        assert got and "consent stale" in got[1], got
        m = scrape(aport)
        assert m["pgveil_consent_stale"] == 1
        assert m["pgveil_consent_age_seconds"] >= 1
        assert m["pgveil_consent_connected"] == 0
        assert http_get(aport, "/healthz")[0] == 200   # alive, just not ready
        # The source comes back: ready again.
        relay2 = TcpRelay(crm.pg.host, crm.pg.port, port=relay.port).start()
        assert wait_for(lambda: http_get(aport, "/readyz")[0] == 200, timeout=15), \
            http_get(aport, "/readyz")
        assert scrape(aport)["pgveil_consent_stale"] == 0
    finally:
        proxy.stop()
        proxy.cleanup()
        relay.stop()
        if relay2:
            relay2.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_random_garbage_does_not_crash(admin_px):
    """Random bytes and truncated or mutated requests: every connection gets
    a 4xx/5xx or is closed; the server keeps serving."""
    import random
    _, _, aport, _ = admin_px
    rnd = random.Random(6)
    good = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    for i in range(150):
        kind = i % 3
        if kind == 0:
            data = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 300))) + b"\r\n\r\n"
        elif kind == 1:
            b = bytearray(good)
            for _ in range(rnd.randrange(1, 4)):
                b[rnd.randrange(len(b) - 4)] = rnd.randrange(256)  # keep the end
            data = bytes(b)
        else:
            data = good[:rnd.randrange(1, len(good))]   # truncated: timeout
            s = socket.create_connection(("127.0.0.1", aport), timeout=5)
            s.sendall(data)
            s.close()                                    # client gives up
            continue
        resp = raw_http(aport, data)
        st = status_of(resp)
        assert st is None or st in (200, 400, 404, 405, 431, 505), resp[:100]
    assert http_get(aport, "/healthz")[0] == 200
    assert scrape(aport)["pgveil_workers"] == 2
