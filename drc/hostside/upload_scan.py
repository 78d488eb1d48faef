#!/usr/bin/python3
"""upload-scan new|full CONFIG: scan the uploads with ClamAV's clamd and quarantine what it finds.

Installed by roles/clamav as /usr/local/lib/siaga/upload-scan, run as root on the active site by
siaga-upload-scan.timer (`new`: the files created, renamed or changed since the last scan began,
by ctime, which rsync and the application cannot set back) and siaga-upload-fullscan.timer (`full`:
every file, daily). Standard library only. CONFIG is a JSON file written by the role:
{"uploads_dir", "quarantine_dir", "state_dir", "skip_prefixes": [".tmp-"], "host"}.

clamdscan --fdpass sends clamd each file's descriptor (clamd runs as clamav and cannot open the
application's files itself). A file clamd reports FOUND is moved into the quarantine directory
(root only, 0700; the file 0600) and recorded, one JSON line each, in <state_dir>/quarantine.jsonl;
an ALERT line at priority crit goes to the journal (SyslogIdentifier siaga-clamav). The uploads
sync (lsyncd, delete) then removes the DRC's copy. For monitoring, <state_dir>/status.json holds the
last scans and the counts, and <state_dir>/siaga_clamav.prom the same as Prometheus text metrics.

Exit: 0 scanned (also when something was found and quarantined), 1 the scan itself failed (clamd
not answering: nothing is marked scanned, the next run tries the same files again), 3 a file found
could not be quarantined. SOP IN-2.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

CLAMDSCAN = "/usr/bin/clamdscan"
# Files changed this close before the previous scan began are scanned again (ctime granularity).
SLACK_S = 2.0


def alert(message: str) -> None:
    # "<2>": the journal's priority crit for this line (systemd reads the prefix on stderr).
    print(f"<2>ALERT {message}", file=sys.stderr, flush=True)


def info(message: str) -> None:
    print(message, flush=True)


@contextmanager
def locked(path: str):
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def write_atomic(path: str, text: str, mode: int = 0o644) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def read_status(state_dir: str) -> dict:
    try:
        with open(os.path.join(state_dir, "status.json")) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def candidates(conf: dict, since: float | None) -> list[str]:
    """Regular files under uploads_dir (not the application's half-written .tmp- files), changed
    at or after `since` (all with None)."""
    skip = tuple(conf.get("skip_prefixes", []))
    out = []
    for root, dirs, files in os.walk(conf["uploads_dir"]):
        dirs.sort()
        for name in sorted(files):
            if name.startswith(skip) or "\n" in name:
                continue
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if os.path.isfile(path) and not os.path.islink(path) and (since is None or st.st_ctime >= since - SLACK_S):
                out.append(path)
    return out


def parse(output: str) -> tuple[dict[str, str], dict[str, str]]:
    """clamdscan's lines -> ({path: signature} found, {path: message} errors)."""
    found, errors = {}, {}
    for line in output.splitlines():
        if line.endswith(" FOUND"):
            path, _, sig = line[: -len(" FOUND")].rpartition(": ")
            found[path] = sig
        elif line.endswith(" ERROR"):
            path, _, msg = line[: -len(" ERROR")].rpartition(": ")
            errors[path] = msg
    return found, errors


def scan(paths: list[str]) -> tuple[int, dict[str, str], dict[str, str], str]:
    with tempfile.NamedTemporaryFile("w", prefix="siaga-scan-", suffix=".list") as lst:
        lst.write("".join(p + "\n" for p in paths))
        lst.flush()
        proc = subprocess.run([CLAMDSCAN, "--fdpass", "--no-summary", "--infected", f"--file-list={lst.name}"],
                              capture_output=True, text=True, timeout=24 * 3600)
    found, errors = parse(proc.stdout + "\n" + proc.stderr)
    return proc.returncode, found, errors, (proc.stderr or proc.stdout)[-2000:]


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def quarantine(conf: dict, path: str, signature: str, kind: str) -> dict | None:
    """Move `path` into the quarantine directory and record it; None when it is gone already."""
    try:
        digest, size = sha256_of(path), os.path.getsize(path)
    except FileNotFoundError:
        return None
    now = datetime.datetime.now(datetime.UTC)
    dest = os.path.join(conf["quarantine_dir"], f"{now.strftime('%Y%m%dT%H%M%SZ')}-{digest[:12]}-{os.path.basename(path)}")
    shutil.move(path, dest)  # a rename on the same file system: lsyncd sees the file leave
    os.chown(dest, 0, 0)
    os.chmod(dest, 0o600)
    record = {"at": now.isoformat(timespec="seconds"), "host": conf.get("host", ""), "path": path, "quarantined_as": dest,
              "signature": signature, "sha256": digest, "size": size, "scan": kind}
    with open(os.path.join(conf["state_dir"], "quarantine.jsonl"), "a") as fh:
        fh.write(json.dumps(record) + "\n")
    return record


def metrics(status: dict) -> str:
    last, full = status.get("last_scan") or {}, status.get("last_full_scan") or {}
    lines = [
        "# HELP siaga_clamav_quarantined_total Upload files ClamAV found and siaga quarantined on this host.",
        "# TYPE siaga_clamav_quarantined_total counter",
        f"siaga_clamav_quarantined_total {status.get('quarantined_total', 0)}",
        "# HELP siaga_clamav_last_detection_timestamp_seconds When the last infected upload was found (0: never).",
        "# TYPE siaga_clamav_last_detection_timestamp_seconds gauge",
        f"siaga_clamav_last_detection_timestamp_seconds {status.get('last_detection_ts', 0)}",
        "# HELP siaga_clamav_last_scan_timestamp_seconds When the last scan of this kind finished.",
        "# TYPE siaga_clamav_last_scan_timestamp_seconds gauge",
        f'siaga_clamav_last_scan_timestamp_seconds{{kind="{last.get("kind", "new")}"}} {last.get("finished_ts", 0)}',
        f'siaga_clamav_last_scan_timestamp_seconds{{kind="full"}} {full.get("finished_ts", 0)}',
        "# HELP siaga_clamav_last_scan_ok Whether the last scan reached clamd and finished (1) or failed (0).",
        "# TYPE siaga_clamav_last_scan_ok gauge",
        f"siaga_clamav_last_scan_ok {1 if last.get('ok') else 0}",
    ]
    return "\n".join(lines) + "\n"


def run(kind: str, conf: dict) -> int:
    state_dir = conf["state_dir"]
    started = time.time()
    with locked(os.path.join(state_dir, f"{kind}.lock")):
        since = None if kind == "full" else read_status(state_dir).get("new_scan_since")
        paths = candidates(conf, since)
        rc, found, errors, tail = scan(paths) if paths else (0, {}, {}, "")
        # A file removed between the listing and the scan is not an error.
        errors = {p: m for p, m in errors.items() if os.path.exists(p)}
        ok = rc in (0, 1) and not errors
        quarantined, failed = [], []
        for path, sig in sorted(found.items()):
            try:
                record = quarantine(conf, path, sig, kind)
            except OSError as exc:
                failed.append(path)
                alert(f"virus {sig} found in {path}, but it could NOT be quarantined: {exc}")
                continue
            if record:
                quarantined.append(record)
                alert(f"virus {sig} found in upload {path}; quarantined as {record['quarantined_as']} "
                      f"(sha256 {record['sha256']}); the DRC's copy goes with the uploads sync")
        finished = time.time()
        with locked(os.path.join(state_dir, "status.lock")):
            status = read_status(state_dir)
            entry = {"kind": kind, "started": iso(started), "finished": iso(finished), "finished_ts": round(finished),
                     "files": len(paths), "found": len(found), "quarantined": len(quarantined), "ok": ok,
                     "error": "" if ok else (f"clamdscan exit {rc}: {tail.strip()}" if rc not in (0, 1)
                                             else f"{len(errors)} file(s) not scanned: {sorted(errors.items())[:5]}")}
            status["last_scan"] = entry
            if kind == "full":
                status["last_full_scan"] = entry
            if ok and kind == "new":
                status["new_scan_since"] = started  # the next run takes what changed from here on
            if ok and kind == "full" and "new_scan_since" not in status:
                status["new_scan_since"] = started
            if quarantined:
                status["quarantined_total"] = status.get("quarantined_total", 0) + len(quarantined)
                status["last_detection"] = quarantined[-1]
                status["last_detection_ts"] = round(finished)
            write_atomic(os.path.join(state_dir, "status.json"), json.dumps(status, indent=1) + "\n", 0o644)
            write_atomic(os.path.join(state_dir, "siaga_clamav.prom"), metrics(status), 0o644)
    info(f"{kind} scan: {len(paths)} file(s), {len(found)} infected, {len(quarantined)} quarantined"
         + ("" if ok else f"; FAILED: {entry['error']}"))
    if failed:
        return 3
    return 0 if ok else 1


def iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="seconds")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in ("new", "full"):
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1]) as fh:
        conf = json.load(fh)
    return run(argv[0], conf)


if __name__ == "__main__":
    sys.exit(main())
