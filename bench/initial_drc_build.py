"""Initial DRC build time for a ~1 GB database (generated data): report it.

Usage: .venv/bin/python bench/initial_drc_build.py [--scale 68] [--keep] [--lab NAME]

Raises its own lab ("bench-build") and converges it with the site deploy. Then:
1. the DRC's PostgreSQL cluster is dropped (pg_dropcluster: as if the DRC were a new server);
2. ~1 GB is generated in the application's database on primary (`pgbench -i -s <scale>`, run as
   postgres over the local socket: no password anywhere) and checkpointed;
3. an empty Debian cluster is created on the DRC (pg_createcluster, not started) and the site
   deploy is run again: the replication role finds a cluster holding no database and builds the
   standby itself (its standby-build script: pg_basebackup -X stream with the DRC's slot,
   standby.signal, start). So the figure is the product's own path, not a hand-made copy.
A sampler on primary reads pg_stat_replication / pg_stat_progress_basebackup every --sample-s and
times: deploy start -> pg_basebackup start -> the DRC streaming. Afterwards the DRC must be in
recovery, streaming, and hold the same data (row counts of the generated tables).

Exit 0 when measured (no goal: the issue asks for the figure), 2 when the measurement failed.
The lab is removed at the end (also on failure) unless --keep.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shlex
import subprocess
import sys
import threading
import time

from drc.hosts.deploy import converged_lab, release_lab, run_deploy
from drc.lab.lab import Lab
from drc.site import load_site

LAB = "bench-build"

# Runs on primary as postgres (`runuser`): one JSON line per sample until stdin closes or deadline.
SAMPLER = r'''
import json, os, sys, threading, time
import psycopg2
A = json.loads(sys.argv[1])
stop = threading.Event()
def watch():
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        stop.set()
threading.Thread(target=watch, daemon=True).start()
conn = psycopg2.connect(dbname="postgres", port=A["port"], application_name="siaga-bench")
conn.autocommit = True
cur = conn.cursor()
deadline = time.time() + A["max_s"]
while not stop.is_set() and time.time() < deadline:
    t = time.time()
    cur.execute("SELECT coalesce(json_agg(json_build_object('app', application_name, 'state', state, "
                "'sent', sent_lsn - '0/0'::pg_lsn, 'replay', replay_lsn - '0/0'::pg_lsn)), '[]') FROM pg_stat_replication")
    senders = cur.fetchone()[0]
    cur.execute("SELECT coalesce(json_agg(json_build_object('phase', phase, 'streamed', backup_streamed, "
                "'total', backup_total)), '[]') FROM pg_stat_progress_basebackup")
    progress = cur.fetchone()[0]
    os.write(1, (json.dumps({"t": t, "senders": senders, "backup": progress}) + "\n").encode())
    stop.wait(max(0.0, A["sample_s"] - (time.time() - t)))
'''


def ssh(lab: Lab, host: str, *cmd: str, timeout: float = 120, check: bool = True) -> str:
    """A command on a lab host as the lab admin (sudo inside `cmd` where needed); its stdout."""
    base = lab.ssh_cmd(host)
    proc = subprocess.run(base[:-1] + ["-o", "LogLevel=ERROR", base[-1], " ".join(cmd)],
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{host}: {' '.join(cmd)[:200]} failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    return proc.stdout.strip()


def psql(lab: Lab, host: str, db: str, sql: str, port: int, timeout: float = 600) -> str:
    return ssh(lab, host, "sudo", "-n", "runuser", "-u", "postgres", "--", "psql", "-XAtq", "-p", str(port),
               "-d", shlex.quote(db), "-c", shlex.quote(sql), timeout=timeout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, default=68, help="pgbench scale (68: a database of about 1.0 GiB; default 68)")
    ap.add_argument("--sample-s", type=float, default=0.25, help="sampling interval on primary (default 0.25)")
    ap.add_argument("--lab", default=LAB, help=f"lab name (default {LAB})")
    ap.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    args = ap.parse_args()
    lab = Lab(args.lab)
    sampler = None
    try:
        if not converged_lab(lab, args.lab).ok:
            return 2
        site = load_site(lab.site_file)
        pg = site.postgresql
        v, c, db, port = pg.version, pg.cluster, pg.database, site.firewall.postgresql_port
        if psql(lab, "drc", "postgres", "SELECT pg_is_in_recovery()", port) != "t":
            print("the DRC is not a standby after the deploy", file=sys.stderr)
            return 2

        # 1. The DRC as a new server: no cluster at all while primary fills up.
        ssh(lab, "drc", "sudo", "-n", "pg_dropcluster", "--stop", v, c)
        # 2. ~1 GB on primary, generated server-side, as postgres over the local socket.
        t0 = time.monotonic()
        ssh(lab, "primary", "sudo", "-n", "runuser", "-u", "postgres", "--", f"/usr/lib/postgresql/{v}/bin/pgbench",
            "-i", "-s", str(args.scale), "-I", "dtGvp", "-p", str(port), db, timeout=3600)
        psql(lab, "primary", db, "CHECKPOINT", port)
        gen_s = time.monotonic() - t0
        db_bytes = int(psql(lab, "primary", db, f"SELECT pg_database_size('{db}')", port))
        cluster_bytes = int(psql(lab, "primary", db, "SELECT sum(pg_database_size(oid)) FROM pg_database", port))
        accounts = psql(lab, "primary", db, "SELECT count(*) FROM pgbench_branches", port)
        print(f"generated on primary: database {db} {db_bytes / 2**30:.2f} GiB ({db_bytes / 1e9:.2f} GB), cluster "
              f"{cluster_bytes / 2**30:.2f} GiB, pgbench scale {args.scale} ({accounts} branches, "
              f"{int(accounts) * 100000:,} accounts) in {gen_s:.0f} s")

        # 3. An empty cluster on the DRC; the deploy's replication role builds the standby.
        ssh(lab, "drc", "sudo", "-n", "pg_createcluster", v, c)
        code = base64.b64encode(SAMPLER.encode()).decode()
        remote = (f"sudo -n runuser -u postgres -- python3 -c "
                  f"{shlex.quote('import base64,sys; exec(base64.b64decode(sys.argv.pop(1)))')} {code} "
                  f"{shlex.quote(json.dumps({'port': port, 'sample_s': args.sample_s, 'max_s': 7200}))}")
        base = lab.ssh_cmd("primary")
        sampler = subprocess.Popen(base[:-1] + ["-T", "-o", "LogLevel=ERROR", base[-1], remote], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        samples: list[dict] = []
        first = threading.Event()

        def read() -> None:
            for line in sampler.stdout:
                try:
                    samples.append(json.loads(line))
                    first.set()
                except ValueError:
                    pass
        threading.Thread(target=read, daemon=True).start()
        if not first.wait(60):
            print(f"no sample from primary: {sampler.stderr.read() if sampler.poll() is not None else 'timeout'}",
                  file=sys.stderr)
            return 2
        load_before = os.getloadavg()[0]
        t_deploy = time.time()
        dep = run_deploy(lab.site_file, timeout=7200)
        t_deploy_end = time.time()
        if not dep.ok:
            print(dep.output[-6000:], file=sys.stderr)
            print(f"rebuilding deploy failed (exit {dep.returncode})", file=sys.stderr)
            return 2

        def streaming(s: dict) -> bool:
            return any(x["app"] == "drc" and x["state"] == "streaming" for x in s["senders"])
        end = time.monotonic() + 120
        while not any(streaming(s) for s in list(samples)):  # polled with a deadline
            if time.monotonic() > end or sampler.poll() is not None:
                print("the DRC is not streaming 120 s after the deploy", file=sys.stderr)
                return 2
            time.sleep(args.sample_s)
        sampler.stdin.close()
        sampler.wait(timeout=30)
        snap = list(samples)
        t_backup = next((s["t"] for s in snap if s["backup"] or any(x["state"] == "backup" for x in s["senders"])), None)
        t_stream = next(s["t"] for s in snap if streaming(s))
        totals = [b["total"] for s in snap for b in s["backup"] if b.get("total")]

        # The result must be the same data, on a standby that streams.
        rec = psql(lab, "drc", "postgres", "SELECT pg_is_in_recovery()", port)
        recv = psql(lab, "drc", "postgres", "SELECT status FROM pg_stat_wal_receiver", port)
        drc_accounts = psql(lab, "drc", db, "SELECT count(*) FROM pgbench_branches", port)
        drc_db_bytes = int(psql(lab, "drc", db, f"SELECT pg_database_size('{db}')", port))
        if rec != "t" or recv != "streaming" or drc_accounts != accounts:
            print(f"DRC after the build: in recovery {rec}, receiver {recv}, branches {drc_accounts} (primary {accounts})",
                  file=sys.stderr)
            return 2
        print(f"DRC rebuilt by the site deploy: in recovery, WAL receiver {recv}, {db} {drc_db_bytes / 2**30:.2f} GiB, "
              f"{drc_accounts} branches (same as primary)")
        copied = max(totals) if totals else cluster_bytes
        if t_backup is not None:
            build_s = t_stream - t_backup
            print(f"initial DRC build (pg_basebackup start -> DRC streaming): {build_s:.1f} s for "
                  f"{copied / 2**30:.2f} GiB ({copied / 2**20 / build_s:.0f} MiB/s)")
        else:
            print("pg_basebackup was not seen by the sampler (too short?)")
        print(f"site deploy start -> DRC streaming: {t_stream - t_deploy:.1f} s; whole rebuilding deploy "
              f"{t_deploy_end - t_deploy:.1f} s (both hosts)")
        print(f"load average: {load_before:.2f} at the start of the build, "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} now ({os.cpu_count()} cores, shared)")
        return 0
    finally:
        if sampler and sampler.poll() is None:
            sampler.kill()
            sampler.wait()
        release_lab(lab, args.keep)


if __name__ == "__main__":
    raise SystemExit(main())
