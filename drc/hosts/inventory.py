"""Turn a site file into pyinfra inventory groups (`primary`, `drc`).

Used by the inventory files (inventory/lab.py, inventory/production.example.py). The site is
validated first: a bad file stops pyinfra with the file, key and fix before any host is contacted.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

from drc.site import SITE_ROLES, Site, SiteError, load_site
from drc.site.platform import os_release_problem

HostEntry = tuple[str, dict]


def host_data(site: Site, site_path: Path, name: str) -> dict:
    """pyinfra host data for one host of the site (SSH connection data + where the site file is)."""
    c = site.connection
    data = {
        "ssh_hostname": str(site.hosts[name].address),
        "ssh_user": c.user,
        "ssh_key": str(Path(c.key_file).expanduser()),
        "ssh_port": c.port,
        "ssh_strict_host_key_checking": "yes",
        "_sudo": True,
        "siaga_site_file": str(site_path),
        "siaga_host": name,
    }
    if c.known_hosts_file:
        data["ssh_known_hosts_file"] = str(Path(c.known_hosts_file).expanduser())
    return data


def pyinfra_groups(site_path: str | Path) -> dict[str, list[HostEntry]]:
    """Validated site file -> {"primary": [(name, data)], "drc": [(name, data)]}.

    On an invalid site file, print why to stderr and exit with status 2.
    """
    path = Path(site_path).expanduser().resolve()
    try:
        site = load_site(path)
    except SiteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    return site_groups(site, path)


def site_groups(site: Site, path: Path) -> dict[str, list[HostEntry]]:
    """The site's hosts by group, but a lost site's: after a failover they are out of deploys until
    `siaga failback` (SOP EM-3.2-3.5)."""
    if site.lost_hosts:
        print(f"siaga: {', '.join(site.lost_hosts)} left out: site '{site.lost_site}' is lost (lost_site in {path.name})",
              file=sys.stderr)
    return {role: [(name, host_data(site, path, name)) for name in site.hosts_in(role) if name not in site.lost_hosts]
            for role in SITE_ROLES}


def this_host_in_site() -> tuple[Site, str]:
    """In a deploy file: the validated site (from the host data) and this host's name in it."""
    from pyinfra import host
    from pyinfra.api.exceptions import DeployError

    from pyinfra.context import ctx_host

    from roles.factcache import begin_section, install
    from roles.upload_staging import stage_uploads_in_tmp

    install()  # facts read once per host, in one round trip (roles/factcache.py)
    stage_uploads_in_tmp()  # uploads staged where the admin's SFTP can write (roles/upload_staging.py)
    deploy_file = sys._getframe(1).f_code.co_filename
    begin_section(ctx_host.get(), Path(deploy_file).stem)  # each deploy file its own plan
    # pyinfra orders operations by inspect.stack() at every operation of every host; for a deploy
    # file (exec'd by pyinfra: globals with __file__ and no __name__) inspect.getmodule scans all
    # of sys.modules each time to find no module. Recording "no module" for these files gives the
    # same answer at once (0.5 s of a 16-host run).
    frame = sys._getframe(1)
    while frame is not None:
        if "__file__" in frame.f_globals and "__name__" not in frame.f_globals:
            inspect.modulesbyfile.setdefault(frame.f_code.co_filename, "<siaga deploy file: no module>")
        frame = frame.f_back
    site_file = host.data.get("siaga_site_file")
    if not site_file:
        raise DeployError(f"{host.name}: no siaga_site_file in the host data; use an inventory from inventory/ (drc.hosts.inventory)")
    site = _load_once(site_file)
    name = host.data.get("siaga_host") or host.name
    if name not in site.hosts:
        raise DeployError(f"{host.name}: host '{name}' is not in {site_file}")
    _check_platform(site, name, site_file)
    return site, name


def _check_platform(site: Site, name: str, site_file: str) -> None:
    """The host runs the site's platform (its /etc/os-release), or the deploy stops while planning:
    pyinfra plans every host before it changes any, so nothing is changed anywhere."""
    from pyinfra import host
    from pyinfra.api.exceptions import DeployError

    from roles.base.facts import OsRelease

    problem = os_release_problem(site.os, host.get_fact(OsRelease), name, site_file)
    if problem:
        raise DeployError(f"platform: {problem}")


_loaded: dict[tuple[str, int], Site] = {}


def _load_once(site_file: str) -> Site:
    """The validated site, parsed once per process (every host's deploy file asks for it)."""
    key = (str(site_file), Path(site_file).stat().st_mtime_ns)
    if key not in _loaded:
        _loaded[key] = load_site(site_file)
    return _loaded[key]
