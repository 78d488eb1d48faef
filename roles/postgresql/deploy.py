"""postgresql role: Debian's PostgreSQL (the site platform's major) in Debian's layout, ready for streaming replication.

Config in /etc/postgresql/<version>/<cluster>/ (pg_rewind never clobbers it): a conf.d drop-in,
pg_hba.conf (replication only from the peer site), pg_ident.conf (the app's OS account maps to
the owner role). On the database primary, the owner role and the databases. SOP IN-2, IN-4.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.deb import DebPackages
from pyinfra.operations import apt, systemd

from roles.monitoring.defaults import PG_ROLE
from roles.templating import render

from . import operations as pg
from .defaults import PostgresqlSettings

if TYPE_CHECKING:
    from drc.site import Site

ROLE_DIR = Path(__file__).parent
HEADER = "Managed by siaga (roles/postgresql); local changes are overwritten by the next deploy."


def config_dir(s: PostgresqlSettings) -> str:
    return f"/etc/postgresql/{s.version}/{s.cluster}"


def install(packages: list[str], why: str) -> None:
    """apt install; the index is refreshed only when something is missing (a converged host makes no change)."""
    missing = [p for p in packages if p not in host.get_fact(DebPackages)]
    apt.packages(name=f"Packages for {why}: {', '.join(packages)}", packages=packages,
                 update=bool(missing), no_recommends=True)


def render_conf(s: PostgresqlSettings, address: str, port: int) -> str:
    return render(ROLE_DIR, "siaga.conf.j2", header=HEADER, s=s, address=address, port=port)


def render_hba(s: PostgresqlSettings, replication_user: str | None, peers: list[str], monitoring_user: str | None = None) -> str:
    return render(ROLE_DIR, "pg_hba.conf.j2", header=HEADER, databases=[s.database, *s.extra_databases],
                  owner=s.owner, replication_user=replication_user, monitoring_user=monitoring_user, peers=[f"{p}/32" if ":" not in p else f"{p}/128" for p in peers])


def render_ident(s: PostgresqlSettings, app_os_users: list[str]) -> str:
    return render(ROLE_DIR, "pg_ident.conf.j2", header=HEADER, owner=s.owner, app_os_users=app_os_users)


def cluster_files(site: Site, host_name: str, s: PostgresqlSettings, replication_user: str | None,
                  app_os_users: list[str]) -> dict[str, tuple[str, str]]:
    """dest -> (operation name, content) of the cluster's configuration files on `host_name`: what
    the role writes, also read by the BK-2 pre-change plan (roles/backup/prechange.py)."""
    cdir = config_dir(s)
    return {
        f"{cdir}/conf.d/siaga.conf": (f"{cdir}/conf.d/siaga.conf",
                                      render_conf(s, str(site.hosts[host_name].address), site.firewall.postgresql_port)),
        f"{cdir}/pg_ident.conf": (f"{cdir}/pg_ident.conf", render_ident(s, app_os_users)),
        f"{cdir}/pg_hba.conf": (f"{cdir}/pg_hba.conf: replication from the peer site only",
                                render_hba(s, replication_user, site.peer_addresses(host_name),
                                           PG_ROLE if site.monitoring.enabled else None)),
    }


@deploy("siaga postgresql")
def postgresql(site: Site, host_name: str, settings: PostgresqlSettings, is_source: bool,
               replication_user: str | None, app_os_users: list[str]) -> None:
    """Install and configure the cluster. `is_source`: this host is the database primary by the
    site file (the replication role's preflight has checked PostgreSQL agrees)."""
    s = settings
    install([f"postgresql-{s.version}", "postgresql-common"], "postgresql")
    systemd.service(name=f"postgresql@{s.version}-{s.cluster} enabled", service=f"postgresql@{s.version}-{s.cluster}.service",
                    enabled=True)
    for dest, (name, content) in cluster_files(site, host_name, s, replication_user, app_os_users).items():
        pg.cluster_file(name=name, dest=dest, content=content, version=s.version, cluster=s.cluster)
    if is_source:
        pg.role(name=f"Owner role {s.owner}", role=s.owner, login=True)
        for db in (s.database, *s.extra_databases):
            pg.database(name=f"Database {db} owned by {s.owner}", database=db, owner=s.owner)
