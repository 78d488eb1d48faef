"""`siaga fence status` and `siaga fence release HOST`: the fence that keeps a superseded primary
from accepting writes (roles/fencing, drc/hostside/fence.py). SOP EM-3.

A release is an operator's decision and is recorded (who, when, why). It is refused while the other
host answers as a primary of the same database (releasing would make two writable copies: that
host rejoins by `siaga failback`). When the other host does not answer, the operator must know it
was not promoted (e.g. after a plain power loss at the main site with the WAN down): the release
then also grants the authority, so PostgreSQL starts read-write without its peer.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import socket
import sys

from rich.console import Console
from rich.table import Table

from drc.hosts import remote
from drc.records import store
from drc.runbooks import hosts as H
from drc.site import Site, load_site

RELEASES = "fence-releases.jsonl"


def fence_call(site: Site, host: str, args: dict, timeout: float = 120) -> dict:
    return H.program_json(remote.run_program(site, host, "fence", args, timeout=timeout, connect_timeout=5))


def peer_states(site: Site, host: str) -> dict[str, dict]:
    """PostgreSQL's state on every other host, read now (never the site file)."""
    return {h: H.pg(site, h, "state", timeout=20) for h in site.hosts if h != host}


def cmd_status(args: argparse.Namespace, console: Console) -> int:
    site = load_site(args.site)
    rows = {h: fence_call(site, h, {"mode": "state"}, timeout=30) for h in site.hosts}
    if args.json:
        console.file.write(json.dumps(rows, indent=2, default=str) + "\n")
        return 0
    t = Table(title=f"Fence — site '{site.site}'", title_justify="left")
    for col in ("host", "fenced", "since / why", "authority", "PostgreSQL", "ports closed", "held"):
        t.add_column(col)
    for h, st in rows.items():
        if not st.get("reachable", True) or not st.get("ok"):
            t.add_row(h, "?", st.get("error") or "", "", "", "", "")
            continue
        m = st.get("marker") or {}
        t.add_row(h, "[bold red]FENCED[/bold red]" if st.get("fenced") else "no", f"{m.get('since', '')} {m.get('why', '')}".strip(),
                  "yes" if st.get("authority") else "no", st.get("postgresql") or "", "yes" if st.get("firewall") else "no",
                  (st.get("held") or {}).get("why", ""))
    console.print(t)
    return 0


def cmd_release(args: argparse.Namespace, console: Console) -> int:
    site = load_site(args.site)
    if args.host not in site.hosts:
        console.print(f"[red]error:[/red] {args.host}: not a host of {args.site} ({', '.join(site.hosts)})", highlight=False)
        return 2
    peers = peer_states(site, args.host)
    primaries = [h for h, st in peers.items() if st.get("running") and st.get("in_recovery") is False]
    if primaries:
        console.print(f"[red]refused:[/red] {', '.join(primaries)} answers as the primary: released, {args.host} would be a "
                      f"second writable copy. It rejoins as a standby: siaga failback", highlight=False)
        return 2
    grant = not any(st.get("running") for st in peers.values())
    console.print(f"release {args.host}: marker, pgBackRest stop and closed ports removed"
                  + ("; no other host answers, so it also gets the authority to start read-write alone" if grant else ""),
                  highlight=False)
    if not args.yes:
        if not sys.stdin.isatty():
            console.print("[red]not confirmed[/red]: pass --yes, or type the host's name on a terminal", highlight=False)
            return 2
        if input(f"Type {args.host} to release it: ").strip() != args.host:
            console.print("not confirmed: nothing changed", highlight=False)
            return 2
    out = fence_call(site, args.host, {"mode": "release"})
    if out.get("ok") and grant:
        out = {**out, **fence_call(site, args.host, {"mode": "authority", "action": "grant", "by": args.decided_by,
                                                     "why": f"fence release: {args.reason}"})}
    rec = {"id": f"release-{args.host}-{dt.datetime.now().strftime('%Y%m%dT%H%M%S')}", "host": args.host,
           "at": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "decided_by": args.decided_by,
           "reason": args.reason, "operator": f"{getpass.getuser()}@{socket.gethostname()}", "authority": grant,
           "result": "success" if out.get("ok") else "failure", "did": out.get("did"), "error": out.get("error")}
    store.append_new(store.records_dir(site) / RELEASES, [rec])
    if args.json:
        console.file.write(json.dumps(rec) + "\n")
    if not out.get("ok"):
        console.print(f"[red]release failed:[/red] {out.get('error')}", highlight=False)
        return 1
    console.print(f"[green]{args.host} released[/green]: {'; '.join(out.get('did') or []) or 'nothing was fenced'}. "
                  "Nothing was started: start PostgreSQL and the app when you are ready", highlight=False)
    return 0


def register(sub) -> None:
    fe = sub.add_parser("fence", help="the fence that keeps a superseded primary from accepting writes (EM-3)")
    fsub = fe.add_subparsers(dest="fence_cmd", required=True)
    st = fsub.add_parser("status", help="per host: fenced or not, why, authority, PostgreSQL, closed ports")
    st.add_argument("--json", action="store_true")
    st.add_argument("site", nargs="?", help="site file (default: the lab's)")
    st.set_defaults(func=cmd_status)
    rl = fsub.add_parser("release", help="release a fenced host (recorded); refused while another host is the primary",
                         description="siaga fence release HOST [SITE] --reason ... --decided-by ...: the site file right after "
                                     "the host's name.")
    rl.add_argument("host")
    rl.add_argument("--reason", required=True, help="why (recorded)")
    rl.add_argument("--decided-by", required=True, help="who decided (recorded)")
    rl.add_argument("--yes", action="store_true", help="confirm without typing the host's name")
    rl.add_argument("--json", action="store_true")
    rl.add_argument("site", nargs="?", help="site file (default: the lab's)")
    rl.set_defaults(func=cmd_release)
