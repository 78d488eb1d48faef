"""file_integrity role: AIDE over the system binaries, siaga's programs and the application tree.

Debian's `aide` only (not aide-common: its daily job would hash the whole system with Debian's
rules). siaga's own config, baseline made by the role, a daily check by siaga-integrity-check.timer
running drc/hostside/integrity_check.py, on every host (both sites' binaries matter).

A deploy is not an alarm: the role writes a manifest of what siaga's deploys put in the watched
paths (path -> sha256, computed here from siaga's own files), and the check explains a difference
by it, or by the file's Debian package (dpkg's md5sums: a security update), before it moves the
baseline. Anything else is reported and keeps being reported. When the manifest changed (this
deploy changed siaga's files there), the check runs at the end of the deploy, so the baseline
follows the deploy at once. SOP IN-2.
"""

from __future__ import annotations

import hashlib
import json
import re
from io import StringIO
from typing import TYPE_CHECKING

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import File
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from drc.hostside import PROGRAMS, program
from roles import host_programs
from roles.file_integrity.layout import HEADER, ROLE_DIR
from roles.managed_files import config_file
from roles.packages import ensure_installed
from roles.templating import render

from .debsums import package_checksums

if TYPE_CHECKING:
    from drc.site import Site

CONFIG = "/etc/siaga/integrity-check.json"
AIDE_CONF = "/etc/siaga/aide.conf"
UNIT = "siaga-integrity-check"


def app_tree(site: Site) -> str:
    from roles.spse_app.deploy import app_dir

    return app_dir(site.spse_app)


def watched(site: Site) -> tuple[list[str], list[str]]:
    """(paths, excluded paths) AIDE reads."""
    s = site.file_integrity
    paths, exclude = list(s.paths), list(s.exclude)
    if s.watch_app:
        adir = app_tree(site)
        paths.append(adir)
        exclude += [f"{adir}/logs", f"{adir}/run"]  # the application writes there
    return paths, exclude


def manifest(site: Site) -> dict[str, str]:
    """What siaga's deploys put in the watched paths: path -> sha256 of the content."""
    from roles.backup.layout import OFFLINE_COPY
    from roles.backup.layout import ROLE_DIR as BACKUP_DIR
    from roles.spse_app.deploy import MIGRATIONS, app_files

    out: dict[str, bytes] = {p.path: p.source.read_bytes() for p in PROGRAMS.values()}
    out[OFFLINE_COPY] = (BACKUP_DIR / "files/siaga-offline-copy").read_bytes()
    for path, content in app_files(site.spse_app, site.postgresql).items():
        out[path] = content if isinstance(content, bytes) else content.encode()
    if site.spse_app.install == "standin":
        adir = app_tree(site)
        out.update({f"{adir}/migrations/{m.name}": m.read_bytes() for m in MIGRATIONS})
    paths, exclude = watched(site)
    inside = lambda p, roots: any(p == r or p.startswith(r.rstrip("/") + "/") for r in roots)  # noqa: E731
    return {p: hashlib.sha256(c).hexdigest() for p, c in sorted(out.items()) if inside(p, paths) and not inside(p, exclude)}


def aide_conf(site: Site) -> str:
    paths, exclude = watched(site)
    return render(ROLE_DIR, "aide.conf.j2", header=HEADER, database=database(site),
                  paths=[re.escape(p) for p in paths], exclude=[re.escape(p) for p in exclude])


def database(site: Site) -> str:
    return f"{site.file_integrity.state_dir}/aide.db"


def check_config(site: Site, host_name: str) -> str:
    s = site.file_integrity
    return json.dumps({"aide_conf": AIDE_CONF, "database": database(site), "state_dir": s.state_dir,
                       "manifest": f"{s.state_dir}/manifest.json", "host": host_name}, indent=1) + "\n"


@deploy("siaga file_integrity")
def file_integrity(site: Site, host_name: str) -> None:
    s = site.file_integrity
    package_checksums(site)  # debsums, apart from AIDE's switch (debsums.py)
    if not s.enabled:
        systemd.service(name=f"{UNIT}.timer stopped (file_integrity.enabled: false)", service=f"{UNIT}.timer",
                        running=False, enabled=False)
        return
    ensure_installed(["aide"], "file integrity (AIDE)")
    files.directory(name=s.state_dir, path=s.state_dir, user="root", group="root", mode="700")
    host_programs.ship("file_integrity")
    prog = program("integrity_check").path
    conf = config_file(name=AIDE_CONF, dest=AIDE_CONF, content=aide_conf(site), mode=0o600)
    config_file(name=CONFIG, dest=CONFIG, content=check_config(site, host_name), mode=0o600)
    man = config_file(name=f"{s.state_dir}/manifest.json (what siaga's deploys put in the watched paths)",
                      dest=f"{s.state_dir}/manifest.json", content=json.dumps(manifest(site), indent=1) + "\n", mode=0o600)

    # The baseline: made once; again when the watched paths change (a new path would be all new).
    has_baseline = bool(host.get_fact(File, path=database(site)))
    server.shell(name="AIDE baseline made", commands=[f"{prog} init {CONFIG}"], _if=lambda: not has_baseline)
    server.shell(name="AIDE baseline made again for the changed watched paths", commands=[f"{prog} init --force {CONFIG}"],
                 _if=[conf.did_change, lambda: has_baseline])
    # This deploy changed siaga's files there: the check explains them and moves the baseline now.
    server.shell(name="Integrity check after siaga's files changed (the baseline follows the deploy)",
                 commands=[f"{prog} check {CONFIG}"], _if=[man.did_change, lambda: has_baseline, lambda: not conf.did_change()])

    paths, _exclude = watched(site)
    units = [
        files.put(name=f"{UNIT}.service", dest=f"/etc/systemd/system/{UNIT}.service", mode="644",
                  src=StringIO(render(ROLE_DIR, "check.service.j2", header=HEADER, paths=", ".join(paths), config=CONFIG, program=prog))),
        files.put(name=f"{UNIT}.timer", dest=f"/etc/systemd/system/{UNIT}.timer", mode="644",
                  src=StringIO(render(ROLE_DIR, "check.timer.j2", header=HEADER, at=s.check_time))),
    ]
    systemd.daemon_reload(name="systemd reloaded after an integrity unit change", _if=any_changed(*units))
    systemd.service(name=f"{UNIT}.timer running (daily at {s.check_time})", service=f"{UNIT}.timer", running=True, enabled=True)
