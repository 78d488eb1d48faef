"""Which host takes the backups and which holds the repository, as the site file says (pure)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from drc.site.data_tier import DataTier


def backup_host(tier: DataTier) -> str:
    """The host that takes every backup: the database source (it holds the live data)."""
    return tier.db_source_hosts[0]


def repository_host(tier: DataTier) -> str:
    return tier.site.hosts_in(tier.site.backup.repository_site)[0]
