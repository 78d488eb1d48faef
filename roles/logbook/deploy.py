"""logbook role: the remote-repair logbook's part on each host (SOP RA-5, RA-6, IN-4).

- drc/hostside/logbook_read.py as /usr/local/lib/siaga/logbook-read: `siaga logbook collect` runs
  it to read the SSH sessions and failed attempts from the journal (sshd logs at VERBOSE,
  roles/ssh_hardening);
- with `logbook.log_refused`: ulogd2 (Debian's package) receives the firewall's NFLOG group
  (roles/firewall logs the SSH connections it drops, rate-limited) and writes each to the journal,
  so refused attempts from outside ssh_allowlist are in the logbook too. NFLOG, not the kernel log:
  the kernel log of a host in a network namespace (a container) is off by default
  (net.netfilter.nf_log_all_netns = 0), and ulogd2 works the same on both.

Applied after the firewall role.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.server import Arch
from pyinfra.operations import systemd

from roles import host_programs
from roles.managed_files import MANAGED_HEADER, config_file
from roles.packages import ensure_installed
from roles.templating import render

if TYPE_CHECKING:  # drc.site imports the roles' defaults
    from drc.site import Site

ROLE_DIR = Path(__file__).parent
ULOGD_CONF = "/etc/ulogd.conf"
ULOGD_UNIT = "ulogd2.service"
# Debian's multiarch directory of ulogd2's plugins, by the kernel's machine name.
MULTIARCH = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu", "armv7l": "arm-linux-gnueabihf",
             "i686": "i386-linux-gnu", "ppc64le": "powerpc64le-linux-gnu", "s390x": "s390x-linux-gnu"}


def render_ulogd_conf(site: Site, arch: str) -> str:
    if arch not in MULTIARCH:
        raise ValueError(f"no known Debian multiarch directory for machine '{arch}' (ulogd2's plugins)")
    return render(ROLE_DIR, "ulogd.conf.j2", header=MANAGED_HEADER.format(role="roles/logbook"),
                  plugins=f"/usr/lib/{MULTIARCH[arch]}/ulogd", group=site.logbook.nflog_group)


@deploy("siaga logbook")
def logbook(site: Site) -> None:
    host_programs.ship("logbook")
    if not site.logbook.log_refused:
        return
    ensure_installed(["ulogd2"], "the logbook's refused SSH connections (NFLOG to the journal)")
    config_file(name=f"{ULOGD_CONF} (NFLOG group {site.logbook.nflog_group} to the journal)", dest=ULOGD_CONF,
                content=render_ulogd_conf(site, host.get_fact(Arch)), restart=ULOGD_UNIT)
    systemd.service(name=f"{ULOGD_UNIT} running and enabled", service=ULOGD_UNIT, running=True, enabled=True)
