#!/usr/bin/env bash
# bench/consent_bench.sh: consent store load benchmark. Starts a throwaway
# PostgreSQL 15 (tests/harness/pgserver.py), fills bench.consent with
# SUBJECTS subjects x 4 purposes (generate_series), builds
# bench/consent_bench.c against build/libpgveil.a and runs it: full COPY
# load time, bytes per subject (the set's accounting and the RSS delta),
# lookup cost. Touches no server it did not start.
# Each entry of PARTS is one load with that many parallel COPYs (0: the
# store's automatic choice); the same allowed= count on every run checks
# that the parts together read exactly the table.
#   SUBJECTS=10000000 PARTS="0 0 1" bench/consent_bench.sh   (the defaults)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SUBJECTS=${SUBJECTS:-10000000}
PARTS=${PARTS:-0 0 1}
PY=${PYTHON:-/usr/bin/python3}
# The consent sources are compiled in directly, so the bench measures this
# tree's consent code even while another module keeps the library stale.
make -s build/libpgveil.a || test -f build/libpgveil.a
mkdir -p build/bench
cc -O2 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter -pthread \
  -Iinclude $(pkg-config --cflags libpq) -o build/bench/consent_bench bench/consent_bench.c \
  proxy/consent_set.c proxy/consent_store.c build/libpgveil.a \
  $(pkg-config --libs libuv libpq libssl libcrypto libxxhash yaml-0.1) -lpg_query -lm
SUBJECTS=$SUBJECTS PARTS=$PARTS "$PY" - <<'PYEOF'
import os, subprocess, sys, time
sys.path.insert(0, "tests/harness")
from pgserver import PgServer, clean_env
n = int(os.environ["SUBJECTS"])
with PgServer() as pg:
    pg.createdb("bench")
    t0 = time.monotonic()
    pg.sql("CREATE SCHEMA bench; CREATE TABLE bench.consent (subject_id bigint NOT NULL,"
           " purpose text NOT NULL, granted boolean NOT NULL);"
           "INSERT INTO bench.consent SELECT g, p, (g + length(p)) %% 3 <> 0"
           " FROM generate_series(1, %d) g,"
           " unnest(ARRAY['marketing','support','analytics','profiling']) p" % n,
           dbname="bench")
    pg.sql("VACUUM ANALYZE bench.consent", dbname="bench")
    print("generated %d rows in %.1f s" % (4 * n, time.monotonic() - t0), flush=True)
    dsn = "host=%s port=%d user=postgres dbname=bench" % (pg.host, pg.port)
    for run, parts in enumerate(os.environ["PARTS"].split(), 1):
        env = clean_env({"PGVEIL_BENCH_DSN": dsn, "PGVEIL_BENCH_PARTS": parts})
        p = subprocess.run(["build/bench/consent_bench"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=900)
        sys.stderr.write(p.stderr.decode(errors="replace"))
        with open("/proc/loadavg") as f:
            load = f.read().split()[0]
        print("run %d (parts=%s, load average %s): %s"
              % (run, parts, load, p.stdout.decode().strip()), flush=True)
        if p.returncode:
            sys.exit(p.returncode)
PYEOF
