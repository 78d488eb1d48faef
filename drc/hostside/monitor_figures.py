#!/usr/bin/python3
"""monitor-figures '<json>': siaga's own figures for Prometheus, written for node-exporter's textfile
collector (SOP IN-3, IN-4, BK-3, EM-3).

Installed by roles/monitoring as /usr/local/lib/siaga/monitor-figures and run as root by
siaga-monitor-figures.timer. It reads what siaga already reads on this host, with the same code:
PostgreSQL through status-probe's `pg()` (role, WAL positions, the WAL receiver) and the backup
runner's log through backup-read's `read()` (each set's last success), the uploads through
status-probe's `uploads()` (their bytes and files: the capacity report's uploads growth; listed at
most every `uploads_every_s`, kept in STATE meanwhile, since a large uploads tree costs a walk), and
on a DRC host the restore tests from the workstation's records copied there (`records`: the
workstation's copy, drc/hostside/workstation_mirror.py; read with backup-read's `parse_log`).
The uploads lag (`uploads_heartbeat`): on the uploads sync's source a heartbeat (the time) written
into the uploads root, which lsyncd copies like any upload; on the hosts it goes to, that
heartbeat's time (its age is the lag, to within one figures interval: Prometheus' siaga:uploads_lag_seconds).
Arguments (JSON): {"out": "/var/lib/prometheus/node-exporter/siaga.prom", "pg_port": 5432,
"uploads_dir": "/home/file", "uploads_every_s": 900,
"uploads_heartbeat": {"role": "source" | "target", "path": "/home/file/.siaga-uploads-heartbeat"},
"records": "/var/lib/siaga/workstation-mirror/<site>/records", "copy": ["/var/lib/siaga/clamav/siaga_clamav.prom"]}.
The `copy` files (other siaga programs' figures: ClamAV's, AIDE's, written in their own state
directories, some of them root-only) are copied beside OUT under their own names, so the
exporter (user prometheus) reads them too. Written atomically (a temporary file
renamed), so the exporter never serves half a file.

Standard library only (Debian's python3).
"""

import importlib.machinery
import importlib.util
import json
import os
import sys
import time
from datetime import datetime

LIB = "/usr/local/lib/siaga"
OUT = "/var/lib/prometheus/node-exporter/siaga.prom"
STATE = "/var/lib/siaga/monitor-figures.json"
# Sets the runner lists that are no backup (restic forget): not figures of a backup's age.
NOT_BACKUPS = {"prune"}


def load(name, lib=LIB):
    """Another host program of siaga's, loaded from its file (they have no .py suffix). No bytecode
    is written beside it: a __pycache__ in the programs' directory is an unexplained file to AIDE."""
    sys.dont_write_bytecode = True
    path = os.path.join(lib, name)
    loader = importlib.machinery.SourceFileLoader(name.replace("-", "_"), path)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def lsn_bytes(lsn):
    """'16/B374D848' -> its byte position."""
    hi, lo = lsn.split("/")
    return (int(hi, 16) << 32) + int(lo, 16)


def timestamp(iso):
    return datetime.fromisoformat(iso).timestamp()


def pg_figures(pg):
    """(name, labels, value) of PostgreSQL's own view (status-probe's pg())."""
    if not pg or pg.get("error"):
        return [("siaga_pg_up", {}, 0)]
    out = [("siaga_pg_up", {}, 1), ("siaga_pg_in_recovery", {}, 1 if pg.get("in_recovery") else 0)]
    for kind in ("current", "receive", "replay"):
        if pg.get(f"{kind}_lsn"):
            out.append(("siaga_pg_wal_lsn_bytes", {"kind": kind}, lsn_bytes(pg[f"{kind}_lsn"])))
    if pg.get("in_recovery"):
        out.append(("siaga_pg_wal_receiver_streaming", {}, 1 if pg.get("receiver_status") == "streaming" else 0))
        for key in ("replay_age_s", "receiver_contact_age_s"):
            if pg.get(key) is not None:
                out.append((f"siaga_pg_{key[:-2]}_seconds", {}, pg[key]))
    return out


def backup_figures(b):
    """(name, labels, value) per backup set that runs here: its last success and last result
    (backup-read's read()). A set never successful has no last-success figure but its init time."""
    if not b or b.get("error"):
        return []
    out = []
    for name in b.get("runs", []):
        if name in NOT_BACKUPS:
            continue
        mine = [r for r in b.get("records", []) if r.get("set") == name and r.get("end")]
        ok = [timestamp(r["end"]) for r in mine if r.get("result") == "success"]
        if ok:
            out.append(("siaga_backup_last_success_timestamp_seconds", {"set": name}, max(ok)))
        elif b.get("initialised"):
            # Never a success: age counted from the repositories' initialisation, so it alerts in time.
            out.append(("siaga_backup_last_success_timestamp_seconds", {"set": name}, timestamp(b["initialised"])))
        if mine:
            last = max(mine, key=lambda r: r["end"])
            out.append(("siaga_backup_last_run_ok", {"set": name}, 1 if last.get("result") == "success" else 0))
    return out


RESTORE_TESTS = "restore-tests.jsonl"  # drc/backup/restore.py's records (SOP BK-4, BK-7)


def restore_test_figures(records):
    """(name, labels, value) of the restore tests recorded on the workstation: the last success's
    end and whether the last test passed. None recorded: no figure (nothing to say yet)."""
    done = [r for r in records if r.get("end")]
    if not done:
        return []
    ok = [timestamp(r["end"]) for r in done if r.get("result") == "success"]
    last = max(done, key=lambda r: timestamp(r["end"]))
    out = [("siaga_restore_test_last_ok", {}, 1 if last.get("result") == "success" else 0)]
    if ok:
        out.append(("siaga_restore_test_last_success_timestamp_seconds", {}, max(ok)))
    return out


def uploads_figures(listing):
    """(name, labels, value) of the uploads tree (status-probe's uploads())."""
    if not listing or listing.get("error"):
        return []
    files = listing.get("files", [])
    return [("siaga_uploads_bytes", {}, sum(f[1] for f in files)), ("siaga_uploads_files", {}, len(files))]


def beat(path, now):
    """The uploads source's heartbeat: the time, written into the uploads root (outside the app's
    uploads directory) where lsyncd copies it to the other site like any upload. Atomic: a .tmp- name
    (excluded from the sync) renamed."""
    tmp = os.path.join(os.path.dirname(path), f".tmp-{os.path.basename(path)}")
    with open(tmp, "w") as fh:
        fh.write(f"{now:.3f}\n")
    os.replace(tmp, path)
    return [("siaga_uploads_sync_heartbeat_timestamp_seconds", {}, now)]


def heartbeat_figures(path):
    """On a host the uploads are synced to: when the newest heartbeat that reached it was written at
    the source (Prometheus' rule siaga:uploads_lag_seconds is its age: an upper bound of the uploads
    lag, to within one figures interval). None yet: no figure."""
    try:
        with open(path) as fh:
            written = float(fh.read().strip())
    except (OSError, ValueError):
        return []
    return [("siaga_uploads_sync_heartbeat_received_timestamp_seconds", {}, written)]


def cached_uploads(args, probe, now, state_file=STATE):
    """The uploads' figures, listed again only when the last listing is older than uploads_every_s."""
    try:
        with open(state_file) as fh:
            state = json.load(fh)
    except (OSError, ValueError):
        state = {}
    last = state.get("uploads") or {}
    if last.get("dir") == args["uploads_dir"] and now - last.get("t", 0) < args.get("uploads_every_s", 900):
        return last["figures"], True
    listing = probe.uploads(args["uploads_dir"], 600)
    if listing.get("error"):
        print(f"monitor-figures: uploads: {listing['error']}", file=sys.stderr)
        return [], False
    figures = uploads_figures(listing)
    os.makedirs(os.path.dirname(state_file), exist_ok=True)
    write_atomically(state_file, json.dumps({"uploads": {"dir": args["uploads_dir"], "t": now, "figures": figures}}))
    return figures, True


HELP = {
    "siaga_pg_up": "PostgreSQL answered siaga (1) or not (0)",
    "siaga_pg_in_recovery": "1 on a standby, 0 on a primary",
    "siaga_pg_wal_lsn_bytes": "WAL positions (current on a primary, receive and replay on a standby) in bytes",
    "siaga_pg_wal_receiver_streaming": "a standby's WAL receiver is streaming (1) or not (0)",
    "siaga_pg_replay_age_seconds": "age of the last transaction a standby replayed",
    "siaga_pg_receiver_contact_age_seconds": "seconds since a standby last heard from its primary",
    "siaga_backup_last_success_timestamp_seconds": "end of the set's last successful run (or the repositories' init)",
    "siaga_backup_last_run_ok": "the set's last run succeeded (1) or failed (0)",
    "siaga_restore_test_last_ok": "the last restore test passed (1) or not (0)",
    "siaga_restore_test_last_success_timestamp_seconds": "end of the last successful restore test",
    "siaga_uploads_bytes": "bytes of every file under the uploads directory",
    "siaga_uploads_files": "files under the uploads directory",
    "siaga_uploads_sync_heartbeat_timestamp_seconds": "when the uploads source last wrote its heartbeat into the uploads root",
    "siaga_uploads_sync_heartbeat_received_timestamp_seconds": "when the newest heartbeat of the uploads source that "
                                                               "reached this host was written there",
    "siaga_figures_ok": "every source of siaga's figures was read (1) or not (0)",
    "siaga_figures_timestamp_seconds": "when these figures were written",
}


def render(figures):
    """The textfile collector's format: HELP and TYPE once per name, then its samples."""
    lines, seen = [], set()
    for name, labels, value in figures:
        if name not in seen:
            seen.add(name)
            lines += [f"# HELP {name} {HELP.get(name, name)}", f"# TYPE {name} gauge"]
        lab = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        lines.append(f"{name}{{{lab}}} {float(value)!r}" if lab else f"{name} {float(value)!r}")
    return "\n".join(lines) + "\n"


def collect(args, lib=LIB, state_file=STATE):
    figures, ok = [], 1
    try:
        probe = load("status-probe", lib)
        figures += pg_figures(probe.pg(args.get("pg_port", 5432), 10))
        if args.get("uploads_dir"):
            more, read = cached_uploads(args, probe, time.time(), state_file)
            figures += more
            ok &= read
    except Exception as exc:  # noqa: BLE001 - a figure missing is itself a figure
        print(f"monitor-figures: status-probe: {exc}", file=sys.stderr)
        ok = 0
    hb = args.get("uploads_heartbeat") or {}
    try:
        if hb.get("role") == "source":
            figures += beat(hb["path"], time.time())
        elif hb.get("role") == "target":
            figures += heartbeat_figures(hb["path"])
    except OSError as exc:
        print(f"monitor-figures: uploads heartbeat: {exc}", file=sys.stderr)
        ok = 0
    backup_read = os.path.join(lib, "backup-read")
    if os.path.exists(backup_read):  # shipped by roles/backup; a site without backups has none
        try:
            b = load("backup-read", lib).read()
            if b.get("error"):
                print(f"monitor-figures: backup-read: {b['error']}", file=sys.stderr)
                ok = 0
            figures += backup_figures(b)
            records = os.path.join(args.get("records") or "/nonexistent", RESTORE_TESTS)
            if os.path.exists(records):  # the workstation's copy is on the DRC's hosts only
                with open(records, errors="replace") as fh:
                    figures += restore_test_figures(load("backup-read", lib).parse_log(fh)[0])
        except Exception as exc:  # noqa: BLE001
            print(f"monitor-figures: backup-read: {exc}", file=sys.stderr)
            ok = 0
    figures += [("siaga_figures_ok", {}, ok), ("siaga_figures_timestamp_seconds", {}, time.time())]
    return figures


def write_atomically(path, text):
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def copy_figures(paths, out_dir):
    """Other programs' .prom files copied into the textfile directory (a missing one: skipped, its
    program has not run yet; the copy of a file gone is removed, so no stale figure stays)."""
    for path in paths:
        dest = os.path.join(out_dir, os.path.basename(path))
        try:
            with open(path) as fh:
                text = fh.read()
        except FileNotFoundError:
            if os.path.exists(dest):
                os.remove(dest)
            continue
        write_atomically(dest, text)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = json.loads(argv[0]) if argv else {}
    figures = collect(args)
    out = args.get("out", OUT)
    write_atomically(out, render(figures))
    copy_figures(args.get("copy", []), os.path.dirname(out))
    return 0 if all(v for n, _, v in figures if n == "siaga_figures_ok") else 1


if __name__ == "__main__":
    sys.exit(main())
