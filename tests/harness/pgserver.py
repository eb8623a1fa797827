# Throwaway PostgreSQL 15 servers and pgveil processes for integration tests.
# Owns temp dirs and child processes it starts; never touches a system cluster.
"""Test harness: a disposable PostgreSQL 15 cluster and pgveil launcher.

PgServer: initdb into a temp dir (as `postgres` when running as root), with
pg_hba rules for `scram_user` (scram-sha-256), `md5_user` (md5) and trust for
everything else, on 127.0.0.1 and a free port.  Stopped with
`pg_ctl -m immediate stop` and removed at exit.

Pgveil: starts bin/pgveil (env PGVEIL_BIN) on a free port in front of an
upstream, waits until the port accepts connections, captures stderr to a
file, stops it with SIGTERM (SIGKILL after a grace period).
"""

import atexit
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PG_BIN = os.environ.get("PG_BINDIR", "/usr/lib/postgresql/15/bin")

SCRAM_USER, SCRAM_PASSWORD = "scram_user", "scram_pw"
MD5_USER, MD5_PASSWORD = "md5_user", "md5_pw"
SUPERUSER = "postgres"

_live = []  # every started PgServer / Pgveil, for the atexit sweep


def _sweep():
    for obj in list(reversed(_live)):
        try:
            getattr(obj, "cleanup", obj.stop)()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


atexit.register(_sweep)


def pg_bin(name):
    return os.path.join(PG_BIN, name)


def clean_env(extra=None):
    """os.environ without PG*/PGVEIL_* variables that would steer libpq or
    pgveil away from what a test asked for."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PG") and k not in ("DATABASE_URL",)}
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    if extra:
        env.update(extra)
    return env


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def port_accepts(host, port, timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _as_postgres():
    """Prefix to run a command as the postgres OS user when we are root."""
    if os.geteuid() != 0:
        return []
    if shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--"]
    return None  # caller falls back to su -c


def _postgres_reachable_tmp():
    """A temp base the postgres user can traverse: $TMPDIR may sit under a
    0700 home directory when we run as root."""
    base = tempfile.gettempdir()
    if os.geteuid() != 0:
        return base
    d = os.path.abspath(base)
    while True:
        if not os.stat(d).st_mode & 0o001:
            return "/tmp"
        parent = os.path.dirname(d)
        if parent == d:
            return base
        d = parent


def run_pg_tool(args, check=True, timeout=120, **kw):
    """Run a PostgreSQL server tool (initdb, pg_ctl) as the postgres user."""
    prefix = _as_postgres()
    env = clean_env()
    if prefix is None:
        import shlex
        cmd = ["su", "postgres", "-s", "/bin/sh", "-c",
               " ".join(shlex.quote(a) for a in args)]
    else:
        cmd = prefix + args
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise RuntimeError("%s failed (%d):\n%s" % (
            " ".join(args), p.returncode, p.stdout.decode(errors="replace")))
    return p


class PgServer:
    """A throwaway PostgreSQL cluster. Owner: the test session."""

    def __init__(self, port=None, host="127.0.0.1"):
        self.host = host
        self.port = port or free_port()
        self.tmp = None
        self.datadir = None
        self.sockdir = None
        self.logfile = None
        self.running = False

    # -- lifecycle ---------------------------------------------------------
    def start(self):
        self.tmp = tempfile.mkdtemp(prefix="pgveil-pg-", dir=_postgres_reachable_tmp())
        _live.append(self)
        self.datadir = os.path.join(self.tmp, "data")
        self.sockdir = os.path.join(self.tmp, "sock")
        self.logfile = os.path.join(self.tmp, "postgres.log")
        os.mkdir(self.sockdir)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            for d in (self.tmp, self.sockdir):
                os.chown(d, pw.pw_uid, pw.pw_gid)
        os.chmod(self.tmp, 0o700)
        run_pg_tool([pg_bin("initdb"), "-D", self.datadir, "-U", SUPERUSER,
                     "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"])
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as f:
            f.write("\n# pgveil test harness\n"
                    "listen_addresses = '127.0.0.1'\n"
                    "port = %d\n"
                    "unix_socket_directories = '%s'\n"
                    "fsync = off\n"
                    "synchronous_commit = off\n"
                    "full_page_writes = off\n"
                    "shared_buffers = 32MB\n"
                    "max_connections = 100\n"
                    "dynamic_shared_memory_type = mmap\n"
                    "max_parallel_workers_per_gather = 0\n"
                    "password_encryption = 'scram-sha-256'\n"
                    "log_min_messages = warning\n"
                    "log_connections = off\n"
                    "log_line_prefix = '%%m [%%p] %%u@%%d '\n"
                    % (self.port, self.sockdir))
        with open(os.path.join(self.datadir, "pg_hba.conf"), "w") as f:
            f.write("# TYPE DATABASE USER ADDRESS METHOD\n"
                    "local all all trust\n"
                    "host all %s 127.0.0.1/32 scram-sha-256\n"
                    "host all %s 127.0.0.1/32 md5\n"
                    "host all all 127.0.0.1/32 trust\n"
                    % (SCRAM_USER, MD5_USER))
        run_pg_tool([pg_bin("pg_ctl"), "-D", self.datadir, "-l", self.logfile,
                     "-w", "-t", "60", "-o", "-c logging_collector=off",
                     "start"])
        self.running = True
        self.sql("SET password_encryption = 'scram-sha-256';"
                 "CREATE ROLE %s LOGIN PASSWORD '%s';"
                 "SET password_encryption = 'md5';"
                 "CREATE ROLE %s LOGIN PASSWORD '%s';"
                 % (SCRAM_USER, SCRAM_PASSWORD, MD5_USER, MD5_PASSWORD))
        return self

    def stop(self):
        if self.running:
            self.running = False
            run_pg_tool([pg_bin("pg_ctl"), "-D", self.datadir, "-m",
                         "immediate", "-w", "stop"], check=False)
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
        if self in _live:
            _live.remove(self)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- helpers -----------------------------------------------------------
    @property
    def addr(self):
        return "%s:%d" % (self.host, self.port)

    def log(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def psql_cmd(self, dbname="postgres", user=SUPERUSER, host=None, port=None):
        return [pg_bin("psql"), "-X", "-v", "ON_ERROR_STOP=1", "-q",
                "-h", host or self.host, "-p", str(port or self.port),
                "-U", user, "-d", dbname]

    def sql(self, text, dbname="postgres", user=SUPERUSER):
        """Run SQL through psql over TCP; returns stdout (tuples only)."""
        p = subprocess.run(self.psql_cmd(dbname, user) + ["-A", "-t", "-c", text],
                           env=clean_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=120)
        if p.returncode != 0:
            raise RuntimeError("psql failed: %s\n%s" % (
                text[:200], p.stderr.decode(errors="replace")))
        return p.stdout.decode()

    def sql_file(self, path, dbname="postgres", user=SUPERUSER):
        p = subprocess.run(self.psql_cmd(dbname, user) + ["-f", path],
                           env=clean_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=300)
        if p.returncode != 0:
            raise RuntimeError("psql -f %s failed:\n%s" % (
                path, p.stderr.decode(errors="replace")))
        return p.stdout.decode()

    def createdb(self, name):
        self.sql('CREATE DATABASE "%s"' % name)


def pgveil_bin():
    return os.environ.get("PGVEIL_BIN") or os.path.join(REPO, "bin", "pgveil")


class PgveilError(RuntimeError):
    pass


class Pgveil:
    """One bin/pgveil process. Owner: the test that started it."""

    def __init__(self, upstream, args=(), port=None, host="127.0.0.1",
                 binary=None):
        self.upstream = upstream          # "host:port"
        self.args = list(args)
        self.host = host
        self.port = port
        self.binary = binary or pgveil_bin()
        self.proc = None
        self.tmp = None
        self.errpath = None
        self.returncode = None

    @property
    def addr(self):
        return "%s:%d" % (self.host, self.port)

    def command(self):
        return [self.binary, "--listen", self.addr, "--upstream",
                self.upstream] + self.args

    def start(self, timeout=15.0, attempts=3):
        """Start and wait until the port accepts connections. Retries on a
        lost free-port race (exit 2 before listening)."""
        last = ""
        for _ in range(attempts):
            if self.port is None or last:
                self.port = free_port()
            try:
                return self._start_once(timeout)
            except PgveilError as e:
                last = str(e)
                if self.returncode != 2:
                    raise
        raise PgveilError(last)

    def _start_once(self, timeout):
        if self.tmp is None:
            self.tmp = tempfile.mkdtemp(prefix="pgveil-px-")
        self.errpath = os.path.join(self.tmp, "pgveil-%d.stderr" % self.port)
        errf = open(self.errpath, "wb")
        self.returncode = None
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                     stdout=errf, stderr=errf,
                                     env=clean_env(), start_new_session=True)
        errf.close()
        if self not in _live:
            _live.append(self)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self.returncode = rc
                raise PgveilError("pgveil exited %d before listening: %s\n%s"
                                  % (rc, " ".join(self.command()), self.logs()))
            if port_accepts(self.host, self.port, 0.2):
                return self
            time.sleep(0.05)
        self.stop()
        raise PgveilError("pgveil did not listen on %s within %.0fs:\n%s"
                          % (self.addr, timeout, self.logs()))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace=10.0):
        """SIGTERM, SIGKILL after `grace` seconds; returns the exit code."""
        if self.proc is not None and self.returncode is None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(grace)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.returncode = self.proc.returncode
        if self in _live:
            _live.remove(self)
        return self.returncode

    def logs(self):
        if not self.errpath:
            return ""
        try:
            with open(self.errpath, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def cleanup(self):
        self.stop()
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


def run_pgveil(args, timeout=15):
    """Run bin/pgveil to completion (CLI tests); returns CompletedProcess."""
    return subprocess.run([pgveil_bin()] + list(args), stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=clean_env(), timeout=timeout)


class Endpoint:
    """Where a test's clients connect: PostgreSQL itself or a pgveil in front
    of it. `proxy` is the Pgveil process or None for direct."""

    def __init__(self, host, port, proxy=None, label="direct"):
        self.host = host
        self.port = port
        self.proxy = proxy
        self.label = label

    @property
    def addr(self):
        return "%s:%d" % (self.host, self.port)

    @property
    def is_proxy(self):
        return self.proxy is not None

    def kwargs(self, user=SUPERUSER, dbname="test", **kw):
        out = dict(host=self.host, port=self.port, user=user, dbname=dbname,
                   connect_timeout=10)
        out.update(kw)
        return out

    def dsn(self, user=SUPERUSER, dbname="test", **kw):
        parts = ["host=%s" % self.host, "port=%d" % self.port,
                 "user=%s" % user, "dbname=%s" % dbname, "connect_timeout=10"]
        parts += ["%s=%s" % (k, v) for k, v in kw.items()]
        return " ".join(parts)

    def connect(self, user=SUPERUSER, dbname="test", autocommit=True, **kw):
        import psycopg
        return psycopg.connect(autocommit=autocommit, **self.kwargs(user, dbname, **kw))

    def connect2(self, user=SUPERUSER, dbname="test", **kw):
        import psycopg2
        return psycopg2.connect(**self.kwargs(user, dbname, **kw))

    def psql_cmd(self, dbname="test", user=SUPERUSER):
        return [pg_bin("psql"), "-X", "-h", self.host, "-p", str(self.port),
                "-U", user, "-d", dbname]

    def assert_alive(self):
        if self.proxy is not None:
            assert self.proxy.alive(), "pgveil died:\n" + self.proxy.logs()

    def __repr__(self):
        return "<Endpoint %s %s>" % (self.label, self.addr)


class TcpRelay:
    """A tiny TCP forwarder on 127.0.0.1:port -> target, in threads. Lets a
    test make an upstream appear (or vanish) at a fixed address."""

    def __init__(self, target_host, target_port, port=None):
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self.lsock = None
        self.conns = []
        self.stopped = False

    def start(self):
        import threading
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", self.port))
        self.lsock.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self):
        import threading
        while not self.stopped:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(self.target, timeout=5)
                u.settimeout(None)
            except OSError:
                c.close()
                continue
            self.conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self):
        self.stopped = True
        if self.lsock:
            self.lsock.close()
        for s in self.conns:
            try:
                s.close()
            except OSError:
                pass
