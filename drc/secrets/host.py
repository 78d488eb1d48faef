"""The host program `secrets-host` (drc/hostside/secrets_host.py) run over SSH with sudo: its
arguments as one JSON word (never secret: sudo logs command lines), the secrets as one JSON line
on its stdin, so they are in no command line, no process list and no log (SOP BK-8)."""

from __future__ import annotations

import io
import json

from drc.hosts import remote
from drc.site import Site

PROGRAM = "secrets_host"


def call(site: Site, host: str, args: dict, secrets: dict | None = None, timeout: float = 3600) -> dict:
    """The program's JSON answer; an unreachable host or a missing program is {"ok": False, "error": ...}."""
    cmd = remote.program_command(PROGRAM, args)
    stdin = io.StringIO(json.dumps(secrets) + "\n" if secrets is not None else "")
    try:
        with remote.connection(site, host) as conn:
            r = conn.run(cmd, hide=True, warn=True, in_stream=stdin, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 (any failure to reach a host is reported, with why)
        return {"ok": False, "error": f"{host}: {remote.why(exc)}"}
    result = remote.Result(host, reachable=True, exited=r.exited, stdout=r.stdout, stderr=r.stderr)
    missing = remote.program_missing(result, PROGRAM)
    if missing:
        return {"ok": False, "error": missing}
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"ok": False, "error": f"{host}: secrets-host exited {r.exited}: {(r.stderr or r.stdout).strip()[-500:]}"}
