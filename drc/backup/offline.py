"""`siaga backup offline`: copy the repositories to the offline medium attached now, label media,
record where each medium is kept, and list the media and their copies (SOP BK-1: media in
rotation; BK-9: a copy the server cannot reach, kept away from the server room; EM-3.7: the last
backup not hit by the virus).

A medium is plugged into the repository host (the DRC) only for the copy (in the lab:
`siaga lab media attach --label OFFLINE-B`). There `siaga-backup run offline` (the weekly timer's
job too) runs the role's siaga-offline-copy: the encrypted pgBackRest and restic repositories are
copied (unchanged files hard-linked to the newest verified copy on the same medium, so each copy
is complete on its own), verified on the medium, and described by a manifest there. The medium is
known by its label file, never by its mount point; a copy onto a medium that is not the one due in
the rotation is made and says so. The results are kept on the workstation (drc/backup/media.py),
so `--list` answers while every medium is away in its safe place.

- `offline`: copy now, then list; exit 1 when the copy failed or was not verified.
- `offline --init-medium LABEL`: label the empty medium attached now (refused on a medium holding copies).
- `offline --stored LABEL --location TEXT`: record where a medium is kept from now (after unplugging it).
- `offline --list [--before TIME]`: media, their last verified copies, where they are, which one
  is due, the copies, and the last clean copy (before TIME: the time of infection).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex

from rich.console import Console
from rich.table import Table

from drc.backup import media
from drc.hosts import remote
from drc.records import store as records
from drc.site import Site, load_site


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


def program_on_host(site: Site, host: str, mode: str, **extra) -> dict:
    """siaga-offline-copy in list or init mode on the repository host."""
    from roles.backup.deploy import offline_copy_args
    from roles.backup.layout import OFFLINE_COPY

    args = json.dumps({**offline_copy_args(site.backup), "mode": mode, **extra})
    r = remote.run(site, host, f"sudo -n {OFFLINE_COPY} {shlex.quote(args)}", timeout=300)
    if not r.reachable:
        return {"ok": False, "reached": False, "error": f"{host}: {r.error}"}
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"ok": False, "error": f"{host}: {OFFLINE_COPY} exited {r.exited}: {(r.stderr or r.stdout).strip()[-400:]}"}


def remember(site: Site, res: dict) -> None:
    """Keep what the host said: the attached medium's copies (and those it no longer holds), and
    the copies the host remembers of every medium."""
    d = records.records_dir(site)
    label = res.get("medium")
    on_medium = [{**c, "medium": c.get("medium") or label} for c in res.get("copies") or [] if c.get("name")]
    records.append_new(d / media.COPIES, [*({**c, "id": f"offline-{c['medium']}-{c['name']}"} for c in on_medium),
                                          *({**h, "id": f"seen-{h['medium']}-{h['name']}"} for h in res.get("history") or []
                                            if h.get("medium") and h.get("name"))])
    gone = {(h["medium"], h["name"]) for h in res.get("history") or [] if h.get("removed")}
    gone |= {(label, n) for n in res.get("removed") or []}
    if res.get("attached") and label:  # the medium is the truth about itself
        have = {c["name"] for c in on_medium}
        gone |= {(label, c["name"]) for c in listing(site) if c.get("medium") == label and c["name"] not in have}
    records.append_new(d / media.REMOVED, [{"id": f"removed-{m}-{n}", "medium": m, "name": n} for m, n in sorted(gone)])


def listing(site: Site) -> list[dict]:
    """Every medium's copies from the workstation's records, oldest first."""
    d = records.records_dir(site)
    rows = records.read(d / media.COPIES)
    return media.merge([r for r in rows if not r["id"].startswith("seen-")], [r for r in rows if r["id"].startswith("seen-")],
                       records.read(d / media.REMOVED))


def medium_label(site: Site, label: str) -> str:
    """A label of the site's rotation, else a clear error before any host is touched."""
    labels = site.backup.offline.media
    if label not in labels:
        raise SystemExit(f"error: medium {label} is not in the rotation of site '{site.site}' (backup.offline.media: "
                         f"{', '.join(labels)}). Fix: use one of them, or add {label} to backup.offline.media in the site file.")
    return label


def time_option(name: str, value: str | None) -> dt.datetime | None:
    try:
        return media.parse_time(value) if value else None
    except ValueError:
        raise SystemExit(f"error: --{name} {value!r} is not a time. Fix: e.g. --{name} 2026-11-26T03:00+07:00") from None


def cmd_offline(args: argparse.Namespace, console: Console) -> int:
    site = load_site(args.site)
    host = site.hosts_in(site.backup.repository_site)[0]
    now = dt.datetime.now().astimezone()
    before, since = (time_option(name, getattr(args, name)) for name in ("before", "since"))
    rec, res = None, {}
    if args.stored:
        label = medium_label(site, args.stored)
        if not (args.location or "").strip():
            raise SystemExit("error: --stored needs --location (where the medium is kept, e.g. \"lemari besi kantor\")")
        since = since or now
        records.append_new(records.records_dir(site) / media.STORED, [
            {"id": f"stored-{label}-{since.isoformat(timespec='seconds')}", "medium": label, "location": args.location.strip(),
             "since": since.isoformat(timespec="seconds"), "by": site.connection.user, "recorded_at": now.isoformat(timespec="seconds")}])
        res = {"ok": True}
    elif args.init_medium:
        res = program_on_host(site, host, "init", label=medium_label(site, args.init_medium))
    elif args.list:
        res = program_on_host(site, host, "list")
    else:
        res, rec = copy_on_host(site, host, site.connection.user)
    if res.get("copies") is not None or res.get("history"):
        remember(site, res)
    copies = listing(site)
    o = site.backup.offline
    status = media.media_status(o.media, o.rotation_days * 86400, copies, records.read(records.records_dir(site) / media.STORED), now)
    clean = media.last_clean_copy(copies, before)
    if args.list or args.stored:
        # The records answer without a medium or a host; only a medium that answered with an error fails.
        ok = not (res.get("attached") and not res.get("ok"))
    else:
        ok = bool(res.get("ok"))
    source = "media" if res.get("attached") else "workstation records (media not attached)"
    # Listing with no medium (or no server) is the usual case: said as a note, not an error.
    note = res.get("error") if (args.list or args.stored) and not res.get("attached") else None
    out = {"ok": ok, "host": host, "error": None if note else res.get("error"), "note": note, "record": rec, "medium": res.get("medium"), "warning": res.get("warning"),
           "copy": res.get("copy"), "removed": res.get("removed"), "initialised": res.get("initialised"), "source": source,
           **status, "copies": copies, "media_free_bytes": res.get("media_free_bytes"), "before": before and before.isoformat(),
           "last_clean": clean, "last_verified": clean and clean["name"]}
    if args.json:
        console.file.write(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
        console.file.flush()
    else:
        show(console, site, out)
    return 0 if ok else 1


def show(console: Console, site: Site, out: dict) -> None:
    from drc.backup.runs import _size

    t = Table(title=f"Media offline dalam rotasi — site '{site.site}' (SOP BK-1, BK-9)", title_justify="left")
    for col in ("Media", "Salinan", "Salinan terverifikasi terakhir", "Disimpan di", "Sejak", "Giliran"):
        t.add_column(col)
    for m in out["media"]:
        due = ""
        if m["due"]:
            due = f"[bold red]TERLAMBAT[/bold red] (sejak {out['due_at']})" if out["overdue"] else f"[bold]berikutnya[/bold] ({out['due_at']})"
        t.add_row(m["label"] + ("" if m["in_rotation"] else " (di luar rotasi)"), str(m["copies"]),
                  f"{m['last_verified']} ({m['last_verified_at']})" if m["last_verified"] else "[red]belum ada[/red]",
                  m["location"] or "[red]belum dicatat[/red]", m["since"] or "-", due)
    console.print(t)
    t = Table(title=f"Salinan backup offline ({out['source']}; lama → baru; EM-3.7)", title_justify="left")
    for col in ("Media", "Salinan", "Waktu", "Backup database", "Snapshot file", "Ukuran", "Verifikasi"):
        t.add_column(col)
    for c in out["copies"]:
        pg, rs = c.get("pgbackrest") or {}, c.get("restic") or {}
        t.add_row(c.get("medium") or "(tanpa label)", c.get("name") or "?", c.get("copied_at") or "-",
                  f"{len(pg.get('backups') or [])} (terbaru {(pg.get('backups') or ['-'])[-1]})" if pg else "-",
                  str(len(rs.get("snapshots") or [])) if rs else "-", _size(c.get("size_bytes")),
                  "[green]baik[/green]" if c.get("verified") else f"[bold red]GAGAL[/bold red] {c.get('error') or ''}")
    console.print(t)
    if out.get("warning"):
        console.print(f"[yellow]peringatan:[/yellow] media {out['medium']} bukan giliran rotasi (giliran: {out['due']}); "
                      "salinan tetap dibuat", highlight=False)
    if out.get("error"):
        console.print(f"[red]error:[/red] {out['error']}", highlight=False)
    if out.get("note"):
        console.print(f"catatan: dari catatan workstation ({out['note']})", highlight=False)
    c = out["last_clean"]
    before = f" sebelum {out['before']}" if out["before"] else ""
    console.print(f"Backup bersih terakhir{before} (EM-3.7): " + (f"{c['medium'] or '(tanpa label)'} {c['name']} ({c.get('copied_at')}), "
                  f"di {next((m['location'] for m in out['media'] if m['label'] == c['medium']), None) or '?'}" if c else "[red]tidak ada[/red]"),
                  highlight=False)


def register(sub, common) -> None:
    of = sub.add_parser("offline", help="copy the repositories to the offline medium attached now, label media, record where they are "
                                        "kept, list media and copies (BK-1, BK-9, EM-3.7)",
                        description="Without options: copy to the medium attached now (exit 1 when the copy failed or was not verified). "
                                    "A copy onto a medium that is not the one due in the rotation is made, with a warning.")
    what = of.add_mutually_exclusive_group()
    what.add_argument("--list", action="store_true", help="only list the media and copies (from the medium if attached, else the records)")
    what.add_argument("--init-medium", metavar="LABEL", help="label the empty medium attached now (one of backup.offline.media)")
    what.add_argument("--stored", metavar="LABEL", help="record where medium LABEL is kept from now on (with --location), after unplugging it")
    of.add_argument("--location", help="with --stored: where the medium is kept (e.g. \"lemari besi kantor\")")
    of.add_argument("--since", help="with --stored: since when (ISO time; default now)")
    of.add_argument("--before", metavar="TIME", help="the last clean copy made before TIME (e.g. the infection time; ISO, local time if no offset)")
    common(of)
    of.set_defaults(func=cmd_offline)
