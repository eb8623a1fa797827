#!/usr/bin/python3
"""bench/guard.py: what the guard (SQL analysis) and row rewriting cost.

In one run, on loopback, against one throwaway PostgreSQL holding both the
pgbench tables and the sample CRM (rules/sql/):
  1. pgbench -S -M simple (a distinct literal in every statement) through
     pgveil --passthrough and through pgveil with rules/examples/crm.yaml,
     interleaved: the target is <= 5 % slower with rules. pgbench's tables
     name no protected table, so the pre-scan skips the parser.
  2. A statement on the protected table (SELECT id, city, email FROM
     customers WHERE id = :id) direct, through --passthrough and through
     pgveil with rules (the reference: rules vs passthrough is what the
     guard and rewriting cost; passthrough vs direct is the hop):
     -M simple (new literal each time: parsed and analysed every time,
     uncached) and -M prepared (parsed once: the cached path), so the
     per-statement cost of analysis + rewriting shows as extra latency.
  3. The analyser alone: build/tests/test_sql_guard's timing line.
Usage: bench/guard.py   (DURATION=10 ROUNDS=3 CLIENTS=8 JOBS=2 by default)
Writes bench/out/guard.md and prints it."""
import os
import re
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "harness"))
from pgserver import Pgveil, PgServer, pg_bin  # noqa: E402

DURATION = int(os.environ.get("DURATION", "10"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
CLIENTS = int(os.environ.get("CLIENTS", "8"))
JOBS = int(os.environ.get("JOBS", "2"))


def pgbench(port, args, user="postgres", env_extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(env_extra or {})
    cmd = [pg_bin("pgbench"), "-h", "127.0.0.1", "-p", str(port), "-U", user,
           "-T", str(DURATION), "-c", str(CLIENTS), "-j", str(JOBS)] + args
    out = subprocess.run(cmd, capture_output=True, text=True, env=env).stdout
    m = re.search(r"tps = ([0-9.]+) \(without initial", out)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    if not m or (failed and int(failed.group(1))):
        raise RuntimeError("pgbench failed: " + out[-1500:])
    return float(m.group(1))


def rounds(targets, args_of):
    res = {name: [] for name in targets}
    names = list(targets)
    for r in range(ROUNDS):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            res[name].append(pgbench(targets[name], *args_of(name)))
    return {n: statistics.median(v) for n, v in res.items()}


def main():
    tmp = tempfile.mkdtemp(prefix="pgveil-guardbench-")
    script = os.path.join(tmp, "protected.sql")
    with open(script, "w") as f:
        f.write("\\set id random(1, 1000)\n"
                "SELECT id, city, email FROM customers WHERE id = :id;\n")
    secret = os.path.join(tmp, "secret")
    with open(secret, "w") as f:
        f.write(os.urandom(32).hex())
    os.chmod(secret, 0o600)
    pg = PgServer()
    proxies = []
    try:
        pg.start()
        pg.createdb("bench")
        subprocess.run([pg_bin("pgbench"), "-i", "-q", "-s", "10", "-h",
                        "127.0.0.1", "-p", str(pg.port), "-U", "postgres",
                        "bench"], check=True, capture_output=True)
        for f in ("crm_schema.sql", "crm_data.sql", "catalog_notify.sql",
                  "consent_notify.sql"):
            pg.sql_file(os.path.join(ROOT, "rules", "sql", f), dbname="bench")
        dsn = "host=127.0.0.1 port=%d user=postgres dbname=bench" % pg.port
        passthru = Pgveil(pg.addr, ["--passthrough", "--workers", "2"])
        rules = Pgveil(pg.addr, ["--rules", os.path.join(ROOT, "rules",
                                                          "examples",
                                                          "crm.yaml"),
                                 "--secret-file", secret, "--control-dsn",
                                 dsn, "--workers", "2"])
        proxies = [passthru, rules]
        for p in proxies:
            p.start()
        sel = rounds({"passthrough": passthru.port, "rules": rules.port},
                     lambda n: (["-S", "-M", "simple", "bench"],))
        prot = {}
        for mode in ("simple", "prepared"):
            prot[mode] = rounds(
                {"direct": pg.port, "passthrough": passthru.port,
                 "rules": rules.port},
                lambda n, mode=mode: (["-n", "-f", script, "-M", mode,
                                       "bench"],))
        unit = subprocess.run([os.path.join(ROOT, "build", "tests",
                                            "test_sql_guard")],
                              capture_output=True, text=True).stdout
        timing = re.search(r"sql_guard timing: (.*)", unit)
        lines = ["# Guard benchmark (bench/guard.py)", "",
                 "DURATION=%d ROUNDS=%d CLIENTS=%d JOBS=%d, nproc %d, "
                 "medians of interleaved rounds" % (DURATION, ROUNDS, CLIENTS,
                                                    JOBS, os.cpu_count()),
                 "", "| workload | target | TPS | vs reference |",
                 "|---|---|---|---|"]
        ratio = sel["rules"] / sel["passthrough"]
        lines.append("| pgbench -S -M simple | --passthrough | %.0f | 1.000 |"
                     % sel["passthrough"])
        lines.append("| pgbench -S -M simple | rules loaded | %.0f | %.3f %s |"
                     % (sel["rules"], ratio,
                        "(target >= 0.95: met)" if ratio >= 0.95
                        else "(target >= 0.95: MISSED)"))
        for mode, r in prot.items():
            extra_us = (CLIENTS / r["rules"] - CLIENTS / r["passthrough"]) * 1e6
            lines.append("| protected SELECT -M %s | direct | %.0f | - |"
                         % (mode, r["direct"]))
            lines.append("| protected SELECT -M %s | --passthrough | %.0f | "
                         "1.000 |" % (mode, r["passthrough"]))
            lines.append("| protected SELECT -M %s | rules loaded | %.0f | "
                         "%.3f (%+.0f us per statement: guard + rewriting) |"
                         % (mode, r["rules"], r["rules"] / r["passthrough"],
                            extra_us))
        lines += ["", "Analyser alone (test_sql_guard, uncached): %s"
                  % (timing.group(1) if timing else "n/a"), ""]
        text = "\n".join(lines)
        os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
        with open(os.path.join(HERE, "out", "guard.md"), "w") as f:
            f.write(text + "\n")
        print(text)
    finally:
        for p in proxies:
            p.stop()
            p.cleanup()
        pg.stop()


if __name__ == "__main__":
    main()
