#!/usr/bin/python3
"""restore-probe '<json>': the part of `siaga backup restore-test` that runs ON a host, as root.

Installed by roles/backup as /usr/local/lib/siaga/restore-probe (drc/hostside/__init__.py).
Standard library only (Debian's python3). One JSON object on stdout. Modes:

- `db-list` (repository host): pgBackRest's `info` of repo1.
- `db` (repository host): `pgbackrest verify`, then the chosen backup restored into a fresh scratch
  directory under `scratch_root` as the repository account (which cannot write PostgreSQL's own
  data directory), started as a throwaway PostgreSQL on another port with its socket inside the
  scratch directory (no TCP), queried (`queries`), stopped and removed, also on failure.
- `sql` (any PostgreSQL host): read-only queries as postgres on the production cluster.
- `archive-now` (database source host): a WAL switch, then wait until that segment is archived
  (so a point-in-time restore can reach a time just past).
- `files-list` / `files` (data host): restic snapshots; restore of sampled paths of one snapshot
  into a scratch directory, their sha256, then the scratch directory removed; `restic check` with a
  read of part of the data. With `sample`, the paths are production's own files under a root
  modified and changed before a cutoff (the snapshot's time), picked at random here, and their
  sha256 on production is answered beside the restored copies'.

Never writes outside `scratch_root`; refuses a scratch path or port that is production's. SOP BK-4.
"""

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
import uuid


class Refused(Exception):
    """A request this program will not carry out (its message is the JSON answer's error)."""


def run(cmd, user=None, env=None, timeout=3600):
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/", stdin=subprocess.DEVNULL,
                       env={**os.environ, **(env or {})})
    return p.returncode, p.stdout, p.stderr


def tail(text, n=1500):
    return text.strip()[-n:]


def scratch_overlap(scratch_root, production_paths):
    """Why a scratch root may not be used (it is, holds or is inside a production path), or None."""
    root = os.path.realpath(scratch_root)
    for prod in production_paths:
        prod = os.path.realpath(prod)
        if root == prod or root.startswith(prod + "/") or prod.startswith(root + "/"):
            return f"scratch root {root} overlaps production path {prod}: refused"
    return None


def safe_scratch(a):
    why = scratch_overlap(a["scratch_root"], a.get("production_paths", []))
    if why:
        raise Refused(why)
    root = os.path.realpath(a["scratch_root"])
    path = os.path.join(root, "rt-" + uuid.uuid4().hex[:12])
    os.makedirs(root, mode=0o755, exist_ok=True)
    os.mkdir(path, 0o700)
    return path


def pgbackrest(a, *args, timeout=3600):
    return run(["pgbackrest", f"--config-path={a['config_path']}", f"--stanza={a['stanza']}", *args], user=a["user"], timeout=timeout)


def psql(sql, host, port, db, user=None, tz="UTC"):
    # Same text of every value on both sides (timestamps are printed in the session's zone, which
    # is also the zone a `timestamp without time zone` column is compared in: the application's).
    return run(["psql", "-XAtq", "-F", "|", "-h", host, "-p", str(port), "-U", "postgres", "-d", db, "-c", sql], user=user, timeout=600,
               env={"PGTZ": tz, "PGDATESTYLE": "ISO, YMD", "PGCLIENTENCODING": "UTF8"})


def query_result(rc, so, se):
    """psql's answer to one query: its '|'-separated rows, or the error."""
    return {"ok": rc == 0, "rows": [ln.split("|") for ln in so.splitlines()] if rc == 0 else None,
            "error": None if rc == 0 else tail(se, 500)}


def queries(a, host, port, user, which=None):
    out = {}
    for q in a.get("queries", []) if which is None else which:
        out[q["key"]] = query_result(*psql(q["sql"], host, port, q["db"], user, q.get("tz") or "UTC"))
    return out


def mode_db_list(a):
    rc, so, se = pgbackrest(a, "--output=json", "info", timeout=300)
    return {"ok": rc == 0, "info": json.loads(so) if rc == 0 else None, "error": None if rc == 0 else tail(se)}


def target_args(a):
    """Recovery to the backup's consistent point, or to a point in time (replaying archived WAL
    up to it: every transaction committed at or before it, none after)."""
    if a.get("target_time"):
        return ["--type=time", f"--target={a['target_time']}"]
    return ["--type=immediate"]


def archived_past(last, want):
    """Whether the archiver's last archived segment is `want` or later. Segment names sort in WAL
    order within a timeline (their first 8 hex digits); another timeline is not taken as past."""
    return bool(last) and last[:8] == want[:8] and last >= want


def mode_archive_now(a):
    """Production's WAL up to now archived (a point-in-time restore to a time just past needs the
    segment holding it): switch to a new segment and wait until the archiver has sent the old one."""
    t0 = time.monotonic()
    sock = a.get("socket_dir", "/var/run/postgresql")
    rc, so, se = psql("SELECT pg_walfile_name(pg_switch_wal())", sock, a["port"], "postgres", "postgres")
    if rc != 0:
        return {"ok": False, "error": tail(se, 500)}
    want = so.strip()
    end = time.monotonic() + float(a.get("timeout_s", 120))
    last = ""
    while time.monotonic() < end:
        rc, so, se = psql("SELECT coalesce(last_archived_wal, ''), coalesce(last_failed_wal, '') FROM pg_stat_archiver",
                          sock, a["port"], "postgres", "postgres")
        last = so.strip().split("|")[0] if rc == 0 else last
        if archived_past(last, want):
            return {"ok": True, "segment": want, "archived": last, "seconds": round(time.monotonic() - t0, 3)}
        time.sleep(0.5)
    return {"ok": False, "segment": want, "archived": last, "error": f"WAL segment {want} not archived within {a.get('timeout_s', 120)} s "
            f"(last archived: {last or 'none'})"}


def verify_result(rc, so, se):
    """`pgbackrest verify`'s answer. pgBackRest's verify (2.45 and 2.55) exits 0 and says "completed
    successfully" even when it found bad files: its result lines ("status: invalid", "checksum
    invalid: N", "missing: N") decide."""
    bad = re.search(r"status: invalid|invalid checksum|checksum invalid|missing|ERROR", so + se, re.I)
    return {"ok": rc == 0 and "completed successfully" in so and not bad, "exit": rc,
            "output": tail("\n".join(ln for ln in (so + "\n" + se).splitlines()
                                     if "WARN" in ln or "ERROR" in ln or "invalid" in ln or "command end" in ln), 3000)}


def mode_db(a):
    res = {"verify": None, "restore": None, "start": None, "queries": {}, "cleanup": None}
    if int(a["port"]) == int(a["production_port"]):
        return {"error": f"scratch port {a['port']} is production's: refused"}
    t0 = time.monotonic()
    res["verify"] = verify_result(*pgbackrest(a, "--log-level-console=info", "verify", timeout=a["timeout_s"]))
    res["verify"]["seconds"] = round(time.monotonic() - t0, 3)
    scratch = safe_scratch(a)
    pg, sock = os.path.join(scratch, "pg"), scratch
    os.chown(scratch, *ids(a["user"]))
    started = False
    try:
        run(["mkdir", "-m", "700", pg], user=a["user"])
        t0 = time.monotonic()
        restore_cmd = (f"pgbackrest --config-path={a['config_path']} --stanza={a['stanza']} --reset-pg1-host "
                       f"--pg1-path={pg} archive-get %f \"%p\"")
        rc, so, se = pgbackrest(a, "--reset-pg1-host", f"--pg1-path={pg}", f"--spool-path={scratch}/spool", f"--set={a['label']}",
                                *target_args(a), "--target-action=promote", f"--recovery-option=restore_command={restore_cmd}",
                                "--log-level-console=warn", "restore", timeout=a["timeout_s"])
        res["restore"] = {"ok": rc == 0, "exit": rc, "seconds": round(time.monotonic() - t0, 3),
                          "output": tail("\n".join(ln for ln in (so + se).splitlines() if "unknown user" not in ln and "unknown group" not in ln))}
        if rc != 0:
            return res
        for name, text in (("postgresql.conf", "# siaga restore-test scratch instance\n"), ("pg_hba.conf", "local all all trust\n"),
                           ("pg_ident.conf", "")):
            with open(os.path.join(pg, name), "w") as fh:
                fh.write(text)
            os.chown(os.path.join(pg, name), *ids(a["user"]))
        opts = (f"-c port={a['port']} -c listen_addresses= -c unix_socket_directories={sock} -c archive_mode=off "
                "-c hot_standby=off -c shared_buffers=32MB -c max_wal_senders=0 -c max_replication_slots=0 -c wal_level=minimal")
        t0 = time.monotonic()
        rc, so, se = run([f"{a['pg_bin']}/pg_ctl", "-D", pg, "-l", f"{scratch}/postgresql.log", "-w", "-t", str(a["start_timeout_s"]),
                          "-o", opts, "start"], user=a["user"], timeout=a["start_timeout_s"] + 30)
        started = rc == 0
        log = ""
        try:
            with open(f"{scratch}/postgresql.log") as fh:
                log = fh.read()
        except OSError:
            pass
        res["start"] = {"ok": rc == 0, "seconds": round(time.monotonic() - t0, 3),
                        "output": tail("\n".join(ln for ln in log.splitlines() if "FATAL" in ln or "ERROR" in ln or "recovery" in ln), 3000)}
        if started:
            # hot_standby is off: connections are refused until recovery reached the backup's
            # consistent point and promoted.
            end = time.monotonic() + a["start_timeout_s"]
            while True:
                rc, so, se = psql("SELECT pg_is_in_recovery()", sock, a["port"], "postgres", a["user"])
                if rc == 0 and so.strip() == "f" or time.monotonic() > end:
                    break
                time.sleep(0.3)
            res["start"]["in_recovery"] = so.strip() if rc == 0 else None
            res["start"]["seconds"] = round(time.monotonic() - t0, 3)
            if rc != 0:
                res["start"]["ok"] = False
                res["start"]["output"] = tail(se, 1500)
            res["queries"] = queries(a, sock, a["port"], a["user"], a.get("restored_queries"))
        return res
    finally:
        if started:
            run([f"{a['pg_bin']}/pg_ctl", "-D", pg, "-m", "immediate", "-w", "stop"], user=a["user"], timeout=120)
        shutil.rmtree(scratch, ignore_errors=True)
        res["cleanup"] = {"removed": not os.path.exists(scratch), "path": scratch, "stopped": True}


def ids(user):
    import pwd

    pw = pwd.getpwnam(user)
    return pw.pw_uid, pw.pw_gid


def mode_sql(a):
    return {"queries": queries(a, a.get("socket_dir", "/var/run/postgresql"), a["port"], "postgres")}


def restic(a, *args, timeout=3600):
    # The repository, password file and SSH command as the backup runner uses them (roles/backup).
    r = json.load(open(a.get("runner_config", "/etc/siaga/backup.json")))["restic"]
    env = {"RESTIC_REPOSITORY": r["repository"], "RESTIC_PASSWORD_FILE": r["password_file"], "RESTIC_CACHE_DIR": r["cache_dir"]}
    return run(["restic", "-o", f"sftp.command={r['sftp_command']}", *args], env=env, timeout=timeout)


def mode_files_list(a):
    rc, so, se = restic(a, "snapshots", "--json", "--tag", a["tag"], timeout=300)
    return {"ok": rc == 0, "snapshots": json.loads(so or "[]") if rc == 0 else None, "error": None if rc == 0 else tail(se)}


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def settled_before(st, cutoff):
    """A file last modified AND last changed (ctime: also a copy that kept an old mtime, a rename,
    a chmod) before the cutoff: the snapshot taken after it must hold it as it is now."""
    return max(st.st_mtime, st.st_ctime) < cutoff


def sample_files(root, cutoff, count, seed):
    """Up to `count` regular files under `root` settled before `cutoff`, picked with equal chance
    (reservoir sampling, one pass, sorted walk: a seed repeats the pick), and how many there were."""
    import random

    rng = random.Random(seed)
    picked, seen = [], 0
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            p = os.path.join(d, name)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if not (stat.S_ISREG(st.st_mode) and settled_before(st, cutoff)):
                continue
            seen += 1
            if len(picked) < count:
                picked.append(p)
            else:
                j = rng.randrange(seen)
                if j < count:
                    picked[j] = p
    return sorted(picked), seen


def production_hashes(paths, cutoff):
    """sha256 of production's own files; None for one that changed meanwhile or is unreadable."""
    out = {}
    for p in paths:
        try:
            digest = sha256_of(p)
            out[p] = digest if settled_before(os.lstat(p), cutoff) else None
        except OSError:
            out[p] = None
    return out


def quarantined_paths(records_file):
    """Upload paths ClamAV's scan moved to quarantine (roles/clamav: one JSON line each)."""
    try:
        with open(records_file) as fh:
            return {json.loads(line)["path"] for line in fh if line.strip()}
    except (OSError, ValueError, KeyError):
        return set()


def mode_files(a):
    res = {"check": None, "restore": None, "files": {}}
    if a.get("sample"):
        s = a["sample"]
        paths, res["eligible"] = sample_files(s["root"], float(s["cutoff"]), int(s["count"]), s.get("seed"))
        hashes = production_hashes(paths, float(s["cutoff"]))
        # One changed or removed between the pick and its read is left out, not failed.
        res["production"] = {p: h for p, h in hashes.items() if h is not None}
        res["skipped"] = sorted(p for p, h in hashes.items() if h is None)
        a = {**a, "paths": sorted(res["production"])}
    if a.get("quarantine_records"):
        # A file ClamAV quarantined left the uploads on purpose: a later snapshot rightly lacks it.
        gone = quarantined_paths(a["quarantine_records"])
        res["quarantined"] = sorted(p for p in a["paths"] if p in gone)
        a = {**a, "paths": [p for p in a["paths"] if p not in gone]}
    t0 = time.monotonic()
    rc, so, se = restic(a, "check", f"--read-data-subset={a['read_data_subset']}", timeout=a["timeout_s"])
    res["check"] = {"ok": rc == 0, "exit": rc, "seconds": round(time.monotonic() - t0, 3), "output": tail(so + "\n" + se, 2000)}
    scratch = safe_scratch(a)
    try:
        paths = a["paths"]
        t0 = time.monotonic()
        args = ["restore", a["snapshot"], "--target", scratch]
        for p in paths:
            args += ["--include", p]
        rc, so, se = restic(a, *args, timeout=a["timeout_s"]) if paths else (0, "", "")
        res["restore"] = {"ok": rc == 0, "exit": rc, "seconds": round(time.monotonic() - t0, 3), "output": tail(se, 1500)}
        for p in paths:
            f = os.path.join(scratch, p.lstrip("/"))
            try:
                res["files"][p] = sha256_of(f)
            except OSError as exc:
                res["files"][p] = None
                res.setdefault("missing", {})[p] = str(exc)
                # Production lacks it too (a file lost with the other site): not the backup's fault.
                if not os.path.lexists(p):
                    res.setdefault("not_in_production", []).append(p)
        return res
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        res["cleanup"] = {"removed": not os.path.exists(scratch), "path": scratch}


MODES = {"db-list": mode_db_list, "db": mode_db, "archive-now": mode_archive_now, "sql": mode_sql,
         "files-list": mode_files_list, "files": mode_files}


def answer(a):
    """The JSON answer to one request; a failure is {"error": ...}, never a traceback."""
    try:
        if a.get("mode") not in MODES:
            return {"error": f"unknown mode {a.get('mode')!r} (modes: {', '.join(MODES)})"}
        return MODES[a["mode"]](a)
    except Refused as exc:
        return {"error": str(exc)}
    except Exception as exc:  # noqa: BLE001 (reported to the workstation as the answer)
        return {"error": f"{type(exc).__name__}: {exc}"}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: restore-probe '<json args>' | restore-probe - (the JSON on stdin)", file=sys.stderr)
        return 2
    # `-`: the arguments on stdin: a sample of every document's path is longer than one argument may be.
    print(json.dumps(answer(json.load(sys.stdin) if argv[0] == "-" else json.loads(argv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
