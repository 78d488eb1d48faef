"""The encrypted escrow put on the attached offline medium, beside the copies (BK-9): a copy
nobody can read without the passphrase the head of the LPSE keeps."""

from __future__ import annotations

from pathlib import Path

from drc.secrets.host import call
from drc.site import Site


def copy_to_medium(site: Site, path: Path) -> dict:
    host = site.hosts_in(site.backup.repository_site)[0]
    return call(site, host, {"mode": "store-escrow", "mount_point": site.backup.offline.mount_point},
                {"name": path.name, "data": path.read_text()}, timeout=120)
