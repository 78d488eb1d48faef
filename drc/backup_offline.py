"""`siaga backup offline`: copy the repositories to the offline media and list the offline copies
(SOP BK-9: a copy the server cannot reach; EM-3.7: the last backup not hit by the virus).

The media is plugged into the repository host (the DRC) only for the copy (in the lab:
`siaga lab media attach|detach`). drc/offline_probe.py runs there with sudo: the encrypted
pgBackRest and restic repositories are copied (unchanged files hard-linked to the previous copy,
so each copy is complete on its own), verified on the media (`pgbackrest verify` against the copy;
restic's content-addressed files re-hashed), and described by a manifest on the media. The result
is also kept on the workstation (`<records_dir>/offline-copies.jsonl`) and in the backup log (set
`offline`), so the list is known while the media is away in its safe place.

`offline` copies then lists; `offline --list` only lists (from the media when attached, else from
the workstation's records). Oldest first; exit 1 when the copy failed or was not verified.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import shlex
from pathlib import Path

from rich.console import Console
from rich.table import Table

from drc import records, remote
from drc.site import Site, load_site

PROBE_SOURCE = Path(__file__).with_name("offline_probe.py")
OFFLINE_RECORDS = "offline-copies.jsonl"


def probe(site: Site, host: str, args: dict, timeout: float) -> dict:
    cmd = f"sudo -n python3 -c {shlex.quote(PROBE_SOURCE.read_text())} {shlex.quote(json.dumps(args))}"
    r = remote.run(site, host, cmd, timeout=timeout)
    if not r.reachable:
        return {"ok": False, "error": f"{host}: {r.error}"}
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"ok": False, "error": f"{host}: probe exited {r.exited}: {(r.stderr or r.stdout).strip()[-400:]}"}


def probe_args(site: Site, mode: str) -> dict:
    b = site.backup
    return {"mode": mode, "mount_point": b.offline.mount_point, "repo_path": b.repository_path, "user": b.repository_user,
            "config_path": "/etc/siaga/pgbackrest-repo", "stanza": b.stanza, "keep": b.offline.retention_full,
            "timeout_s": b.timeout_s, "lock_wait_s": 900}


def copy_record(site: Site, host: str, by: str, res: dict, started: dt.datetime) -> dict:
    """The copy as one backup-log record (BK-3): also a failed copy."""
    c = res.get("copy") or {}
    end = dt.datetime.now().astimezone()
    error = None if res.get("ok") else (res.get("error") or "offline copy not verified: "
                                         + "; ".join(x for x in (
                                             None if (c.get("pgbackrest") or {}).get("ok") else f"pgbackrest verify: {(c.get('pgbackrest') or {}).get('output', '')[-300:]}",
                                             None if (c.get("restic") or {}).get("ok") else f"restic files: {(c.get('restic') or {}).get('bad')}") if x))
    return {"v": 1, "id": hashlib.sha1(f"{site.site}|offline|{c.get('name') or started.isoformat()}".encode()).hexdigest(),
            "host": host, "site": site.site, "set": "offline", "repository": "offline", "kind": "copy", "trigger": "manual",
            "by": by, "start": started.isoformat(timespec="seconds"), "end": end.isoformat(timespec="seconds"),
            "duration_s": round((end - started).total_seconds(), 3), "size_bytes": c.get("bytes_copied"),
            "result": "success" if res.get("ok") else "failure", "error": error,
            "details": {"copy": c.get("name"), "location": f"{host}:{site.backup.offline.mount_point}",
                        "backups": (c.get("pgbackrest") or {}).get("backups"), "snapshots": len((c.get("restic") or {}).get("snapshots") or [])}}


def listing(site: Site, on_media: dict | None) -> tuple[list[dict], str]:
    """The offline copies oldest first: from the media when it answered, else the workstation's records."""
    if on_media and on_media.get("attached") and on_media.get("copies") is not None:
        return on_media["copies"], "media"
    seen: dict[str, dict] = {}
    for r in records.read(records.records_dir(site) / OFFLINE_RECORDS):
        if r.get("name"):
            seen[r["name"]] = r
    for r in records.read(records.records_dir(site) / "offline-removed.jsonl"):
        seen.pop(r.get("name"), None)
    return [seen[k] for k in sorted(seen)], "workstation records (media not attached)"


def remember(site: Site, res: dict) -> None:
    d = records.records_dir(site)
    records.append_new(d / OFFLINE_RECORDS, [{**c, "id": f"offline-{c['name']}"} for c in res.get("copies") or [] if c.get("name")])
    records.append_new(d / "offline-removed.jsonl", [{"id": f"removed-{n}", "name": n} for n in res.get("removed") or []])


def cmd_offline(args: argparse.Namespace, console: Console) -> int:
    from drc import backup

    site = load_site(args.site)
    host = site.hosts_in(site.backup.repository_site)[0]
    started = dt.datetime.now().astimezone()
    res = probe(site, host, probe_args(site, "list" if args.list else "copy"), site.backup.timeout_s + 1200)
    rec = None
    if not args.list:
        rec = copy_record(site, host, site.connection.user, res, started)
        records.append_new(records.records_dir(site) / backup.LOG_RECORDS, [rec])
    if res.get("attached"):
        remember(site, res)
    copies, source = listing(site, res)
    # --list without the media: the workstation's records are the answer.
    ok = bool(res.get("ok")) or (args.list and res.get("attached") is False)
    out = {"ok": ok, "host": host, "error": res.get("error"), "record": rec, "copy": res.get("copy"), "removed": res.get("removed"),
           "source": source, "copies": copies, "media_free_bytes": res.get("media_free_bytes"),
           "last_verified": next((c["name"] for c in reversed(copies) if c.get("verified")), None)}
    if args.json:
        console.file.write(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
        console.file.flush()
    else:
        t = Table(title=f"Salinan backup offline — site '{site.site}' ({source}; lama → baru; SOP BK-9, EM-3.7)", title_justify="left")
        for col in ("Salinan", "Waktu", "Backup database", "Snapshot file", "Ukuran", "Verifikasi"):
            t.add_column(col)
        for c in copies:
            pg, rs = c.get("pgbackrest") or {}, c.get("restic") or {}
            t.add_row(c.get("name") or "?", c.get("copied_at") or "-", f"{len(pg.get('backups') or [])} (terbaru {(pg.get('backups') or ['-'])[-1]})",
                      str(len(rs.get("snapshots") or [])), backup._size(c.get("size_bytes")),
                      "[green]baik[/green]" if c.get("verified") else f"[bold red]GAGAL[/bold red] {c.get('error') or ''}")
        console.print(t)
        if res.get("error"):
            console.print(f"[red]error:[/red] {res['error']}", highlight=False)
        console.print(f"last verified offline copy: {out['last_verified'] or 'none'}", highlight=False)
    return 0 if ok else 1


def register(sub, common, wrap) -> None:
    of = sub.add_parser("offline", help="copy the repositories to the offline media (attached now) and list the offline copies (BK-9, EM-3.7)",
                        description="Exit 1 when the media is not attached or the copy failed or was not verified.")
    of.add_argument("--list", action="store_true", help="only list the offline copies (from the media if attached, else the records)")
    common(of)
    of.set_defaults(func=wrap(cmd_offline))
