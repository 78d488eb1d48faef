"""firewall role: nftables, inbound default deny, in its own table `inet siaga`.

SSH only from the allowlist (SOP RA-2), web only at the active site, PostgreSQL only between the
sites, dropped packets logged (SOP IN-4). Applied with automatic rollback (SOP IN-2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyinfra.api import deploy

from roles.packages import ensure_installed

from .operations import nftables_ruleset
from .ruleset import TABLE, nft_comment, render_ruleset, ruleset_context  # noqa: F401 (tests, bench import them here)

if TYPE_CHECKING:  # drc.site imports the roles' defaults
    from drc.site import Site


@deploy("siaga firewall")
def firewall(site: Site, host_name: str) -> None:
    ensure_installed(["nftables"], "the firewall")
    content, version = render_ruleset(site, host_name)
    # SOP RA-2, IN-2: checked with nft -c, confirmed by a new admin SSH session or rolled back.
    nftables_ruleset(
        name=f"nftables table inet {TABLE} (rollback after {site.firewall.rollback_seconds}s unless confirmed)",
        content=content,
        version=version,
        rollback_seconds=site.firewall.rollback_seconds,
        table=TABLE,
    )
