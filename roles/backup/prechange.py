"""SOP BK-2, the pre-change backup: which backups the site deploy takes first, and why, decided at
plan time from the hosts' own state (so `--dry` shows it like any other change).

The deploy will change the database or the application on the data host (the database source)
when a file the roles write there differs from the host's copy (sha1 of the content the roles
render vs. the host's `Sha1File`), or the application's schema is behind its migrations. Then,
before any of that, in one operation that runs on both hosts at once:

- on the repository host (the DRC, as `backup.repository_user`): the database (`siaga-backup run
  db`: pgBackRest runs there and pulls from the primary);
- on the data host: the file sets marked `before_change` (the system files), plus the sets
  holding the uploads when the application changes (restic runs there).

What is compared is a list of files, not pyinfra's plan: a new kind of change to the data host
needs its file here (tests/test_prechange_units.py checks the PostgreSQL files are the role's).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from drc.site.data_tier import DataTier

SKIP_ENV = "SIAGA_SKIP_PRECHANGE_BACKUP"


@dataclass(frozen=True)
class Watched:
    """A file the data tier writes on the data host: its sha1 as the roles render it (None:
    the role removes it), and what a change of it touches."""
    path: str
    sha1: str | None
    touches: str  # "database" or "application"


@dataclass
class Plan:
    """What the pre-change backup does in this deploy (empty `reasons`: nothing, and why not)."""
    data_host: str
    repository_host: str
    reasons: list[str] = field(default_factory=list)
    touches: set[str] = field(default_factory=set)
    file_sets: list[str] = field(default_factory=list)
    not_needed: str = ""
    problem: str = ""

    @property
    def needed(self) -> bool:
        return bool(self.reasons)

    def because(self) -> str:
        return "because " + "; ".join(self.reasons) if self.reasons else self.not_needed

    def sets_on(self, host_name: str) -> list[str]:
        """What `host_name` backs up in this step: ['db'] on the repository host, the file sets on the data host."""
        if not self.needed:
            return []
        if host_name == self.repository_host:
            return ["db"]
        if host_name == self.data_host:
            return list(self.file_sets)
        return []

    def step_name(self, host_name: str) -> str:
        head = "Pre-change backup (SOP BK-2): "
        if not self.needed:
            return head + f"none ({self.not_needed})"
        if host_name == self.repository_host:
            return head + f"a backup of the database (from {self.data_host}, pgBackRest here) is taken first {self.because()}"
        sets = ", ".join(self.file_sets) or "no file set"
        return head + f"a backup of the files ({sets}; the database from {self.repository_host}) is taken first {self.because()}"


def watched_files(tier: DataTier, host_name: str) -> list[Watched]:
    """The database's and the application's files the data tier writes on `host_name`, as the
    roles render them (the same functions the roles call)."""
    from roles.backup.layout import render_archive_conf
    from roles.postgresql.deploy import cluster_files, config_dir
    from roles.spse_app import deploy as app
    from roles.workstation_secrets import sha1_text

    pg, s, site = tier.postgresql, tier.spse_app, tier.site
    out = [Watched(dest, sha1_text(content), "database") for dest, (_, content) in
           cluster_files(site, host_name, pg, tier.replication.user, [s.user]).items()]
    cdir = config_dir(pg)
    if site.backup.enabled:
        out.append(Watched(f"{cdir}/conf.d/siaga-archive.conf", sha1_text(render_archive_conf(site.backup)), "database"))
    if host_name in tier.db_source_hosts:
        out.append(Watched(f"{cdir}/conf.d/siaga-standby.conf", None, "database"))  # removed on the primary
    for path, content in app.app_files(s, pg).items():
        data = content if isinstance(content, bytes) else content.encode()
        out.append(Watched(path, hashlib.sha1(data).hexdigest(), "application"))
    return out


def covers(paths: list[str], target: str) -> bool:
    return any(target == p.rstrip("/") or target.startswith(p.rstrip("/") + "/") for p in paths)


def decide(tier: DataTier, watched: list[Watched], sha1_of: Callable[[str], str | None], schema: int | None,
           latest_schema: int | None, node: dict | None) -> Plan:
    """The plan from what the host has (`sha1_of(path)`: its file's sha1 or None, `schema`: its
    applied migration, `node`: its PgNode). Pure: unit-tested."""
    from roles.backup.topology import backup_host, repository_host

    plan = Plan(data_host=backup_host(tier), repository_host=repository_host(tier))
    if not (node and node.get("running") and node.get("in_recovery") is False and node.get("user_databases")):
        plan.not_needed = f"no database holding data on {plan.data_host} yet"
        return plan
    for w in watched:
        have = sha1_of(w.path)
        if have != w.sha1:
            plan.reasons.append(f"{w.path} {'changes' if w.sha1 and have else 'is added' if w.sha1 else 'is removed'}")
            plan.touches.add(w.touches)
    if latest_schema is not None and schema is not None and schema < latest_schema:
        plan.reasons.append(f"the schema of {tier.postgresql.database} is migrated ({schema} -> {latest_schema})")
        plan.touches.add("application")
    if not plan.reasons:
        plan.not_needed = f"nothing on {plan.data_host} that a backup covers changes"
        return plan
    s = tier.spse_app
    for bs in tier.site.backup.sets:
        if bs.before_change or ("application" in plan.touches and covers(bs.paths, s.uploads_dir)):
            plan.file_sets.append(bs.name)
    return plan


def plan_for_deploy(tier: DataTier, nodes: dict) -> Plan:
    """Read the data host's files and schema (cross-host facts: the same on every host's pass)
    and decide. A host missing from this run is a problem when a backup must run there."""
    from pyinfra import state
    from pyinfra.facts.files import Sha1File

    from roles.backup.topology import backup_host, repository_host
    from roles.site_hosts import inventory_host
    from roles.spse_app.deploy import latest_migration
    from roles.spse_app.facts import SchemaVersion

    src, repo = backup_host(tier), repository_host(tier)
    h = inventory_host(src)
    if h is None or not state.is_host_in_limit(h):
        return Plan(data_host=src, repository_host=repo, not_needed=f"{src} is not in this deploy")
    watched = watched_files(tier, src)
    schema = h.get_fact(SchemaVersion, database=tier.postgresql.database) if tier.spse_app.install == "standin" else None
    plan = decide(tier, watched, lambda p: h.get_fact(Sha1File, path=p), schema,
                  latest_migration() if tier.spse_app.install == "standin" else None, nodes.get(src))
    r = inventory_host(repo)
    if plan.needed and (r is None or not state.is_host_in_limit(r)):
        plan.problem = (f"the database backup runs on the repository host {repo} (pgBackRest), which is not in this "
                        f"deploy. Fix: deploy both hosts, or set {SKIP_ENV}=<reason> to go on without it (recorded)")
    return plan


def operator() -> str:
    return os.environ.get("SUDO_USER") or os.environ.get("USER") or "unknown"


def skip_reason() -> str:
    return os.environ.get(SKIP_ENV, "").strip()[:500]

