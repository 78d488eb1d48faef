"""The part of `siaga backup offline` that runs ON the repository host: `sudo python3 -c <this> '<json>'`.

Standard library only (Debian's python3). One JSON object on stdout. Modes:

- `copy`: the removable media must be mounted at `mount_point` (a mount point of another device
  than the repository's). With the database backup jobs' locks held (no backup half-written), the
  encrypted repositories under `repo_path` (pgBackRest `pgbackrest/`, restic `restic/`) are copied
  into `<mount_point>/siaga-offline/<time>.partial/`: files unchanged since the previous copy
  (same size and mtime) are hard links to it (rsync --link-dest: every copy is complete on its
  own, unchanged data takes no space twice). Then verified ON THE MEDIA: `pgbackrest verify` with
  `--repo1-path` pointing at the copy, and every content-addressed restic file (data, index,
  snapshots, keys) re-hashed against its name (no password needed on this host). A manifest with
  the result is written into the copy, which is then renamed to its final name; the newest `keep`
  copies are kept.
- `list`: the copies on the media, oldest first, with their manifests.

Never writes outside `<mount_point>/siaga-offline`. SOP BK-9, EM-3.7.
"""

import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

A = json.loads(sys.argv[1])
SUBDIR = "siaga-offline"
NAME = re.compile(r"^\d{8}T\d{6}$")


def run(cmd, user=None, timeout=3600):
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/", stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout, p.stderr


def tail(text, n=1500):
    return text.strip()[-n:]


def media_root():
    mnt = A["mount_point"]
    if not os.path.ismount(mnt):
        raise SystemExit(json.dumps({"ok": False, "attached": False,
                                     "error": f"the offline media is not attached: {mnt} is not a mount point"}))
    if os.stat(mnt).st_dev == os.stat(A["repo_path"]).st_dev:
        raise SystemExit(json.dumps({"ok": False, "attached": False,
                                     "error": f"{mnt} is on the same device as the repository {A['repo_path']}: refused"}))
    root = os.path.join(mnt, SUBDIR)
    os.makedirs(root, mode=0o755, exist_ok=True)
    return root


def copies(root):
    out = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if NAME.match(name) and os.path.isdir(path):
            try:
                with open(os.path.join(path, "manifest.json")) as fh:
                    out.append(json.load(fh))
            except (OSError, ValueError) as exc:
                out.append({"name": name, "error": f"no readable manifest: {exc}", "verified": False})
    return out


def locks(deadline_s):
    """The database backup jobs' locks (the runner's), so no backup is half-written during the copy."""
    held = []
    end = time.monotonic() + deadline_s
    for job in ("db", "db-full", "db-incr", "all"):
        fh = open(f"/run/siaga-backup-{job}.lock", "w")
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > end:
                    raise SystemExit(json.dumps({"ok": False, "attached": True,
                                                 "error": f"a database backup ({job}) is still running after {deadline_s} s"}))
                time.sleep(1)
        held.append(fh)
    return held


def copy_tree(src, dst, prev, stats):
    """rsync -a --link-dest=prev src/ dst/ (regular files, directories, symlinks; owners kept)."""
    for dirpath, dirnames, filenames in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        out = os.path.normpath(os.path.join(dst, rel))
        st = os.stat(dirpath)
        os.makedirs(out, exist_ok=True)
        os.chmod(out, st.st_mode & 0o7777)
        os.chown(out, st.st_uid, st.st_gid)
        for sub in [x for x in dirnames if os.path.islink(os.path.join(dirpath, x))]:
            dirnames.remove(sub)  # pgBackRest's `latest` link: kept as a link
            os.symlink(os.readlink(os.path.join(dirpath, sub)), os.path.join(out, sub))
        for f in filenames:
            s, d = os.path.join(dirpath, f), os.path.join(out, f)
            ls = os.lstat(s)
            if os.path.islink(s):
                os.symlink(os.readlink(s), d)
                continue
            p = os.path.join(prev, rel, f) if prev else None
            if p:
                try:
                    ps = os.lstat(p)
                    if ps.st_size == ls.st_size and int(ps.st_mtime) == int(ls.st_mtime) and ps.st_uid == ls.st_uid:
                        os.link(p, d)
                        stats["linked"] += 1
                        continue
                except OSError:
                    pass
            shutil.copy2(s, d)
            os.chown(d, ls.st_uid, ls.st_gid)
            stats["copied"] += 1
            stats["bytes_copied"] += ls.st_size


def verify_pgbackrest(path):
    t0 = time.monotonic()
    base = ["pgbackrest", f"--config-path={A['config_path']}", f"--stanza={A['stanza']}", f"--repo1-path={path}"]
    rc, so, se = run([*base, "--log-level-console=info", "verify"], user=A["user"], timeout=A["timeout_s"])
    # pgBackRest 2.45's verify exits 0 even with bad files: its result lines decide (as restore-test).
    bad = re.search(r"status: invalid|invalid checksum|checksum invalid|missing|ERROR", so + se, re.I)
    ok = rc == 0 and "completed successfully" in so and not bad
    rc2, so2, se2 = run([*base, "--output=json", "info"], user=A["user"], timeout=300)
    labels = []
    if rc2 == 0:
        try:
            labels = [b["label"] for b in (json.loads(so2)[0].get("backup") or [])]
        except (ValueError, IndexError, KeyError):
            pass
    return {"ok": ok, "exit": rc, "seconds": round(time.monotonic() - t0, 3), "backups": labels,
            "output": tail("\n".join(ln for ln in (so + "\n" + se).splitlines()
                                     if "WARN" in ln or "ERROR" in ln or "invalid" in ln or "command end" in ln), 2000)}


def verify_restic(path):
    """restic names its data, index, snapshot and key files by the sha256 of their content."""
    t0 = time.monotonic()
    checked, bad = 0, []
    for sub in ("data", "index", "snapshots", "keys"):
        for dirpath, _, filenames in os.walk(os.path.join(path, sub)):
            for f in filenames:
                h = hashlib.sha256()
                with open(os.path.join(dirpath, f), "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
                checked += 1
                if h.hexdigest() != f:
                    bad.append(os.path.relpath(os.path.join(dirpath, f), path))
    snaps = sorted(os.listdir(os.path.join(path, "snapshots"))) if os.path.isdir(os.path.join(path, "snapshots")) else []
    ok = checked > 0 and not bad and os.path.isfile(os.path.join(path, "config"))
    return {"ok": ok, "files_checked": checked, "bad": bad[:20], "snapshots": [s[:8] for s in snaps],
            "seconds": round(time.monotonic() - t0, 3)}


def du(path):
    seen, total = set(), 0
    for dirpath, _, filenames in os.walk(path):
        for f in filenames:
            st = os.lstat(os.path.join(dirpath, f))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def mode_copy():
    root = media_root()
    held = locks(float(A.get("lock_wait_s", 900)))
    now = dt.datetime.now().astimezone()
    name = now.strftime("%Y%m%dT%H%M%S")
    final, part = os.path.join(root, name), os.path.join(root, name + ".partial")
    for leftover in os.listdir(root):
        if leftover.endswith(".partial"):
            shutil.rmtree(os.path.join(root, leftover), ignore_errors=True)
    done = [c for c in copies(root) if c.get("name") and not c.get("error")]
    prev = os.path.join(root, done[-1]["name"]) if done else None
    stats = {"copied": 0, "linked": 0, "bytes_copied": 0}
    t0 = time.monotonic()
    try:
        os.mkdir(part, 0o755)
        for sub in ("pgbackrest", "restic"):
            src = os.path.join(A["repo_path"], sub)
            if os.path.isdir(src):
                copy_tree(src, os.path.join(part, sub), os.path.join(prev, sub) if prev else None, stats)
    except OSError as exc:
        shutil.rmtree(part, ignore_errors=True)
        return {"ok": False, "attached": True, "error": f"copy to the media failed: {exc}", "copies": copies(root)}
    finally:
        for fh in held:
            fh.close()
    copy_s = round(time.monotonic() - t0, 3)
    os.sync()
    pg = verify_pgbackrest(os.path.join(part, "pgbackrest"))
    rs = verify_restic(os.path.join(part, "restic"))
    manifest = {"name": name, "copied_at": now.isoformat(timespec="seconds"), "host": os.uname().nodename,
                "source": A["repo_path"], "previous": os.path.basename(prev) if prev else None, "copy_seconds": copy_s, **stats,
                "size_bytes": du(part), "pgbackrest": pg, "restic": rs, "verified": bool(pg["ok"] and rs["ok"]),
                "verified_at": dt.datetime.now().astimezone().isoformat(timespec="seconds")}
    with open(os.path.join(part, "manifest.json"), "w") as fh:
        json.dump(manifest, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(part, final)
    keep = int(A.get("keep", 4))
    all_copies = [c for c in copies(root) if c.get("name")]
    removed = []
    for c in all_copies[:-keep] if len(all_copies) > keep else []:
        shutil.rmtree(os.path.join(root, c["name"]), ignore_errors=True)
        removed.append(c["name"])
    os.sync()
    st = os.statvfs(A["mount_point"])
    return {"ok": manifest["verified"], "attached": True, "copy": manifest, "removed": removed, "copies": copies(root),
            "media_free_bytes": st.f_bavail * st.f_frsize, "media_size_bytes": st.f_blocks * st.f_frsize}


def mode_list():
    root = media_root()
    return {"ok": True, "attached": True, "copies": copies(root)}


try:
    out = {"copy": mode_copy, "list": mode_list}[A["mode"]]()
except SystemExit as exc:
    out = json.loads(str(exc))
except Exception as exc:  # noqa: BLE001
    out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
print(json.dumps(out))
