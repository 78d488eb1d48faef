"""clamav role: ClamAV scanning the application's uploads, what it finds quarantined and alerted.

clamd (clamav-daemon) runs on every host, so the DRC scans at once after a switch-over; the scans
run where users upload, the active site: siaga-upload-scan.timer takes the files created or changed
since the previous scan (every scan_interval_seconds), siaga-upload-fullscan.timer all of them
daily. Both run drc/hostside/upload_scan.py. Signatures come from freshclam (ClamAV's mirrors or
the LPSE's own), or with `signatures: local` (the lab) from siaga's own database only. SOP IN-2.
"""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import TYPE_CHECKING

from pyinfra.api import deploy
from pyinfra.operations import files, systemd
from pyinfra.operations.util import any_changed

from drc.hostside import program
from roles import host_programs
from roles.managed_files import MANAGED_HEADER, config_file
from roles.packages import ensure_installed
from roles.templating import render

from . import operations as ops
from .signatures import DATABASE, hdb

if TYPE_CHECKING:
    from drc.site import Site

ROLE_DIR = Path(__file__).parent
HEADER = MANAGED_HEADER.format(role="roles/clamav")
PACKAGES = ["clamav-daemon", "clamdscan", "clamav-freshclam"]
CONFIG = "/etc/siaga/upload-scan.json"
CLAMD_CONF = "/etc/clamav/clamd.conf"
FRESHCLAM_CONF = "/etc/clamav/freshclam.conf"
# freshclam's units: the daemon and Debian 13's once-at-install service and its timer.
FRESHCLAM_UNITS = ["clamav-freshclam.service", "clamav-freshclam-once.service", "clamav-freshclam-once.timer"]
SCANS = {  # kind -> (unit name, what it scans)
    "new": ("siaga-upload-scan", "scan the uploads created or changed since the last scan"),
    "full": ("siaga-upload-fullscan", "scan every upload"),
}


def scan_config(site: Site, host_name: str) -> str:
    s = site.clamav
    return json.dumps({"uploads_dir": site.spse_app.uploads_dir, "quarantine_dir": s.quarantine_dir, "state_dir": s.state_dir,
                       "skip_prefixes": [".tmp-"], "host": host_name}, indent=1) + "\n"


def timer_lines(site: Site, kind: str) -> list[str]:
    s = site.clamav
    if kind == "new":
        return ["OnBootSec=2min", f"OnUnitInactiveSec={s.scan_interval_seconds}s", "AccuracySec=1s"]
    return [f"OnCalendar=*-*-* {s.full_scan_time}:00", "Persistent=true", "AccuracySec=1min"]


def clamd_conf(site: Site) -> str:
    limit = site.spse_app.max_upload_bytes
    return render(ROLE_DIR, "clamd.conf.j2", header=HEADER, s=site.clamav, max_file=limit, max_scan=4 * limit)


def freshclam_conf(site: Site) -> str:
    return render(ROLE_DIR, "freshclam.conf.j2", header=HEADER, s=site.clamav)


@deploy("siaga clamav")
def clamav(site: Site, host_name: str) -> None:
    s = site.clamav
    if not s.enabled:
        for kind, (unit, _what) in SCANS.items():
            systemd.service(name=f"{unit}.timer stopped (clamav.enabled: false)", service=f"{unit}.timer", running=False, enabled=False)
        return
    scanning_here = site.site_of[host_name] == site.active_site
    local = s.signatures == "local"
    if local:
        # Before the packages: their postinst would start freshclam, which tries ClamAV's mirrors.
        for unit in FRESHCLAM_UNITS:
            ops.unit_masked(name=f"{unit} masked (signatures: local, no mirror)", unit=unit, masked=True)
    ensure_installed(PACKAGES, "ClamAV")

    db = files.put(name=f"{DATABASE} (siaga's own signature: the EICAR test file)", src=StringIO(hdb()), dest=DATABASE,
                   user="clamav", group="clamav", mode="644")
    dropins = [files.put(name=f"{unit}: starts with siaga's database", dest=f"/etc/systemd/system/{unit}.d/siaga.conf",
                         src=StringIO(render(ROLE_DIR, "clamd-dropin.conf.j2", header=HEADER, database=DATABASE)), mode="644")
               for unit in ("clamav-daemon.service", "clamav-daemon.socket")]
    conf = files.put(name=f"{CLAMD_CONF}", dest=CLAMD_CONF, src=StringIO(clamd_conf(site)), mode="644")
    if not local:
        fresh = files.put(name=f"{FRESHCLAM_CONF}", dest=FRESHCLAM_CONF, src=StringIO(freshclam_conf(site)),
                          user="clamav", group="adm", mode="444")
        for unit in FRESHCLAM_UNITS:
            ops.unit_masked(name=f"{unit} not masked (signatures: freshclam)", unit=unit, masked=False)
        systemd.service(name="clamav-freshclam running", service="clamav-freshclam.service", running=True, enabled=True)
        systemd.service(name="clamav-freshclam restarted after a change", service="clamav-freshclam.service",
                        restarted=True, _if=fresh.did_change)
    systemd.daemon_reload(name="systemd reloaded after a ClamAV unit change", _if=any_changed(*dropins))
    systemd.service(name="clamav-daemon running", service="clamav-daemon.service", running=True, enabled=True)
    systemd.service(name="clamav-daemon restarted after a change", service="clamav-daemon.service", restarted=True,
                    _if=any_changed(conf, *dropins))
    # clamd reads its databases at start; a new siaga database alone needs a reload only.
    systemd.service(name="clamav-daemon reloaded for a new database", service="clamav-daemon.service", reloaded=True,
                    _if=[db.did_change, lambda: not any_changed(conf, *dropins)()])

    # Quarantine and records: root only.
    for d, mode in (("/etc/siaga", "755"), (s.state_dir, "755"), (s.quarantine_dir, "700")):
        files.directory(name=d, path=d, user="root", group="root", mode=mode)
    host_programs.ship("clamav")
    config_file(name=CONFIG, dest=CONFIG, content=scan_config(site, host_name), mode=0o644)
    units = []
    for kind, (unit, what) in SCANS.items():
        units.append(files.put(name=f"{unit}.service", dest=f"/etc/systemd/system/{unit}.service", mode="644",
                               src=StringIO(render(ROLE_DIR, "scan.service.j2", header=HEADER, what=what, kind=kind,
                                                   config=CONFIG, program=program("upload_scan").path))))
        units.append(files.put(name=f"{unit}.timer", dest=f"/etc/systemd/system/{unit}.timer", mode="644",
                               src=StringIO(render(ROLE_DIR, "scan.timer.j2", header=HEADER, what=what, unit=f"{unit}.service",
                                                   when=timer_lines(site, kind)))))
    systemd.daemon_reload(name="systemd reloaded after a scan unit change", _if=any_changed(*units))
    for kind, (unit, _what) in SCANS.items():
        systemd.service(name=f"{unit}.timer {'running' if scanning_here else 'stopped'} ("
                        f"{'the active site' if scanning_here else 'uploads are scanned at the active site'})",
                        service=f"{unit}.timer", running=scanning_here, enabled=scanning_here)
