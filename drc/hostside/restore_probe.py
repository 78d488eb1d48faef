"""The part of `siaga backup restore-test` that runs ON a host: `sudo python3 -c <this> '<json>'`.

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
  read of part of the data.

Never writes outside `scratch_root`; refuses a scratch path or port that is production's. SOP BK-4.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid

A = json.loads(sys.argv[1])


def run(cmd, user=None, env=None, timeout=3600):
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/", stdin=subprocess.DEVNULL,
                       env={**os.environ, **(env or {})})
    return p.returncode, p.stdout, p.stderr


def tail(text, n=1500):
    return text.strip()[-n:]


def safe_scratch():
    root = os.path.realpath(A["scratch_root"])
    for prod in A.get("production_paths", []):
        prod = os.path.realpath(prod)
        if root == prod or root.startswith(prod + "/") or prod.startswith(root + "/"):
            raise SystemExit(json.dumps({"error": f"scratch root {root} overlaps production path {prod}: refused"}))
    path = os.path.join(root, "rt-" + uuid.uuid4().hex[:12])
    os.makedirs(root, mode=0o755, exist_ok=True)
    os.mkdir(path, 0o700)
    return path


def pgbackrest(*args, timeout=3600):
    return run(["pgbackrest", f"--config-path={A['config_path']}", f"--stanza={A['stanza']}", *args], user=A["user"], timeout=timeout)


def psql(sql, host, port, db, user=None):
    # Same text of every value on both sides (timestamps are printed in the session's zone).
    return run(["psql", "-XAtq", "-F", "|", "-h", host, "-p", str(port), "-U", "postgres", "-d", db, "-c", sql], user=user, timeout=600,
               env={"PGTZ": "UTC", "PGDATESTYLE": "ISO, YMD", "PGCLIENTENCODING": "UTF8"})


def queries(host, port, user, which=None):
    out = {}
    for q in A.get("queries", []) if which is None else which:
        rc, so, se = psql(q["sql"], host, port, q["db"], user)
        out[q["key"]] = {"ok": rc == 0, "rows": [ln.split("|") for ln in so.splitlines()] if rc == 0 else None,
                         "error": None if rc == 0 else tail(se, 500)}
    return out


def mode_db_list():
    rc, so, se = pgbackrest("--output=json", "info", timeout=300)
    return {"ok": rc == 0, "info": json.loads(so) if rc == 0 else None, "error": None if rc == 0 else tail(se)}


def target_args():
    """Recovery to the backup's consistent point, or to a point in time (replaying archived WAL
    up to it: every transaction committed at or before it, none after)."""
    if A.get("target_time"):
        return ["--type=time", f"--target={A['target_time']}"]
    return ["--type=immediate"]


def mode_archive_now():
    """Production's WAL up to now archived (a point-in-time restore to a time just past needs the
    segment holding it): switch to a new segment and wait until the archiver has sent the old one."""
    t0 = time.monotonic()
    rc, so, se = psql("SELECT pg_walfile_name(pg_switch_wal())", A.get("socket_dir", "/var/run/postgresql"), A["port"], "postgres", "postgres")
    if rc != 0:
        return {"ok": False, "error": tail(se, 500)}
    want = so.strip()
    end = time.monotonic() + float(A.get("timeout_s", 120))
    last = ""
    while time.monotonic() < end:
        rc, so, se = psql("SELECT coalesce(last_archived_wal, ''), coalesce(last_failed_wal, '') FROM pg_stat_archiver",
                          A.get("socket_dir", "/var/run/postgresql"), A["port"], "postgres", "postgres")
        last = so.strip().split("|")[0] if rc == 0 else last
        # Same timeline: segment names sort in WAL order.
        if last[:8] == want[:8] and last >= want:
            return {"ok": True, "segment": want, "archived": last, "seconds": round(time.monotonic() - t0, 3)}
        time.sleep(0.5)
    return {"ok": False, "segment": want, "archived": last, "error": f"WAL segment {want} not archived within {A.get('timeout_s', 120)} s "
            f"(last archived: {last or 'none'})"}


def mode_db():
    res = {"verify": None, "restore": None, "start": None, "queries": {}, "cleanup": None}
    if int(A["port"]) == int(A["production_port"]):
        return {"error": f"scratch port {A['port']} is production's: refused"}
    t0 = time.monotonic()
    rc, so, se = pgbackrest("--log-level-console=info", "verify", timeout=A["timeout_s"])
    # pgBackRest's verify (2.45 and 2.55) exits 0 and says "completed successfully" even when it found bad
    # files: its result lines ("status: invalid", "checksum invalid: N", "missing: N") decide.
    bad = re.search(r"status: invalid|invalid checksum|checksum invalid|missing|ERROR", so + se, re.I)
    res["verify"] = {"ok": rc == 0 and "completed successfully" in so and not bad, "exit": rc, "seconds": round(time.monotonic() - t0, 3),
                     "output": tail("\n".join(ln for ln in (so + "\n" + se).splitlines()
                                              if "WARN" in ln or "ERROR" in ln or "invalid" in ln or "command end" in ln), 3000)}
    scratch = safe_scratch()
    pg, sock = os.path.join(scratch, "pg"), scratch
    os.chown(scratch, *ids(A["user"]))
    started = False
    try:
        run(["mkdir", "-m", "700", pg], user=A["user"])
        t0 = time.monotonic()
        restore_cmd = (f"pgbackrest --config-path={A['config_path']} --stanza={A['stanza']} --reset-pg1-host "
                       f"--pg1-path={pg} archive-get %f \"%p\"")
        rc, so, se = pgbackrest("--reset-pg1-host", f"--pg1-path={pg}", f"--spool-path={scratch}/spool", f"--set={A['label']}",
                                *target_args(), "--target-action=promote", f"--recovery-option=restore_command={restore_cmd}",
                                "--log-level-console=warn", "restore", timeout=A["timeout_s"])
        res["restore"] = {"ok": rc == 0, "exit": rc, "seconds": round(time.monotonic() - t0, 3),
                          "output": tail("\n".join(ln for ln in (so + se).splitlines() if "unknown user" not in ln and "unknown group" not in ln))}
        if rc != 0:
            return res
        for name, text in (("postgresql.conf", "# siaga restore-test scratch instance\n"), ("pg_hba.conf", "local all all trust\n"),
                           ("pg_ident.conf", "")):
            with open(os.path.join(pg, name), "w") as fh:
                fh.write(text)
            os.chown(os.path.join(pg, name), *ids(A["user"]))
        opts = (f"-c port={A['port']} -c listen_addresses= -c unix_socket_directories={sock} -c archive_mode=off "
                "-c hot_standby=off -c shared_buffers=32MB -c max_wal_senders=0 -c max_replication_slots=0 -c wal_level=minimal")
        t0 = time.monotonic()
        rc, so, se = run([f"{A['pg_bin']}/pg_ctl", "-D", pg, "-l", f"{scratch}/postgresql.log", "-w", "-t", str(A["start_timeout_s"]),
                          "-o", opts, "start"], user=A["user"], timeout=A["start_timeout_s"] + 30)
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
            end = time.monotonic() + A["start_timeout_s"]
            while True:
                rc, so, se = psql("SELECT pg_is_in_recovery()", sock, A["port"], "postgres", A["user"])
                if rc == 0 and so.strip() == "f" or time.monotonic() > end:
                    break
                time.sleep(0.3)
            res["start"]["in_recovery"] = so.strip() if rc == 0 else None
            res["start"]["seconds"] = round(time.monotonic() - t0, 3)
            if rc != 0:
                res["start"]["ok"] = False
                res["start"]["output"] = tail(se, 1500)
            res["queries"] = queries(sock, A["port"], A["user"], A.get("restored_queries"))
        return res
    finally:
        if started:
            run([f"{A['pg_bin']}/pg_ctl", "-D", pg, "-m", "immediate", "-w", "stop"], user=A["user"], timeout=120)
        shutil.rmtree(scratch, ignore_errors=True)
        res["cleanup"] = {"removed": not os.path.exists(scratch), "path": scratch, "stopped": True}


def ids(user):
    import pwd

    pw = pwd.getpwnam(user)
    return pw.pw_uid, pw.pw_gid


def mode_sql():
    return {"queries": queries(A.get("socket_dir", "/var/run/postgresql"), A["port"], "postgres")}


def restic(*args, timeout=3600):
    # The repository, password file and SSH command as the backup runner uses them (roles/backup).
    r = json.load(open(A.get("runner_config", "/etc/siaga/backup.json")))["restic"]
    env = {"RESTIC_REPOSITORY": r["repository"], "RESTIC_PASSWORD_FILE": r["password_file"], "RESTIC_CACHE_DIR": r["cache_dir"]}
    return run(["restic", "-o", f"sftp.command={r['sftp_command']}", *args], env=env, timeout=timeout)


def mode_files_list():
    rc, so, se = restic("snapshots", "--json", "--tag", A["tag"], timeout=300)
    return {"ok": rc == 0, "snapshots": json.loads(so or "[]") if rc == 0 else None, "error": None if rc == 0 else tail(se)}


def mode_files():
    res = {"check": None, "restore": None, "files": {}}
    t0 = time.monotonic()
    rc, so, se = restic("check", f"--read-data-subset={A['read_data_subset']}", timeout=A["timeout_s"])
    res["check"] = {"ok": rc == 0, "exit": rc, "seconds": round(time.monotonic() - t0, 3), "output": tail(so + "\n" + se, 2000)}
    scratch = safe_scratch()
    try:
        paths = A["paths"]
        t0 = time.monotonic()
        args = ["restore", A["snapshot"], "--target", scratch]
        for p in paths:
            args += ["--include", p]
        rc, so, se = restic(*args, timeout=A["timeout_s"]) if paths else (0, "", "")
        res["restore"] = {"ok": rc == 0, "exit": rc, "seconds": round(time.monotonic() - t0, 3), "output": tail(se, 1500)}
        for p in paths:
            f = os.path.join(scratch, p.lstrip("/"))
            try:
                h = hashlib.sha256()
                with open(f, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
                res["files"][p] = h.hexdigest()
            except OSError as exc:
                res["files"][p] = None
                res.setdefault("missing", {})[p] = str(exc)
        return res
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        res["cleanup"] = {"removed": not os.path.exists(scratch), "path": scratch}


try:
    out = {"db-list": mode_db_list, "db": mode_db, "archive-now": mode_archive_now, "sql": mode_sql, "files-list": mode_files_list, "files": mode_files}[A["mode"]]()
except Exception as exc:  # noqa: BLE001
    out = {"error": f"{type(exc).__name__}: {exc}"}
print(json.dumps(out))
