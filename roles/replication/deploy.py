"""replication role: the DRC as a hot standby of the primary (streaming, one slot per standby).

Which host is primary comes from the site file (`replication.source_site`); the preflight reads
PostgreSQL itself on every host (pg_is_in_recovery, system identifier) and stops the deploy before
any change when the two disagree. The first copy is pg_basebackup, only onto a cluster holding no
database of its own. The replication password is kept on the admin workstation (0600, outside the
repository; made for a new site, fetched back from the hosts otherwise, never replaced implicitly:
roles/secret_custody.py) and reaches hosts only inside 0600 files. SOP EM-3, BK-8.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyinfra.api import deploy
from pyinfra.operations import files

from roles.postgresql.deploy import config_dir
from roles.postgresql import operations as pg_ops
from roles.postgresql.facts import PgNode
from roles.templating import render
from roles import secret_custody
from roles.site_hosts import inventory_host
from roles.workstation_secrets import secret_file

from . import operations as repl_ops
from .standby import CONF_NAME, PASSFILE, ROLE_DIR, slot_name, standby_conf, standby_context

if TYPE_CHECKING:
    from drc.site.data_tier import DataTier

def replication_password(tier: DataTier) -> str:
    """From the admin workstation, after secret custody (roles/secret_custody.py); never printed."""
    return secret_custody.password(tier, "replication")


def read_nodes(tier: DataTier) -> dict[str, dict | None]:
    """PgNode of every host of the site, read from the hosts themselves (None: not in this run)."""
    pg = tier.postgresql
    out = {}
    for name in tier.site.hosts:
        h = inventory_host(name)
        out[name] = h.get_fact(PgNode, version=pg.version, cluster=pg.cluster) if h else None
    return out


def preflight_problems(tier: DataTier, nodes: dict[str, dict | None]) -> list[str]:
    """Where the site file and PostgreSQL disagree about who is primary (empty: safe to go on)."""
    problems = []
    src = tier.replication.source_site
    if len(tier.db_source_hosts) != 1:
        problems.append(f"replication.source_site '{src}' must hold exactly one host (has {len(tier.db_source_hosts)})")
    for name in tier.db_source_hosts:
        n = nodes.get(name)
        if n and (n["in_recovery"] is True or (not n["running"] and "recovery" in (n["cluster_state"] or ""))):
            problems.append(
                f"{name} is the database primary by the site file (replication.source_site: {src}) but PostgreSQL "
                f"there is a standby (in recovery). Nothing was changed. Fix: if a switch-over happened, set "
                f"replication.source_site to the site now primary; otherwise promote {name} with the runbook")
    for name in tier.db_standby_hosts:
        n = nodes.get(name)
        if n and n["user_databases"] and (n["in_recovery"] is False or n["cluster_state"] in ("in production", "shut down")):
            problems.append(
                f"{name} should follow the primary but PostgreSQL there is a PRIMARY holding "
                f"{', '.join(n['user_databases'])}; siaga never wipes a primary. Nothing was changed. Fix: if "
                f"{name} was promoted (a switch-over), set replication.source_site accordingly or run the fail-back runbook")
    sources = {n["system_identifier"] for name in tier.db_source_hosts if (n := nodes.get(name)) and n["system_identifier"]}
    for name in tier.db_standby_hosts:
        n = nodes.get(name)
        if n and n["in_recovery"] and sources and n["system_identifier"] not in sources:
            problems.append(
                f"{name} is a standby of another database system ({n['system_identifier']}, primary has "
                f"{', '.join(sources)}). Nothing was changed. Fix: rebuild it with the runbook")
    return problems


def already_standby(tier: DataTier, nodes: dict[str, dict | None], name: str) -> bool:
    n = nodes.get(name)
    src = nodes.get(tier.db_source_hosts[0]) if tier.db_source_hosts else None
    return bool(n and src and n["in_recovery"] and src["system_identifier"]
                and n["system_identifier"] == src["system_identifier"])


@deploy("siaga replication")
def replication(tier: DataTier, host_name: str, nodes: dict[str, dict | None]) -> None:
    """Apply after roles/postgresql. `nodes`: from read_nodes(), checked by preflight_problems()."""
    r, pg, site = tier.replication, tier.postgresql, tier.site
    port = site.firewall.postgresql_port
    password = replication_password(tier)
    cdir = config_dir(pg)

    # Every host can reach its peers for replication (a demoted primary follows the other side).
    secret_file(name=f"{PASSFILE} (replication password, 0600)", dest=PASSFILE, user="postgres", group="postgres",
                content="".join(f"{a}:{port}:replication:{r.user}:{password}\n" for a in site.peer_addresses(host_name)))

    if host_name in tier.db_source_hosts:
        pg_ops.role(name=f"Replication role {r.user}", role=r.user, login=True, replication=True, password=password)
        for standby in tier.db_standby_hosts:
            repl_ops.slot(name=f"Replication slot for {standby}", slot_name=slot_name(tier, standby))
        files.file(name="No standby settings on the primary", path=f"{cdir}/conf.d/{CONF_NAME}", present=False)
        return

    source = tier.db_source_hosts[0]
    context = standby_context(tier, host_name, source)
    pg_ops.cluster_file(name=f"{cdir}/conf.d/{CONF_NAME}: follow {source}", dest=f"{cdir}/conf.d/{CONF_NAME}",
                        content=standby_conf(tier, host_name, source), version=pg.version, cluster=pg.cluster)
    repl_ops.standby_build(name=f"Hot standby of {source} (pg_basebackup only if not one already)",
                           script=render(ROLE_DIR, "standby-build.sh.j2", **context),
                           already_standby=already_standby(tier, nodes, host_name))
