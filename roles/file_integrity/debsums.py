"""debsums: every installed Debian package's files checked daily against dpkg's checksums (Lynis
PKGS-7370). AIDE (deploy.py) watches chosen paths with siaga's rules; debsums covers every package,
with Debian's own daily job (/etc/cron.daily/debsums: `debsums -cs` at idle I/O priority, each
changed file logged with tag `debsums`). These hosts have no cron, so a systemd timer runs that job;
the job itself runs only when /etc/default/debsums says CRON_CHECK=daily. SOP IN-2.
"""

from __future__ import annotations

from io import StringIO
from typing import TYPE_CHECKING

from pyinfra import host
from pyinfra.facts.files import File
from pyinfra.operations import files, systemd
from pyinfra.operations.util import any_changed

from roles.file_integrity.layout import HEADER, ROLE_DIR
from roles.packages import ensure_installed
from roles.templating import render

if TYPE_CHECKING:
    from drc.site import Site

UNIT = "siaga-debsums"
DEFAULTS_FILE = "/etc/default/debsums"
DAILY_JOB = "/etc/cron.daily/debsums"


def package_checksums(site: Site) -> None:
    s = site.file_integrity
    timer = f"/etc/systemd/system/{UNIT}.timer"
    if not s.debsums:
        if host.get_fact(File, path=timer):
            systemd.service(name=f"{UNIT}.timer stopped (file_integrity.debsums: false)", service=f"{UNIT}.timer",
                            running=False, enabled=False)
        if host.get_fact(File, path=DEFAULTS_FILE):
            files.line(name=f"{DEFAULTS_FILE}: CRON_CHECK=never", path=DEFAULTS_FILE, line=r"^CRON_CHECK=.*",
                       replace="CRON_CHECK=never")
        return
    ensure_installed(["debsums"], "package file checksums checked daily (debsums)")
    # Debian's file stays (a conffile of debsums): only this line changes.
    files.line(name=f"{DEFAULTS_FILE}: CRON_CHECK=daily", path=DEFAULTS_FILE, line=r"^CRON_CHECK=.*", replace="CRON_CHECK=daily")
    units = [
        files.put(name=f"{UNIT}.service", dest=f"/etc/systemd/system/{UNIT}.service", mode="644",
                  src=StringIO(render(ROLE_DIR, "debsums.service.j2", header=HEADER, job=DAILY_JOB))),
        files.put(name=f"{UNIT}.timer", dest=timer, mode="644",
                  src=StringIO(render(ROLE_DIR, "debsums.timer.j2", header=HEADER, at=s.debsums_time))),
    ]
    systemd.daemon_reload(name="systemd reloaded after a debsums unit change", _if=any_changed(*units))
    systemd.service(name=f"{UNIT}.timer running (daily at {s.debsums_time})", service=f"{UNIT}.timer", running=True, enabled=True)
