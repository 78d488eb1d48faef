"""`siaga deploy SITE [--dry] [--diff] [--only remote-access|data-tier|security|monitoring] [--limit HOST]`: converge a
site's hosts with siaga's pyinfra deploys, from a source checkout or an installed siaga alike.

Plain pyinfra underneath (drc.hosts.run_deploy: pyinfra's API in a child process); the inventory is
built from the site file, which is validated first, so a bad file is refused before any host is
contacted. pyinfra's log (per host and operation) is shown as it runs, then a summary per host.
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from drc.hosts.deploy import DEPLOYS, DeployResult, run_deploy
from drc.site import SITE_ROLES, load_site

APPLIED_COLUMNS = ("changed", "no change", "error", "error (ignored)", "not run")
DRY_COLUMNS = ("will change", "will change if", "no change")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deploy", help="converge the site's hosts with siaga's deploys (pyinfra); --dry to preview",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("site", nargs="?", help="site file (default: the lab's)")
    p.add_argument("--dry", action="store_true", help="change nothing: show what would change, per host")
    p.add_argument("--diff", action="store_true", help="show the differences in files that change")
    p.add_argument("--only", choices=[k for k in DEPLOYS if k != "site"],
                   help="one part of the site deploy (default: all of it: remote access, the data tier, then the security services)")
    p.add_argument("--limit", action="append", default=[], metavar="HOST",
                   help="only this host or group (primary, drc); repeatable")
    p.add_argument("--timeout", type=float, default=4 * 3600, help="stop the deploy after this many seconds (default 4 h)")
    p.set_defaults(func=cmd_deploy)


def cmd_deploy(args: argparse.Namespace, console: Console) -> int:
    site = load_site(args.site)  # a bad file stops here (exit 2), before any host is contacted
    unknown = [h for h in args.limit if h not in site.hosts and h not in SITE_ROLES]
    if unknown:
        console.print(f"[red]error:[/red] --limit {escape(', '.join(unknown))}: not a host or group of {escape(args.site)} "
                      f"(hosts: {', '.join(site.hosts)}; groups: {', '.join(SITE_ROLES)})", highlight=False)
        return 2
    extra = [*(["--dry"] if args.dry else []), *(["--diff"] if args.diff else []),
             *(a for h in args.limit for a in ("--limit", h))]
    deploy = args.only or "site"
    console.rule(escape(f"{'preview of ' if args.dry else ''}deploy '{deploy}' on {args.site}"))
    result = run_deploy(args.site, deploy, *extra, timeout=args.timeout,
                        echo=lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True))
    print_summary(result, console)
    return 0 if result.ok else 1


def print_summary(result: DeployResult, console: Console) -> None:
    columns = DRY_COLUMNS if result.dry else APPLIED_COLUMNS
    table = Table(title="operations per host" + (" (preview: nothing was changed)" if result.dry else ""))
    table.add_column("host")
    table.add_column("host state")
    for c in columns:
        table.add_column(c, justify="right")
    counts = result.counts()
    for host, host_state in result.hosts.items():
        n = counts.get(host, {})
        table.add_row(host, host_state if host_state == "ok" else f"[red]{host_state}[/red]",
                      *(str(n.get(c, 0)) for c in columns))
    console.print(table)
    verb = "would change" if result.dry else "changed"
    by_op: dict[str, list[str]] = {}
    for r in result.changes:
        by_op.setdefault(r.op, []).append(r.host)
    for op, hosts in by_op.items():
        console.print(f"  {verb}: {op} ({', '.join(hosts)})", markup=False, highlight=False, soft_wrap=True)
    for r in result.errors:
        console.print(f"  [red]error[/red]: {escape(r.host)}: {escape(r.op)}"
                      + (f"\n    {escape(r.stderr.splitlines()[-1])}" if r.stderr else ""), highlight=False)
    if result.ok:
        console.print(f"[green]ok[/green]: {len(result.changes)} operation(s) {verb} on "
                      f"{len(result.hosts)} host(s) in {result.seconds:.1f} s")
    else:
        console.print(f"[red]failed[/red] (exit {result.returncode})" + (f": {escape(result.error)}" if result.error else ""),
                      highlight=False)
