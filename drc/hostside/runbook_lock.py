#!/usr/bin/python3
"""runbook-lock '<json args>': the lock that keeps two runbooks from running at once on a site.

Installed by roles/base as /usr/local/lib/siaga/runbook-lock; `drc.runbooks.lock` takes it on
every host a runbook touches before its first step, so two workstations (or two terminals) can
never drive a switch-over at the same time. Standard library only. Args:

    {"mode": "acquire", "run_id": "...", "holder": {"runbook": ..., "by": ..., "workstation": ...}}
    {"mode": "release", "run_id": "..."}
    {"mode": "show"}
    {"mode": "break", "run_id": "..."}   (the operator's explicit `siaga runbook unlock`)

The lock is a file made with O_EXCL (atomic on one host), holding its holder as JSON. Taking it
again with the same run id succeeds (a runbook resumed after an interruption still holds it); any
other run id is refused with the holder's details. Release removes it only for its own run id.
It survives a workstation crash on purpose: a half-done runbook must be resumed or unlocked by a
person, never overrun by another. One JSON object on stdout; exit 0 when the request was granted.
"""

import datetime as dt
import json
import os
import sys

LOCK_FILE = "/var/lib/siaga/runbook.lock"


def read_holder(path):
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        # An unreadable lock still locks: a torn write must not let a second runbook in.
        return {"run_id": None, "error": f"unreadable lock file: {exc}"}


def acquire(path, run_id, holder):
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    record = {**holder, "run_id": run_id, "since": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
              "host": os.uname().nodename}
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        held = read_holder(path)
        if held is not None and held.get("run_id") == run_id:
            return {"ok": True, "held": held, "again": True}
        if held is None:  # released between our open and our read: try once more
            return acquire(path, run_id, holder)
        return {"ok": False, "held": held, "error": "another runbook holds the lock"}
    with os.fdopen(fd, "w") as fh:
        json.dump(record, fh)
        fh.flush()
        os.fsync(fh.fileno())
    return {"ok": True, "held": record, "again": False}


def release(path, run_id, force=False):
    held = read_holder(path)
    if held is None:
        return {"ok": True, "held": None, "released": False}
    if held.get("run_id") != run_id and not force:
        return {"ok": False, "held": held, "error": "the lock belongs to another run"}
    os.unlink(path)
    return {"ok": True, "held": held, "released": True}


def handle(args, path=LOCK_FILE):
    mode = args.get("mode")
    if mode == "acquire":
        return acquire(path, args["run_id"], args.get("holder") or {})
    if mode == "release":
        return release(path, args["run_id"])
    if mode == "break":
        return release(path, args.get("run_id"), force=True)
    if mode == "show":
        return {"ok": True, "held": read_holder(path)}
    return {"ok": False, "error": f"unknown mode {mode!r}"}


def main():
    try:
        out = handle(json.loads(sys.argv[1]))
    except (IndexError, ValueError, KeyError) as exc:
        out = {"ok": False, "error": f"bad arguments: {type(exc).__name__}: {exc}"}
    print(json.dumps(out))
    return 0 if out.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
