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


def program_json(r: remote.Result) -> dict:
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
    return program_json(remote.run_program(site, host, "pg_role", a, timeout=timeout))


def uploads_digest(site: Site, host: str, timeout: float = 600) -> dict:
    a = {"dir": site.spse_app.uploads_dir, "exclude": site.uploads_sync.exclude}
    return program_json(remote.run_program(site, host, "uploads_digest", a, timeout=timeout))


def systemctl(site: Site, host: str, verb: str, unit: str, timeout: float = 120) -> dict:
    """`systemctl <verb> <unit>` as root; `is-active` answers in `state`."""
    r = remote.run(site, host, f"sudo -n systemctl {verb} {shlex.quote(unit)}", timeout=timeout)
    if not r.reachable:
        return {"ok": False, "reachable": False, "error": r.error}
    return {"ok": r.exited == 0, "reachable": True, "state": r.stdout.strip(), "error": r.stderr.strip()[-300:] or None}


def is_active(site: Site, host: str, unit: str) -> bool:
    return systemctl(site, host, "is-active", unit).get("state") == "active"


def load_ruleset(site: Site, host: str, content: str, path: str = "/etc/nftables.conf") -> dict:
    """Load the firewall ruleset the firewall role renders for `host` (roles/firewall/ruleset.py),
    checked with `nft -c` first and installed at `path` as the role does, so the site deploy that
    follows finds it current. The SSH allowances are the role's: a runbook never changes them."""
    import io

    from drc.hosts.remote import connection, why

    staged = f"/tmp/siaga-ruleset-{host}.nft"
    try:
        with connection(site, host) as conn:
            conn.put(io.StringIO(content), staged)
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "reachable": False, "error": why(exc)}
    cmd = (f"sudo -n sh -c 'nft -c -f {staged} && nft -f {staged} && install -m 755 {staged} {path}.siaga-new "
           f"&& mv -f {path}.siaga-new {path}; rc=$?; rm -f {staged}; exit $rc'")
    r = remote.run(site, host, cmd, timeout=60)
    return {"ok": r.ok, "reachable": r.reachable, "error": r.error or (r.stderr.strip()[-300:] or None)}


def loaded_ruleset_version(site: Site, host: str, table: str) -> str | None:
    """The comment of the loaded table inet <table> (the firewall role's version tag)."""
    r = remote.run(site, host, f"sudo -n nft list table inet {shlex.quote(table)}", timeout=30)
    if not r.ok:
        return None
    from roles.firewall.ruleset import table_comment

    return table_comment(r.stdout.splitlines())  # as the firewall role's fact reads it


def quarantined_uploads(site: Site, hosts: list[str]) -> set[str]:
    """Upload paths (relative to the uploads) ClamAV moved to quarantine on any of `hosts`
    (roles/clamav: one JSON line each in quarantine.jsonl). Their database row stays, their file
    left on purpose: no copy of them is expected anywhere (SOP IN-2). A host not answering adds none."""
    if not site.clamav.enabled:
        return set()
    records = shlex.quote(f"{site.clamav.state_dir}/quarantine.jsonl")
    out: set[str] = set()
    for host in hosts:
        r = remote.run(site, host, f"sudo -n cat {records} 2>/dev/null || true", timeout=60)
        for line in (r.stdout if r.ok else "").splitlines():
            try:
                out.add(relative_upload(site, json.loads(line)["path"]))
            except (ValueError, KeyError, TypeError):
                continue
    return out


def relative_upload(site: Site, path: str) -> str:
    return path.removeprefix(site.spse_app.uploads_dir.rstrip("/") + "/")


def known_uploads(site: Site, host: str, also_ask: list[str] | None = None) -> dict[str, str] | None:
    """rel path → sha256 of the uploads `host`'s database knows (the application's own records, when
    its profile names them; None when it names none), leaving out those ClamAV quarantined on `host`
    or `also_ask`. Raises RuntimeError when the records cannot be read."""
    fr = site.spse_app.restore_test.file_records if site.spse_app.restore_test else None
    if fr is None:
        return None
    rec = pg(site, host, "records", database=site.postgresql.database, table=fr.table, path_column=fr.path_column,
             sha256_column=fr.sha256_column, timeout=300)
    if not rec.get("ok"):
        raise RuntimeError(f"{host}: the application's upload records: {rec.get('error')}")
    gone = quarantined_uploads(site, [host, *(also_ask or [])])
    known = {relative_upload(site, path): digest for path, digest in rec["records"]}
    return {p: d for p, d in known.items() if p not in gone}
