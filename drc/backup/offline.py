"""`siaga backup offline`: copy the repositories to the offline media and list the offline copies
(SOP BK-9: a copy the server cannot reach; EM-3.7: the last backup not hit by the virus).

The media is plugged into the repository host (the DRC) only for the copy (in the lab:
`siaga lab media attach|detach`). There `siaga-backup run offline` (the weekly timer's job too)
runs the role's siaga-offline-copy: the encrypted pgBackRest and restic repositories are copied (unchanged files hard-linked to the previous copy,
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
import json
import shlex

from rich.console import Console
from rich.table import Table

from drc.hosts import remote
from drc.records import store as records
from drc.site import Site, load_site

OFFLINE_RECORDS = "offline-copies.jsonl"


def copy_on_host(site: Site, host: str, by: str) -> tuple[dict, dict | None]:
    """`siaga-backup run offline` on the repository host (what the weekly timer runs): the copy's
    result and its backup-log record (BK-3), also when it failed or the host was not reached."""
    from drc.backup import runs as backup

    started = dt.datetime.now().astimezone()
    out = backup.run_sets(site, {host: ["offline"]}, by)[host]
    recs = out.get("records") or []
    if not recs:
        recs = [backup.unreachable_record(site, host, ["offline"], by, out.get("error") or "no record", started)]
    records.append_new(records.records_dir(site) / backup.LOG_RECORDS, recs)
    res = next((json.loads(ln[8:]) for ln in (out.get("output") or "").splitlines() if ln.startswith("OFFLINE ")), None)
    return res or {"ok": False, "attached": None, "error": recs[-1].get("error")}, recs[-1]


def list_on_host(site: Site, host: str) -> dict:
    """The copies on the media, when it is attached (siaga-offline-copy in list mode)."""
    from roles.backup.deploy import OFFLINE_COPY, offline_copy_args

    cmd = f"sudo -n {OFFLINE_COPY} {shlex.quote(json.dumps({**offline_copy_args(site.backup), 'mode': 'list'}))}"
    r = remote.run(site, host, cmd, timeout=300)
    if not r.reachable:
        return {"ok": False, "error": f"{host}: {r.error}"}
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"ok": False, "error": f"{host}: {OFFLINE_COPY} exited {r.exited}: {(r.stderr or r.stdout).strip()[-400:]}"}


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
    from drc.backup import runs as backup

    site = load_site(args.site)
    host = site.hosts_in(site.backup.repository_site)[0]
    rec = None
    if args.list:
        res = list_on_host(site, host)
    else:
        res, rec = copy_on_host(site, host, site.connection.user)
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


def register(sub, common) -> None:
    of = sub.add_parser("offline", help="copy the repositories to the offline media (attached now) and list the offline copies (BK-9, EM-3.7)",
                        description="Exit 1 when the media is not attached or the copy failed or was not verified.")
    of.add_argument("--list", action="store_true", help="only list the offline copies (from the media if attached, else the records)")
    common(of)
    of.set_defaults(func=cmd_offline)
