"""`siaga secrets ...`: escrow (escrow.py), restore-offline (restore.py), rotate (rotate.py). SOP BK-8."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from drc.secrets import escrow as esc
from drc.site import load_site
from roles.workstation_secrets import SecretError


def _passphrase_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--passphrase-file", help=f"a 0600 file whose first line is the escrow passphrase (also ${esc.PASSPHRASE_ENV}); "
                                             "default: asked twice on the terminal, never echoed")


def cmd_escrow(args: argparse.Namespace, console: Console) -> int:
    site = load_site(args.site)
    try:
        warnings = esc.check_hosts(site) + esc.sync_retired(site)
        from drc.secrets.rotate_repo import RepoRotateError, generation_in_use

        try:
            generation = generation_in_use(site)
        except RepoRotateError as exc:
            raise esc.EscrowError(str(exc)) from None
        doc = esc.escrow_document(site, generation=generation)
        passphrase = esc.read_passphrase(args.passphrase_file, confirm=True)
        paths = esc.write_outputs(doc, passphrase, Path(args.out).expanduser())
    except (esc.EscrowError, SecretError) as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        return 2
    out = {"ok": True, "encrypted": str(paths["encrypted"]), "sheet": str(paths["sheet"]), "warnings": warnings,
           "retired": len(doc["pgbackrest"]["retired"]) + len(doc["restic"]["retired"])}
    if args.copy_to_medium:
        from drc.secrets.medium import copy_to_medium

        out["medium"] = copy_to_medium(site, paths["encrypted"])
        out["ok"] = bool(out["medium"].get("ok"))
    if args.json:
        console.file.write(json.dumps(out, indent=2) + "\n")
    else:
        console.print(f"encrypted escrow (for the offline media; open with `gpg --decrypt`): {paths['encrypted']}", highlight=False)
        console.print(f"recovery sheet (print it for the safe; SECRET, 0600): {paths['sheet']}", highlight=False)
        for w in warnings:
            console.print(f"[yellow]warning:[/yellow] {w}", highlight=False)
        if "medium" in out:
            m = out["medium"]
            console.print(f"on the medium: {m.get('path')}" if m.get("ok") else f"[red]not copied to the medium:[/red] {m.get('error')}",
                          highlight=False)
        console.print("Destroy an older sheet only when no copy needs its secrets any more.")
    return 0 if out["ok"] else 1


def _time(text: str | None):
    import datetime as dt

    if not text:
        return None
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise esc.EscrowError(f"--before {text!r}: not a time (e.g. 2026-11-20T08:00+07:00)") from None
    return t if t.tzinfo else t.astimezone()


def cmd_restore_offline(args: argparse.Namespace, console: Console) -> int:
    from drc.secrets import restore

    site = load_site(args.site)
    try:
        doc = restore.load_escrow(Path(args.escrow).expanduser(), esc.read_passphrase(args.passphrase_file, confirm=False))
        host = args.host or site.hosts_in(site.backup.repository_site)[0]
        if host not in site.hosts:
            raise esc.EscrowError(f"--host {host}: not a host of the site file (hosts: {', '.join(site.hosts)})")
        res = restore.restore_offline(site, doc, host, args.copy, args.target,
                                      None if args.sets is None else [s for s in args.sets.split(",") if s], args.seed,
                                      _time(args.before))
    except esc.EscrowError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        return 2
    if args.json:
        console.file.write(restore.as_json(res) + "\n")
    else:
        for line in restore.summary(res):
            console.print(line, highlight=False, markup=False)
        console.print("result: " + ("[green]restored and proven[/green]" if res.get("ok") else "[bold red]FAILED[/bold red]"))
    return 0 if res.get("ok") else 1


def cmd_rotate(args: argparse.Namespace, console: Console) -> int:
    from drc.secrets import rotate

    return rotate.cmd_rotate(args, console)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("secrets", help="the site's secrets: escrow, restore with only the escrow, rotation (BK-8)")
    sub = p.add_subparsers(dest="secrets_cmd", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("site", nargs="?", help="site YAML file (default: the lab's)")
        sp.add_argument("--json", action="store_true", help="print JSON")

    e = sub.add_parser("escrow", help="write the encrypted escrow (for the offline media) and the recovery sheet (for the safe)",
                       description="Exit 2 when a secret is missing on this workstation or the passphrase is refused.")
    e.add_argument("--out", required=True, help="directory for the two files (created 0700; files 0600, never replaced)")
    e.add_argument("--copy-to-medium", action="store_true", help="also put the encrypted file on the attached offline medium")
    _passphrase_option(e)
    common(e)
    e.set_defaults(func=cmd_escrow)

    r = sub.add_parser("restore-offline", help="restore the database and files from an offline copy with only the escrow (EM-3.7)",
                       description="Exit 1 when the restore or its proof failed, 2 when refused before touching a host.")
    r.add_argument("--escrow", required=True, help="the encrypted escrow file (siaga-escrow-<site>-*.txt.gpg)")
    r.add_argument("--host", help="host where the medium is attached (default: the repository host)")
    r.add_argument("--copy", help="copy name on the medium (default: the last clean copy: the newest verified one)")
    r.add_argument("--before", help="EM-3.7: the last clean copy made before this time (the infection), ISO 8601")
    r.add_argument("--target", help="new or empty directory on that host (default: /var/tmp/siaga-offline-restore/<time>)")
    r.add_argument("--sets", help="restic sets to restore, comma-separated (default: every set in the escrow; '' for none)")
    r.add_argument("--seed", type=int, help="seed of the file sample compared with production")
    _passphrase_option(r)
    common(r)
    r.set_defaults(func=cmd_restore_offline)

    from drc.secrets import rotate

    rotate.register(sub, common)
