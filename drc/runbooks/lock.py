"""The runbook lock, held on the hosts (drc/hostside/runbook_lock.py installed by roles/base).

A lock on the workstation would not stop a second admin's workstation; a lock on every host a
runbook touches does. Hosts are locked in sorted order (two runs never wait on each other in a
circle) and, if one refuses, the ones already taken are released again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from drc.hostside import runbook_lock


class Lock(Protocol):
    def acquire(self, run_id: str, holder: dict) -> tuple[bool, str]: ...

    def release(self, run_id: str) -> None: ...


class HostLock:
    """The lock file on each of `hosts` (the ones that answer, when `reachable_only`)."""

    def __init__(self, site, hosts: list[str]):
        self.site, self.hosts = site, sorted(hosts)

    def call(self, host: str, args: dict) -> dict:
        from drc.hosts import remote

        r = remote.run_program(self.site, host, "runbook_lock", args, timeout=30)
        if r.error:
            return {"ok": False, "error": r.error}
        try:
            return json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {"ok": False, "error": f"runbook-lock exited {r.exited}: {(r.stderr or r.stdout).strip()[-300:]}"}

    def acquire(self, run_id: str, holder: dict) -> tuple[bool, str]:
        taken = []
        for h in self.hosts:
            out = self.call(h, {"mode": "acquire", "run_id": run_id, "holder": holder})
            if not out.get("ok"):
                for t in taken:
                    self.call(t, {"mode": "release", "run_id": run_id})
                return False, f"{h}: {describe(out)}"
            if not out.get("again"):
                taken.append(h)
        return True, f"locked on {', '.join(self.hosts)}"

    def release(self, run_id: str) -> None:
        for h in self.hosts:
            self.call(h, {"mode": "release", "run_id": run_id})


class FileLock:
    """The same lock program on a local file (a workstation-only runbook; the engine's unit tests)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def acquire(self, run_id: str, holder: dict) -> tuple[bool, str]:
        out = runbook_lock.acquire(self.path, run_id, holder)
        return bool(out["ok"]), describe(out) if not out["ok"] else f"locked {self.path}"

    def release(self, run_id: str) -> None:
        runbook_lock.release(self.path, run_id)


def describe(out: dict) -> str:
    held = out.get("held") or {}
    if held.get("run_id"):
        return (f"{out.get('error') or 'locked'}: run {held['run_id']} by {held.get('by', '?')} on "
                f"{held.get('workstation', '?')} since {held.get('since', '?')}. If that run was interrupted, re-run "
                f"it to resume; `siaga runbook unlock {held['run_id']}` only when you are sure it is not running")
    return out.get("error") or "refused"
