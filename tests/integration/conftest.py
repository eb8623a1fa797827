# Fixtures for the integration suite: a throwaway PostgreSQL and pgveil in front.
# Owns only processes it starts; PGVEIL_DIRECT=1 points every client at PostgreSQL.
import os
import signal
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "harness"))

import pgserver  # noqa: E402
from pgserver import Endpoint, Pgveil, PgServer  # noqa: E402

DIRECT = os.environ.get("PGVEIL_DIRECT") == "1"

# Keep libpq-based clients in this process from picking up the caller's
# PGHOST/PGPORT/PGOPTIONS/...: every test names its endpoint explicitly.
for _k in list(os.environ):
    if _k.startswith("PG") and not _k.startswith("PGVEIL_"):
        del os.environ[_k]


def pytest_report_header(config):
    if DIRECT:
        return "pgveil: PGVEIL_DIRECT=1, clients talk to PostgreSQL directly"
    return "pgveil: %s" % pgserver.pgveil_bin()


def pytest_configure(config):
    config.addinivalue_line("markers", "pgveil_only: needs bin/pgveil (skipped with PGVEIL_DIRECT=1)")


def pytest_collection_modifyitems(config, items):
    if not DIRECT:
        return
    skip = pytest.mark.skip(reason="pgveil-only test (PGVEIL_DIRECT=1)")
    for item in items:
        if "pgveil_only" in item.keywords:
            item.add_marker(skip)


TEST_TIMEOUT = int(os.environ.get("PGVEIL_TEST_TIMEOUT", "90"))


class TestTimeout(Exception):
    pass


@pytest.fixture(autouse=True)
def _per_test_timeout():
    """No pytest-timeout on Debian 12: SIGALRM turns a hung test into a
    failure instead of a hung suite."""
    def on_alarm(signum, frame):
        raise TestTimeout("test exceeded %ds (PGVEIL_TEST_TIMEOUT)" % TEST_TIMEOUT)

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TEST_TIMEOUT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach the tail of the pgveil stderr the test talked to."""
    outcome = yield
    rep = outcome.get_result()
    if rep.when != "call" or not rep.failed:
        return
    for name in ("pgveil", "tagged", "small_limit"):
        ep = item.funcargs.get(name) if hasattr(item, "funcargs") else None
        proxy = getattr(ep, "proxy", None)
        if proxy is not None:
            tail = "\n".join(proxy.logs().splitlines()[-40:])
            rep.sections.append(("pgveil stderr (%s, last 40 lines)" % name, tail))


@pytest.fixture(scope="session")
def pg():
    server = PgServer()
    try:
        server.start()
        server.createdb("test")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def direct(pg):
    """PostgreSQL itself, for reference output and side-channel control."""
    return Endpoint(pg.host, pg.port, None, "direct")


@pytest.fixture(scope="session")
def pgveil(pg):
    """pgveil --passthrough in front of `pg` (or `pg` itself when
    PGVEIL_DIRECT=1). Yields an Endpoint."""
    if DIRECT:
        yield Endpoint(pg.host, pg.port, None, "direct")
        return
    proxy = Pgveil(pg.addr, ["--passthrough", "--workers", "2"])
    try:
        proxy.start()
        yield Endpoint(proxy.host, proxy.port, proxy, "pgveil")
    finally:
        rc = proxy.stop()
        logs = proxy.logs()
        proxy.cleanup()
        if rc not in (0, None):
            sys.stderr.write("\npgveil session proxy exited %s; logs:\n%s\n" % (rc, logs[-4000:]))


@pytest.fixture
def start_pgveil(pg):
    """Factory: start_pgveil(args, upstream=None) -> Pgveil, started and
    listening; stopped when the test ends. Skips with PGVEIL_DIRECT=1."""
    started = []

    def start(args=("--passthrough",), upstream=None, wait=True):
        if DIRECT:
            pytest.skip("needs bin/pgveil (PGVEIL_DIRECT=1)")
        proxy = Pgveil(upstream or pg.addr, list(args))
        started.append(proxy)
        if wait:
            proxy.start()
        return proxy

    yield start
    for proxy in started:
        proxy.cleanup()


def endpoint_of(proxy):
    return Endpoint(proxy.host, proxy.port, proxy, "pgveil")


@pytest.fixture
def require_pgveil():
    if DIRECT:
        pytest.skip("needs bin/pgveil (PGVEIL_DIRECT=1)")
    if not os.path.exists(pgserver.pgveil_bin()):
        pytest.fail("bin/pgveil not found at %s" % pgserver.pgveil_bin())


# Fixtures of the rules suites (CRM database, pgveil with crm.yaml).
from conftest_rules import crm  # noqa: E402,F401
from conftest_leak import leak_pgveil, leakdb  # noqa: E402,F401
