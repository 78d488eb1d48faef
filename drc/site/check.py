"""`siaga check`: validate a site file and print what a deploy would do per host, touching no host."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from drc.site import Site, load_site
from roles.firewall.rules import InboundRule, inbound_rules

# The roles `deploys/site.py` applies to every host, in order.
ROLES = ("base", "ssh_hardening", "firewall", "postgresql", "spse_app", "replication", "modsecurity", "clamav",
         "file_integrity")


def _roles_of(site: Site, host: str) -> str:
    """The roles, with what the data tier will make of this host (as the site file says)."""
    source = host in site.hosts_in(site.replication.source_site)
    notes = {
        "postgresql": "database source" if source else "hot standby",
        "spse_app": "running" if site.site_of[host] == site.active_site else "installed, stopped",
        "replication": "sends WAL" if source else f"streams from {site.replication.source_site}",
        # SOP IN-2: deploys/security.py.
        "modsecurity": f"{site.modsecurity.engine}, paranoia {site.modsecurity.paranoia_level}" if site.modsecurity.enabled else "off",
        "clamav": ("off" if not site.clamav.enabled else
                   ("scans uploads" if site.site_of[host] == site.active_site else "clamd ready") + f", {site.clamav.signatures}"),
        "file_integrity": f"daily {site.file_integrity.check_time}" if site.file_integrity.enabled else "off",
    }
    return "\n".join(f"{r} ({notes[r]})" if r in notes else r for r in ROLES)


def _sources(rule: InboundRule) -> str:
    if rule.anywhere:
        return "anywhere"
    return "\n".join(rule.sources) or "nobody"


def _summary(site: Site, site_path: str) -> Table:
    t = Table(title=f"Site '{site.site}' ({site_path})", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    t.add_row("active site", site.active_site)
    t.add_row("platform", _platform(site))
    t.add_row("admin workstations", "\n".join(map(str, site.admin_workstations)))
    t.add_row("ssh allowlist (SOP RA-2)", "\n".join(f"{e.network} ({e.label})" if e.label else str(e.network) for e in site.ssh_allowlist))
    c = site.connection
    t.add_row("connection", f"{c.user}@<host>:{c.port} key {c.key_file}")
    t.add_row("admins (SOP RA-3)", "\n".join(f"{a.name} ({a.full_name})" if a.full_name else a.name for a in site.admins))
    if site.base.removed_admins:
        t.add_row("admins to lock", ", ".join(site.base.removed_admins))
    t.add_row("firewall rollback", f"{site.firewall.rollback_seconds} s")
    t.add_row("security updates (SOP IN-2)", _updates(site))
    return t


def _platform(site: Site) -> str:
    from roles.backup.versions import uses_block_incremental

    apt = site.backup.pgbackrest_apt
    pgbr = f"pgBackRest from {apt.url} {apt.suite}" if apt else f"pgBackRest {site.os.pgbackrest}"
    incr = "block incremental" if uses_block_incremental(site) else "file-level incrementals"
    return f"{site.platform}: {site.os.label}, PostgreSQL {site.postgresql.version}, {pgbr} ({incr})"


def _updates(site: Site) -> str:
    u = site.base.security_updates
    if not u.enabled:
        return "off (unattended-upgrades installs nothing)"
    r = u.reboot
    reboots = (", ".join(f"{role} {r.windows[role]}" for role in site.sites) + f" ({r.window_minutes} min each)"
               if r.enabled else "by hand")
    times = ", ".join(f"{role} {u.upgrade_times[role]}" for role in site.sites)
    return f"daily by unattended-upgrades from {len(u.origins)} origin(s)\ndaily at {times}\nreboots when needed: {reboots}"


def _hosts(site: Site) -> Table:
    t = Table(title="Plan per host", title_justify="left")
    for col in ("host", "site", "address", "roles", "admins", "timezone"):
        t.add_column(col)
    admins = "\n".join(a.name for a in site.admins)
    for name, role in site.site_of.items():
        label = site.sites[role].label
        where = role + (" (active)" if role == site.active_site else "") + (f"\n{label}" if label else "")
        t.add_row(name, where, str(site.hosts[name].address), _roles_of(site, name), admins, site.base.timezone)
    return t


def _inbound(site: Site, host: str) -> Table:
    t = Table(
        title=f"{host}: inbound, everything else dropped; rollback after {site.firewall.rollback_seconds} s",
        title_justify="left",
    )
    for col in ("port", "from", "why"):
        t.add_column(col)
    for rule in inbound_rules(site, host):
        t.add_row(f"{rule.port}/{rule.proto}", _sources(rule), rule.comment)
    return t


def run_check(site_path: str, console: Console) -> int:
    """Print the plan; a bad site file raises SiteError (the CLI prints it and exits 2)."""
    site = load_site(site_path)
    console.print(_summary(site, site_path))
    console.print(_hosts(site))
    for host in site.site_of:
        console.print(_inbound(site, host))
    console.print(f"[green]{site_path}: valid.[/green] Nothing was contacted.")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    check = sub.add_parser("check", help="validate a site file and print the plan per host, touching nothing")
    check.add_argument("site", nargs="?", help="site YAML file (default: the lab's)")
    check.set_defaults(func=lambda args, console: run_check(args.site, console))
