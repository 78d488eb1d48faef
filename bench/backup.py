"""Incremental backups under three kinds of daily change, and restores of the same data against
`pg_restore` / `tar -x` (issue 9: "an honest incremental figure"). SOP BK-1 (goals: a backup
within 3 hours; an incremental <= 10 % of the full, measured as what it stores in the repository).

Usage: .venv/bin/python bench/backup.py [--scale 20] [--files 3000] [--file-kib 32] [--change-pct 1]
                                        [--platform debian12|debian13] [--lab NAME] [--keep]

Raises its lab (default "bench-backup"; with --platform through `siaga lab up --platform` when
this tree has that option, else on the lab's default platform, said so), converges it with the
site deploy, prints the platform, PostgreSQL and pgBackRest versions read from the hosts, then:
1. data on primary: `pgbench -i -s <scale>` in the application's database (scale 20: ~0.3 GiB)
   and `--files` upload files of random content (average `--file-kib` KiB);
2. full backups through the product: `siaga-backup run db --type full` on the DRC (pgBackRest)
   and `siaga-backup run uploads` on primary (restic, first snapshot);
3. three daily changes, each followed by the product's incremental backups (db `--type incr`,
   uploads), in this order:
   (c) contiguous: the first `--change-pct` % of pgbench_accounts' keys updated and the first
       `--change-pct` % of the files (sorted) replaced: the best case for block incremental;
   (a) random: `--change-pct` % of the rows updated at random across the table and as many files
       replaced at random;
   (b) append: `--change-pct` % new rows inserted and as many new upload files, as tenders come in;
   for each: the heap pages the changed rows were on and the change's WAL (a backup waits until its
   WAL is archived), the run's time and what it wrote, from the tools' own accounts (pgBackRest `info`:
   backup delta = data copied, repository delta = bytes stored; restic: data added) and the
   restic repository's growth on disk;
4. restore, same data both ways, after the last incremental (nothing changes in between):
   the database: pgBackRest restore + recovery of the latest backup (`siaga backup restore-test`,
   on the DRC) against `pg_dump -Fc` of the same database restored with `pg_restore` into a
   scratch database (on primary); the uploads: a restic restore of the whole latest snapshot
   against `tar -x` of a tar of the same uploads tree (both on primary; files and bytes counted).
Exit 0 when measured, 2 when a step failed. The lab is removed at the end (also on failure)
unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

from drc.hosts.deploy import converged_lab, machine_load, release_lab
from drc.lab.lab import Lab
from drc.site import load_site

LAB = "bench-backup"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 2**20
INCR_GOAL = 0.10  # an incremental stores at most 10 % of the full (BK-1)
BACKUP_GOAL_S = 3 * 3600  # a backup within 3 hours (BK-1)

# On primary: upload files, generated or changed. mode gen: N files; replace-first / replace-random:
# N existing files get new content of their own size; append: N new files in a new directory.
FILES = r"""
import os, random, shutil, sys
root, mode, n, kib, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rnd = random.Random(seed)
base = os.path.join(root, "bench")
def write(path, size):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(os.urandom(size))
if mode == "gen":
    shutil.rmtree(base, ignore_errors=True)  # a rerun on a kept lab starts from the same tree
    for i in range(n):
        write(os.path.join(base, "%03d" % (i // 100), "doc-%05d.pdf" % i), max(1, int(rnd.expovariate(1.0 / (kib * 1024)))))
elif mode == "append":
    d = os.path.join(base, "new-%d" % seed)
    for i in range(n):
        write(os.path.join(d, "doc-%05d.pdf" % i), max(1, int(rnd.expovariate(1.0 / (kib * 1024)))))
else:
    files = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(base) for f in fs)
    pick = files[:n] if mode == "replace-first" else rnd.sample(files, n)
    for f in pick:
        write(f, os.path.getsize(f))
print(sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(base) for f in fs))
"""

# On the DRC: pgBackRest's own account of every backup (as the repository account).
PGBR_INFO = r"""
import json, subprocess
p = json.load(open("/etc/siaga/backup.json"))["pgbackrest"]
out = subprocess.run(["runuser", "-u", p["user"], "--", "pgbackrest", "--config-path=" + p["config_path"],
                      "--stanza=" + p["stanza"], "--output=json", "info"], check=True, capture_output=True, text=True).stdout
print(json.dumps({b["label"]: b["info"] for b in json.loads(out)[0].get("backup") or []}))
"""

# On primary: the whole latest uploads snapshot restored with restic (as siaga-backup reaches it).
RESTIC_RESTORE = r"""
import json, os, subprocess, sys
r = json.load(open("/etc/siaga/backup.json"))["restic"]
env = dict(os.environ, RESTIC_REPOSITORY=r["repository"], RESTIC_PASSWORD_FILE=r["password_file"], RESTIC_CACHE_DIR=r["cache_dir"])
subprocess.run(["restic", "-o", "sftp.command=" + r["sftp_command"], "restore", "latest", "--tag", "uploads",
                "--target", sys.argv[1]], env=env, check=True, capture_output=True)
"""


def ssh(lab: Lab, host: str, cmd: str, timeout: float = 600, check: bool = True) -> str:
    base = lab.ssh_cmd(host)
    proc = subprocess.run(base[:-1] + ["-o", "LogLevel=ERROR", base[-1], cmd], check=False, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{host}: {cmd[:200]} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-800:]}")
    return proc.stdout.strip()


def timed(lab: Lab, host: str, cmd: str, timeout: float = 7200) -> float:
    t0 = time.monotonic()
    ssh(lab, host, cmd, timeout=timeout)
    return time.monotonic() - t0


def py(script: str, *argv: str) -> str:
    return f"sudo -n python3 -c {shlex.quote(script)} " + " ".join(shlex.quote(a) for a in argv)


def runner(lab: Lab, host: str, *args: str) -> dict:
    out = ssh(lab, host, "sudo -n /usr/local/sbin/siaga-backup run " + " ".join(shlex.quote(a) for a in args) + " --trigger manual",
              timeout=4 * 3600, check=False)
    recs = [json.loads(ln[7:]) for ln in out.splitlines() if ln.startswith("RECORD ")]
    if not recs or recs[-1]["result"] != "success":
        raise RuntimeError(f"siaga-backup run {' '.join(args)} on {host} failed: {out[-1500:]}")
    return recs[-1]


def lab_up_platforms() -> list[str] | None:
    """The platforms `siaga lab up --platform` takes in this tree, or None when it has no such option."""
    proc = subprocess.run([sys.executable, "-m", "drc.cli", "lab", "up", "--help"], check=False, cwd=REPO, capture_output=True, text=True)
    text = " ".join(proc.stdout.split())
    if "--platform" not in text:
        return None
    after = text.split("--platform", 1)[1]
    if after.lstrip().startswith("{"):
        return after.split("{", 1)[1].split("}", 1)[0].split(",")
    return []  # an option without a listed choice: let `siaga lab up` judge the value


def pct(part: float, whole: float) -> str:
    return f"{100 * part / max(1, whole):.1f} %"


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, default=20, help="pgbench scale (20: about 0.3 GiB, 68: about 1 GiB; default 20)")
    ap.add_argument("--files", type=int, default=3000, help="upload files generated (default 3000)")
    ap.add_argument("--file-kib", type=int, default=32, help="average upload file size, KiB (default 32)")
    ap.add_argument("--change-pct", type=float, default=1.0, help="size of each daily change, %% of rows and files (default 1)")
    ap.add_argument("--platform", help="the lab's platform (debian12, debian13), passed to `siaga lab up --platform` "
                                       "when this tree has that option; else the lab's default")
    ap.add_argument("--lab", default=LAB, help=f"lab name (default {LAB})")
    ap.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    args = ap.parse_args()
    lab = Lab(args.lab)
    try:
        if args.platform:
            choices = lab_up_platforms()
            if choices is None:
                print(f"--platform {args.platform}: `siaga lab up` has no --platform option in this tree; "
                      "the lab runs on its default platform (read from the hosts below)")
            elif choices and args.platform not in choices:
                print(f"--platform {args.platform}: `siaga lab up` takes {', '.join(choices)}", file=sys.stderr)
                return 2
            else:
                up = subprocess.run([sys.executable, "-m", "drc.cli", "--lab", args.lab, "lab", "up", "--platform", args.platform],
                                    check=False, cwd=REPO, capture_output=True, text=True)
                if up.returncode != 0:
                    print(f"siaga lab up --platform {args.platform} failed: {(up.stderr or up.stdout)[-1500:]}", file=sys.stderr)
                    return 2
        if not converged_lab(lab, args.lab).ok:
            return 2
        site = load_site(lab.site_file)
        pg, port, uploads = site.postgresql, site.firewall.postgresql_port, site.spse_app.uploads_dir
        v, db = pg.version, pg.database
        psql = lambda sql, t=3600: ssh(lab, "primary", f"sudo -n runuser -u postgres -- psql -XAtq -p {port} -d {db} -c {shlex.quote(sql)}", t)

        # What was measured: read from the hosts, not from settings.
        os_of = {h: ssh(lab, h, ". /etc/os-release && echo \"$PRETTY_NAME\"") for h in ("primary", "drc")}
        pgbr = {h: ssh(lab, h, "pgbackrest version") for h in ("primary", "drc")}
        cfg = json.loads(ssh(lab, "drc", "sudo -n cat /etc/siaga/backup.json"))
        conf_dir = cfg["pgbackrest"]["config_path"]
        block = ssh(lab, "drc", f"sudo -n grep -rhs '^repo1-block=' {shlex.quote(conf_dir)}", check=False).strip() == "repo1-block=y"
        restic_v = ssh(lab, "primary", "restic version").split(" compiled")[0]
        print(f"platform: primary {os_of['primary']}, drc {os_of['drc']}; PostgreSQL {psql('SHOW server_version')}; "
              f"{pgbr['drc']} on the repository host (primary: {pgbr['primary']}), "
              f"{'block incremental (repo1-block=y)' if block else 'file-level incremental (no repo1-block)'}; {restic_v}")
        restic_dir = cfg["restic"]["repository"].rsplit(":", 1)[1]
        restic_du = lambda: int(ssh(lab, "drc", f"sudo -n du -sb {shlex.quote(restic_dir)} | cut -f1"))
        pgbr_info = lambda: json.loads(ssh(lab, "drc", py(PGBR_INFO), timeout=300))

        # 1. Data.
        t0 = time.monotonic()
        # pgbench's tables with every row's filler an md5 (pgbench leaves it blank: 20:1 compression,
        # and the changed rows below would be the only ones that do not compress so).
        bench = f"sudo -n runuser -u postgres -- /usr/lib/postgresql/{v}/bin/pgbench -q -i -s {args.scale} -p {port}"
        ssh(lab, "primary", f"{bench} -I dt {db}")
        psql(f"INSERT INTO pgbench_branches (bid, bbalance) SELECT g, 0 FROM generate_series(1, {args.scale}) g; "
             f"INSERT INTO pgbench_tellers (tid, bid, tbalance) SELECT g, (g - 1) / 10 + 1, 0 FROM generate_series(1, {args.scale * 10}) g; "
             "INSERT INTO pgbench_accounts (aid, bid, abalance, filler) SELECT g, (g - 1) / 100000 + 1, 0, md5(g::text) "
             f"FROM generate_series(1, {args.scale * 100000}) g")
        ssh(lab, "primary", f"{bench} -I vp {db}", timeout=3600)
        psql("CHECKPOINT")
        ssh(lab, "primary", py(FILES, uploads, "gen", str(args.files), str(args.file_kib), "42"), timeout=3600)
        db_bytes = int(psql(f"SELECT pg_database_size('{db}')"))
        up_bytes = int(ssh(lab, "primary", f"sudo -n du -sb {shlex.quote(uploads)} | cut -f1"))
        n_files = int(ssh(lab, "primary", f"sudo -n find {shlex.quote(uploads)} -type f | wc -l"))
        print(f"generated in {time.monotonic() - t0:.0f} s: database {db_bytes / MIB:.0f} MiB (pgbench scale {args.scale}), "
              f"uploads {n_files} files {up_bytes / MIB:.0f} MiB")

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
        du0 = restic_du()
        full_db = runner(lab, "drc", "db", "--type", "full")
        full_up = runner(lab, "primary", "uploads")
        full_info = pgbr_info()[full_db["details"]["label"]]
        full_restic_du = restic_du() - du0
        full_s = full_db["duration_s"] + full_up["duration_s"]
        full_stored = full_info["repository"]["delta"] + full_restic_du
        print(f"full backup: database {full_db['duration_s']:.1f} s (pgBackRest: {full_info['delta'] / MIB:.0f} MiB read, "
              f"{full_info['repository']['delta'] / MIB:.1f} MiB stored), uploads {full_up['duration_s']:.1f} s (restic: "
              f"{(full_up['size_bytes'] or 0) / MIB:.0f} MiB added, repository +{full_restic_du / MIB:.0f} MiB); "
              f"total {full_s:.1f} s (goal: within 3 h, {met(full_s <= BACKUP_GOAL_S)}) [{machine_load()}]")

        # 3. Three daily changes, an incremental after each.
        n_acc = args.scale * 100000
        rows = max(1, int(n_acc * args.change_pct / 100))
        nf = max(1, int(n_files * args.change_pct / 100))
        # Each change reports the rows it changed and the distinct heap pages they were on (old
        # versions for an update: fillfactor 100, so each new version goes to a page at the end).
        page = "(ctid::text::point)[0]"
        upd = ("CREATE TEMP TABLE pick AS SELECT aid, {page} AS page FROM pgbench_accounts WHERE {where}; "
               "UPDATE pgbench_accounts a SET abalance = abalance + 1, filler = md5(a.aid::text || 'x') FROM pick WHERE a.aid = pick.aid; "
               "SELECT count(*) || ' ' || count(DISTINCT page) FROM pick")
        cases = [
            ("c", "contiguous", f"the first {rows:,} keys updated, the first {nf} files (sorted) replaced",
             upd.format(page=page, where=f"aid <= {rows}"), "replace-first"),
            ("a", "random", f"~{rows:,} rows updated at random across the table, {nf} files replaced at random",
             "SELECT setseed(0.42); " + upd.format(page=page, where=f"random() < {args.change_pct / 100}"), "replace-random"),
            ("b", "append", f"{rows:,} new rows inserted, {nf} new files",
             (f"WITH u AS (INSERT INTO pgbench_accounts (aid, bid, abalance, filler) SELECT g, (g - 1) / 100000 + 1, 0, md5(g::text) "
             f"FROM generate_series({n_acc + 1}, {n_acc + rows}) g RETURNING {page} AS page) "
             "SELECT count(*) || ' ' || count(DISTINCT page) FROM u"), "append"),
        ]
        results = []
        for i, (key, name, what, sql, fmode) in enumerate(cases):
            rel_pages = int(psql("SELECT pg_relation_size('pgbench_accounts') / 8192"))
            lsn = psql("SELECT pg_current_wal_lsn()")
            changed, pages = map(int, psql(sql).splitlines()[-1].split())
            psql("CHECKPOINT")
            # The change's WAL (full-page images of every page it touched) reaches the repository
            # before the backup can finish: part of the incremental's time.
            wal = int(psql(f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{lsn}')"))
            ssh(lab, "primary", py(FILES, uploads, fmode, str(nf), str(args.file_kib), str(100 + i)), timeout=1800)
            du0 = restic_du()
            inc_db = runner(lab, "drc", "db", "--type", "incr")
            inc_up = runner(lab, "primary", "uploads")
            info = pgbr_info()[inc_db["details"]["label"]]
            rdu = restic_du() - du0
            s = inc_db["duration_s"] + inc_up["duration_s"]
            stored = info["repository"]["delta"] + rdu
            results.append((key, name, s, stored, info, inc_db, inc_up, rdu))
            print(f"({key}) {name}: {what} ({changed:,} rows, on {pages:,} of the table's {rel_pages:,} pages = {pct(pages, rel_pages)}; "
                  f"{wal / MIB:.0f} MiB of WAL)")
            print(f"    database: {inc_db['duration_s']:.1f} s; pgBackRest's backup delta (files changed, read whole) "
                  f"{info['delta'] / MIB:.1f} MiB = {pct(info['delta'], info['size'])} of the database ({info['size'] / MIB:.0f} MiB), stored "
                  f"{info['repository']['delta'] / MIB:.2f} MiB = {pct(info['repository']['delta'], full_info['repository']['delta'])} "
                  f"of its full (goal <= 10 %: {met(info['repository']['delta'] <= INCR_GOAL * full_info['repository']['delta'])})")
            print(f"    uploads: {inc_up['duration_s']:.1f} s; restic added {(inc_up['size_bytes'] or 0) / MIB:.2f} MiB, repository "
                  f"+{rdu / MIB:.2f} MiB = {pct(rdu, full_restic_du)} of its full (goal <= 10 %: {met(rdu <= INCR_GOAL * full_restic_du)})")
            print(f"    both: {s:.1f} s = {pct(s, full_s)} of the full's time; stored {stored / MIB:.2f} / {full_stored / MIB:.1f} MiB = "
                  f"{pct(stored, full_stored)} of the full (goal <= 10 %: {met(stored <= INCR_GOAL * full_stored)}) [{machine_load()}]")

        # 4. Restores of the same data. The database: restore-test (pgBackRest restore of the latest
        # backup + recovery in a scratch instance on the DRC, then its checks).
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "drc.cli", "backup", "restore-test", "--label", "latest", "--snapshot", "latest",
                               "--files", "20", "--tables", "1", str(lab.site_file), "--json"], check=False, cwd=REPO, capture_output=True, text=True,
                              timeout=4 * 3600)
        rt_s = time.monotonic() - t0
        rt = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}
        if rt.get("result") != "success":
            print(f"restore-test failed: {rt.get('problems') or proc.stderr[-1500:]}", file=sys.stderr)
            return 2
        dbp = rt["db"]
        pgbr_restore = dbp["restore"]["seconds"] + dbp["start"]["seconds"]
        print(f"restore-test end to end: {rt_s:.1f} s, BERHASIL (verify {dbp['verify']['seconds']:.1f} s, checks; "
              f"its 20 sampled files are not part of the comparison below) [{machine_load()}]")
        dump_s = timed(lab, "primary", f"sudo -n runuser -u postgres -- pg_dump -Fc -p {port} -f /var/tmp/bench.dump {db}")
        dump_b = int(ssh(lab, "primary", "sudo -n stat -c %s /var/tmp/bench.dump"))
        psql("DROP DATABASE IF EXISTS bench_restore")
        psql("CREATE DATABASE bench_restore")
        pgr_s = timed(lab, "primary", f"sudo -n runuser -u postgres -- pg_restore -p {port} -d bench_restore /var/tmp/bench.dump")
        ssh(lab, "primary", "sudo -n rm -f /var/tmp/bench.dump", check=False)
        psql("DROP DATABASE IF EXISTS bench_restore")
        print(f"database, {db_bytes / MIB:.0f} MiB when generated: pgBackRest restore {dbp['restore']['seconds']:.1f} s + recovery/start "
              f"{dbp['start']['seconds']:.1f} s = {pgbr_restore:.1f} s (DRC) vs pg_restore {pgr_s:.1f} s (primary; pg_dump -Fc {dump_s:.1f} s, "
              f"{dump_b / MIB:.0f} MiB): ratio {pgbr_restore / pgr_s:.2f} [{machine_load()}]")

        # The uploads: the whole latest snapshot with restic vs tar -x of the same tree.
        count = "find {0} -type f | wc -l; du -sb {0} | cut -f1"
        src_n, src_b = map(int, ssh(lab, "primary", f"sudo -n sh -c {shlex.quote(count.format(shlex.quote(uploads)))}").split())
        ssh(lab, "primary", "sudo -n rm -rf /var/tmp/bench-rr /var/tmp/bench-untar /var/tmp/bench-uploads.tar", check=False)
        rr_s = timed(lab, "primary", py(RESTIC_RESTORE, "/var/tmp/bench-rr"))
        rr_n, rr_b = map(int, ssh(lab, "primary", f"sudo -n sh -c {shlex.quote(count.format('/var/tmp/bench-rr' + uploads))}").split())
        tar_s = timed(lab, "primary", f"sudo -n tar -C {shlex.quote(os.path.dirname(uploads))} -cf /var/tmp/bench-uploads.tar "
                                      f"{shlex.quote(os.path.basename(uploads))}")
        untar_s = timed(lab, "primary", "sudo -n sh -c 'mkdir /var/tmp/bench-untar && tar -C /var/tmp/bench-untar -xf /var/tmp/bench-uploads.tar'")
        ut = "/var/tmp/bench-untar/" + os.path.basename(uploads)
        ut_n, ut_b = map(int, ssh(lab, "primary", f"sudo -n sh -c {shlex.quote(count.format(ut))}").split())
        ssh(lab, "primary", "sudo -n rm -rf /var/tmp/bench-rr /var/tmp/bench-untar /var/tmp/bench-uploads.tar", check=False)
        if (rr_n, rr_b) != (src_n, src_b) or (ut_n, ut_b) != (src_n, src_b):
            raise RuntimeError(f"restored uploads differ from the tree: source {src_n} files {src_b} B, restic {rr_n}/{rr_b}, tar {ut_n}/{ut_b}")
        print(f"uploads, {src_n} files {src_b / MIB:.0f} MiB (both restores counted equal to the tree): restic restore of the whole "
              f"latest snapshot {rr_s:.1f} s (from the DRC over SFTP) vs tar -x {untar_s:.1f} s (local tar, made in {tar_s:.1f} s): "
              f"ratio {rr_s / untar_s:.2f} [{machine_load()}]")

        print("summary (incremental stored / full stored, database + uploads; time):")
        for key, name, s, stored, info, *_ in results:
            print(f"  ({key}) {name:10s} {stored / MIB:7.2f} / {full_stored / MIB:.1f} MiB = {pct(stored, full_stored):>7s}  "
                  f"(database: changed files {pct(info['delta'], info['size'])} of its size); {s:.1f} s vs full {full_s:.1f} s")
        return 0
    except (RuntimeError, subprocess.TimeoutExpired, KeyError, ValueError) as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    finally:
        print("load average after: " + machine_load().removeprefix("load average "))
        release_lab(lab, args.keep)


if __name__ == "__main__":
    raise SystemExit(main())
