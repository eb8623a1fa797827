# pgveil's command line and process lifecycle: exit codes, one-line errors,
# SIGTERM shutdown. Every test here needs bin/pgveil.
import signal
import socket
import subprocess
import time

import pytest

import pgwire
from conftest import endpoint_of
from pgserver import clean_env, free_port, pgveil_bin, run_pgveil

pytestmark = pytest.mark.pgveil_only


def one_line_error(stderr):
    lines = [l for l in stderr.decode(errors="replace").splitlines() if l.strip()]
    assert len(lines) == 1, "expected a one-line error, got:\n" + "\n".join(lines)
    return lines[0]


def test_help_and_version():
    p = run_pgveil(["--help"])
    assert p.returncode == 0, p.stderr
    text = (p.stdout + p.stderr).decode()
    for flag in ("--listen", "--upstream", "--rules", "--passthrough", "--workers"):
        assert flag in text, flag
    p = run_pgveil(["--version"])
    assert p.returncode == 0, p.stderr
    out = (p.stdout + p.stderr).decode()
    assert "pgveil" in out.lower() or any(ch.isdigit() for ch in out)
    assert len([l for l in out.splitlines() if l.strip()]) == 1, out


def test_bad_flag_exit_2(pg):
    p = run_pgveil(["--no-such-flag", "--listen", "127.0.0.1:%d" % free_port(),
                    "--upstream", pg.addr, "--passthrough"])
    assert p.returncode == 2
    line = one_line_error(p.stderr)
    assert "no-such-flag" in line


@pytest.mark.parametrize("args", [
    ["--workers", "abc"],
    ["--listen", "127.0.0.1:notaport"],
    ["--listen", "127.0.0.1:70000"],
    ["--max-message-bytes", "-5"],
    ["--upstream"],
])
def test_bad_values_exit_2(pg, args):
    base = {"--listen": "127.0.0.1:%d" % free_port(), "--upstream": pg.addr}
    argv = []
    for k, v in base.items():
        if k not in args:
            argv += [k, v]
    p = run_pgveil(argv + ["--passthrough"] + args)
    assert p.returncode == 2, (args, p.returncode, p.stderr)
    one_line_error(p.stderr)


def test_port_in_use_exit_2(pg):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        t0 = time.monotonic()
        p = run_pgveil(["--listen", "127.0.0.1:%d" % port, "--upstream", pg.addr, "--passthrough"])
        assert time.monotonic() - t0 < 10
        assert p.returncode == 2, p.stderr
        line = one_line_error(p.stderr)
        assert str(port) in line or "in use" in line.lower()
    finally:
        s.close()


def test_port_in_use_by_another_pgveil(pg, start_pgveil):
    """SO_REUSEPORT must not let a second pgveil silently share a port."""
    first = start_pgveil(["--passthrough"])
    try:
        p = run_pgveil(["--listen", first.addr, "--upstream", pg.addr, "--passthrough"], timeout=5)
    except subprocess.TimeoutExpired as e:
        raise AssertionError("a second pgveil bound %s, already in use by the first (SO_REUSEPORT),"
                             " and kept running; stderr: %r" % (first.addr, e.stderr)) from None
    assert p.returncode == 2, (p.returncode, p.stderr)
    one_line_error(p.stderr)
    assert first.alive()


def test_refuses_without_rules_or_passthrough(pg):
    p = run_pgveil(["--listen", "127.0.0.1:%d" % free_port(), "--upstream", pg.addr])
    assert p.returncode != 0
    err = p.stderr.decode(errors="replace").lower()
    assert "rules" in err or "passthrough" in err, err


def test_missing_rules_file(pg, tmp_path):
    p = run_pgveil(["--listen", "127.0.0.1:%d" % free_port(), "--upstream", pg.addr,
                    "--rules", str(tmp_path / "nope.yaml")])
    assert p.returncode != 0
    assert "nope.yaml" in p.stderr.decode(errors="replace")


def sigterm_and_wait(proxy, limit):
    t0 = time.monotonic()
    proxy.proc.send_signal(signal.SIGTERM)
    try:
        rc = proxy.proc.wait(limit)
    except Exception:  # noqa: BLE001
        rc = None
    return rc, time.monotonic() - t0


def test_sigterm_idle(start_pgveil):
    proxy = start_pgveil(["--passthrough", "--shutdown-timeout", "3"])
    with pgwire.connect(proxy.host, proxy.port) as c:  # fully up, then no clients
        assert c.simple("SELECT 1").rows() == [[b"1"]]
    rc, elapsed = sigterm_and_wait(proxy, 6)
    assert rc == 0, (rc, proxy.logs())
    assert elapsed < 3.5
    # the listening port is closed
    with pytest.raises(OSError):
        socket.create_connection((proxy.host, proxy.port), timeout=1).close()


def test_sigterm_right_after_listening(pg):
    """Ready means "the port accepts connections": a SIGTERM from then on is
    a clean shutdown (exit 0), never death by the default signal action."""
    for i in range(10):
        port = free_port()
        p = subprocess.Popen([pgveil_bin(), "--listen", "127.0.0.1:%d" % port, "--upstream", pg.addr,
                              "--passthrough"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, env=clean_env())
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and p.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    pass
            assert p.poll() is None, p.stderr.read()
            p.send_signal(signal.SIGTERM)
            rc = p.wait(6)
            assert rc == 0, "attempt %d: exit %r (-15 = killed by SIGTERM before handling it)" % (i, rc)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stderr.close()


def test_sigterm_with_idle_client(start_pgveil):
    proxy = start_pgveil(["--passthrough", "--shutdown-timeout", "2"])
    ep = endpoint_of(proxy)
    c = pgwire.connect(ep.host, ep.port)
    assert c.simple("SELECT 1").rows() == [[b"1"]]
    rc, elapsed = sigterm_and_wait(proxy, 8)
    assert rc == 0, (rc, proxy.logs())
    assert elapsed < 2 + 1.5
    c.sock.settimeout(3)
    others, rows, eof = c.read_until_eof(3)
    assert eof  # the client connection was closed
    c.close()


def test_sigterm_with_running_query(start_pgveil):
    """A long query does not hold shutdown past --shutdown-timeout."""
    proxy = start_pgveil(["--passthrough", "--shutdown-timeout", "2"])
    c = pgwire.connect(proxy.host, proxy.port)
    c.send(pgwire.query("SELECT pg_sleep(30)"))
    time.sleep(0.3)
    rc, elapsed = sigterm_and_wait(proxy, 10)
    c.close()
    assert rc == 0, (rc, proxy.logs())
    assert elapsed < 2 + 1.5


def test_sigterm_lets_short_query_finish(start_pgveil):
    """A query that finishes inside the shutdown timeout gets its result."""
    proxy = start_pgveil(["--passthrough", "--shutdown-timeout", "5"])
    c = pgwire.connect(proxy.host, proxy.port)
    c.send(pgwire.query("SELECT pg_sleep(1), 'finished'"))
    time.sleep(0.2)
    proxy.proc.send_signal(signal.SIGTERM)
    res = c.read_result()
    assert res.errors == []
    assert res.rows() == [[b"", b"finished"]]
    rc = proxy.proc.wait(8)
    c.close()
    assert rc == 0


def test_stderr_logs_something(start_pgveil):
    proxy = start_pgveil(["--passthrough"])
    rc = proxy.stop()
    assert rc == 0
    logs = proxy.logs()
    assert logs.strip(), "pgveil wrote nothing to stderr"
    assert str(proxy.port) in logs  # says where it listened
