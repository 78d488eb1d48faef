#!/usr/bin/python3
"""integrity-check init|check|accept CONFIG: AIDE's file integrity check, with siaga's own deploys and
Debian's package updates told apart from tampering.

Installed by roles/file_integrity as /usr/local/lib/siaga/integrity-check; `check` runs daily
(siaga-integrity-check.timer) and at the end of a deploy that changed what siaga installs in the
watched paths. Standard library only. CONFIG (JSON, written by the role):
{"aide_conf", "database", "state_dir", "manifest", "host"}; the manifest is
{path: sha256} of every file siaga's deploys put in the watched paths.

    init    make the baseline (aide --init) if there is none, or with --force
    check   aide --update: the report, and a new database beside the baseline. Each difference is
            explained when a file's content is what siaga's deploy put there (the manifest) or what
            its Debian package shipped (dpkg's md5sums; an added file too), and only content changed
            (size, mtime, inode, checksum: never owner or mode); a directory whose entries changed;
            a removed file no installed package owns. All explained: the new database becomes the
            baseline (so a deploy or an update is not an alarm). Anything else: an ALERT at priority
            crit in the journal (SyslogIdentifier siaga-integrity) per unexplained path, the report
            kept, and the baseline NOT moved: the next check reports it again until it is repaired
            (a deploy puts siaga's files back; `apt-get install --reinstall PKG` a package's) or an
            admin accepts it.
    accept  after review: the current state becomes the baseline (recorded with SUDO_USER).

Status for monitoring: <state_dir>/status.json, <state_dir>/siaga_integrity.prom; every check with
its differences as a JSON line in <state_dir>/checks.jsonl. Exit 0 (also with unexplained changes:
the alert is the journal's and the status file's), 1 AIDE itself failed. SOP IN-2.
"""

from __future__ import annotations

import datetime
import glob
import hashlib
import json
import os
import stat
import subprocess
import sys
import tempfile
import time

AIDE = "/usr/bin/aide"
DPKG_INFO = "/var/lib/dpkg/info"
# Attributes a package update or a deploy changes along with the content; owner and mode are not.
CONTENT_ATTRS = {"size", "modify_time", "change_time", "inode", "bcount", "sha256", "linkcount", "link_count"}
# A directory changes when its entries do; the entries are judged themselves.
DIRECTORY_ATTRS = {"size", "modify_time", "change_time", "linkcount", "link_count", "bcount"}
MAX_ALERT_LINES = 50


def alert(message: str) -> None:
    print(f"<2>ALERT {message}", file=sys.stderr, flush=True)


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_atomic(path: str, text: str, mode: int = 0o644) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def aide(conf: dict, action: str) -> tuple[int, dict | None, str]:
    proc = subprocess.run([AIDE, "--config", conf["aide_conf"], f"--{action}"], capture_output=True, text=True,
                          timeout=6 * 3600, check=False)
    try:
        report = json.loads(proc.stdout) if proc.stdout.strip() else None
    except ValueError:
        report = None
    return proc.returncode, report, proc.stderr.strip()[-2000:]


def file_digest(path: str, algorithm: str) -> str | None:
    h = hashlib.new(algorithm)
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def aliases(path: str) -> list[str]:
    """dpkg names a file by the path its package ships (/bin/x is /usr/bin/x on merged-/usr)."""
    out = [path]
    for merged in ("/bin/", "/sbin/", "/lib/"):
        if path.startswith("/usr" + merged):
            out.append(path[len("/usr"):])
    return out


class Dpkg:
    """dpkg's records, read once and only when a check has something to explain."""

    def __init__(self, info_dir: str = DPKG_INFO):
        self.md5: dict[str, tuple[str, str]] = {}
        self.owned: dict[str, str] = {}
        for f in glob.glob(os.path.join(info_dir, "*.md5sums")):
            pkg = os.path.basename(f)[: -len(".md5sums")]
            with open(f, errors="replace") as fh:
                for line in fh:
                    digest, _, rel = line.rstrip("\n").partition("  ")
                    if rel:
                        self.md5["/" + rel] = (digest, pkg)
        for f in glob.glob(os.path.join(info_dir, "*.list")):
            pkg = os.path.basename(f)[: -len(".list")]
            with open(f, errors="replace") as fh:
                for line in fh:
                    self.owned[line.rstrip("\n")] = pkg

    def package_md5(self, path: str) -> tuple[str, str] | None:
        return next((self.md5[p] for p in aliases(path) if p in self.md5), None)

    def owner(self, path: str) -> str | None:
        return next((self.owned[p] for p in aliases(path) if p in self.owned), None)


def explain(path: str, kind: str, attrs: set[str], manifest: dict[str, str], dpkg: Dpkg) -> str | None:
    """Why `path` differs (kind: added, removed or changed; attrs: what changed), or None."""
    if kind == "removed":
        if path in manifest:
            return None  # siaga installs it: it must be there
        owner = dpkg.owner(path)
        return None if owner else "removed, and no installed package owns it (a package was removed)"
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if stat.S_ISDIR(st.st_mode):
        return "directory entries changed" if kind == "added" or attrs <= DIRECTORY_ATTRS else None
    if kind == "changed" and not attrs <= CONTENT_ATTRS:
        return None  # owner, mode, type: never a deploy's or an update's doing here
    if stat.S_ISLNK(st.st_mode):
        target = os.path.realpath(path)
        owner, target_md5 = dpkg.owner(path), dpkg.package_md5(target)
        if owner and target_md5 and file_digest(target, "md5") == target_md5[0]:
            return f"link of package {owner} to its file {target}"
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    if path in manifest:
        return "siaga's deploy" if file_digest(path, "sha256") == manifest[path] else None
    shipped = dpkg.package_md5(path)
    if shipped and file_digest(path, "md5") == shipped[0]:
        return f"package {shipped[1]}"
    return None


def differences(report: dict) -> list[tuple[str, str, set[str]]]:
    details = report.get("details") or {}
    out = []
    for kind in ("added", "removed", "changed"):
        for path in sorted(report.get(kind) or {}):
            out.append((path, kind, set((details.get(path) or {}).keys())))
    return out


def load_manifest(conf: dict) -> dict[str, str]:
    try:
        with open(conf["manifest"]) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def read_status(conf: dict) -> dict:
    try:
        with open(os.path.join(conf["state_dir"], "status.json")) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def save_status(conf: dict, status: dict) -> None:
    write_atomic(os.path.join(conf["state_dir"], "status.json"), json.dumps(status, indent=1) + "\n")
    last = status.get("last_check") or {}
    prom = "\n".join([
        "# HELP siaga_integrity_unexplained_changes Watched files changed by neither siaga's deploy nor a Debian package, at the last check.",
        "# TYPE siaga_integrity_unexplained_changes gauge",
        f"siaga_integrity_unexplained_changes {len(last.get('unexplained', []))}",
        "# HELP siaga_integrity_last_check_timestamp_seconds When the last integrity check finished.",
        "# TYPE siaga_integrity_last_check_timestamp_seconds gauge",
        f"siaga_integrity_last_check_timestamp_seconds {last.get('finished_ts', 0)}",
        "# HELP siaga_integrity_last_check_ok Whether AIDE ran (1) or failed (0).",
        "# TYPE siaga_integrity_last_check_ok gauge",
        f"siaga_integrity_last_check_ok {1 if last.get('aide_ok') else 0}",
    ]) + "\n"
    write_atomic(os.path.join(conf["state_dir"], "siaga_integrity.prom"), prom)


def promote(conf: dict) -> None:
    new = conf["database"] + ".new"
    os.chmod(new, 0o600)
    os.replace(new, conf["database"])


def init(conf: dict, force: bool) -> int:
    if os.path.exists(conf["database"]) and not force:
        print(f"{conf['database']} exists: baseline kept")
        return 0
    rc, _report, err = aide(conf, "init")
    if rc != 0 or not os.path.exists(conf["database"] + ".new"):
        print(f"aide --init failed (exit {rc}): {err}", file=sys.stderr)
        return 1
    promote(conf)
    status = read_status(conf)
    status["baseline"] = {"at": now_iso(), "by": "init"}
    save_status(conf, status)
    print(f"baseline made: {conf['database']}")
    return 0


def check(conf: dict, accept: bool = False) -> int:
    started = time.time()
    rc, report, err = aide(conf, "update")
    status = read_status(conf)
    # AIDE's exit: a bitmask of added (1), removed (2), changed (4); 14 and up are its errors.
    if rc >= 14 or report is None:
        status["last_check"] = {"finished": now_iso(), "finished_ts": round(time.time()), "aide_ok": False,
                                "error": f"aide exit {rc}: {err}", "unexplained": []}
        save_status(conf, status)
        alert(f"file integrity check could not run: aide exit {rc}: {err}")
        return 1
    manifest = load_manifest(conf)
    diffs = differences(report)
    dpkg = Dpkg() if diffs else None
    explained, unexplained = {}, []
    for path, kind, attrs in diffs:
        why = explain(path, kind, attrs, manifest, dpkg)
        if why and not accept:
            explained[path] = why
        elif accept:
            explained[path] = f"accepted by {os.environ.get('SUDO_USER') or 'root'}"
        else:
            unexplained.append({"path": path, "kind": kind, "changed": sorted(attrs)})
    new_db = conf["database"] + ".new"
    if not unexplained and os.path.exists(new_db):
        if diffs:
            promote(conf)
            status["baseline"] = {"at": now_iso(), "by": "accept" if accept else "check: every difference explained"}
        else:
            os.unlink(new_db)
    elif os.path.exists(new_db):
        os.unlink(new_db)  # the baseline stays: the next check reports the same again
    entry = {"started": datetime.datetime.fromtimestamp(started, datetime.timezone.utc).isoformat(timespec="seconds"),
             "finished": now_iso(), "finished_ts": round(time.time()), "aide_ok": True, "host": conf.get("host", ""),
             "differences": len(diffs), "explained": explained, "unexplained": unexplained, "accepted": accept}
    with open(os.path.join(conf["state_dir"], "checks.jsonl"), "a") as fh:
        fh.write(json.dumps(entry) + "\n")
    status["last_check"] = entry
    if unexplained:
        status["last_alert"] = entry["finished"]
        status["alerts_total"] = status.get("alerts_total", 0) + 1
    save_status(conf, status)
    for u in unexplained[:MAX_ALERT_LINES]:
        alert(f"file integrity: {u['path']} {u['kind']} ({', '.join(u['changed']) or 'new entry'}), "
              "changed by neither siaga's deploy nor a Debian package")
    if len(unexplained) > MAX_ALERT_LINES:
        alert(f"file integrity: {len(unexplained) - MAX_ALERT_LINES} more unexplained change(s): see {conf['state_dir']}/status.json")
    print(f"integrity check: {len(diffs)} difference(s), {len(explained)} explained, {len(unexplained)} unexplained"
          + ("; baseline moved" if diffs and not unexplained else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    force = "--force" in argv
    argv = [a for a in argv if a != "--force"]
    if len(argv) != 2 or argv[0] not in ("init", "check", "accept"):
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1]) as fh:
        conf = json.load(fh)
    if argv[0] == "init":
        return init(conf, force)
    return check(conf, accept=argv[0] == "accept")


if __name__ == "__main__":
    sys.exit(main())
