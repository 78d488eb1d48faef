"""Who sends uploads and who receives them, as the site file says (pure: no pyinfra). Used by the
uploads_sync deploy and by the firewall rules, sshd and `siaga check`. SOP EM-3."""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from drc.site import Site

# Root-owned: the receiving account cannot add keys of its own (sshd reads only this file for it).
KEYS_DIR = "/etc/ssh/siaga-sync-keys"


def receiving_account(site: Site) -> str:
    return site.uploads_sync.account or site.spse_app.user


def source_hosts(site: Site) -> list[str]:
    return site.hosts_in(site.uploads_sync.source_site)


def target_hosts(site: Site) -> list[str]:
    """Receivers: the other site's hosts, none while that site is lost (lost_site)."""
    return [h for h in site.hosts if site.site_of[h] != site.uploads_sync.source_site and h not in site.lost_hosts]


def is_source(site: Site, host_name: str) -> bool:
    return site.uploads_sync.enabled and host_name in source_hosts(site)


def sends(site: Site, host_name: str) -> bool:
    """lsyncd runs here: the source, while a target is in the site (none while the other site is
    lost: the key and config stay, nothing tries a host that is gone)."""
    return is_source(site, host_name) and bool(target_hosts(site))


def is_target(site: Site, host_name: str) -> bool:
    return site.uploads_sync.enabled and host_name in target_hosts(site)


def forced_command(site: Site) -> str:
    """What the sync key may run on a target: rrsync, write-only, inside the uploads root."""
    return f"{site.uploads_sync.rrsync_path} -wo {site.spse_app.uploads_root}"


def sshd_restrictions(site: Site) -> dict:
    """The sshd `Match Group` block for the sync group (rendered by roles/ssh_hardening). Kept even
    when the sync is off: members of the group never get more than rrsync."""
    return {"group": site.uploads_sync.group, "keys_file": f"{KEYS_DIR}/%u", "force_command": forced_command(site)}


def sync_sources(site: Site, host_name: str) -> tuple[str, ...]:
    """CIDRs allowed to SSH into `host_name` for the uploads sync: the source site's hosts, and
    only on a target (the firewall role opens it; the key is still restricted to rrsync)."""
    if not is_target(site, host_name):
        return ()
    return tuple(str(ipaddress.ip_network(site.hosts[h].address)) for h in source_hosts(site))


