# The shared leak corpus (tests/leakcases/corpus, see its README) through
# pgveil with tests/leakcases.yaml: every attack stopped, every legitimate
# query answered exactly. Also checks the detector against PostgreSQL itself.
import json
import os
import re
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
CORPUS = os.path.join(REPO, "tests", "leakcases", "corpus")
RULES = os.path.join(REPO, "tests", "leakcases.yaml")
SUMMARY = re.compile(r"leaks: (\d+), false_positives: (\d+), cases: (\d+)")

pytestmark = pytest.mark.pgveil_only


def run_corpus(port, dbname, *extra, timeout=900):
    cmd = ["/usr/bin/python3", os.path.join(CORPUS, "run.py"), "--host",
           "127.0.0.1", "--port", str(port), "--dbname", dbname, "-v"]
    cmd += list(extra)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                         env=env).stdout
    m = SUMMARY.search(out.strip().splitlines()[-1] if out.strip() else "")
    assert m, "runner printed no summary:\n" + out[-3000:]
    return int(m.group(1)), int(m.group(2)), int(m.group(3)), out


def problems(out):
    return "\n".join(l for l in out.splitlines()
                     if l.strip().startswith(("LEAK", "FP")))


def test_corpus_through_pgveil_has_no_leaks(leak_pgveil, leakdb):
    leaks, fps, cases, out = run_corpus(leak_pgveil.port, leakdb)
    assert cases >= 100
    assert (leaks, fps) == (0, 0), problems(out) + "\n" + "\n".join(
        leak_pgveil.logs().splitlines()[-30:])


@pytest.mark.parametrize("transport", ["pgoptions", "sql"])
def test_corpus_other_purpose_transports(leak_pgveil, leakdb, transport):
    leaks, fps, cases, out = run_corpus(
        leak_pgveil.port, leakdb, "--purpose-transport", transport,
        "--category", "purpose", "--category", "legit", "--category", "plain")
    assert leaks == 0, problems(out)
    assert fps == 0, problems(out)


def test_detector_sees_leaks_without_pgveil(pg, leakdb):
    """Against PostgreSQL itself every attack must leak: proves the runner
    would notice a leak through pgveil."""
    leaks, fps, cases, out = run_corpus(pg.port, leakdb, "--direct",
                                        "--category", "plain",
                                        "--category", "expr")
    assert leaks > 0 and leaks >= cases - 2, out[-2000:]


def test_no_canary_in_pgveil_logs(leak_pgveil, leakdb):
    """After the corpus (and every refusal it provoked), pgveil's own log
    holds no protected value: refusals name columns, never data."""
    run_corpus(leak_pgveil.port, leakdb, "--category", "channel",
               "--category", "infer", "--category", "expr")
    with open(os.path.join(CORPUS, "canaries.json")) as f:
        columns = json.load(f)["columns"]
    logs = leak_pgveil.logs()
    low = logs.lower()
    found = []
    for col, spec in columns.items():
        for v in spec["values"]:
            for secret in v["secrets"]:
                if spec["kind"] in ("digits", "date"):
                    hit = str(v["value"]) in logs or re.search(
                        r"(?<!\d)%s(?!\d)" % re.escape(secret), logs)
                else:
                    hit = secret.lower() in low
                if hit:
                    found.append((col, secret))
    assert not found, found[:5]
    assert "refused" in logs  # the log did record the refusals
