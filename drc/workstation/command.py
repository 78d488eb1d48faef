"""`siaga workstation`: the workstation's copy on the DRC (mirror) and taking over from it (restore).
Issue 11 point 4: the admin PC sits in the LPSE office and may be lost with the main site."""

from __future__ import annotations

import argparse
import getpass
import json
from pathlib import Path

from rich.console import Console

from drc.records.mirror import MirrorError
from drc.site import load_site


def _out(console: Console, data: dict) -> None:
    console.file.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def cmd_mirror(args: argparse.Namespace, console: Console) -> int:
    from drc.workstation import mirror

    site = load_site(args.site)
    try:
        if args.check:
            res = mirror.check(site, Path(args.site))
        else:
            res = mirror.push(site, Path(args.site), force=args.take_over)
    except MirrorError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        return 2
    if args.json:
        _out(console, res)
        return 0 if res["ok"] else 1
    if args.check:
        for host, r in res["hosts"].items():
            if r["state"] != "present":
                console.print(f"{host}: [red]{r['state']}[/red] {r.get('error') or ''}", highlight=False)
                continue
            what = "[green]current[/green]" if r["current"] else "[yellow]behind[/yellow]"
            if not r["ours"]:
                what = "[red]another workstation's copy[/red]"
            console.print(f"{host}: {what}: pushed {r['pushed_at']} by {r['pushed_by']} (#{r['seq']}, {r['files']} files); "
                          f"{len(r['missing'])} files missing there, {len(r['differ'])} differ, {len(r['extra'])} not here",
                          highlight=False)
        if res.get("behind_since"):
            console.print(f"the copy has been behind since {res['behind_since']} (last full push: {res.get('last_push')})",
                          highlight=False)
    else:
        for host, r in res["hosts"].items():
            console.print(f"{host}: " + ("[green]updated[/green]" if r.get("ok") else f"[red]not updated:[/red] "
                                         f"{r.get('error') or r.get('conflict')}"), highlight=False)
        console.print(f"{res['files']} files, {res['bytes']} bytes, copy #{res['seq']}", highlight=False)
    return 0 if res["ok"] else 1


def cmd_restore(args: argparse.Namespace, console: Console) -> int:
    from drc.secrets import escrow as esc
    from drc.workstation import restore

    try:
        doc = esc.read_escrow(Path(args.escrow).expanduser(), esc.read_passphrase(args.passphrase_file, confirm=False))
        res = restore.restore(doc, args.from_host, Path(args.site_dir), args.user or getpass.getuser(),
                              Path(args.key), args.port, Path(args.known_hosts) if args.known_hosts else None, args.host_key,
                              deploy_check=not args.no_deploy_check)
    except (esc.EscrowError, restore.RestoreError, MirrorError) as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        return 2
    if args.json:
        _out(console, res)
        return 0 if res["ok"] else 1
    c = res["copy"]
    console.print(f"from {res['from']}: copy #{c['seq']} pushed {c['pushed_at']} by {c['pushed_by']} ({c['files']} files, "
                  f"{res['records']} records files)", highlight=False)
    console.print(f"site file: {res['site_file']}", highlight=False)
    console.print(f"secrets from the escrow: {', '.join(res['secrets_from_escrow'])}", highlight=False)
    if res["tls_key"].get("needed"):
        console.print(f"TLS private key: {'read from ' + res['tls_key']['from'] if res['tls_key'].get('ok') else 'NOT read'}",
                      highlight=False)
    for key, r in res["proof"]["secrets"].items():
        console.print(f"proof {key}: {r['fingerprint']} " + (f"[green]held by {len(r['match'])} host files[/green]" if r["ok"]
                      else f"[red]NOT proven[/red]: differ {r['differ']}, absent {r['absent']}, unread {r['unread']}"),
                      highlight=False)
    d = res["deploy"]
    if d is not None:
        console.print("dry site deploy: " + ("[green]no change planned[/green]" if d["ok"] else f"[red]{d['problem']}[/red]")
                      + f" ({d['operations']} operations, {d['seconds']} s)", highlight=False)
    for line in res["missing"]:
        console.print(f"[yellow]still missing:[/yellow] {line}", highlight=False)
    console.print("result: " + ("[green]this workstation has taken over[/green]" if res["ok"] else "[bold red]NOT proven[/bold red]"))
    return 0 if res["ok"] else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("workstation", help="the workstation's copy on the DRC; a new workstation taking over from it")
    sub = p.add_subparsers(dest="workstation_cmd", required=True)

    mi = sub.add_parser("mirror", help="push the site file and records to the DRC now, or --check how current the copy is",
                        description="siaga pushes after every command that wrote records; this pushes now. "
                                    "Exit 1 when a DRC host's copy is not current (or not updated).")
    mi.add_argument("site", nargs="?", help="site YAML file (default: the lab's)")
    mi.add_argument("--check", action="store_true", help="compare each DRC host's copy with this workstation's files; change nothing")
    mi.add_argument("--take-over", action="store_true", help="replace a copy written by another workstation (this one is now the admins')")
    mi.add_argument("--json", action="store_true", help="print JSON")
    mi.set_defaults(func=cmd_mirror)

    r = sub.add_parser("restore", help="a new workstation from the DRC's copy and the secrets escrow, proven against the hosts",
                       description="Exit 2 when refused before anything is written (wrong passphrase, directory not empty, "
                                   "DRC not reached), 1 when the proof failed.")
    r.add_argument("--from", dest="from_host", required=True, help="address (or name) of the DRC host holding the copy")
    r.add_argument("--escrow", required=True, help="the encrypted escrow file (siaga-escrow-<site>-*.txt.gpg)")
    r.add_argument("--site-dir", required=True, help="new or empty directory for the site file, records, files and secrets")
    r.add_argument("--key", required=True, help="the admin's own SSH private key (never in the copy nor the escrow)")
    r.add_argument("--user", help="the admin's account on the hosts (default: this user)")
    r.add_argument("--port", type=int, default=22)
    r.add_argument("--known-hosts", help="known_hosts file holding the DRC host's key")
    r.add_argument("--host-key", help="the DRC host's key fingerprint (SHA256:...), read off the host, if no known_hosts")
    r.add_argument("--passphrase-file", help="a 0600 file whose first line is the escrow passphrase (also "
                                             "$SIAGA_ESCROW_PASSPHRASE_FILE); default: asked on the terminal, never echoed")
    r.add_argument("--no-deploy-check", action="store_true", help="skip the dry site deploy of the proof")
    r.add_argument("--json", action="store_true", help="print JSON")
    r.set_defaults(func=cmd_restore)
