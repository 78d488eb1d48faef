"""ssh_hardening role: a hardened sshd (controls after devsec.hardening ssh_hardening).

SOP RA-3 (no direct root login, own accounts), RA-4 (no tunnels or forwarding), RA-5 (logins
traceable to a key), IN-2 (access control).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pyinfra.api import deploy

from roles.managed_files import MANAGED_HEADER, config_file
from roles.packages import ensure_installed
from roles.templating import render
from roles.backup.keys import sshd_restrictions as backup_restrictions
from roles.uploads_sync.topology import sshd_restrictions

from . import operations as sshd
from .defaults import SshHardeningSettings

if TYPE_CHECKING:  # drc.site imports the roles' defaults
    from drc.site import Site

ROLE_DIR = Path(__file__).parent
BANNER_FILE = "/etc/issue.net"
HOST_KEY_DIR = "/etc/ssh"


def allow_groups(site: Site) -> list[str]:
    """Groups sshd lets in: the admins' group first, then the extra ones (SOP RA-3), then the
    uploads sync group while the sync is on (its members get rrsync only, see below)."""
    groups = [site.base.admin_group]
    groups += [g for g in site.ssh_hardening.extra_allow_groups if g not in groups]
    if site.uploads_sync.enabled and site.uploads_sync.group not in groups:
        groups.append(site.uploads_sync.group)
    # Backups (roles/backup): the repository account, and postgres on the database host for
    # pgBackRest's remote; their keys are read only from a root-owned file (roles/backup/keys.py),
    # each with a forced command and a from= address.
    if site.backup.enabled:
        groups += [g for g in (site.backup.repository_user, "postgres") if g not in groups]
    return groups


def sshd_config_context(site: Site, host_key_dir: str = HOST_KEY_DIR) -> dict:
    """What sshd_config.j2 is rendered with (the Ansible peer in bench/peers renders it with this too)."""
    return {
        "header": MANAGED_HEADER.format(role="roles/ssh_hardening"),
        "s": site.ssh_hardening,
        "allow_groups": allow_groups(site),
        "sync": sshd_restrictions(site),
        "backup": backup_restrictions(site),
        "banner_file": BANNER_FILE,
        "host_key_dir": host_key_dir,
        "penalty_exempt": penalty_exempt(site),
        "ports": listen_ports(site),
    }


def listen_ports(site: Site) -> list[int]:
    """`ssh_hardening.port`, and `connection.port` while the two differ: sshd moves to a new port in
    two deploys (the firewall opens both meanwhile), so the port siaga connects on never goes dark
    under it. The first deploy's confirmation session still uses `connection.port` (SOP RA-2)."""
    return list(dict.fromkeys([site.ssh_hardening.port, site.connection.port]))


def never_penalised(site: Site) -> list[str]:
    """The site's own hosts and the admin workstations: sshd's per-source penalties never apply to
    them, and fail2ban (roles/fail2ban) never bans them. Never lock the operator out (SOP RA-2)."""
    nets = [f"{h.address}/{32 if h.address.version == 4 else 128}" for h in site.hosts.values()]
    return sorted({*nets, *(str(n) for n in site.admin_workstations)})


def penalty_exempt(site: Site) -> list[str]:
    """Where sshd's per-source penalties (OpenSSH >= 9.8) must not apply: `never_penalised`. A peer's
    failed login (a stale lsyncd on the old side after a switch-over, a key rotation's proof that the
    old key is refused) would otherwise shut that peer out for up to ten minutes, and with it the
    backups, the uploads sync and the next switch-over's final sync.
    Empty on an older OpenSSH, which does not know the option (sshd -t would refuse it)."""
    from drc.site.platform import PER_SOURCE_PENALTIES_FROM, version_tuple

    if version_tuple(site.os.openssh) < PER_SOURCE_PENALTIES_FROM:
        return []
    return never_penalised(site)


def render_sshd_config(site: Site, host_key_dir: str = HOST_KEY_DIR) -> str:
    return render(ROLE_DIR, "sshd_config.j2", yes_no=lambda flag: "yes" if flag else "no",
                  **sshd_config_context(site, host_key_dir))


def render_banner(settings: SshHardeningSettings) -> str:
    return settings.banner if settings.banner.endswith("\n") else settings.banner + "\n"


@deploy("siaga ssh_hardening")
def ssh_hardening(site: Site) -> None:
    s = site.ssh_hardening
    ensure_installed(["openssh-server"], "the SSH server")

    # Only ed25519 and RSA host keys are offered; the files must exist before sshd -t accepts the config.
    sshd.host_key(name="ed25519 host key exists", key_type="ed25519")
    sshd.host_key(name="RSA host key exists", key_type="rsa", bits=4096)
    sshd.dh_moduli(name=f"DH moduli below {s.dh_moduli_minimum_bits} bits removed", minimum_bits=s.dh_moduli_minimum_bits)

    if s.banner:
        config_file(name=f"Login banner {BANNER_FILE}", dest=BANNER_FILE, content=render_banner(s))

    # SOP RA-3, RA-4: tested with sshd -t before it replaces the live config, then confirmed by a new
    # admin SSH session or put back by the host itself (the firewall's window, roles/admin_confirm.py).
    sshd.sshd_config(name=f"sshd_config tested and installed, sshd reloaded (rollback after {site.firewall.rollback_seconds}s unless confirmed)",
                     content=render_sshd_config(site), rollback_seconds=site.firewall.rollback_seconds)

