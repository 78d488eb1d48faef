"""The data tier's settings, read from the site file.

Until drc/site.py's Site model carries the keys `postgresql`, `spse_app`, `replication` and
`uploads_sync` itself, they are taken out of the file here, validated by their role's model and
the rest is validated by Site as usual. Once Site has them, they are simply read from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from drc.site import Site, SiteError, load_site, parse_site
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
        return [h for h in self.site.hosts if h not in self.db_source_hosts]


def load_data_tier(site_file: str | Path) -> DataTier:
    path = Path(site_file)
    if all(key in Site.model_fields for key in MODELS):
        site = load_site(path)
        return DataTier(site, *(getattr(site, key) for key in MODELS))
    site = load_site_without(path, MODELS)
    raw = yaml.safe_load(path.read_text()) or {}
    values = {}
    for key, model in MODELS.items():
        try:
            values[key] = getattr(site, key, None) or model.model_validate(raw.get(key) or {})
        except Exception as exc:  # pydantic.ValidationError: name the file and the key
            raise SiteError(f"{path}: key '{key}': {exc}") from None
    return DataTier(site, **values)


def load_site_without(path: Path, keys) -> Site:
    """The Site of `path`, ignoring the data-tier keys Site does not know yet."""
    text = path.read_text()
    data = yaml.safe_load(text)
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k in Site.model_fields or k not in keys}
    return parse_site(data, path, text)
