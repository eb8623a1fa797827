# pgbench through pgveil in every query mode: no failed transactions.
# Owns database `bench` in the test cluster.
import re
import subprocess

import pytest

import pgserver


@pytest.fixture(scope="module")
def bench_db(pg, pgveil):
    pg.sql("DROP DATABASE IF EXISTS bench")
    pg.createdb("bench")
    # Initialise through pgveil: COPY FROM STDIN of 100k accounts, DDL, VACUUM.
    p = subprocess.run([pgserver.pg_bin("pgbench"), "-i", "-s", "1", "-h", pgveil.host,
                        "-p", str(pgveil.port), "-U", "postgres", "bench"],
                       env=pgserver.clean_env(), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=180)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, out
    assert "done in" in out, out
    assert pg.sql("SELECT count(*), sum(abalance) FROM pgbench_accounts", dbname="bench").strip() == "100000|0"
    return "bench"


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_select_only(bench_db, pgveil, mode):
    p = subprocess.run([pgserver.pg_bin("pgbench"), "-S", "-T", "5", "-c", "4", "-j", "2",
                        "-M", mode, "-n", "-h", pgveil.host, "-p", str(pgveil.port),
                        "-U", "postgres", bench_db],
                       env=pgserver.clean_env(), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, out
    assert "query mode: %s" % mode in out, out
    m = re.search(r"number of transactions actually processed: (\d+)", out)
    assert m, out
    assert int(m.group(1)) > 0, out
    failed = re.search(r"number of failed transactions: (\d+)", out)
    if failed:
        assert int(failed.group(1)) == 0, out
    assert "error" not in out.lower().replace("number of failed transactions", ""), out
    pgveil.assert_alive()
