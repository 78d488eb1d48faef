"""monitoring role: Prometheus, Alertmanager and the node, postgres and blackbox exporters from
Debian on every server (SOP IN-3, IN-4).

- Each site's Prometheus scrapes every server of both sites and probes the public HTTPS service
  on the active site's servers: the loss of either site is seen, and alerted, by the other.
- The two Alertmanagers form one cluster (gossip on 9094 between the sites): both Prometheus
  servers send every alert to both, and the cluster mails it once.
- siaga's own figures (drc/hostside/monitor_figures.py, a systemd timer) go through
  node-exporter's textfile collector.
- Every configuration file is checked by the program that reads it (promtool, amtool, the
  blackbox exporter) before it goes live; a rejected one leaves the running daemon as it was.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from drc.hostside import program
from drc.hostside.workstation_mirror import ROOT as MIRROR_ROOT
from roles import host_programs
from roles.managed_files import MANAGED_HEADER, config_file
from roles.packages import ensure_installed
from roles.postgresql import operations as pg
from roles.templating import render
from roles.uploads_sync.topology import is_target, sends

from .defaults import FS_FILTER, PG_ROLE, PORTS
from .operations import checked_config, pg_role_member

if TYPE_CHECKING:
    from drc.site import Site

ROLE_DIR = Path(__file__).parent
HEADER = "# " + MANAGED_HEADER.format(role="roles/monitoring")
PACKAGES = ["prometheus", "prometheus-alertmanager", "prometheus-node-exporter", "prometheus-postgres-exporter",
            "prometheus-blackbox-exporter"]
ETC = "/etc/prometheus"
PROMETHEUS_YML = f"{ETC}/prometheus.yml"
RULES_YML = f"{ETC}/siaga-alerts.yml"
ALERTMANAGER_YML = f"{ETC}/alertmanager.yml"
BLACKBOX_YML = f"{ETC}/blackbox.yml"
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
FIGURES_FILE = f"{TEXTFILE_DIR}/siaga.prom"
FIGURES_SERVICE = "siaga-monitor-figures.service"
HEARTBEAT_NAME = ".siaga-uploads-heartbeat"  # in the uploads root, outside the app's uploads directory
FIGURES_TIMER = "siaga-monitor-figures.timer"


# node exporter's default list without overlay: a root filesystem on overlayfs (an immutable or
# containerised server, the lab's machines) is a disk to watch; container runtimes' overlay mounts
# stay out by the exporter's default mount-points-exclude (/var/lib/docker/..., /var/lib/containers/...).
FS_TYPES_EXCLUDE = ("^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|"
                    "proc|procfs|pstore|rpc_pipefs|securityfs|selinux|sysfs|tracefs)$")


@dataclass(frozen=True)
class Target:
    name: str
    site: str
    address: str
    url: str = ""

    def target(self, port: int) -> str:
        return f"[{self.address}]:{port}" if ":" in self.address else f"{self.address}:{port}"


def targets(site: Site) -> list[Target]:
    return [Target(h, site.site_of[h], str(site.hosts[h].address)) for h in site.site_of]


def https_targets(site: Site) -> list[Target]:
    """The public service's URL on each server of the active site (asked with the public name)."""
    app = site.spse_app
    return [Target(t.name, t.site, t.address, f"https://{t.target(443).removesuffix(':443')}{app.context_path}/health")
            for t in targets(site) if t.site == site.active_site]


def render_prometheus(site: Site) -> str:
    m = site.monitoring
    return render(ROLE_DIR, "prometheus.yml.j2", header=HEADER, m=m, hosts=targets(site), active_hosts=https_targets(site),
                  ports=_Ports(), rules_file=RULES_YML, scrape_timeout=min(10, m.scrape_interval_s))


def render_rules(site: Site) -> str:
    m = site.monitoring
    return render(ROLE_DIR, "siaga-alerts.yml.j2", header=HEADER, m=m, server_name=site.spse_app.server_name,
                  fs_filter=FS_FILTER, max_lag_bytes=site.status.max_lag_bytes, max_lag_seconds=site.status.max_lag_seconds,
                  stale_s=3 * m.figures_interval_s + 60)


def smtp_password(site: Site) -> str:
    """The SMTP password from its 0600 file on the workstation (its mode checked by the site model)."""
    f = site.monitoring.mail.auth_password_file
    if f is None:
        return ""
    try:
        return f.read_text().strip()
    except OSError as exc:
        raise DeployError(f"monitoring.mail.auth_password_file: cannot read {f} ({exc.strerror}). Fix: put the SMTP "
                          "password alone in that file on this workstation (chmod 600), or remove the setting") from None


def render_alertmanager(site: Site, password: str = "") -> str:
    m = site.monitoring
    return render(ROLE_DIR, "alertmanager.yml.j2", header=HEADER, m=m, password=password.replace("'", "''"),
                  group_interval=max(m.group_wait_s, 10))


def render_blackbox(site: Site) -> str:
    return render(ROLE_DIR, "blackbox.yml.j2", header=HEADER, server_name=site.spse_app.server_name,
                  timeout=min(10, site.monitoring.scrape_interval_s))


def defaults_files(site: Site, host_name: str) -> dict[str, tuple[str, dict[str, str]]]:
    """/etc/default/<unit> -> (unit, its variables): the daemons' command lines."""
    m, me = site.monitoring, Target(host_name, site.site_of[host_name], str(site.hosts[host_name].address))
    peers = [t for t in targets(site) if t.name != host_name]
    cluster = " ".join([f"--cluster.listen-address=0.0.0.0:{PORTS['alertmanager_cluster']}",
                        f"--cluster.advertise-address={me.target(PORTS['alertmanager_cluster'])}",
                        *(f"--cluster.peer={p.target(PORTS['alertmanager_cluster'])}" for p in peers)])
    return {
        # No --web.enable-admin-api, no --web.enable-lifecycle: the HTTP API stays read-only (LKPP, SOP IN-3).
        "prometheus": ("prometheus.service", {"ARGS": f"--config.file={PROMETHEUS_YML} --storage.tsdb.retention.time={m.retention_days}d"}),
        "prometheus-alertmanager": ("prometheus-alertmanager.service", {"ARGS": f"--config.file={ALERTMANAGER_YML} {cluster}"}),
        "prometheus-node-exporter": ("prometheus-node-exporter.service", {
            "ARGS": f"--collector.textfile.directory={TEXTFILE_DIR} --collector.filesystem.fs-types-exclude={FS_TYPES_EXCLUDE}"}),
        "prometheus-postgres-exporter": ("prometheus-postgres-exporter.service", {
            "DATA_SOURCE_NAME": f"user={PG_ROLE} host=/run/postgresql port={site.firewall.postgresql_port} dbname=postgres sslmode=disable",
            "ARGS": ""}),
        "prometheus-blackbox-exporter": ("prometheus-blackbox-exporter.service", {"ARGS": f"--config.file={BLACKBOX_YML}"}),
    }


def other_figures(site: Site) -> list[str]:
    """The .prom files other roles write in their own state directories (ClamAV's scans, AIDE's
    check), copied by monitor-figures into the textfile collector's directory (SOP IN-4)."""
    out = []
    if site.clamav.enabled:
        out.append(f"{site.clamav.state_dir}/siaga_clamav.prom")
    if site.file_integrity.enabled:
        out.append(f"{site.file_integrity.state_dir}/siaga_integrity.prom")
    return out


def uploads_heartbeat(site: Site, host_name: str) -> dict | None:
    """The uploads lag's heartbeat (drc/hostside/monitor_figures.py): written where lsyncd sends
    from, read where it sends to; none without an uploads sync (SOP EM-3, IN-4)."""
    path = f"{site.spse_app.uploads_root.rstrip('/')}/{HEARTBEAT_NAME}"
    if sends(site, host_name):
        return {"role": "source", "path": path}
    if is_target(site, host_name):
        return {"role": "target", "path": path}
    return None


class _Ports:
    """The ports as attributes, for the templates."""

    def __getattr__(self, name: str) -> int:
        return PORTS[name]


@deploy("siaga monitoring")
def monitoring(site: Site, host_name: str, is_db_source: bool) -> None:
    m = site.monitoring
    if not m.enabled:
        return
    ensure_installed(PACKAGES, "monitoring (SOP IN-3, IN-4)")
    # The postgres exporter's login: peer over the socket (pg_hba by roles/postgresql), pg_monitor's
    # read-only statistics. Made on the primary; the standby gets it by replication.
    if is_db_source:
        pg.role(name=f"PostgreSQL role {PG_ROLE} (the postgres exporter)", role=PG_ROLE, login=True)
        pg_role_member(name=f"{PG_ROLE} in pg_monitor", role=PG_ROLE, group="pg_monitor")

    restarted = []
    for name, (unit, env) in defaults_files(site, host_name).items():
        restarted.append(config_file(name=f"/etc/default/{name} ({unit}'s command line)", dest=f"/etc/default/{name}",
                                     content=render(ROLE_DIR, "default.j2", header=HEADER, unit=unit, env=env)))
        # reset-failed first: Debian starts the postgres exporter at install with an empty
        # DATA_SOURCE_NAME, and its crash loop leaves the unit at its start limit (Debian 12).
        server.shell(name=f"{unit} restarted for its new command line", commands=[f"systemctl reset-failed {unit}; systemctl restart {unit}"],
                     _if=restarted[-1].did_change)

    # Rules before the configuration that names them: promtool checks the configuration with its rules.
    checked_config(name=f"{RULES_YML} (alert rules)", dest=RULES_YML, content=render_rules(site),
                   check=["promtool", "check", "rules"], unit="prometheus.service")
    checked_config(name=f"{PROMETHEUS_YML} (both sites' targets)", dest=PROMETHEUS_YML, content=render_prometheus(site),
                   check=["promtool", "check", "config"], unit="prometheus.service")
    password = smtp_password(site)
    # 0600 and the service's own: it may hold the SMTP password.
    checked_config(name=f"{ALERTMANAGER_YML} (mail, webhooks)", dest=ALERTMANAGER_YML, content=render_alertmanager(site, password),
                   check=["amtool", "check-config"], unit="prometheus-alertmanager.service", mode=0o600,
                   user="prometheus", group="prometheus", secret=bool(password))
    checked_config(name=f"{BLACKBOX_YML} (the public HTTPS probe)", dest=BLACKBOX_YML, content=render_blackbox(site),
                   check=["prometheus-blackbox-exporter", "--config.check", "--config.file"],
                   unit="prometheus-blackbox-exporter.service")

    # siaga's own figures through the textfile collector.
    host_programs.ship("monitoring")
    files.directory(name=f"{TEXTFILE_DIR} (node exporter's textfile collector)", path=TEXTFILE_DIR)
    args = json.dumps({"out": FIGURES_FILE, "pg_port": site.firewall.postgresql_port, "uploads_dir": site.spse_app.uploads_dir,
                       "uploads_every_s": m.uploads_every_s, "records": f"{MIRROR_ROOT}/{site.site}/records",
                       "copy": other_figures(site), "uploads_heartbeat": uploads_heartbeat(site, host_name)}, sort_keys=True)
    units = [config_file(name=f"Unit {FIGURES_SERVICE}", dest=f"/etc/systemd/system/{FIGURES_SERVICE}",
                         content=render(ROLE_DIR, f"{FIGURES_SERVICE}.j2", header=HEADER,
                                        program=program("monitor_figures").path, args=args)),
             config_file(name=f"Unit {FIGURES_TIMER}", dest=f"/etc/systemd/system/{FIGURES_TIMER}",
                         content=render(ROLE_DIR, f"{FIGURES_TIMER}.j2", header=HEADER, interval=m.figures_interval_s))]
    systemd.daemon_reload(name="systemd reloaded after a figures unit change", _if=any_changed(*units))
    systemd.service(name=f"{FIGURES_TIMER} active", service=FIGURES_TIMER, running=True, enabled=True)
    for _name, (unit, _env) in defaults_files(site, host_name).items():
        systemd.service(name=f"{unit} running", service=unit, running=True, enabled=True)
