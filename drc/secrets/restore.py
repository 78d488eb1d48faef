"""`siaga secrets restore-offline`: the database and the files restored from an offline copy with
only the escrow (SOP EM-3.7: the last clean backup; BK-4: restore proven; BK-8).

Runs from any workstation holding the site file and the admin's SSH key, no secrets directory and
no records needed: the escrow (decrypted here with the passphrase) gives every secret. On the host
where the medium is attached (`secrets-host offline-restore`): the newest verified copy (or the
one named), pgBackRest restoring with `--repo1-path` at the copy and the cipher pass from a 0600
config under /run (removed after), into a new directory started as a scratch cluster on another
port; restic restoring the sets with `--verify`. Never the live cluster, never a non-empty target.
Then proven: the restored tables are counted and, when production answers, compared with its
counts; restored files are hashed and compared with production's own files older than the snapshot.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
from pathlib import Path

from drc.secrets import escrow as esc
from drc.secrets.host import call
from drc.site import Site

RESTORE_PORT = 54339
TARGET_ROOT = "/var/tmp/siaga-offline-restore"
COMPARE_FILES = 200


def production_paths(site: Site, doc: dict) -> list[str]:
    return ["/var/lib/postgresql", "/etc/postgresql", site.backup.repository_path, doc["offline"]["mount_point"],
            site.spse_app.uploads_root, "/etc", "/usr", "/home"]


def host_args(site: Site, doc: dict, copy: str | None, target: str, sets: list[str]) -> dict:
    p = doc["pgbackrest"]
    return {"mode": "offline-restore", "mount_point": doc["offline"]["mount_point"], "copy": copy, "stanza": p["stanza"],
            "pg_version": p["postgresql_version"], "target": target, "port": RESTORE_PORT,
            "production_port": site.firewall.postgresql_port, "production_paths": production_paths(site, doc),
            "sets": sets, "timeout_s": site.backup.timeout_s}


def host_secrets(doc: dict) -> dict:
    """Only what the host needs; older copies may still need a retired restic password."""
    p, r = doc["pgbackrest"], doc["restic"]
    return {"pgbackrest": {"cipher_pass": p["cipher_pass"], "cipher_type": p["cipher_type"]},
            "restic": {"passwords": [r["password"], *(x["value"] for x in r.get("retired", []))]}}


def compare_tables(restored: dict, production: dict) -> dict:
    """Per database: tables of production missing in the restore, equal counts, differing counts
    (production changed after the backup)."""
    out = {}
    for db, prod in production.items():
        got = restored.get(db, {})
        out[db] = {"missing": sorted(set(prod) - set(got)), "equal": sorted(t for t in prod if t in got and got[t] == prod[t]),
                   "differ": {t: {"restored": got[t], "production": prod[t]} for t in prod if t in got and got[t] != prod[t]}}
    return out


def restic_time(text: str) -> dt.datetime:
    """restic's snapshot time (nanoseconds, 'Z' or an offset) as a datetime."""
    m = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text)
    if not m:
        raise ValueError(f"not a restic time: {text!r}")
    frac = (m.group(2) or "0")[:6].ljust(6, "0")
    return dt.datetime.fromisoformat(f"{m.group(1)}.{frac}{'+00:00' if m.group(3) == 'Z' else m.group(3)}")


def compare_files(site: Site, restore_host: str, data_host: str, set_result: dict, rng: random.Random) -> dict:
    """sha256 of up to COMPARE_FILES restored files against production's own files settled before the snapshot."""
    listed = call(site, restore_host, {"mode": "list-tree", "root": set_result["path"]}, timeout=600)
    if not listed.get("ok"):
        return {"ok": False, "error": listed.get("error")}
    paths = listed["paths"]
    picked = sorted(rng.sample(paths, min(COMPARE_FILES, len(paths))))
    cutoff = restic_time(set_result["time"]).timestamp()
    future = dt.datetime.now().timestamp() + 86400
    restored = call(site, restore_host, {"mode": "hash-files", "root": set_result["path"], "paths": picked, "cutoff": future}, timeout=900)
    prod = call(site, data_host, {"mode": "hash-files", "root": "/", "paths": picked, "cutoff": cutoff}, timeout=900)
    if not (restored.get("ok") and prod.get("ok")):
        return {"ok": None, "error": f"production not compared: {prod.get('error') or restored.get('error')}"}
    r, p = restored["hashes"], prod["hashes"]
    both = [k for k in p if k in r]
    bad = [k for k in both if r[k] != p[k]]
    return {"ok": not bad and bool(both) if paths else True, "sampled": len(picked), "compared": len(both), "differ": bad[:20],
            "not_on_production_or_newer": len(picked) - len(both)}


def choose_copy(site: Site, doc: dict, host: str, before: dt.datetime | None) -> str:
    """EM-3.7's last clean copy on the attached medium (drc.backup.media.last_clean_copy): the newest
    verified one, made before `before` (the time of infection) when given."""
    from drc.backup.media import last_clean_copy

    listed = call(site, host, {"mode": "list-copies", "mount_point": doc["offline"]["mount_point"]}, timeout=120)
    if not listed.get("ok"):
        raise esc.EscrowError(f"{host}: {listed.get('error')}")
    chosen = last_clean_copy(listed["copies"], before)
    if chosen is None:
        raise esc.EscrowError(f"no verified copy on the medium attached to {host}"
                              + (f" made before {before.isoformat()}" if before else "") + ": nothing restored")
    return chosen["name"]


def restore_offline(site: Site, doc: dict, host: str, copy: str | None, target: str | None, sets: list[str] | None,
                    seed: int | None = None, before: dt.datetime | None = None) -> dict:
    if doc["site"] != site.site:
        raise esc.EscrowError(f"the escrow is for site '{doc['site']}', the site file for '{site.site}'")
    known = [s["name"] for s in doc["restic"]["sets"]]
    sets = known if sets is None else sets
    unknown = [s for s in sets if s not in known]
    if unknown:
        raise esc.EscrowError(f"--sets: {', '.join(unknown)} not in the escrow (sets: {', '.join(known)})")
    copy = copy or choose_copy(site, doc, host, before)
    target = target or f"{TARGET_ROOT}/{dt.datetime.now().strftime('%Y%m%dT%H%M%S')}"
    res = call(site, host, host_args(site, doc, copy, target, sets), host_secrets(doc), timeout=site.backup.timeout_s + 120)
    res["host"] = host
    proof: dict = {}
    if res.get("db", {}).get("ok"):
        from drc.site.data_tier import data_tier_of

        data = data_tier_of(site).db_source_hosts[0]
        prod = call(site, data, {"mode": "table-counts", "port": site.firewall.postgresql_port}, timeout=600)
        if prod.get("ok"):
            proof["tables"] = compare_tables(res["db"]["tables"], prod["tables"])
            proof["tables_ok"] = not any(v["missing"] for v in proof["tables"].values())
        else:
            proof["tables"] = {"error": f"production ({data}) not compared: {prod.get('error')}"}
    rng = random.Random(seed)
    for name, s in (res.get("files") or {}).get("sets", {}).items():
        if s.get("ok"):
            from drc.site.data_tier import data_tier_of
            from roles.backup.topology import backup_host

            proof.setdefault("files", {})[name] = compare_files(site, host, backup_host(data_tier_of(site)), s, rng)
    res["proof"] = proof
    bad_files = [n for n, f in proof.get("files", {}).items() if f.get("ok") is False]
    res["ok"] = bool(res.get("ok")) and proof.get("tables_ok", True) and not bad_files
    return res


def summary(res: dict) -> list[str]:
    lines = []
    c = res.get("copy") or {}
    lines.append(f"copy {c.get('name')} on {res.get('host')} (verified {c.get('verified_at')}), medium "
                 f"{(res.get('medium') or {}).get('label', 'unlabelled')}")
    db = res.get("db") or {}
    if db:
        n = sum(len(t) for t in (db.get("tables") or {}).values())
        lines.append(f"database: backup {db.get('label')} restored into {db.get('path')} "
                     f"({'ok' if db.get('ok') else 'FAILED: ' + str(db.get('error'))}; {n} tables counted; "
                     f"start it with: sudo -u {db.get('run_as')} {db.get('pg_ctl')} -D {db.get('path')} -o '-c port=<free port>' start)")
    for name, s in ((res.get("files") or {}).get("sets") or {}).items():
        lines.append(f"files {name}: snapshot {s.get('snapshot')} ({s.get('time')}) restored into {s.get('path')}: "
                     f"{s.get('files')} files, {s.get('bytes')} bytes, "
                     f"{'verified' if s.get('ok') else 'FAILED: ' + str(s.get('error'))}")
    for db_name, t in (res.get("proof", {}).get("tables") or {}).items():
        if isinstance(t, dict) and "equal" in t:
            lines.append(f"proof {db_name}: {len(t['equal'])} tables count as production, {len(t['differ'])} differ "
                         f"(changed since the backup), {len(t['missing'])} missing {t['missing'][:5]}")
    for name, f in (res.get("proof", {}).get("files") or {}).items():
        lines.append(f"proof files {name}: {f.get('compared')} of {f.get('sampled')} sampled files compared with "
                     f"production: {len(f.get('differ') or [])} differ" + (f" ({f['error']})" if f.get("error") else ""))
    if res.get("error"):
        lines.append(f"error: {res['error']}")
    return lines


def load_escrow(path: Path, passphrase: str) -> dict:
    return esc.read_escrow(path, passphrase)


def as_json(res: dict) -> str:
    return json.dumps(res, indent=2, ensure_ascii=False, default=str)
