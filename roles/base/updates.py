"""base role, security updates: Debian's unattended-upgrades, and reboots in the site's window.

Called from roles/base/deploy.py. unattended-upgrades installs from Debian-Security only
(`base.security_updates.origins`) and never reboots by itself; siaga-reboot-window.timer starts
/usr/local/lib/siaga/reboot-window at the start of the host's site window, which reboots only when
/var/run/reboot-required exists and nothing (backup, apt) is running. The two sites' windows never
overlap (drc/site/model.py). Design and reasons: roles/base/README.md. SOP IN-2, IN-4, EM-3.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation
from pyinfra.facts.files import File
from pyinfra.operations import files, systemd

from roles.managed_files import (
    MANAGED_HEADER,
    config_file,
    content_is_current,
    log_diff,
    validated_install,
)
from roles.packages import ensure_installed
from roles.templating import render

from .defaults import SecurityUpdatesSettings

if TYPE_CHECKING:  # drc.site imports the roles' defaults
    from drc.site import Site

ROLE_DIR = Path(__file__).parent
HEADER = MANAGED_HEADER.format(role="roles/base")
APT_CONF = "/etc/apt/apt.conf.d/52siaga-unattended-upgrades"
# Staged outside apt.conf.d (apt would read a staged copy there), on the same filesystem (atomic mv).
APT_CONF_STAGED = "/etc/apt/52siaga-unattended-upgrades.siaga-new"
UNIT_DIR = "/etc/systemd/system"
REBOOT_UNIT = "siaga-reboot-window"
APT_TIMERS = ("apt-daily.timer", "apt-daily-upgrade.timer")
UPGRADE_DROPIN = "/etc/systemd/system/apt-daily-upgrade.timer.d/siaga.conf"


def render_unattended(u: SecurityUpdatesSettings) -> str:
    return render(ROLE_DIR, "52siaga-unattended-upgrades.j2", header=HEADER, u=u)


def reboot_window(site: Site, host_name: str) -> tuple[str, str, int] | None:
    """(day, 'HH:MM', minutes) of this host's site window, or None when siaga does not reboot it."""
    u = site.base.security_updates
    if not (u.enabled and u.reboot.enabled):
        return None
    day, start = u.reboot.windows[site.site_of[host_name]].split()
    return day, start, u.reboot.window_minutes


def render_reboot_units(site: Site, host_name: str) -> dict[str, str] | None:
    """{'siaga-reboot-window.timer': text, '.service': text} for this host, or None (no reboots)."""
    window = reboot_window(site, host_name)
    if window is None:
        return None
    day, start, minutes = window
    ctx = {"header": HEADER, "site_role": site.site_of[host_name], "window": f"{day} {start}", "minutes": minutes}
    args = json.dumps({"day": day, "start": start, "minutes": minutes}, separators=(",", ":"))
    return {
        f"{REBOOT_UNIT}.timer": render(ROLE_DIR, "siaga-reboot-window.timer.j2", on_calendar=f"{day} *-*-* {start}:00", **ctx),
        f"{REBOOT_UNIT}.service": render(ROLE_DIR, "siaga-reboot-window.service.j2", args=args, **ctx),
    }


def render_upgrade_time(site: Site, host_name: str) -> str | None:
    """The apt-daily-upgrade.timer drop-in with this host's site time, or None (updates off)."""
    u = site.base.security_updates
    if not u.enabled:
        return None
    role = site.site_of[host_name]
    return render(ROLE_DIR, "apt-daily-upgrade.siaga.conf.j2", header=HEADER, site_role=role,
                  at=u.upgrade_times[role], timezone=site.base.timezone)


@operation()
def apt_conf(dest: str, staged: str, content: str):
    """
    An apt.conf.d file, put live only if ``apt-config`` parses apt's whole configuration with it.

    + dest: path in /etc/apt/apt.conf.d
    + staged: where the new text is checked (outside apt.conf.d, same filesystem)
    + content: the file's text
    """
    if (yield from content_is_current(dest, content, 0o644)):
        return
    log_diff(dest, content)
    yield from validated_install(
        content, dest,
        check=lambda path: StringCommand("apt-config", "-c", QuoteString(path), "dump", ">/dev/null"),
        failure=f"apt-config refused the new {dest} (left unchanged); see the error above",
        mode=0o644, staged=staged,
    )


def security_updates(site: Site, host_name: str) -> None:
    u = site.base.security_updates
    if u.enabled:
        ensure_installed(["unattended-upgrades"], "security updates")
    apt_conf(name=f"{APT_CONF} ({'security updates from ' + str(len(u.origins)) + ' origins' if u.enabled else 'no unattended upgrades'}), "
                  "checked with apt-config", dest=APT_CONF, staged=APT_CONF_STAGED, content=render_unattended(u))
    # apt's own timers: the lists every day (what `siaga status` counts), the upgrade at the site's time.
    dropin = render_upgrade_time(site, host_name)
    if dropin is not None:
        at = u.upgrade_times[site.site_of[host_name]]
        upgrade_time = config_file(name=f"{UPGRADE_DROPIN} (daily at {at})", dest=UPGRADE_DROPIN, content=dropin)
    else:
        upgrade_time = files.file(name=f"{UPGRADE_DROPIN} absent (no unattended upgrades)", path=UPGRADE_DROPIN, present=False)
    systemd.daemon_reload(name="systemd reloaded after the apt-daily-upgrade.timer time changed", _if=upgrade_time.did_change)
    systemd.service(name="apt-daily-upgrade.timer restarted at its new time", service="apt-daily-upgrade.timer",
                    restarted=True, _if=upgrade_time.did_change)
    for timer in APT_TIMERS:
        systemd.service(name=f"{timer} enabled and active", service=timer, running=True, enabled=True)

    units = render_reboot_units(site, host_name)
    if units is not None:
        day, start, minutes = reboot_window(site, host_name)
        changed = [config_file(name=f"{UNIT_DIR}/{unit}", dest=f"{UNIT_DIR}/{unit}", content=text) for unit, text in units.items()]
        systemd.daemon_reload(name="systemd reloaded after a reboot-window unit change",
                              _if=lambda: any(op.did_change() for op in changed))
        systemd.service(name=f"{REBOOT_UNIT}.timer enabled and active ({day} {start}, {minutes} min)",
                        service=f"{REBOOT_UNIT}.timer", running=True, enabled=True)
    elif host.get_fact(File, path=f"{UNIT_DIR}/{REBOOT_UNIT}.timer"):
        systemd.service(name=f"{REBOOT_UNIT}.timer stopped (no reboots by siaga)", service=f"{REBOOT_UNIT}.timer",
                        running=False, enabled=False)
        removed = [files.file(name=f"{UNIT_DIR}/{REBOOT_UNIT}.{kind} absent", path=f"{UNIT_DIR}/{REBOOT_UNIT}.{kind}", present=False)
                   for kind in ("timer", "service")]
        systemd.daemon_reload(name="systemd reloaded after the reboot-window units were removed",
                              _if=lambda: any(op.did_change() for op in removed))

