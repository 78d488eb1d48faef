"""Where the backup role keeps things: its templates, its files on the hosts, its secrets' names
on the admin workstation, and archive.conf as rendered (the pre-change backup compares it). Said
once for the role's deploy, its pre-change check and secret custody (roles/secret_custody.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from drc.hostside import LIB
from roles.managed_files import MANAGED_HEADER
from roles.templating import render

if TYPE_CHECKING:
    from .defaults import BackupSettings

ROLE_DIR = Path(__file__).parent
HEADER = MANAGED_HEADER.format(role="roles/backup")
RUNNER = "/usr/local/sbin/siaga-backup"
CONFIG_JSON = "/etc/siaga/backup.json"
ETC = "/etc/siaga/backup"
KNOWN_HOSTS = f"{ETC}/known_hosts"
REPO_CONFIG_PATH = "/etc/siaga/pgbackrest-repo"
PG_SSH_DIR = "/var/lib/postgresql/.ssh"
STATE_DIR = "/var/lib/siaga/backup"
OFFLINE_COPY = f"{LIB}/siaga-offline-copy"
# The copies made on every medium (which one is due in the rotation), kept by siaga-offline-copy.
OFFLINE_HISTORY = f"{STATE_DIR}/offline-media.json"
# Files of earlier versions that held the offline repository's own secrets (repo2 on the database host).
RETIRED_SECRETS = (f"{ETC}/pgbackrest-repo2.conf", f"{ETC}/restic-repo2.password", "/etc/pgbackrest/conf.d/siaga-offline.conf")
# pgBackRest from an apt repository (backup.pgbackrest_apt): its key, its source, its pin.
APT_KEYRING = "/etc/apt/keyrings/siaga-pgbackrest"
APT_SOURCE = "/etc/apt/sources.list.d/siaga-pgbackrest.list"
APT_PIN = "/etc/apt/preferences.d/siaga-pgbackrest"
# Secrets on the admin workstation (names inside the secrets directory).
SECRETS = {
    "repo1": "pgbackrest-repo1.passphrase",
    "restic": "restic-repo1.password",
    "pgbackrest_key": "backup-pgbackrest_ed25519",
    "restic_key": "backup-restic_ed25519",
    "repo_key": "backup-repo-to-db_ed25519",
}


def render_archive_conf(b: BackupSettings) -> str:
    return render(ROLE_DIR, "archive.conf.j2", header=HEADER, b=b)
