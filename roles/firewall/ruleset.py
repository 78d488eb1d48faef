"""The firewall's ruleset file for one host, rendered without pyinfra: the deploy writes it, and a
switch-over runbook loads the very same file on the new active site to open its web ports at once
(the site deploy afterwards finds nothing to change). SOP RA-2, IN-2."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from roles.templating import MANAGED_HEADER, render, sha1_of

from .rules import inbound_rules

if TYPE_CHECKING:  # drc.site imports the roles' defaults
    from drc.site import Site

ROLE_DIR = Path(__file__).parent
TABLE = "siaga"


COMMENT_RE = re.compile(r'^\s*comment "(.*)"\s*$')


def table_comment(lines: list[str]) -> str | None:
    """The comment of a table as `nft list table` prints it: the line right after `table ... {`
    (the firewall role's version tag)."""
    match = COMMENT_RE.match(lines[1]) if len(lines) > 1 else None
    return match.group(1) if match else None


def nft_comment(text: str) -> str:
    """nft comments are quoted strings of at most 128 bytes, without double quotes."""
    return re.sub(r'["\\\n]', "'", text).encode()[:120].decode(errors="ignore")


def ruleset_context(site: Site, host_name: str) -> dict:
    return {
        "header": MANAGED_HEADER.format(role="roles/firewall"),
        "table": TABLE,
        "host_name": host_name,
        "site_role": site.site_of[host_name],
        "active_site": site.active_site,
        "rules": inbound_rules(site, host_name),
        "log_drops": site.firewall.log_drops,
        "log_rate_per_minute": site.firewall.log_rate_per_minute,
        "nft_comment": nft_comment,
        "ssh_refused": ssh_refused_log(site),
    }


def ssh_refused_log(site: Site) -> dict | None:
    """The NFLOG rule for SSH connections the ruleset refuses (roles/logbook reads them), or None."""
    from drc.hostside.logbook_read import PREFIX

    lb = site.logbook
    if not lb.log_refused:
        return None
    ports = sorted({site.ssh_hardening.port, site.connection.port})
    return {"ports": ports, "per_minute": lb.log_refused_per_minute, "group": lb.nflog_group, "prefix": PREFIX}


def render_ruleset(site: Site, host_name: str) -> tuple[str, str]:
    """The ruleset file for one host and its version tag (the table comment that identifies it)."""
    context = ruleset_context(site, host_name)
    unversioned = render(ROLE_DIR, "nftables.conf.j2", version="", **context)
    version = f"siaga-firewall sha1={sha1_of(unversioned)}"
    return render(ROLE_DIR, "nftables.conf.j2", version=version, **context), version
