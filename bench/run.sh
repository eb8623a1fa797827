#!/usr/bin/env bash
# bench/run.sh: one-shot benchmark of pgveil --passthrough vs direct PostgreSQL and pgbouncer.
# Starts and stops everything it needs on loopback only; must never touch a server it did not start.
#
# Usage: bench/run.sh            (full run, ~4-5 minutes)
#        DURATION=3 ROUNDS=1 bench/run.sh   (quick run, ~1 minute)
# Env overrides:
#   DURATION     seconds per pgbench run (10)
#   ROUNDS       rounds of the interleaved pgbench runs (3)
#   CLIENTS      pgbench clients (8); JOBS pgbench threads (2)
#   SCALE        pgbench -i scale (10)
#   SELECT_REPS  repetitions of the 1M-row fetch per target (3)
#   SELECT_ROWS  rows in the big fetch (1000000)
#   IDLE_CONNS   idle client connections per proxy (1000)
#   WORKERS      pgveil --workers (2)
#   PGVEIL_BIN   pgveil binary (bin/pgveil); skipped with a note when missing
#   PGVEIL_ARGS  extra pgveil arguments, e.g. "--read-buffer-bytes 4096" (none)
#   PGBIN        PostgreSQL binaries (/usr/lib/postgresql/15/bin)
#   PGBOUNCER    pgbouncer binary (/usr/sbin/pgbouncer)
#   OUT_DIR      where latest.md and raw data go (bench/out)
#   GIT_REV      revision named in the report (git HEAD of this tree)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PY=${PYTHON:-/usr/bin/python3}

# The command line as the user gave it (their overrides), for the report.
BENCH_CMD=
for v in DURATION ROUNDS CLIENTS JOBS SCALE SELECT_REPS SELECT_ROWS IDLE_CONNS WORKERS PGVEIL_ARGS; do
  [ -n "${!v:-}" ] && BENCH_CMD+="$v=${!v@Q} "
done
BENCH_CMD+="bench/run.sh"

export DURATION=${DURATION:-10}
export ROUNDS=${ROUNDS:-3}
export CLIENTS=${CLIENTS:-8}
export JOBS=${JOBS:-2}
export SCALE=${SCALE:-10}
export SELECT_REPS=${SELECT_REPS:-3}
export SELECT_ROWS=${SELECT_ROWS:-1000000}
export IDLE_CONNS=${IDLE_CONNS:-1000}
WORKERS=${WORKERS:-2}
PGVEIL_BIN=${PGVEIL_BIN:-$ROOT/bin/pgveil}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PGBOUNCER=${PGBOUNCER:-/usr/sbin/pgbouncer}
OUT_DIR=${OUT_DIR:-$HERE/out}
export PATH="$PGBIN:$PATH"

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for tool in initdb postgres pg_isready pgbench psql; do
  command -v "$tool" >/dev/null || die "$tool not found (PGBIN=$PGBIN); run 'make deps'"
done
[ -x "$PGBOUNCER" ] || die "pgbouncer not found at $PGBOUNCER; run 'make deps'"

# Enough descriptors for 1,000 idle clients plus their upstream connections.
ulimit -n 16384 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# PostgreSQL and pgbouncer refuse to run as root: drop to `postgres` with
# setpriv, which execs (unlike su/runuser), so $! is the server's own pid.
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || die "running as root needs a 'postgres' user"
  AS_PG=(setpriv --reuid=postgres --regid=postgres --init-groups --)
else
  AS_PG=()
fi

TMP=$(mktemp -d /tmp/pgveil-bench.XXXXXX)
chmod 755 "$TMP"
PG_PID= ; BOUNCER_PID= ; VEIL_PID= ; MEASURE_PID=

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  for pid in "$MEASURE_PID" "$VEIL_PID" "$BOUNCER_PID"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null
  done
  if [ -n "$PG_PID" ]; then
    kill -INT "$PG_PID" 2>/dev/null  # fast shutdown
  fi
  for pid in "$MEASURE_PID" "$VEIL_PID" "$BOUNCER_PID" "$PG_PID"; do
    [ -z "$pid" ] && continue
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
  done
  wait 2>/dev/null
  rm -rf "$TMP"
  [ $rc -ne 0 ] && log "failed (exit $rc); everything it started is stopped"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {  # wait_port PORT PID NAME: until the port accepts, or the process dies
  local port=$1 pid=$2 name=$3
  for _ in $(seq 200); do
    kill -0 "$pid" 2>/dev/null || die "$name exited during startup (see $TMP/$name.log)"
    if "$PY" -c 'import socket,sys; socket.create_connection(("127.0.0.1",int(sys.argv[1])),0.2).close()' "$port" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  die "$name not listening on $port after 20 s"
}

# ---- 1. throwaway PostgreSQL 15 ------------------------------------------------
PGPORT=$(free_port)
PGDATA=$TMP/pgdata
mkdir -p "$PGDATA"
[ "$(id -u)" = 0 ] && chown postgres: "$TMP" "$PGDATA"
log "initdb in $PGDATA"
"${AS_PG[@]}" initdb -D "$PGDATA" -U postgres --auth=trust --no-sync -E UTF8 >"$TMP/initdb.log" 2>&1 \
  || { cat "$TMP/initdb.log" >&2; die "initdb failed"; }
cat >>"$PGDATA/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$TMP'
max_connections = 1200
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = off
EOF
log "starting PostgreSQL on 127.0.0.1:$PGPORT"
"${AS_PG[@]}" postgres -D "$PGDATA" >"$TMP/postgres.log" 2>&1 &
PG_PID=$!
for _ in $(seq 100); do
  pg_isready -q -h 127.0.0.1 -p "$PGPORT" && break
  kill -0 "$PG_PID" 2>/dev/null || { cat "$TMP/postgres.log" >&2; die "postgres exited"; }
  sleep 0.2
done
pg_isready -q -h 127.0.0.1 -p "$PGPORT" || die "PostgreSQL not ready"
log "pgbench -i -s $SCALE"
pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$PGPORT" -U postgres postgres >"$TMP/pgbench-init.log" 2>&1 \
  || { cat "$TMP/pgbench-init.log" >&2; die "pgbench -i failed"; }

# ---- 2. pgbouncer and pgveil in front of it -----------------------------------
BOUNCER_PORT=$(free_port)
echo '"postgres" ""' >"$TMP/userlist.txt"
cat >"$TMP/pgbouncer.ini" <<EOF
[databases]
postgres = host=127.0.0.1 port=$PGPORT dbname=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $TMP/userlist.txt
pool_mode = session
max_client_conn = 2000
default_pool_size = 20
max_db_connections = 0
ignore_startup_parameters = extra_float_digits,options
logfile = $TMP/pgbouncer.log
log_connections = 0
log_disconnections = 0
EOF
[ "$(id -u)" = 0 ] && chown postgres: "$TMP/pgbouncer.ini" "$TMP/userlist.txt"
log "starting pgbouncer on 127.0.0.1:$BOUNCER_PORT"
"${AS_PG[@]}" "$PGBOUNCER" "$TMP/pgbouncer.ini" >"$TMP/pgbouncer.out" 2>&1 &
BOUNCER_PID=$!
wait_port "$BOUNCER_PORT" "$BOUNCER_PID" pgbouncer

TARGETS="direct:$PGPORT:$PG_PID,pgbouncer:$BOUNCER_PORT:$BOUNCER_PID"
VEIL_NOTE=
if [ -x "$PGVEIL_BIN" ]; then
  VEIL_PORT=$(free_port)
  log "starting pgveil --passthrough --workers $WORKERS ${PGVEIL_ARGS:-}on 127.0.0.1:$VEIL_PORT"
  "$PGVEIL_BIN" --listen "127.0.0.1:$VEIL_PORT" --upstream "127.0.0.1:$PGPORT" \
    --passthrough --workers "$WORKERS" ${PGVEIL_ARGS:-} >"$TMP/pgveil.log" 2>&1 &
  VEIL_PID=$!
  wait_port "$VEIL_PORT" "$VEIL_PID" pgveil
  TARGETS="$TARGETS,pgveil:$VEIL_PORT:$VEIL_PID"
else
  VEIL_NOTE="pgveil skipped: $PGVEIL_BIN not found (build it with 'make')"
  log "$VEIL_NOTE"
fi

# ---- 3-5. measurements, 6. report -------------------------------------------
mkdir -p "$OUT_DIR"
# In the background + wait, so a TERM/INT to this script is handled at once.
GIT_REV=${GIT_REV:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)}
VEIL_NOTE="$VEIL_NOTE" WORKERS="$WORKERS" GIT_REV="$GIT_REV" BENCH_CMD="$BENCH_CMD" \
  "$PY" "$HERE/measure.py" --targets "$TARGETS" --out "$OUT_DIR" --tmp "$TMP" &
MEASURE_PID=$!
wait "$MEASURE_PID" || die "measurements failed (report, if any, in $OUT_DIR/latest.md)"
MEASURE_PID=
log "summary written to $OUT_DIR/latest.md"
