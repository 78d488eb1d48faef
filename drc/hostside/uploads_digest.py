#!/usr/bin/python3
"""uploads-digest '<json args>': size and sha256 of every file under a directory.

Installed by roles/base as /usr/local/lib/siaga/uploads-digest; the switch-over runs it on both
sites after the final uploads sync and compares them file for file (EM-3: the DRC's data is up to
date before it serves). Standard library only. Args: {"dir": "/home/file", "exclude": [".tmp-*"]}
(rsync-like patterns: without '/' they match any path component). One JSON object on stdout:
{"ok": true, "files": {"<path relative to dir>": [size, "<sha256>"], ...}}.
"""

import fnmatch
import hashlib
import json
import os
import sys


def excluded(path, patterns):
    parts = path.split("/")
    return any(fnmatch.fnmatch(path, p) if "/" in p else any(fnmatch.fnmatch(part, p) for part in parts) for p in patterns)


def digest(root, patterns):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            if excluded(rel, patterns) or not os.path.isfile(full) or os.path.islink(full):
                continue
            h = hashlib.sha256()
            try:
                with open(full, "rb") as fh:
                    size = os.fstat(fh.fileno()).st_size
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
            except FileNotFoundError:
                continue  # gone since it was listed: a temporary file renamed into place (a heartbeat, an upload)
            out[rel] = [size, h.hexdigest()]
    return out


def main():
    try:
        a = json.loads(sys.argv[1])
        if not os.path.isdir(a["dir"]):
            out = {"ok": False, "error": f"{a['dir']} is not a directory"}
        else:
            out = {"ok": True, "files": digest(a["dir"], a.get("exclude") or [])}
    except (IndexError, ValueError, KeyError, OSError) as exc:
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(out))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
