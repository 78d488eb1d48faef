"""base role: identity, time and the people who administer the host.

Hostname, timezone, time sync, the admin group, one account per admin with their keys, a sudoers
drop-in for the group, and former admins locked out. SOP RA-3 (own accounts, no direct root).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.server import EtcHosts
from pyinfra.operations import server, systemd

from roles import host_programs
from roles.managed_files import MANAGED_HEADER, config_file
from roles.packages import ensure_installed
from roles.templating import render

from . import operations as base_ops
from .defaults import BaseSettings
from .facts import ContainerType
from .updates import security_updates

if TYPE_CHECKING:  # drc.site imports the roles' defaults
    from drc.site import Site

ROLE_DIR = Path(__file__).parent
HEADER = MANAGED_HEADER.format(role="roles/base")
SUDOERS_NAME = "siaga-admins"
TIMESYNCD_DROPIN = "/etc/systemd/timesyncd.conf.d/siaga.conf"


def render_sudoers(settings: BaseSettings) -> str:
    return render(ROLE_DIR, "sudoers.j2", header=HEADER, b=settings)


def render_timesyncd(settings: BaseSettings) -> str:
    return render(ROLE_DIR, "timesyncd.conf.j2", header=HEADER, b=settings)


def connection_key_problem(site: Site) -> str | None:
    """Why the key siaga connects with is not among its user's ssh_keys, or None if it is.

    Admin keys are made exact (keys not in the site file are removed), so an unlisted connection
    key would lock siaga out of the host after this deploy.
    """
    key_file = Path(site.connection.key_file).expanduser()
    public = _public_key(key_file)
    if public is None:
        return f"cannot read the public part of connection.key_file {key_file} (expected {key_file}.pub or a readable private key)"
    admin = next(a for a in site.admins if a.name == site.connection.user)
    listed = {" ".join(k.split()[:2]) for k in admin.ssh_keys}
    if public not in listed:
        return (
            f"the key in {key_file} is not one of admins[{site.connection.user}].ssh_keys; the deploy would "
            f"remove it from the host and lock siaga out. Fix: add its public key to that admin's ssh_keys"
        )
    return None


def _public_key(key_file: Path) -> str | None:
    pub = key_file.with_name(key_file.name + ".pub")
    try:
        return " ".join(pub.read_text().split()[:2])
    except OSError:
        pass
    try:
        import paramiko

        key = paramiko.PKey.from_path(key_file)
        return f"{key.get_name()} {key.get_base64()}"
    except Exception:
        return None


@deploy("siaga base")
def base(site: Site, host_name: str) -> None:
    b = site.base
    problem = connection_key_problem(site)
    if problem:
        raise DeployError(f"base: {problem}")

    ensure_installed(["sudo", "tzdata", "systemd-timesyncd"], "base")

    # Identity: the host's name in the site file, resolvable locally (sudo looks it up).
    etc_hosts = host.get_fact(EtcHosts)
    for ip, names in (("127.0.0.1", ["localhost"]), ("::1", ["localhost", "ip6-localhost", "ip6-loopback"])):
        if ip not in etc_hosts:  # only added where missing (e.g. a bare debootstrap image)
            server.etc_hosts(name=f"/etc/hosts has {ip} localhost", ip=ip, hostnames=names)
    server.etc_hosts(name="/etc/hosts resolves the hostname", ip="127.0.1.1", hostnames=[host_name])
    server.hostname(name="Hostname as in the site file", hostname=host_name)

    base_ops.timezone(name=f"Timezone {b.timezone}", timezone=b.timezone)

    # Time sync. In containers timesyncd is skipped by its own condition: configured and enabled
    # anyway, but not expected to run.
    in_container = host.get_fact(ContainerType) != "none"
    config_file(
        name=f"timesyncd uses {', '.join(b.ntp_servers)}",
        dest=TIMESYNCD_DROPIN,
        content=render_timesyncd(b),
        restart="systemd-timesyncd.service",
    )
    systemd.service(
        name="systemd-timesyncd enabled",
        service="systemd-timesyncd.service",
        enabled=True,
        running=None if in_container else True,
    )

    # SOP RA-3: people log in as themselves, in the admin group, and escalate with sudo.
    server.group(name=f"Admin group {b.admin_group}", group=b.admin_group)
    for admin in site.admins:
        base_ops.admin_account(
            name=f"Admin {admin.name}",
            user=admin.name,
            comment=admin.full_name or None,
            shell="/bin/bash",
            groups=[b.admin_group],
            public_keys=[k.strip() for k in admin.ssh_keys],
        )
        # An admin listed again after being in removed_admins gets their login back.
        base_ops.unexpired_account(name=f"Admin {admin.name} not expired", user=admin.name)
    base_ops.sudoers_file(
        name=f"sudo for %{b.admin_group}, checked with visudo",
        filename=SUDOERS_NAME,
        content=render_sudoers(b),
    )

    # siaga's programs (/usr/local/lib/siaga, made here: base runs first), e.g. the probe of `siaga status`.
    host_programs.lib_directory()
    host_programs.ship("base")

    # Security updates (unattended-upgrades) and reboots in the site's window: roles/base/updates.py.
    security_updates(site, host_name)

    # Former admins: locked, expired and out of the group; never deleted (audit trail).
    for user in b.removed_admins:
        base_ops.locked_account(name=f"Former admin {user} locked", user=user, group=b.admin_group)
