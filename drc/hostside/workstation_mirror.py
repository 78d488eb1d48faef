#!/usr/bin/python3
"""workstation-mirror '<json args>': the DRC's copy of the admin workstation (issue 11 point 4).

Installed by roles/base as /usr/local/lib/siaga/workstation-mirror; the workstation runs it with
sudo on the DRC's hosts (drc/workstation/mirror.py). Standard library only. The copy of one site
lives in `<root>/<site>/` (root: /var/lib/siaga/workstation-mirror, root-owned, 0700; every file
0600): MIRROR.json and the files it lists. It holds no secret (the workstation leaves them out).

Modes (args: {"mode": ..., "site": "<name>", "root": optional, for tests}):
- read: {"ok", "state": "absent"|"present", "manifest": <MIRROR.json's text>, "sha": <its sha256>}
- fetch: {"ok", "data": <base64 of a gzipped tar of the copy>} (or state absent)
- swap {"upload": "<path of the new copy, a .tgz the admin uploaded>", "expect": <sha256 of the
  MIRROR.json this workstation last wrote, or null for none>, "force": bool}: under an flock, only
  if the copy there is the expected one (else {"ok": false, "conflict": <sha or "absent">}), the
  upload is unpacked beside the old copy (regular files only, no path leaving the directory) and
  the two swapped by rename, so the directory holds the old copy or the new one, never half.
  The upload is removed whatever happens.
One JSON object on stdout, exit 0 when ok.
"""

import base64
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tarfile

ROOT = "/var/lib/siaga/workstation-mirror"
MANIFEST = "MIRROR.json"
SITE_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")  # drc.site.model.NAME_RE
MAX_UPLOAD = 512 * 1024 * 1024


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def make_root(root):
    os.makedirs(root, mode=0o700, exist_ok=True)
    os.chown(root, 0, 0)
    os.chmod(root, 0o700)


def read_manifest(d):
    try:
        with open(os.path.join(d, MANIFEST), "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def mode_read(root, site, _a):
    data = read_manifest(os.path.join(root, site))
    if data is None:
        return {"ok": True, "state": "absent"}
    return {"ok": True, "state": "present", "manifest": data.decode(), "sha": sha256(data)}


def mode_fetch(root, site, _a):
    d = os.path.join(root, site)
    if read_manifest(d) is None:
        return {"ok": True, "state": "absent"}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for dirpath, dirnames, filenames in os.walk(d):
            dirnames.sort()
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                if os.path.isfile(full) and not os.path.islink(full):
                    tar.add(full, arcname=os.path.relpath(full, d), recursive=False)
    return {"ok": True, "state": "present", "data": base64.b64encode(buf.getvalue()).decode()}


def safe_members(tar):
    """The regular files of the upload, each with a name that stays inside the copy."""
    out = []
    for m in tar.getmembers():
        if m.isdir():
            continue
        name = m.name.removeprefix("./")
        if not m.isfile() or name.startswith("/") or ".." in name.split("/") or not name:
            raise ValueError(f"the upload holds {m.name!r}: only regular files inside the copy")
        out.append((name, m))
    return out


def unpack(upload, dest):
    """The upload's files into dest (made 0700), each 0600 and root's."""
    os.mkdir(dest, 0o700)
    with tarfile.open(upload, mode="r:gz") as tar:
        members = safe_members(tar)
        names = [n for n, _ in members]
        if MANIFEST not in names:
            raise ValueError(f"the upload has no {MANIFEST}")
        for name, m in members:
            path = os.path.join(dest, name)
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            src = tar.extractfile(m)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                shutil.copyfileobj(src, fh)
                fh.flush()
                os.fsync(fh.fileno())
    for dirpath, _dirs, _files in os.walk(dest):
        os.chmod(dirpath, 0o700)


def mode_swap(root, site, a):
    upload = a["upload"]
    try:
        st = os.lstat(upload)
        if not os.path.isfile(upload) or os.path.islink(upload) or st.st_size > MAX_UPLOAD:
            return {"ok": False, "error": f"{upload}: not a regular file of at most {MAX_UPLOAD} bytes"}
        make_root(root)
        with open(os.path.join(root, ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            d = os.path.join(root, site)
            cur = read_manifest(d)
            cur_sha = "absent" if cur is None else sha256(cur)
            if cur_sha != (a.get("expect") or "absent") and not a.get("force"):
                return {"ok": False, "conflict": cur_sha}
            new, old = os.path.join(root, f".{site}.new"), os.path.join(root, f".{site}.old")
            for x in (new, old):
                shutil.rmtree(x, ignore_errors=True)
            try:
                unpack(upload, new)
            except BaseException:
                shutil.rmtree(new, ignore_errors=True)
                raise
            if os.path.isdir(d):
                os.rename(d, old)
            os.rename(new, d)
            shutil.rmtree(old, ignore_errors=True)
            dfd = os.open(root, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
            return {"ok": True, "sha": sha256(read_manifest(d))}
    finally:
        if os.path.lexists(upload):
            os.unlink(upload)


MODES = {"read": mode_read, "fetch": mode_fetch, "swap": mode_swap}


def answer(a):
    if a.get("mode") not in MODES:
        return {"ok": False, "error": f"unknown mode {a.get('mode')!r} (modes: {', '.join(MODES)})"}
    site = a.get("site") or ""
    if not SITE_RE.match(site):
        return {"ok": False, "error": f"site {site!r}: not a site name"}
    root = a.get("root") or ROOT
    if not os.path.isabs(root):
        return {"ok": False, "error": f"root {root!r}: not an absolute path"}
    return MODES[a["mode"]](root, site, a)


def main():
    try:
        out = answer(json.loads(sys.argv[1]))
    except (IndexError, ValueError, KeyError, OSError, tarfile.TarError) as exc:
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(out))
    return 0 if out.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
