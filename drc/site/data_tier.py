"""The data tier's settings (site keys `postgresql`, `spse_app`, `replication`, `uploads_sync`)
and which hosts are database source and standbys, as the site file says."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from drc.site import Site, load_site
from roles.postgresql.defaults import PostgresqlSettings
from roles.replication.defaults import ReplicationSettings
from roles.spse_app.defaults import SpseAppSettings
from roles.uploads_sync.defaults import UploadsSyncSettings

MODELS = {
    "postgresql": PostgresqlSettings,
    "spse_app": SpseAppSettings,
    "replication": ReplicationSettings,
    "uploads_sync": UploadsSyncSettings,
}


@dataclass(frozen=True)
class DataTier:
    site: Site
    postgresql: PostgresqlSettings
    spse_app: SpseAppSettings
    replication: ReplicationSettings
    uploads_sync: UploadsSyncSettings

    def hosts_of(self, site_role: str) -> list[str]:
        return self.site.hosts_in(site_role)

    @property
    def db_source_hosts(self) -> list[str]:
        """Hosts that are the database primary by the site file (runbooks change it)."""
        return self.site.hosts_in(self.replication.source_site)

    @property
    def db_standby_hosts(self) -> list[str]:
        """Hosts that stream from the source: every other host but a lost site's (a slot kept for
        a lost host would hold WAL until the disk fills)."""
        return [h for h in self.site.hosts if h not in self.db_source_hosts and h not in self.site.lost_hosts]


def data_tier_of(site: Site) -> DataTier:
    return DataTier(site, *(getattr(site, key) for key in MODELS))


def load_data_tier(site_file: str | Path) -> DataTier:
    return data_tier_of(load_site(site_file))
