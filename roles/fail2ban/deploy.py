"""fail2ban role: sources that keep failing to log in to sshd (journal) or to Apache's
authentication (error logs) are banned for a while in fail2ban's own nftables table.

SOP IN-2 (intrusion prevention), IN-4 (intrusion attempts watched and logged), RA-2 (the site's own
hosts and admin workstations are never banned: never lock the operator out).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pyinfra.api import deploy
from pyinfra.facts.systemd import SystemdStatus
from pyinfra import host
from pyinfra.operations import files, systemd

from roles.packages import ensure_installed
from roles.ssh_hardening.deploy import listen_ports, never_penalised
from roles.templating import MANAGED_HEADER, render

from .operations import fail2ban_config

if TYPE_CHECKING:  # drc.site imports the roles' defaults
    from drc.site import Site

ROLE_DIR = Path(__file__).parent
JAIL_FILE = "/etc/fail2ban/jail.d/siaga.local"
SETTINGS_FILE = "/etc/fail2ban/fail2ban.d/siaga.local"
APACHE_LOG_DIR = "/var/log/apache2"
# The SPSE vhost's error log (roles/spse_app) and Apache's own.
APACHE_LOGS = (f"{APACHE_LOG_DIR}/spse-error.log", f"{APACHE_LOG_DIR}/error.log")
MAX_BAN_SECONDS = 7 * 86400


def ignored(site: Site) -> list[str]:
    """Never banned: the site's own hosts and the admin workstations (sshd's penalty exemptions,
    roles/ssh_hardening) plus fail2ban.extra_ignore."""
    return sorted({*never_penalised(site), *(str(n) for n in site.fail2ban.extra_ignore)})


def config_files(site: Site) -> dict[str, str]:
    header = MANAGED_HEADER.format(role="roles/fail2ban")
    context = {"header": header, "s": site.fail2ban, "max_ban_seconds": MAX_BAN_SECONDS}
    return {
        JAIL_FILE: render(ROLE_DIR, "jail.local.j2", ignore=ignored(site), ssh_ports=listen_ports(site),
                          web_ports=site.firewall.web_ports, apache_logs=APACHE_LOGS, **context),
        SETTINGS_FILE: render(ROLE_DIR, "fail2ban.local.j2", **context),
    }


@deploy("siaga fail2ban")
def fail2ban(site: Site) -> None:
    s = site.fail2ban
    # python3-systemd: the sshd jail reads the journal (backend systemd).
    ensure_installed(["fail2ban", "python3-systemd", "nftables"], "fail2ban")
    if not s.enabled:
        systemd.service(name="fail2ban stopped and disabled (fail2ban.enabled: false)", service="fail2ban",
                        running=False, enabled=False)
        return
    if s.apache_auth:
        # fail2ban refuses a jail none of whose logs exist; Apache (roles/spse_app, the data tier)
        # may come later on a new host. Debian's owner and modes, as Apache's package makes them.
        files.directory(name=f"{APACHE_LOG_DIR} (Apache's log directory)", path=APACHE_LOG_DIR, user="root", group="adm", mode="750")
        files.file(name=f"{APACHE_LOGS[0]} exists (the apache-auth jail reads it)", path=APACHE_LOGS[0], user="root",
                   group="adm", mode="640", touch=False)
    running = host.get_fact(SystemdStatus, services=["fail2ban.service"]).get("fail2ban.service", False)
    fail2ban_config(name="fail2ban jails (sshd, apache-auth) tested and live", files=config_files(site), running=running)
    systemd.service(name="fail2ban enabled at boot", service="fail2ban", enabled=True)
