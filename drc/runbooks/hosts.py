"""What the runbooks ask of the hosts: their actual state and the few changes a runbook makes,
through the programs the roles install (drc/hostside: pg-role, uploads-digest) and systemctl.

Nothing here decides: runbook steps read these results and their checks judge them. Every call
returns a dict; a host that cannot be reached gives {"ok": False, "reachable": False, "error": ...}.
"""

from __future__ import annotations

import json
import shlex

from drc.hosts import remote
from drc.site import Site


def _json(r: remote.Result) -> dict:
    if not r.reachable:
        return {"ok": False, "reachable": False, "error": r.error}
    if r.error:
        return {"ok": False, "reachable": True, "error": r.error}
    try:
        return {"reachable": True, **json.loads(r.stdout.strip().splitlines()[-1])}
    except (ValueError, IndexError):
        return {"ok": False, "reachable": True, "error": f"exited {r.exited}: {(r.stderr or r.stdout).strip()[-300:]}"}


def pg(site: Site, host: str, mode: str, timeout: float = 60, **args) -> dict:
    """pg-role on a host (as root): state, stop, start, promote, slot, follow."""
    pgs = site.postgresql
    a = {"mode": mode, "version": pgs.version, "cluster": pgs.cluster, "port": site.firewall.postgresql_port, **args}
    return _json(remote.run_program(site, host, "pg_role", a, timeout=timeout))


def uploads_digest(site: Site, host: str, timeout: float = 600) -> dict:
    a = {"dir": site.spse_app.uploads_dir, "exclude": site.uploads_sync.exclude}
    return _json(remote.run_program(site, host, "uploads_digest", a, timeout=timeout))


def systemctl(site: Site, host: str, verb: str, unit: str, timeout: float = 120) -> dict:
    """`systemctl <verb> <unit>` as root; `is-active` answers in `state`."""
    r = remote.run(site, host, f"sudo -n systemctl {verb} {shlex.quote(unit)}", timeout=timeout)
    if not r.reachable:
        return {"ok": False, "reachable": False, "error": r.error}
    return {"ok": r.exited == 0, "reachable": True, "state": r.stdout.strip(), "error": r.stderr.strip()[-300:] or None}


def is_active(site: Site, host: str, unit: str) -> bool:
    return systemctl(site, host, "is-active", unit).get("state") == "active"
