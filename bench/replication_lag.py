"""Replication lag under a steady write load through the app (goal: p99 DB lag <= 1 s, uploads <= 20 s).

Usage: .venv/bin/python bench/replication_lag.py [--rate 50] [--duration 60] [--size 4096] [--keep]

Raises its own lab ("bench-lag"), deploys the site (drc.hosts.deploy.run_deploy), then from this machine
(the admin workstation) writes `rate` documents per second for `duration` seconds through the
application over HTTPS (POST <context>/dokumen on primary's address, port 443; the lab's
self-signed certificate is pinned: read over SSH, compared with what the server presents). Each
write is a row in tender_document and a file under the uploads directory.

Measured while it runs, by one sampler per host (a small python3 started over SSH with sudo; it
reads PostgreSQL over the local socket as postgres and the uploads directory as root):
- DB lag, seconds, per write: when its row becomes visible on the DRC minus when it became visible
  on primary (both hosts poll every --poll-s; the lab hosts share this machine's clock);
- DB lag, bytes: primary's pg_current_wal_lsn (interpolated) minus the DRC's pg_last_wal_replay_lsn,
  sampled every --lsn-s; also pg_stat_replication.replay_lag as primary sees it;
- uploads lag, per file: from the upload's HTTPS response to the file being present on the DRC
  with the same size and sha256 (the DRC's uploads directory is scanned every --files-s).
After the load it waits (bounded) for the DRC to catch up; a write never seen counts as infinite.

Exit 0 when measured (the goal status is printed), 2 when the measurement itself failed.
The lab is removed at the end (also on failure) unless --keep.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import math
import os
import shlex
import ssl
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from drc.hosts.deploy import converged_lab, release_lab
from drc.lab.lab import Lab
from drc.site import load_site

LAB = "bench-lag"
GOAL_DB_S = 1.0
GOAL_UPLOADS_S = 20.0

# Runs on a lab host as root: `python3 -c <this> <json args>`; one JSON object per line on stdout.
# A forked child drops to `postgres` and polls PostgreSQL (peer auth over the local socket); the
# parent scans the uploads directory. Both stop at their deadline or when our stdin closes.
SAMPLER = r'''
import hashlib, json, os, pwd, signal, sys, threading, time
A = json.loads(sys.argv[1])
deadline = time.time() + A["max_s"]
stop = threading.Event()
def out(obj):
    os.write(1, (json.dumps(obj, separators=(",", ":")) + "\n").encode())
def watch_stdin():
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        stop.set()
threading.Thread(target=watch_stdin, daemon=True).start()
parent = os.getpid()
pid = os.fork()
if pid == 0:
    pw = pwd.getpwnam("postgres")
    os.setgid(pw.pw_gid); os.setgroups([]); os.setuid(pw.pw_uid); os.chdir("/")
    import psycopg2
    conn = psycopg2.connect(dbname=A["db"], port=A["port"], user="postgres", application_name="siaga-bench")
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SELECT coalesce(max(id), 0) FROM tender_document")
    lo = cur.fetchone()[0]
    seen = set()
    out({"k": "ready", "t": time.time(), "base_id": lo})
    next_lsn = 0.0
    while time.time() < deadline and os.getppid() == parent:
        t0 = time.time()
        cur.execute("SELECT id FROM tender_document WHERE id > %s", (lo,))
        t1 = time.time()
        new = [r[0] for r in cur.fetchall() if r[0] not in seen]
        if new:
            seen.update(new)
            out({"k": "ids", "t": (t0 + t1) / 2, "ids": new})
            while lo + 1 in seen:
                seen.discard(lo + 1); lo += 1
        if t1 >= next_lsn:
            next_lsn = t1 + A["lsn_s"]
            t0 = time.time()
            cur.execute("SELECT pg_is_in_recovery(), (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
                        "ELSE pg_current_wal_lsn() END - '0/0'::pg_lsn)::bigint, "
                        "(SELECT extract(epoch FROM replay_lag)::float8 FROM pg_stat_replication "
                        " WHERE application_name = %s)", (A["standby"],))
            rec, lsn, rl = cur.fetchone()
            t1 = time.time()
            out({"k": "lsn", "t": (t0 + t1) / 2, "rec": rec, "lsn": lsn, "rl": rl})
        rest = A["poll_s"] - (time.time() - t0)
        if rest > 0:
            time.sleep(rest)
    os._exit(0)
try:
    known = {}
    if A.get("files"):
        out({"k": "files-ready", "t": time.time()})
    while A.get("files") and time.time() < deadline and not stop.is_set():
        t0 = time.time()
        for root, dirs, names in os.walk(A["files"]):
            for n in names:
                if n.startswith("."):
                    continue
                p = os.path.join(root, n)
                t = time.time()
                try:
                    st = os.stat(p)
                    key = (st.st_size, st.st_mtime_ns)
                    if known.get(p) == key:
                        continue
                    with open(p, "rb") as fh:
                        h = hashlib.sha256(fh.read()).hexdigest()
                except OSError:
                    continue
                known[p] = key
                out({"k": "file", "t": t, "p": p, "s": st.st_size, "h": h})
        stop.wait(max(0.0, A["files_s"] - (time.time() - t0)))
    stop.wait(max(0.0, deadline - time.time()))
finally:
    os.kill(pid, signal.SIGTERM)
    os.waitpid(pid, 0)
'''


class Sampler:
    """One SAMPLER on a lab host over SSH; its lines are collected by a reader thread."""

    def __init__(self, lab: Lab, host: str, args: dict):
        code = base64.b64encode(SAMPLER.encode()).decode()
        remote = (f"sudo -n python3 -c {shlex.quote('import base64,sys; exec(base64.b64decode(sys.argv.pop(1)))')} "
                  f"{code} {shlex.quote(json.dumps(args))}")
        self.host = host
        ssh = lab.ssh_cmd(host)
        self.proc = subprocess.Popen(ssh[:-1] + ["-T", "-o", "LogLevel=ERROR", ssh[-1], remote], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lock = threading.Lock()
        self.ids: dict[int, float] = {}  # row id -> first time seen
        self.lsn: list[tuple[float, int, float | None]] = []  # (t, lsn bytes, replay_lag s on primary)
        self.files: dict[str, list[tuple[float, int, str]]] = {}  # path -> [(t, size, sha256)]
        self.ready = threading.Event()
        self.files_ready = threading.Event()
        self.errors: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                m = json.loads(line)
            except ValueError:
                self.errors.append(line.strip())
                continue
            with self.lock:
                if m["k"] == "ids":
                    for i in m["ids"]:
                        self.ids.setdefault(i, m["t"])
                elif m["k"] == "lsn":
                    self.lsn.append((m["t"], m["lsn"], m["rl"]))
                elif m["k"] == "file":
                    self.files.setdefault(m["p"], []).append((m["t"], m["s"], m["h"]))
                elif m["k"] == "ready":
                    self.ready.set()
                elif m["k"] == "files-ready":
                    self.files_ready.set()

    def _read_err(self) -> None:
        for line in self.proc.stderr:
            self.errors.append(line.rstrip())

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.stdin:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wait_until(what: str, cond, deadline_s: float, interval_s: float = 0.2) -> bool:
    end = time.monotonic() + deadline_s
    while not cond():
        if time.monotonic() > end:
            print(f"timed out after {deadline_s:.0f} s waiting for {what}", file=sys.stderr)
            return False
        time.sleep(interval_s)
    return True


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); inf when a value is missing."""
    if not values:
        return math.nan
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


class Client:
    """HTTPS to the app on primary, one keep-alive connection per worker thread, certificate pinned."""

    def __init__(self, address: str, pinned_der: bytes, context_path: str):
        self.address, self.pinned, self.ctx_path = address, hashlib.sha256(pinned_der).digest(), context_path
        self.ssl = ssl.create_default_context()
        self.ssl.check_hostname, self.ssl.verify_mode = False, ssl.CERT_NONE  # checked by pin below
        self.local = threading.local()

    def _conn(self) -> http.client.HTTPSConnection:
        c = getattr(self.local, "conn", None)
        if c is None:
            c = http.client.HTTPSConnection(self.address, 443, context=self.ssl, timeout=30)
            c.connect()
            if hashlib.sha256(c.sock.getpeercert(binary_form=True)).digest() != self.pinned:
                c.close()
                raise ssl.SSLError(f"{self.address}:443 presents another certificate than the pinned one")
            self.local.conn = c
        return c

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        for attempt in (1, 2):  # a keep-alive connection closed by the server is reopened once
            c = self._conn()
            try:
                c.request(method, self.ctx_path + path, body=body,
                          headers={"Content-Type": "application/octet-stream"} if body else {})
                r = c.getresponse()
                return r.status, r.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                c.close()
                self.local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=50.0, help="writes per second (default 50)")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    ap.add_argument("--count", type=int, default=None, help="max writes (default rate x duration)")
    ap.add_argument("--size", type=int, default=4096, help="bytes per uploaded file (default 4096)")
    ap.add_argument("--workers", type=int, default=16, help="concurrent HTTPS connections (default 16)")
    ap.add_argument("--poll-s", type=float, default=0.05, help="row visibility poll on both hosts (default 0.05)")
    ap.add_argument("--lsn-s", type=float, default=0.25, help="WAL position sample (default 0.25)")
    ap.add_argument("--files-s", type=float, default=0.25, help="DRC uploads directory scan (default 0.25)")
    ap.add_argument("--drain-s", type=float, default=60.0, help="max wait for the DRC to catch up after the load")
    ap.add_argument("--keep", action="store_true", help=f"leave the lab '{LAB}' up at the end")
    args = ap.parse_args()
    count = args.count or int(args.rate * args.duration)

    lab = Lab(LAB)
    samplers: list[Sampler] = []
    try:
        if not converged_lab(lab, LAB).ok:
            return 2
        site = load_site(lab.site_file)
        app, pg = site.spse_app, site.postgresql
        primary, drc = "primary", "drc"
        cert_path = app.tls_certificate_file or "/etc/ssl/certs/siaga-spse-selfsigned.pem"
        pem = subprocess.run(lab.ssh_cmd(primary) + ["sudo", "-n", "cat", cert_path], capture_output=True,
                             text=True, timeout=30, check=True).stdout
        client = Client(lab.address(primary), ssl.PEM_cert_to_DER_cert(pem), app.context_path)
        status, body = client.request("GET", "/health")
        if status != 200:
            print(f"app health on primary: HTTP {status} {body[:300]!r}", file=sys.stderr)
            return 2

        max_s = args.duration + args.drain_s + 120
        common = {"db": pg.database, "port": site.firewall.postgresql_port, "standby": drc, "max_s": max_s,
                  "poll_s": args.poll_s, "lsn_s": args.lsn_s, "files_s": args.files_s}
        samplers = [Sampler(lab, primary, common), Sampler(lab, drc, {**common, "files": app.uploads_dir})]
        sp, sd = samplers
        for s in samplers:
            if not wait_until(f"the sampler on {s.host}", lambda s=s: s.ready.is_set() or not s.alive(), 60) or not s.alive():
                print("\n".join(s.errors[-20:]), file=sys.stderr)
                return 2
        if not wait_until("the uploads scan on the DRC", lambda: sd.files_ready.is_set() or not sd.alive(), 30):
            return 2

        # The load: open loop at `rate`, bounded by count and duration; in-flight writes bounded.
        writes: list[dict] = []
        wlock = threading.Lock()
        inflight = threading.BoundedSemaphore(args.workers * 4)
        payload_base = os.urandom(args.size)

        def write(i: int) -> None:
            body = i.to_bytes(8, "big") + payload_base[8:]
            rec = {"i": i, "sent": time.time(), "ok": False}
            try:
                code, data = client.request("POST", f"/dokumen?name=bench-{i:06d}.pdf", body)
                rec["resp"] = time.time()
                if code == 201:
                    doc = json.loads(data)
                    rec.update(ok=doc["sha256"] == hashlib.sha256(body).hexdigest(), id=doc["id"], path=doc["path"],
                               size=doc["size"], sha=doc["sha256"])
                else:
                    rec["error"] = f"HTTP {code} {data[:200]!r}"
            except Exception as exc:  # noqa: BLE001 - every failure is a failed write, counted
                rec["error"] = repr(exc)[:200]
            finally:
                inflight.release()
            with wlock:
                writes.append(rec)

        print(f"load: {count} writes at {args.rate:g}/s for at most {args.duration:g} s, {args.size} B files, "
              f"{args.workers} HTTPS connections to {lab.address(primary)}:443")
        t_start = time.time()
        end = time.monotonic() + args.duration
        mono0 = time.monotonic()
        submitted = 0
        with ThreadPoolExecutor(max_workers=args.workers) as pool:
            for i in range(count):
                target = mono0 + i / args.rate
                if target >= end:
                    break
                delay = target - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # pacing of the open-loop load, not a wait for a condition
                if not inflight.acquire(timeout=max(0.0, end - time.monotonic())):
                    break
                pool.submit(write, i)
                submitted += 1
        t_load_end = time.time()
        ok = [w for w in writes if w["ok"]]
        failed = [w for w in writes if not w["ok"]]
        if not ok:
            print(f"no write succeeded; first errors: {[w.get('error') for w in failed[:5]]}", file=sys.stderr)
            return 2
        span = max(w["resp"] for w in ok) - min(w["sent"] for w in ok)
        print(f"load done: {len(ok)} writes ok, {len(failed)} failed of {submitted} submitted in "
              f"{t_load_end - t_start:.1f} s; load average {os.getloadavg()[0]:.2f}")

        # Drain: every row and file seen on the DRC, or the deadline.
        def caught_up() -> bool:
            with sd.lock, sp.lock:
                rows = all(w["id"] in sd.ids and w["id"] in sp.ids for w in ok)
                files = all(any(h == w["sha"] and s == w["size"] for _t, s, h in sd.files.get(w["path"], ())) for w in ok)
            return (rows and files) or not (sd.alive() and sp.alive())
        wait_until("the DRC to catch up with every row and file", caught_up, args.drain_s)
        t_drained = time.time()
        for s in samplers:
            s.stop()
        for s in samplers:
            if s.errors:
                print(f"sampler on {s.host} said: " + " | ".join(s.errors[-5:]), file=sys.stderr)

        # DB lag, seconds, per write: visible on the DRC - visible on primary.
        db_s, db_missing = [], 0
        for w in ok:
            tp, td = sp.ids.get(w["id"]), sd.ids.get(w["id"])
            if tp is None:
                tp = w["resp"]  # the commit happened before the response; never seen by the poll (not expected)
            if td is None:
                db_missing += 1
                db_s.append(math.inf)
            else:
                db_s.append(max(0.0, td - tp))
        # DB lag, bytes: primary's WAL position at the DRC's sample time (interpolated) - DRC replay.
        prim = sorted((t, lsn) for t, lsn, _ in sp.lsn)
        db_b = []
        j = 0
        for t, replay, _ in sorted(sd.lsn):
            if not (t_start <= t <= t_load_end + 1.0) or not prim or t < prim[0][0] or t > prim[-1][0]:
                continue
            while j + 1 < len(prim) and prim[j + 1][0] < t:
                j += 1
            (ta, la), (tb, lb) = prim[j], prim[min(j + 1, len(prim) - 1)]
            cur = la if tb == ta else la + (lb - la) * (t - ta) / (tb - ta)
            db_b.append(max(0.0, cur - replay))
        replay_lag = [rl for t, _, rl in sp.lsn if rl is not None and t_start <= t <= t_load_end + 1.0]
        wal_bytes = (max(l for t, l in prim if t <= t_load_end + 1.0) - min(l for t, l in prim if t >= t_start)) if prim else 0
        # Uploads lag per file: present on the DRC with the right size and sha256 - upload response.
        up_s, up_missing = [], 0
        for w in ok:
            seen = [t for t, s, h in sd.files.get(w["path"], ()) if h == w["sha"] and s == w["size"]]
            if seen:
                up_s.append(max(0.0, min(seen) - w["resp"]))
            else:
                up_missing += 1
                up_s.append(math.inf)

        def fmt(v: float, unit: str = "s") -> str:
            return "never" if math.isinf(v) else ("n/a" if math.isnan(v) else f"{v:.3f} {unit}" if unit == "s" else f"{v:,.0f} {unit}")

        rate = len(ok) / span if span > 0 else math.nan
        p99_db, p99_up = pct(db_s, 99), pct(up_s, 99)
        print()
        print(f"achieved write rate: {rate:.1f} writes/s ({len(ok)} rows + files over {span:.1f} s; target "
              f"{args.rate:g}/s; {len(failed)} failed); WAL written during the load: {wal_bytes / 1e6:.1f} MB")
        if failed:
            print(f"  first failures: {[w.get('error') for w in failed[:3]]}")
        print(f"DB lag, seconds (per write, DRC visible - primary visible, poll {args.poll_s:g} s): "
              f"median {fmt(statistics.median(db_s))}, p99 {fmt(p99_db)}, max {fmt(max(db_s))}"
              f"{f', {db_missing} rows never seen on the DRC' if db_missing else ''}")
        print(f"DB lag, bytes (primary WAL - DRC replay, {len(db_b)} samples every {args.lsn_s:g} s): "
              f"median {fmt(statistics.median(db_b) if db_b else math.nan, 'B')}, p99 {fmt(pct(db_b, 99), 'B')}, "
              f"max {fmt(max(db_b) if db_b else math.nan, 'B')}")
        if replay_lag:
            print(f"  pg_stat_replication.replay_lag on primary ({len(replay_lag)} samples): median "
                  f"{fmt(statistics.median(replay_lag))}, p99 {fmt(pct(replay_lag, 99))}")
        print(f"uploads lag (per file, upload response -> on the DRC with the same sha256, scan {args.files_s:g} s): "
              f"median {fmt(statistics.median(up_s))}, p99 {fmt(p99_up)}, max {fmt(max(up_s))}"
              f"{f', {up_missing} files never seen on the DRC within {args.drain_s:g} s' if up_missing else ''}")
        print(f"caught up {t_drained - t_load_end:.1f} s after the load; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        db_met, up_met, rate_met = p99_db <= GOAL_DB_S, p99_up <= GOAL_UPLOADS_S, rate >= 0.95 * args.rate
        print(f"goal p99 DB lag <= {GOAL_DB_S:g} s: {'met' if db_met else 'NOT met'}; "
              f"goal p99 uploads lag <= {GOAL_UPLOADS_S:g} s: {'met' if up_met else 'NOT met'}; "
              f"target rate {args.rate:g}/s: {'reached' if rate_met else 'NOT reached (machine load)'}")
        return 0
    finally:
        for s in samplers:
            if s.alive():
                s.stop()
        release_lab(lab, args.keep)


if __name__ == "__main__":
    raise SystemExit(main())
