# `make demo`: throwaway PostgreSQL with the sample CRM, pgveil in front of it.
# Owns only the processes and temp dirs it starts; cleans them up on exit.
"""Start a disposable PostgreSQL loaded with rules/sql/crm_*.sql, put pgveil in
front of it, show the same query directly and through pgveil, then wait for
Ctrl-C.  --no-wait exits right after the comparison (for scripted checks)."""

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import pgserver  # noqa: E402
from pgserver import REPO, Pgveil, PgServer  # noqa: E402

RULES = os.path.join(REPO, "rules", "examples", "crm.yaml")
SCHEMA = os.path.join(REPO, "rules", "sql", "crm_schema.sql")
DATA = os.path.join(REPO, "rules", "sql", "crm_data.sql")
SAMPLE = ("SELECT id, full_name, email, phone, ssn, birth_date, zip "
          "FROM customers ORDER BY id LIMIT 8")
ROLE, PURPOSE = "marketing", "marketing"


def say(msg=""):
    print(msg, flush=True)


def warn(msg):
    print("demo: warning: " + msg, file=sys.stderr, flush=True)


def pgveil_help(binary):
    try:
        p = subprocess.run([binary, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=10, env=pgserver.clean_env())
        return p.stdout.decode(errors="replace")
    except (OSError, subprocess.TimeoutExpired):
        return ""


def rules_args(binary, pg):
    """--rules when crm.yaml exists and pgveil accepts it, else --passthrough."""
    if not os.path.exists(RULES):
        warn("%s not found: running pgveil with --passthrough (no masking)" % RULES)
        return ["--passthrough"], False
    p = subprocess.run([binary, "--check", "--rules", RULES], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30, env=pgserver.clean_env())
    if p.returncode != 0:
        warn("pgveil --check rejected %s (exit %d): running with --passthrough (no masking)\n%s"
             % (RULES, p.returncode, p.stdout.decode(errors="replace").strip()))
        return ["--passthrough"], False
    args = ["--rules", RULES]
    usage = pgveil_help(binary)
    if "--control-dsn" in usage:
        args += ["--control-dsn", "host=%s port=%d dbname=crm user=postgres" % (pg.host, pg.port)]
    if "--secret-file" in usage:  # keyed pseudonyms (hash) need a secret
        path = os.path.join(pg.tmp, "pgveil-demo.secret")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(os.urandom(32).hex().encode())
        args += ["--secret-file", path]
    return args, True


def load_support_sql(pg):
    """rules/sql/*.sql besides the CRM itself (NOTIFY triggers and the like),
    each "run once per database pgveil serves"."""
    import glob
    for path in sorted(glob.glob(os.path.join(REPO, "rules", "sql", "*.sql"))):
        if os.path.basename(path) in ("crm_schema.sql", "crm_data.sql"):
            continue
        try:
            pg.sql_file(path, dbname="crm")
            say("demo: loaded %s" % os.path.relpath(path, REPO))
        except RuntimeError as e:
            warn("loading %s failed: %s" % (path, str(e).strip()))


def psql_line(host, port):
    return ("PGOPTIONS=%s psql %s" % (
        shlex.quote("-c pgveil.purpose=" + PURPOSE),
        shlex.quote("host=%s port=%d dbname=crm user=%s password=%s_pw" % (host, port, ROLE, ROLE))))


def run_sample(host, port):
    env = pgserver.clean_env({"PGOPTIONS": "-c pgveil.purpose=" + PURPOSE, "PGPASSWORD": ROLE + "_pw"})
    p = subprocess.run([pgserver.pg_bin("psql"), "-X", "-h", host, "-p", str(port), "-U", ROLE,
                        "-d", "crm", "-c", SAMPLE], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    return p.stdout.decode(errors="replace").rstrip("\n").splitlines()


def side_by_side(left, right, ltitle, rtitle):
    lw = max([len(l) for l in left] + [len(ltitle)])
    rw = max([len(l) for l in right] + [len(rtitle)])
    cols = shutil.get_terminal_size((200, 40)).columns
    if lw + rw + 5 > cols:
        for title, lines in ((ltitle, left), (rtitle, right)):
            say("== " + title)
            for l in lines:
                say(l)
            say()
        return
    say(ltitle.ljust(lw) + "  |  " + rtitle)
    say("-" * lw + "--+--" + "-" * rw)
    for i in range(max(len(left), len(right))):
        l = left[i] if i < len(left) else ""
        r = right[i] if i < len(right) else ""
        say(l.ljust(lw) + "  |  " + r)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--no-wait", action="store_true", help="exit after the comparison")
    opts = ap.parse_args()
    binary = pgserver.pgveil_bin()
    if not os.access(binary, os.X_OK):
        print("demo: %s not found; run `make` first" % binary, file=sys.stderr)
        return 1

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    signal.signal(signal.SIGTERM, lambda *a: stop.set())

    pg = PgServer()
    proxy = None
    try:
        say("demo: starting a throwaway PostgreSQL 15 ...")
        pg.start()
        pg.createdb("crm")
        pg.sql_file(SCHEMA, dbname="crm")
        pg.sql_file(DATA, dbname="crm")
        counts = pg.sql("SELECT (SELECT count(*) FROM customers), (SELECT count(*) FROM orders),"
                        " (SELECT count(*) FROM support_tickets), (SELECT count(*) FROM consent)",
                        dbname="crm").strip().split("|")
        say("demo: database crm loaded: %s customers, %s orders, %s tickets, %s consent rows"
            % tuple(counts))

        load_support_sql(pg)
        args, with_rules = rules_args(binary, pg)
        proxy = Pgveil(pg.addr, args)
        try:
            proxy.start()
        except pgserver.PgveilError as e:
            if not with_rules:
                raise
            warn("pgveil did not start with --rules; retrying with --passthrough (no masking):\n  %s"
                 % "\n  ".join(str(e).strip().splitlines()[-6:]))
            proxy.cleanup()
            proxy = Pgveil(pg.addr, ["--passthrough"])
            proxy.start()
            with_rules = False
        say("demo: pgveil listening on %s (%s), pgveil log: %s"
            % (proxy.addr, "rules " + os.path.relpath(RULES, REPO) if with_rules else "passthrough",
               proxy.errpath))
        say()
        say("Connect directly to PostgreSQL:")
        say("  " + psql_line(pg.host, pg.port))
        say("Connect through pgveil:")
        say("  " + psql_line(proxy.host, proxy.port))
        say("Roles: crm_app marketing support_agent analyst legacy_app (password: <role>_pw);"
            " superuser: postgres")
        say("Sample query:")
        say("  " + SAMPLE + ";")
        say()
        side_by_side(run_sample(pg.host, pg.port), run_sample(proxy.host, proxy.port),
                     "direct (port %d)" % pg.port, "through pgveil (port %d)" % proxy.port)
        say()
        if opts.no_wait:
            return 0
        say("demo: running; press Ctrl-C to stop and clean up.")
        while not stop.is_set():
            stop.wait(1)
            if not proxy.alive():
                warn("pgveil exited (%s); last log lines:\n%s"
                     % (proxy.proc.returncode, "\n".join(proxy.logs().splitlines()[-10:])))
                return 1
        return 0
    finally:
        if proxy is not None:
            proxy.cleanup()
        pg.stop()
        try:
            say("demo: cleaned up")
        except OSError:  # stdout already gone (e.g. piped into head)
            pass


if __name__ == "__main__":
    sys.exit(main())
