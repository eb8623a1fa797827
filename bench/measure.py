#!/usr/bin/python3
# bench/measure.py: runs the measurements of bench/run.sh against servers it was handed and writes the summary.
# Starts no server and stops none (run.sh owns their lifetimes); talks to 127.0.0.1 only.
"""Measurements: interleaved pgbench -S rounds, a big fetch, idle-connection RSS.

Invoked by bench/run.sh as
    measure.py --targets name:port:pid,... --out DIR --tmp DIR
with settings in the environment (DURATION, ROUNDS, CLIENTS, JOBS, ...).
Writes DIR/latest.md (also printed) and DIR/latest.json. Exits 1 when any
measurement failed (the report is still written, with the failure in it).
"""

import argparse
import datetime
import json
import os
import platform
import re
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time

PG_USER = "postgres"
PG_DB = "postgres"
GOALS = {"tps_ratio": 0.95, "kib_per_conn": 8.0}


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def env_int(name, default):
    return int(os.environ.get(name, default))


# ---- /proc helpers ----------------------------------------------------------

def proc_status_kib(pid, field):
    """VmRSS / VmHWM of pid in KiB, or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def proc_cpu_seconds(pid):
    """utime+stime of the whole process (all threads), seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def reset_hwm(pid):
    """Reset VmHWM (peak RSS) to the current RSS; False when not permitted."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class RssSampler:
    """Samples VmRSS of a pid every few ms in a thread; also uses VmHWM after a reset."""

    def __init__(self, pid, interval=0.005):
        self.pid, self.interval = pid, interval
        self.peak = 0
        self._stop = threading.Event()
        self._hwm_ok = reset_hwm(pid)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            rss = proc_status_kib(self.pid, "VmRSS")
            if rss:
                self.peak = max(self.peak, rss)
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        if self._hwm_ok:
            hwm = proc_status_kib(self.pid, "VmHWM")
            if hwm:
                self.peak = max(self.peak, hwm)
        return False


# ---- targets ----------------------------------------------------------------

class Target:
    def __init__(self, spec):
        name, port, pid = spec.split(":")
        self.name, self.port, self.pid = name, int(port), int(pid)
        # The direct target's pid is the postmaster: its RSS says nothing.
        self.is_proxy = name != "direct"

    def alive(self):
        try:
            os.kill(self.pid, 0)
            return True
        except OSError:
            return False

    def conn_args(self):
        return ["-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER]


def rotated(targets, k):
    k %= len(targets)
    return targets[k:] + targets[:k]


# ---- 3. pgbench -S ----------------------------------------------------------

TPS_RE = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.M)
LAT_RE = re.compile(r"^latency average = ([0-9.]+) ms", re.M)


def run_pgbench(t, mode, duration, clients, jobs, tmp):
    cmd = ["pgbench", *t.conn_args(), "-n", "-S", "-M", mode, "-c", str(clients),
           "-j", str(jobs), "-T", str(duration), PG_DB]
    cpu0 = proc_cpu_seconds(t.pid) if t.is_proxy else None
    w0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=duration * 3 + 60)
    wall = time.perf_counter() - w0
    cpu1 = proc_cpu_seconds(t.pid) if t.is_proxy else None
    m = TPS_RE.search(p.stdout)
    if p.returncode != 0 or not m:
        err = (p.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"pgbench {mode} via {t.name} failed (rc {p.returncode}): {err}")
    lat = LAT_RE.search(p.stdout)
    cpu_pct = None
    if cpu0 is not None and cpu1 is not None:
        cpu_pct = 100.0 * (cpu1 - cpu0) / wall
    return {"tps": float(m.group(1)), "lat_ms": float(lat.group(1)) if lat else None,
            "proxy_cpu_pct": cpu_pct}


def bench_pgbench(targets, cfg, res, failures):
    for mode in ("simple", "prepared"):
        runs = {t.name: [] for t in targets}
        for r in range(cfg["ROUNDS"]):
            for t in rotated(targets, r):
                log(f"pgbench -S -M {mode} round {r + 1}/{cfg['ROUNDS']}: {t.name}")
                try:
                    runs[t.name].append(run_pgbench(t, mode, cfg["DURATION"], cfg["CLIENTS"],
                                                    cfg["JOBS"], cfg["tmp"]))
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    failures.append(str(e))
                    log(str(e))
        for name, rs in runs.items():
            entry = res.setdefault("pgbench", {}).setdefault(name, {})
            tps = [x["tps"] for x in rs]
            cpu = [x["proxy_cpu_pct"] for x in rs if x["proxy_cpu_pct"] is not None]
            lat = [x["lat_ms"] for x in rs if x["lat_ms"] is not None]
            entry[mode] = {
                "tps_runs": tps,
                "tps_median": statistics.median(tps) if tps else None,
                "lat_ms_median": statistics.median(lat) if lat else None,
                "proxy_cpu_pct_median": statistics.median(cpu) if cpu else None,
            }


# ---- 4. big fetch -----------------------------------------------------------

def big_query(rows):
    return f"SELECT g, md5(g::text) FROM generate_series(1,{rows}) g"


def run_fetch(t, kind, rows):
    q = big_query(rows)
    sql = q if kind == "select" else f"COPY ({q}) TO STDOUT"
    cmd = ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", *t.conn_args(),
           "-d", PG_DB, "-c", sql]
    sampler = RssSampler(t.pid) if t.is_proxy else None
    if sampler:
        sampler.__enter__()
    w0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True, timeout=600)
    finally:
        wall = time.perf_counter() - w0
        if sampler:
            sampler.__exit__(None, None, None)
    if p.returncode != 0:
        raise RuntimeError(f"{kind} fetch via {t.name} failed: {p.stderr.strip()[-300:]}")
    return wall, (sampler.peak if sampler else None)


def bench_fetch(targets, cfg, res, failures):
    out = res.setdefault("fetch", {})
    for kind in ("select", "copy"):
        walls = {t.name: [] for t in targets}
        peaks = {t.name: [] for t in targets}
        for r in range(cfg["SELECT_REPS"]):
            for t in rotated(targets, r):
                log(f"{cfg['SELECT_ROWS']}-row {kind} rep {r + 1}/{cfg['SELECT_REPS']}: {t.name}")
                try:
                    wall, peak = run_fetch(t, kind, cfg["SELECT_ROWS"])
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    failures.append(str(e))
                    log(str(e))
                    continue
                walls[t.name].append(wall)
                if peak:
                    peaks[t.name].append(peak)
        for t in targets:
            w, pk = walls[t.name], peaks[t.name]
            out.setdefault(t.name, {})[kind] = {
                "wall_runs": w,
                "wall_median": statistics.median(w) if w else None,
                "peak_rss_kib": max(pk) if pk else None,
            }


# ---- 5. idle connections ----------------------------------------------------

def startup_packet(user, db):
    body = struct.pack("!I", 196608)
    for k, v in (("user", user), ("database", db), ("application_name", "pgveil-bench-idle")):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise RuntimeError("server closed the connection during startup")
        buf += chunk
    return buf


def finish_startup(s):
    """Read until ReadyForQuery; trust auth expected."""
    while True:
        hdr = recv_exact(s, 5)
        typ, ln = hdr[:1], struct.unpack("!I", hdr[1:])[0]
        if ln < 4 or ln > 1 << 20:
            raise RuntimeError(f"bad message length {ln} during startup")
        body = recv_exact(s, ln - 4)
        if typ == b"E":
            fields = dict((f[:1], f[1:]) for f in body.split(b"\0") if f)
            raise RuntimeError("startup error: " + fields.get(b"M", b"?").decode(errors="replace"))
        if typ == b"R" and struct.unpack("!I", body[:4])[0] != 0:
            raise RuntimeError("server asked for authentication; trust expected")
        if typ == b"Z":
            return


def open_idle(port, n, batch=50):
    """n connections that completed startup; opened 'batch' at a time (pipelined)."""
    socks = []
    pkt = startup_packet(PG_USER, PG_DB)
    try:
        while len(socks) < n:
            group = []
            for _ in range(min(batch, n - len(socks))):
                s = socket.create_connection(("127.0.0.1", port), timeout=30)
                socks.append(s)
                s.sendall(pkt)
                group.append(s)
            for s in group:
                finish_startup(s)
    except Exception:
        close_idle(socks)
        raise
    return socks


def close_idle(socks):
    for s in socks:
        try:
            s.sendall(b"X\0\0\0\4")
        except OSError:
            pass
        s.close()


def bench_idle(targets, cfg, res, failures):
    n = cfg["IDLE_CONNS"]
    out = res.setdefault("idle", {})
    for t in targets:
        if not t.is_proxy:
            continue
        log(f"{n} idle connections via {t.name}")
        time.sleep(1)
        before = proc_status_kib(t.pid, "VmRSS")
        t0 = time.perf_counter()
        try:
            socks = open_idle(t.port, n)
        except (RuntimeError, OSError) as e:
            failures.append(f"idle connections via {t.name}: {e}")
            log(failures[-1])
            continue
        open_s = time.perf_counter() - t0
        time.sleep(2)  # let the proxy settle (buffers, lazily touched pages)
        after = proc_status_kib(t.pid, "VmRSS")
        close_idle(socks)
        time.sleep(2)  # upstream backends exit before the next proxy's test
        released = proc_status_kib(t.pid, "VmRSS")
        out[t.name] = {
            "conns": n, "rss_before_kib": before, "rss_after_kib": after,
            "rss_after_close_kib": released, "open_seconds": open_s,
            "kib_per_conn": (after - before) / n if before and after else None,
        }


# ---- 6. report --------------------------------------------------------------

def machine_info():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "loadavg": load}


def fmt(x, spec=".0f", none="—"):
    return none if x is None else format(x, spec)


def ratio(a, b):
    return a / b if a is not None and b else None


def goal_rows(res):
    pb = res.get("pgbench", {})
    rows = []
    if "pgveil" not in pb:
        return rows
    for mode in ("simple", "prepared"):
        v = pb["pgveil"][mode]["tps_median"]
        d = pb.get("direct", {}).get(mode, {}).get("tps_median")
        b = pb.get("pgbouncer", {}).get(mode, {}).get("tps_median")
        r = ratio(v, d)
        rows.append((f"TPS vs direct (-M {mode})", f"{fmt(r, '.3f')}×",
                     f"≥ {GOALS['tps_ratio']}×", r is not None and r >= GOALS["tps_ratio"]))
        rb = ratio(v, b)
        rows.append((f"TPS vs pgbouncer (-M {mode})", f"{fmt(v)} vs {fmt(b)} ({fmt(rb, '.3f')}×)",
                     "≥ pgbouncer", rb is not None and rb >= 1.0))
    k = res.get("idle", {}).get("pgveil", {}).get("kib_per_conn")
    rows.append(("RSS per idle connection", f"{fmt(k, '.2f')} KiB", f"≤ {GOALS['kib_per_conn']:.0f} KiB",
                 k is not None and k <= GOALS["kib_per_conn"]))
    return rows


def render(res, cfg):
    m0, m1 = res["machine_start"], res["machine_end"]
    L = []
    L.append(f"# pgveil benchmark — {res['date']}")
    L.append("")
    L.append(f"- command: `{res['command']}` (git {os.environ.get('GIT_REV', '?')})")
    L.append(f"- machine: {m0['nproc']} CPUs, {m0['cpu']}, Linux {m0['kernel']}; "
             f"loadavg at start {m0['loadavg']}, at end {m1['loadavg']} "
             f"(client, proxies and PostgreSQL all share these CPUs)")
    L.append(f"- settings: DURATION={cfg['DURATION']} s, ROUNDS={cfg['ROUNDS']}, "
             f"CLIENTS={cfg['CLIENTS']}, JOBS={cfg['JOBS']}, SCALE={cfg['SCALE']}, "
             f"SELECT_REPS={cfg['SELECT_REPS']}, SELECT_ROWS={cfg['SELECT_ROWS']}, "
             f"IDLE_CONNS={cfg['IDLE_CONNS']}, pgveil --workers {cfg['WORKERS']}")
    L.append("- PostgreSQL 15 (fsync=off, shared_buffers=128MB, max_connections=1200), "
             "pgbouncer session pooling (default_pool_size=20), pgveil --passthrough; all on 127.0.0.1")
    if cfg["VEIL_NOTE"]:
        L.append(f"- **{cfg['VEIL_NOTE']}**")
    L.append("")

    pb = res.get("pgbench", {})
    if pb:
        L.append(f"## pgbench -S (select-only), {cfg['CLIENTS']} clients, {cfg['JOBS']} threads, "
                 f"{cfg['DURATION']} s × {cfg['ROUNDS']} interleaved rounds")
        L.append("")
        L.append("| target | mode | median TPS | × direct | avg latency ms | proxy CPU % | TPS per round |")
        L.append("|---|---|---:|---:|---:|---:|---|")
        for mode in ("simple", "prepared"):
            d = pb.get("direct", {}).get(mode, {}).get("tps_median")
            for name, e in pb.items():
                x = e[mode]
                runs = ", ".join(fmt(v) for v in x["tps_runs"]) or "failed"
                L.append(f"| {name} | {mode} | {fmt(x['tps_median'])} | "
                         f"{fmt(ratio(x['tps_median'], d), '.3f')} | {fmt(x['lat_ms_median'], '.3f')} | "
                         f"{fmt(x['proxy_cpu_pct_median'], '.0f')} | {runs} |")
        L.append("")

    fe = res.get("fetch", {})
    if fe:
        L.append(f"## {cfg['SELECT_ROWS']:,}-row fetch with psql to /dev/null "
                 f"(median of {cfg['SELECT_REPS']})")
        L.append("")
        L.append("`SELECT g, md5(g::text) FROM generate_series(1,N) g`, and the same as "
                 "`COPY (…) TO STDOUT`. Peak RSS: the proxy process, VmHWM reset before each run "
                 "and VmRSS sampled every 5 ms; max over runs.")
        L.append("")
        L.append("| target | SELECT s | × direct | COPY s | × direct | proxy peak RSS KiB (SELECT) | (COPY) |")
        L.append("|---|---:|---:|---:|---:|---:|---:|")
        ds = fe.get("direct", {}).get("select", {}).get("wall_median")
        dc = fe.get("direct", {}).get("copy", {}).get("wall_median")
        for name, e in fe.items():
            s, c = e["select"], e["copy"]
            L.append(f"| {name} | {fmt(s['wall_median'], '.3f')} | {fmt(ratio(s['wall_median'], ds), '.3f')} | "
                     f"{fmt(c['wall_median'], '.3f')} | {fmt(ratio(c['wall_median'], dc), '.3f')} | "
                     f"{fmt(s['peak_rss_kib'])} | {fmt(c['peak_rss_kib'])} |")
        L.append("")

    idle = res.get("idle", {})
    if idle:
        L.append(f"## RSS with {cfg['IDLE_CONNS']} idle client connections "
                 "(startup completed, trust auth)")
        L.append("")
        L.append("| proxy | RSS before KiB | RSS with conns KiB | KiB per conn | RSS after close KiB | open time s |")
        L.append("|---|---:|---:|---:|---:|---:|")
        for name, e in idle.items():
            L.append(f"| {name} | {fmt(e['rss_before_kib'])} | {fmt(e['rss_after_kib'])} | "
                     f"{fmt(e['kib_per_conn'], '.2f')} | {fmt(e['rss_after_close_kib'])} | "
                     f"{fmt(e['open_seconds'], '.2f')} |")
        L.append("")

    rows = goal_rows(res)
    if rows:
        L.append("## pgveil pass-through vs targets")
        L.append("")
        L.append("| metric | measured | target | met |")
        L.append("|---|---|---|---|")
        for metric, val, goal, ok in rows:
            L.append(f"| {metric} | {val} | {goal} | {'yes' if ok else '**NO**'} |")
        L.append("")

    if res["failures"]:
        L.append("## Failures")
        L.append("")
        L.extend(f"- {f}" for f in res["failures"])
        L.append("")
    return "\n".join(L)


def on_term(signum, frame):
    # Raising here makes subprocess.run kill the running pgbench/psql child.
    raise SystemExit(128 + signum)


def main():
    signal.signal(signal.SIGTERM, on_term)
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", required=True, help="name:port:pid,...")
    ap.add_argument("--out", required=True)
    ap.add_argument("--tmp", required=True)
    a = ap.parse_args()
    cfg = {k: env_int(k, d) for k, d in (("DURATION", 10), ("ROUNDS", 3), ("CLIENTS", 8),
                                         ("JOBS", 2), ("SCALE", 10), ("SELECT_REPS", 3),
                                         ("SELECT_ROWS", 1000000), ("IDLE_CONNS", 1000),
                                         ("WORKERS", 2))}
    cfg["tmp"] = a.tmp
    cfg["VEIL_NOTE"] = os.environ.get("VEIL_NOTE", "")
    targets = [Target(s) for s in a.targets.split(",")]
    res = {"date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
           "command": os.environ.get("BENCH_CMD", "bench/run.sh"),
           "machine_start": machine_info(), "config": cfg, "failures": []}

    for step in (bench_pgbench, bench_fetch, bench_idle):
        step(targets, cfg, res, res["failures"])
        dead = [t.name for t in targets if not t.alive()]
        if dead:
            res["failures"].append(f"process died during {step.__name__}: {', '.join(dead)}")
            log(res["failures"][-1])
            break

    res["machine_end"] = machine_info()
    md = render(res, cfg)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "latest.md"), "w") as f:
        f.write(md + "\n")
    with open(os.path.join(a.out, "latest.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(md)
    return 1 if res["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
