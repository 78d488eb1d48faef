"""Who may log in over SSH for the backups, and with which keys (pure: no pyinfra). Used by the
backup deploy (the keys files) and by roles/ssh_hardening (the sshd `Match User` blocks). SOP BK-8,
IN-2.

The backup accounts' authorized keys live in a root-owned directory, never in the accounts' homes:
the database host's postgres account belongs to the database (a superuser's `COPY ... TO` writes
files as postgres), and the repository account owns its home (it could rename ~/.ssh and make its
own). sshd reads their keys only from `KEYS_DIR/%u`, so neither account can add a key that logs
in; postgres' key is also forced to pgBackRest's remote by sshd itself (`ForceCommand`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from drc.site import Site

KEYS_DIR = "/etc/ssh/siaga-backup-keys"  # root:root 0755, files root:root 0644
REMOTE_WRAPPER = "/usr/local/sbin/siaga-backup-remote"  # forced command: pgBackRest's remote only
DB_ACCOUNT = "postgres"


def keys_file(user: str) -> str:
    return f"{KEYS_DIR}/{user}"


def sshd_restrictions(site: Site) -> list[dict]:
    """The sshd `Match User` blocks for the backup accounts (rendered by roles/ssh_hardening on every
    host, whichever host holds the repository or the database: a switch-over moves them). Kept
    when backups are off: the accounts then have no keys file at all."""
    b = site.backup
    return [
        # pgBackRest on the repository host runs `pgbackrest ... remote` as postgres on the database host.
        {"user": DB_ACCOUNT, "keys_file": f"{KEYS_DIR}/%u", "force_command": REMOTE_WRAPPER},
        # Two keys with their own forced commands (pgBackRest remote, restic's sftp-server) in a
        # root-owned file; sshd cannot force one command for both.
        {"user": b.repository_user, "keys_file": f"{KEYS_DIR}/%u", "force_command": None},
    ]


def db_account_keys(header: str, repo_host: str, repo_address: str, repo_public_key: str) -> str:
    """The database host's keys file for postgres: the repository host's key, pgBackRest remote only."""
    return (f"# {header}\n# {DB_ACCOUNT}: only {repo_host} ({repo_address}), only pgBackRest's remote "
            f"(roles/backup, SOP BK-8); sshd reads no other keys file for this account.\n"
            f'restrict,from="{repo_address}",command="{REMOTE_WRAPPER}" {repo_public_key}\n')
