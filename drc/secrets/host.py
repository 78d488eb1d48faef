"""The host program `secrets-host` (drc/hostside/secrets_host.py) run over SSH with sudo: its
arguments as one JSON word (never secret: sudo logs command lines), the secrets as one JSON line
on its stdin, so they are in no command line, no process list and no log (SOP BK-8)."""

from __future__ import annotations

import json

from drc.hosts import remote
from drc.site import Site

PROGRAM = "secrets_host"


def call(site: Site, host: str, args: dict, secrets: dict | None = None, timeout: float = 3600) -> dict:
    """The program's JSON answer; an unreachable host or a missing program is {"ok": False, "error": ...}."""
    cmd = remote.program_command(PROGRAM, args)
    result = remote.run_with_input(site, host, cmd, json.dumps(secrets) + "\n" if secrets is not None else "", timeout)
    if not result.reachable:
        return {"ok": False, "error": f"{host}: {result.error}"}
    missing = remote.program_missing(result, PROGRAM)
    if missing:
        return {"ok": False, "error": missing}
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"ok": False, "error": f"{host}: secrets-host exited {result.exited}: {(result.stderr or result.stdout).strip()[-500:]}"}
