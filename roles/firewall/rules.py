"""Which inbound ports a host opens, and to whom: the one place this is decided.

The firewall role renders these into nftables; `siaga check` prints them. Everything not listed
here is dropped (default deny inbound, SOP IN-2); loopback, established traffic and ICMP are the
role's own business.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from roles.monitoring.defaults import PORTS
from roles.uploads_sync.topology import sync_sources

if TYPE_CHECKING:
    from drc.site import Site


@dataclass(frozen=True)
class InboundRule:
    port: int
    proto: Literal["tcp", "udp"]
    sources: tuple[str, ...]  # CIDRs allowed in; empty and not `anywhere` = nobody
    comment: str
    anywhere: bool = False  # open to every address (the public web service only)

    @property
    def sources_v4(self) -> list[str]:
        return [s for s in self.sources if ipaddress.ip_network(s).version == 4]

    @property
    def sources_v6(self) -> list[str]:
        return [s for s in self.sources if ipaddress.ip_network(s).version == 6]


def inbound_rules(site: Site, host_name: str) -> list[InboundRule]:
    """The inbound allowances of one host of the site, in the order they should be applied."""
    if host_name not in site.site_of:
        raise KeyError(f"host '{host_name}' is not in site '{site.site}'")
    allow = tuple(str(n) for n in site.ssh_allowlist)
    # SOP RA-2: SSH only from the office network and permitted addresses.
    rules = [InboundRule(site.ssh_hardening.port, "tcp", allow, "ssh from ssh_allowlist (SOP RA-2)")]
    if site.connection.port != site.ssh_hardening.port:
        # The port siaga connects on now stays reachable while sshd moves to the new one.
        rules.append(InboundRule(site.connection.port, "tcp", allow, "ssh on connection.port (SOP RA-2)"))
    # The public service only where users are served now; the other site's web stays closed.
    if site.site_of[host_name] == site.active_site:
        rules += [InboundRule(p, "tcp", (), "web, active site (SOP IN-2)", anywhere=True) for p in site.firewall.web_ports]
    # The uploads sync (roles/uploads_sync): on a target, SSH from the source site's hosts only.
    # sshd still lets that key run nothing but `rrsync -wo <uploads>` (SOP EM-3, IN-2).
    if sync_from := sync_sources(site, host_name):
        rules.append(InboundRule(site.ssh_hardening.port, "tcp", sync_from, "uploads sync from the source site, key forced to rrsync (SOP EM-3, IN-2)"))
    # The backup repository (roles/backup): SSH from the database source host, keys forced to
    # pgBackRest's remote and sftp-server (SOP BK-1, BK-9). One rule per distinct source set.
    if backup_from := backup_sources(site, host_name):
        if not any(r.port == site.ssh_hardening.port and set(r.sources) == set(backup_from) for r in rules):
            rules.append(InboundRule(site.ssh_hardening.port, "tcp", backup_from, "backups between data host and repository, keys forced (SOP BK-1)"))
    # Replication and database access only from the other site's hosts.
    peers = tuple(str(ipaddress.ip_network(a)) for a in site.peer_addresses(host_name))
    rules.append(InboundRule(site.firewall.postgresql_port, "tcp", peers, "postgresql from the peer site (SOP IN-2)"))
    if site.monitoring.enabled:
        rules += monitoring_rules(site, host_name, peers)
    for i, extra in enumerate(site.firewall.extra_allow):
        rules.append(InboundRule(extra.port, extra.proto, tuple(str(n) for n in extra.sources),
                                 extra.comment or f"firewall.extra_allow[{i}]"))
    return rules


def monitoring_rules(site: Site, host_name: str, peers: tuple[str, ...]) -> list[InboundRule]:
    """roles/monitoring: each site's Prometheus scrapes both sites and sends to both Alertmanagers
    (a cluster), so the exporters and Alertmanager open to the peer site; the admin workstations
    see everything; each Prometheus watches the other; LKPP's networks get Prometheus only, whose API
    is read-only (SOP IN-3, IN-4)."""
    m, admins = site.monitoring, tuple(str(n) for n in site.admin_workstations)
    lkpp = tuple(str(n) for n in m.lkpp_sources)
    both = tuple(dict.fromkeys(peers + admins))
    return [
        InboundRule(PORTS["node"], "tcp", both, "node exporter to the peer site's Prometheus and the admins (SOP IN-3)"),
        InboundRule(PORTS["postgres"], "tcp", both, "postgres exporter to the peer site's Prometheus and the admins (SOP IN-4)"),
        InboundRule(PORTS["alertmanager"], "tcp", both, "Alertmanager: alerts from the peer site's Prometheus, the admins (SOP IN-3)"),
        InboundRule(PORTS["alertmanager_cluster"], "tcp", peers, "Alertmanager cluster with the peer site (one mail per alert)"),
        InboundRule(PORTS["alertmanager_cluster"], "udp", peers, "Alertmanager cluster with the peer site (one mail per alert)"),
        InboundRule(PORTS["prometheus"], "tcp", tuple(dict.fromkeys(both + lkpp)),
                    "Prometheus (read-only API) to the peer site, the admins and LKPP's monitoring (SOP IN-3)"),
    ]


def backup_sources(site: Site, host_name: str) -> tuple[str, ...]:
    """Addresses that reach this host's backup repository account (empty: not the repository host)."""
    b = site.backup
    repo, source = site.hosts_in(b.repository_site)[:1], site.hosts_in(site.replication.source_site)[:1]
    if b.enabled and site.lost_site and host_name in repo:
        # While a site is lost, the repository (at the serving site) also from the lost site's database
        # host: its fail-back reads the archived WAL there (pgBackRest's remote only, its key let in by
        # the fail-back alone: roles/backup README). SOP EM-3.8, BK-1.
        return tuple(str(ipaddress.ip_network(site.hosts[h].address)) for h in site.hosts_in(site.lost_site)[:1])
    if not b.enabled or not repo or not source or repo == source:
        return ()
    # The data host pushes WAL and files to the repository; the repository host pulls the database backup.
    peer = source if host_name in repo else repo if host_name in source else []
    return tuple(str(ipaddress.ip_network(site.hosts[h].address)) for h in peer)
