"""Backups of a ~1 GB database and 10,000 upload files (generated): full, incremental after a 1 %
change, restore, restore-test end to end; against a plain `pg_dump -Fc` + `tar` baseline in the
same run. SOP BK-1 (target: a backup within 3 hours; incremental <= 10 % of the full, measured as
what it stores in the repository; its time is printed too).

Usage: .venv/bin/python bench/backup.py [--scale 68] [--files 10000] [--file-kib 32] [--keep] [--lab NAME]

Raises its own lab ("bench-backup") and converges it with the site deploy, then:
1. ~1 GB in the application's database on primary (`pgbench -i -s <scale>`, as postgres over the
   local socket) and `--files` files of random content (average `--file-kib` KiB) in the uploads
   directory, generated on the host;
2. full backups through the product: `siaga-backup run db --type full` on the DRC (pgBackRest,
   pulling from primary) and `siaga-backup run uploads` on primary (restic, first snapshot);
3. a 1 % change: 1 % of pgbench_accounts updated (a contiguous key range) and 1 % of the files
   replaced; incremental backups the same way;
4. `siaga backup restore-test --label latest --snapshot latest` end to end (verify, restore into the
   scratch instance, recovery, checks) and its restore time;
5. baseline on primary: `pg_dump -Fc` of the database and `tar` of the uploads (both to /var/tmp),
   then `pg_restore` into a scratch database and `tar -x` into a scratch directory.
Ratios are printed. Exit 0 when measured, 2 when a step failed. The lab is removed at the end
(also on failure) unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

from drc.hosts.deploy import converged_lab, release_lab
from drc.lab.lab import Lab
from drc.site import load_site

LAB = "bench-backup"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GEN_FILES = r"""
import os, random, sys
root, n, kib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(42)
for i in range(n):
    d = os.path.join(root, "bench", "%03d" % (i // 100))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "doc-%05d.pdf" % i), "wb") as fh:
        fh.write(os.urandom(max(1, int(rnd.expovariate(1.0 / (kib * 1024))))))
"""


def ssh(lab: Lab, host: str, cmd: str, timeout: float = 600, check: bool = True) -> str:
    base = lab.ssh_cmd(host)
    proc = subprocess.run(base[:-1] + ["-o", "LogLevel=ERROR", base[-1], cmd], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{host}: {cmd[:200]} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-800:]}")
    return proc.stdout.strip()


def timed(lab: Lab, host: str, cmd: str, timeout: float = 7200) -> float:
    t0 = time.monotonic()
    ssh(lab, host, cmd, timeout=timeout)
    return time.monotonic() - t0


def runner(lab: Lab, host: str, *args: str) -> dict:
    out = ssh(lab, host, "sudo -n /usr/local/sbin/siaga-backup run " + " ".join(shlex.quote(a) for a in args) + " --trigger manual",
              timeout=4 * 3600, check=False)
    recs = [json.loads(ln[7:]) for ln in out.splitlines() if ln.startswith("RECORD ")]
    if not recs or recs[-1]["result"] != "success":
        raise RuntimeError(f"siaga-backup run {' '.join(args)} on {host} failed: {out[-1500:]}")
    return recs[-1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, default=68, help="pgbench scale (68: about 1.0 GiB; default 68)")
    ap.add_argument("--files", type=int, default=10000, help="upload files generated (default 10000)")
    ap.add_argument("--file-kib", type=int, default=32, help="average upload file size, KiB (default 32)")
    ap.add_argument("--lab", default=LAB, help=f"lab name (default {LAB})")
    ap.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    args = ap.parse_args()
    lab = Lab(args.lab)
    try:
        if not converged_lab(lab, args.lab).ok:
            return 2
        site = load_site(lab.site_file)
        pg, port, uploads = site.postgresql, site.firewall.postgresql_port, site.spse_app.uploads_dir
        v, db = pg.version, pg.database
        psql = lambda sql, t=3600: ssh(lab, "primary", f"sudo -n runuser -u postgres -- psql -XAtq -p {port} -d {db} -c {shlex.quote(sql)}", t)  # noqa: E731

        # 1. Data.
        t0 = time.monotonic()
        ssh(lab, "primary", f"sudo -n runuser -u postgres -- /usr/lib/postgresql/{v}/bin/pgbench -q -i -s {args.scale} -I dtGvp -p {port} {db}",
            timeout=3600)
        psql("CHECKPOINT")
        ssh(lab, "primary", f"sudo -n python3 -c {shlex.quote(GEN_FILES)} {shlex.quote(uploads)} {args.files} {args.file_kib}", timeout=3600)
        db_bytes = int(psql(f"SELECT pg_database_size('{db}')"))
        up_bytes = int(ssh(lab, "primary", f"sudo -n du -sb {shlex.quote(uploads)} | cut -f1"))
        n_files = int(ssh(lab, "primary", f"sudo -n find {shlex.quote(uploads)} -type f | wc -l"))
        print(f"generated in {time.monotonic() - t0:.0f} s: database {db_bytes / 2**30:.2f} GiB, uploads {n_files} files "
              f"{up_bytes / 2**20:.0f} MiB")

        # The bulk load's WAL must reach the repository first (pgBackRest's backup waits for its
        # start segment to be archived, archive-timeout 60 s): timed, polled with a deadline.
        t0 = time.monotonic()
        want = psql("SELECT pg_walfile_name(pg_switch_wal())")
        while True:
            last = psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
            if last[:8] == want[:8] and last >= want:
                break
            if time.monotonic() - t0 > 3600:
                raise RuntimeError(f"WAL archive did not catch up within 3600 s (last archived {last}, wanted {want})")
            time.sleep(2)
        print(f"WAL of the bulk load archived to the DRC repository in {time.monotonic() - t0:.0f} s (up to {want})")

        # 2. Full backups through the product.
        full_db = runner(lab, "drc", "db", "--type", "full")
        full_up = runner(lab, "primary", "uploads")
        full_s = full_db["duration_s"] + full_up["duration_s"]
        print(f"full backup: database {full_db['duration_s']:.1f} s ({(full_db['size_bytes'] or 0) / 2**20:.0f} MiB in the repository), "
              f"uploads {full_up['duration_s']:.1f} s ({(full_up['size_bytes'] or 0) / 2**20:.0f} MiB added); total {full_s:.1f} s")

        # 3. 1 % change, incremental.
        n_acc = args.scale * 100000
        psql(f"UPDATE pgbench_accounts SET abalance = abalance + 1, filler = md5(aid::text) WHERE aid <= {n_acc // 100}")
        psql("CHECKPOINT")
        change = max(1, n_files // 100)
        ssh(lab, "primary", f"sudo -n sh -c {shlex.quote(f'find {uploads}/bench -type f | sort | head -n {change} | while read f; do head -c 32768 /dev/urandom > $f; done')}",
            timeout=1800)
        inc_db = runner(lab, "drc", "db", "--type", "incr")
        inc_up = runner(lab, "primary", "uploads")
        inc_s = inc_db["duration_s"] + inc_up["duration_s"]
        size = lambda r: r["size_bytes"] or 0  # noqa: E731  (bytes the run added to the repository)
        inc_size, full_size = size(inc_db) + size(inc_up), size(full_db) + size(full_up)
        print(f"incremental after 1 % change ({n_acc // 100:,} rows, {change} files): database {inc_db['duration_s']:.1f} s "
              f"({size(inc_db) / 2**20:.1f} MiB = {100 * size(inc_db) / max(1, size(full_db)):.1f} % of its full), uploads "
              f"{inc_up['duration_s']:.1f} s ({size(inc_up) / 2**20:.1f} MiB = {100 * size(inc_up) / max(1, size(full_up)):.1f} % of its full)")
        print(f"incremental / full, stored in the repository: {inc_size / 2**20:.1f} / {full_size / 2**20:.1f} MiB = "
              f"{100 * inc_size / max(1, full_size):.1f} % (goal <= 10 %: {'met' if inc_size <= 0.1 * full_size else 'NOT met'}); "
              f"time: {inc_s:.1f} / {full_s:.1f} s = {100 * inc_s / full_s:.1f} % (each database backup also pays a fixed cost: "
              "checkpoint, WAL switch, waiting for the WAL to be archived)")

        # 4. restore-test end to end (the product's command from the workstation).
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "drc.cli", "backup", "restore-test", "--label", "latest", "--snapshot", "latest",
                               "--files", "20", "--tables", "1", str(lab.site_file), "--json"], cwd=REPO, capture_output=True, text=True, timeout=4 * 3600)
        rt_s = time.monotonic() - t0
        rt = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}
        if rt.get("result") != "success":
            print(f"restore-test failed: {rt.get('problems') or proc.stderr[-1500:]}", file=sys.stderr)
            return 2
        dbp, fp = rt["db"], rt["files"]
        print(f"restore-test end to end: {rt_s:.1f} s (verify {dbp['verify']['seconds']:.1f} s, database restore "
              f"{dbp['restore']['seconds']:.1f} s + recovery/start {dbp['start']['seconds']:.1f} s, restic check "
              f"{fp['check']['seconds']:.1f} s, {len(fp['files'])} sampled files restored {fp['restore_seconds']:.1f} s): BERHASIL")

        # Every upload file back from the latest snapshot (restore-test restores only a sample).
        rr = ("import json, os, subprocess; r = json.load(open('/etc/siaga/backup.json'))['restic']; "
              "env = dict(os.environ, RESTIC_REPOSITORY=r['repository'], RESTIC_PASSWORD_FILE=r['password_file'], RESTIC_CACHE_DIR=r['cache_dir']); "
              "subprocess.run(['restic', '-o', 'sftp.command=' + r['sftp_command'], 'restore', 'latest', '--tag', 'uploads', "
              "'--target', '/var/tmp/bench-rr'], env=env, check=True, capture_output=True)")
        files_restore_s = timed(lab, "primary", f"sudo -n python3 -c {shlex.quote(rr)}")
        ssh(lab, "primary", "sudo -n rm -rf /var/tmp/bench-rr", check=False)
        print(f"all uploads restored from the latest restic snapshot: {files_restore_s:.1f} s")

        # 5. Baseline: pg_dump -Fc + tar, and back.
        dump_s = timed(lab, "primary", f"sudo -n runuser -u postgres -- pg_dump -Fc -p {port} -f /var/tmp/bench.dump {db}")
        tar_s = timed(lab, "primary", f"sudo -n tar -C {shlex.quote(os.path.dirname(uploads))} -cf /var/tmp/bench-uploads.tar {shlex.quote(os.path.basename(uploads))}")
        dump_b = int(ssh(lab, "primary", "sudo -n stat -c %s /var/tmp/bench.dump /var/tmp/bench-uploads.tar").split()[0])
        tar_b = int(ssh(lab, "primary", "sudo -n stat -c %s /var/tmp/bench-uploads.tar"))
        base_s = dump_s + tar_s
        psql("DROP DATABASE IF EXISTS bench_restore")
        psql("CREATE DATABASE bench_restore")
        pgr_s = timed(lab, "primary", f"sudo -n runuser -u postgres -- pg_restore -p {port} -d bench_restore /var/tmp/bench.dump")
        untar_s = timed(lab, "primary", "sudo -n sh -c 'rm -rf /var/tmp/bench-untar && mkdir /var/tmp/bench-untar && tar -C /var/tmp/bench-untar -xf /var/tmp/bench-uploads.tar'")
        ssh(lab, "primary", "sudo -n rm -rf /var/tmp/bench.dump /var/tmp/bench-uploads.tar /var/tmp/bench-untar", check=False)
        psql("DROP DATABASE IF EXISTS bench_restore")
        print(f"baseline: pg_dump -Fc {dump_s:.1f} s ({dump_b / 2**20:.0f} MiB) + tar {tar_s:.1f} s ({tar_b / 2**20:.0f} MiB) = {base_s:.1f} s "
              f"each time (no incremental, not encrypted, on the same host); pg_restore {pgr_s:.1f} s + tar -x {untar_s:.1f} s")
        db_restore = dbp["restore"]["seconds"] + dbp["start"]["seconds"]
        print("ratios (siaga / baseline): "
              f"full {full_s / base_s:.2f}; incremental {inc_s / base_s:.2f}; "
              f"database restore (pgBackRest restore + recovery vs pg_restore) {db_restore / pgr_s:.2f}; "
              f"uploads restore (restic, all files) vs tar -x {files_restore_s / untar_s:.2f}; "
              f"full restore-test end to end vs pg_restore + tar -x {rt_s / (pgr_s + untar_s):.2f}")
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} now ({os.cpu_count()} cores, shared)")
        return 0
    except RuntimeError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    finally:
        release_lab(lab, args.keep)


if __name__ == "__main__":
    raise SystemExit(main())
