"""backup role: pgBackRest (database, WAL archiving) and restic (files) to a repository at the
other site, a second repository on offline media, systemd timers, and one runner that writes a
record of every run to the backup log. SOP BK-1..BK-9.

Topology (why, in README.md): the database source host runs every backup and pushes over SSH to
a restricted account on the repository host (`backup.repository_site`, the DRC by default):
pgBackRest with `repo1-host` (its remote runs there as that account, behind a forced command),
restic over SFTP (the key's forced command is `sftp-server`). Passphrases and keys are kept on the
admin workstation (0600; made for a new site, fetched back from the hosts otherwise, never replaced
implicitly: roles/secret_custody.py) and reach hosts only inside 0600/0640 files. The accounts the
backups log in as read their keys only from root-owned files (roles/backup/keys.py).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.files import FileContents
from pyinfra.facts.server import Command
from pyinfra.operations import files, server, systemd

from drc.site.platform import version_tuple
from roles import host_programs
from roles.managed_files import config_file
from roles.packages import ensure_installed
from roles.postgresql.deploy import config_dir
from roles.postgresql import operations as pg_ops
from roles.templating import render
from roles import secret_custody
from roles.site_hosts import inventory_host
from roles.workstation_secrets import secret_file

from . import operations as backup_ops
from . import repo1 as repo1_gen
from . import versions
from .defaults import BackupSettings
from .layout import (ROLE_DIR, HEADER, RUNNER, CONFIG_JSON, ETC, KNOWN_HOSTS, REPO_CONFIG_PATH, PG_SSH_DIR, STATE_DIR, OFFLINE_COPY, OFFLINE_HISTORY, RETIRED_SECRETS, APT_KEYRING, APT_SOURCE, APT_PIN, render_archive_conf)
from .topology import backup_host, repository_host
from .keys import KEYS_DIR, REMOTE_WRAPPER, db_account_keys, keys_file

if TYPE_CHECKING:
    from drc.site.data_tier import DataTier

def repo1_generation(tier: DataTier) -> int:
    """The pgBackRest repository generation the hosts are at (roles/backup/repo1.py): the highest
    any host of this deploy holds, so a stale site file never points back at a retired repository."""
    seen = {}
    for name in tier.site.hosts:
        h = inventory_host(name)
        if h is not None:
            lines = h.get_fact(FileContents, path=repo1_gen.GENERATION_FILE)
            seen[name] = "\n".join(lines) if lines else None
    try:
        return repo1_gen.current_generation(seen)
    except repo1_gen.GenerationError as exc:
        raise DeployError(f"backup: {exc}") from None


def repo1_location(tier: DataTier, generation: int | None = None) -> str:
    """The repository directory in use on the repository host."""
    g = repo1_generation(tier) if generation is None else generation
    return repo1_gen.repo1_path(tier.site.backup.repository_path, g)


def db_config(tier: DataTier, path: str, next_path: str | None = None, repo_config_path: str = REPO_CONFIG_PATH) -> str:
    """The database host's /etc/pgbackrest/pgbackrest.conf (no secret). A rotation's (drc/secrets/
    rotate_repo.py) `next_path`: its new repository as repo2 beside repo1 (archive-push writes both);
    `repo_config_path`: the repository host's config its remote reads."""
    site, b = tier.site, tier.site.backup
    repo = repository_host(tier)
    repo_address = str(site.hosts[repo].address)
    return render(ROLE_DIR, "pgbackrest.conf.j2", header=HEADER, b=b, pg=tier.postgresql, port=site.firewall.postgresql_port,
                  repo_host=repo, repo_address=repo_address, repo_config_path=repo_config_path, repo_path=path,
                  next_lines=repo1_gen.transitional_lines(repo_address, b.repository_user, next_path) if next_path else [])


def repo_config(tier: DataTier, path: str, passphrase: str) -> str:
    """The repository host's pgBackRest config (holds the cipher passphrase: 0640 root:<account>)."""
    site, b = tier.site, tier.site.backup
    src = backup_host(tier)
    return render(ROLE_DIR, "pgbackrest-repo.conf.j2", header=HEADER, b=b, backup_host=src,
                  block=versions.uses_block_incremental(site), db_address=str(site.hosts[src].address), pg=tier.postgresql,
                  port=site.firewall.postgresql_port, passphrase=passphrase, repo_path=path)


def runner_config(tier: DataTier, host_name: str, generation: int | None = None) -> dict:
    """/etc/siaga/backup.json: everything the runner needs, no secret (those are files).
    `generation`: the pgBackRest repository's (None: read from the hosts, in a deploy)."""
    b, site = tier.site.backup, tier.site
    repo = repository_host(tier)
    g = repo1_generation(tier) if generation is None else generation
    repo_address = str(site.hosts[repo].address)
    restic_repo = f"sftp:{b.repository_user}@{repo_address}:{b.repository_path}/restic"
    return {
        "site": site.site,
        "host": host_name,
        "log_file": b.log_file,
        "timeout_s": b.timeout_s,
        "init_marker": init_marker(tier, g),
        # The database set and the offline copy run on the repository host, the file sets on the data host.
        # Both on one host while the other site is lost (lost_site: repository at the serving site).
        "runs": (["db", "offline"] if host_name == repo else [])
        + ([s.name for s in b.sets] + ["prune"] if host_name != repo or host_name == backup_host(tier) else []),
        "pgbackrest": {
            "stanza": b.stanza,
            "user": b.repository_user if host_name == repo else "postgres",
            "config_path": REPO_CONFIG_PATH if host_name == repo else "/etc/pgbackrest",
            "repo1_location": f"{repo}:{repo1_location(tier, g)}",
        },
        "restic": {
            "repository": restic_repo,
            "password_file": f"{ETC}/restic-repo1.password",
            "cache_dir": "/var/cache/siaga-restic",
            "sftp_command": f"ssh -F {ETC}/ssh_config {repo_address} -s sftp",
            "sets": [s.model_dump() for s in b.sets],
            "keep": {"daily": b.keep_daily, "weekly": b.keep_weekly, "monthly": b.keep_monthly},
        },
        "offline": {"mount_point": b.offline.mount_point, "device": b.offline.device, "copy_program": OFFLINE_COPY,
                    "copy_args": offline_copy_args(b, repo1_location(tier, g))},
    }


def offline_copy_args(b: BackupSettings, pgbackrest_path: str | None = None) -> dict:
    """What siaga-offline-copy needs (its mode is added by the caller). `pgbackrest_path`: the
    repository in use (after a rotation of repo1 not `<repository_path>/pgbackrest`)."""
    return {"mount_point": b.offline.mount_point, "repo_path": b.repository_path, "user": b.repository_user,
            "pgbackrest_path": pgbackrest_path or repo1_gen.repo1_path(b.repository_path, 1),
            "config_path": REPO_CONFIG_PATH, "stanza": b.stanza, "keep": b.offline.retention_full,
            "timeout_s": b.timeout_s, "lock_wait_s": 900, "media": b.offline.media,
            "period_s": b.offline.rotation_days * 86400, "history_file": OFFLINE_HISTORY}


def init_marker(tier: DataTier, generation: int | None = None) -> str:
    b = tier.site.backup
    g = repo1_generation(tier) if generation is None else generation
    # Generation 1 keeps the marker of sites deployed before repositories were rotated.
    where = f"{repository_host(tier)}:{b.repository_path if g == 1 else repo1_location(tier, g)}:{b.stanza}"
    return f"{STATE_DIR}/initialised-{hashlib.sha1(where.encode()).hexdigest()[:12]}"


def timers(b: BackupSettings) -> dict[str, tuple[str, str]]:
    """job -> (OnCalendar, why): the timers on the backing-up host."""
    jobs = {
        "db-full": (b.full_on_calendar, "full database backup, weekly (SOP BK-9)"),
        "db-incr": (b.incr_on_calendar, "incremental database backup, daily (SOP BK-1)"),
        "prune": (b.prune_on_calendar, "restic forget --prune (retention)"),
    }
    for s in b.sets:
        jobs[s.name] = (s.on_calendar, f"restic set {s.name}, incremental (SOP BK-1, BK-8)")
    if b.offline.enabled and b.offline.on_calendar:
        jobs["offline"] = (b.offline.on_calendar, "copy to the offline media (SOP BK-9)")
    return jobs


def on_repository_host(job: str) -> bool:
    """Database backups (pgBackRest runs them on its repository host) and the offline copy (the
    media is plugged in there) run on the repository host; the file sets on the data host."""
    return job.startswith("db-") or job == "offline"


def runner_config_text(tier: DataTier, host_name: str, generation: int | None = None) -> str:
    return json.dumps(runner_config(tier, host_name, generation), indent=2, sort_keys=True) + "\n"


def _host_key(tier: DataTier, name: str) -> str:
    """The repository host's ed25519 host key, read from that host (pinned for the backup SSH)."""
    h = inventory_host(name)
    lines = h.get_fact(FileContents, path="/etc/ssh/ssh_host_ed25519_key.pub") if h else None
    if not lines:
        raise DeployError(f"backup: cannot read the SSH host key of the repository host {name}; include it in this deploy")
    return " ".join(lines[0].split()[:2])


def writer_record(tier: DataTier, generation: int | None = None) -> str:
    """File on the repository host: the newest pgBackRest that wrote this repository (per repository
    location, as the init marker), so a later deploy never installs an older one (roles/backup/versions.py)."""
    return init_marker(tier, generation).replace("/initialised-", "/pgbackrest-writer-")


def _installed_pgbackrest(name: str) -> str | None:
    h = inventory_host(name)
    versions = (h.get_fact(DebPackages) or {}).get("pgbackrest") if h else None
    return max(versions, key=version_tuple) if versions else None  # pyinfra gives a set


def install_pgbackrest(tier: DataTier, host_name: str) -> None:
    """The same pgBackRest on every PostgreSQL host (its remote protocol needs that): the platform's
    Debian one, or the apt repository's (backup.pgbackrest_apt). Never one older than a host has or
    than the one that wrote the repository: the deploy stops first (roles/backup/versions.py)."""
    site, b = tier.site, tier.site.backup
    repo = repository_host(tier)
    rh = inventory_host(repo)
    recorded = rh.get_fact(FileContents, path=writer_record(tier)) if rh else None
    path = repo1_location(tier)
    bundles = rh.get_fact(Command, command=f"ls -d {path}/backup/{b.stanza}/*/bundle 2>/dev/null "
                                          "| head -n 1") if rh else None
    problem = versions.downgrade_problem(site, {h: _installed_pgbackrest(h) for h in site.hosts},
                                         recorded[0].strip() if recorded else None,
                                         f"{repo}:{path}", block_backups=bool(bundles))
    if problem:
        raise DeployError(f"backup: {problem}")
    apt_repo = b.pgbackrest_apt
    if apt_repo is None:
        for path in (APT_SOURCE, APT_PIN, f"{APT_KEYRING}.asc", f"{APT_KEYRING}.gpg"):
            files.file(name=f"{path} absent (pgBackRest from Debian)", path=path, present=False)
        ensure_installed(["pgbackrest"], f"backups (pgBackRest {site.os.pgbackrest}, {site.os.label})")
        return
    key = Path(apt_repo.key_file).expanduser()
    apt = versions.apt_files(apt_repo, key.read_bytes(), APT_KEYRING)
    other = next(p for p in (f"{APT_KEYRING}.asc", f"{APT_KEYRING}.gpg") if p != apt["keyring"])
    files.directory(name="/etc/apt/keyrings", path="/etc/apt/keyrings", user="root", group="root", mode="755")
    changed = [
        files.put(name=f"{apt['keyring']} (signs the pgBackRest apt repository only)", src=str(key), dest=apt["keyring"],
                  user="root", group="root", mode="644"),
        files.file(name=f"{other} absent", path=other, present=False),
        config_file(name=f"{APT_SOURCE}: {apt_repo.url} {apt_repo.suite}", dest=APT_SOURCE, mode=0o644,
                    content=f"# {HEADER}\n{apt['source']}"),
        config_file(name=f"{APT_PIN}: only pgbackrest from {apt['origin']}", dest=APT_PIN, mode=0o644,
                    content=f"# {HEADER}\n{apt['pin']}"),
    ]
    server.shell(name="pgBackRest from the apt repository (apt-get update, install)",
                 commands=["apt-get update -qq", "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends pgbackrest"],
                 _if=lambda: any(op.did_change() for op in changed))
    ensure_installed(["pgbackrest"], "backups (pgBackRest from the apt repository)")


@deploy("siaga backup: WAL archiving")
def archiving(tier: DataTier, host_name: str) -> None:
    """Every PostgreSQL host: pgBackRest installed, archive_mode on, archive_command to pgBackRest
    (only a primary archives; a standby is ready for a promotion)."""
    b, pg = tier.site.backup, tier.postgresql
    # siaga's programs in LIB (made by roles/base): the restore-test probe, the production restore,
    # the backup log reader and the standby emptier (drc/hostside) on every PostgreSQL host, since
    # which host is the source or a standby changes with a switch-over.
    host_programs.ship("backup")
    install_pgbackrest(tier, host_name)
    cdir = config_dir(pg)
    pg_ops.cluster_file(name=f"{cdir}/conf.d/siaga-archive.conf: WAL archiving to pgBackRest",
                        dest=f"{cdir}/conf.d/siaga-archive.conf", content=render_archive_conf(b),
                        version=pg.version, cluster=pg.cluster)


@deploy("siaga backup")
def backup(tier: DataTier, host_name: str) -> None:
    """Apply after the data tier (PostgreSQL must exist). Does the repository host's part or the
    backing-up host's part, as the site file says."""
    site, b = tier.site, tier.site.backup
    if not b.enabled:
        return
    src, repo = backup_host(tier), repository_host(tier)
    if site.site_of[src] == b.repository_site and not site.serving_alone:
        raise DeployError(f"backup.repository_site '{b.repository_site}' is the site of the database source {src}: "
                          "the repository must be away from the data (SOP BK-9). Fix: set backup.repository_site to the other site")
    archiving(tier, host_name)
    generation = repo1_generation(tier)
    if generation > 1:
        # Every host keeps the generation (a rebuilt host learns it back from the others).
        files.directory(name=STATE_DIR, path=STATE_DIR, user="root", group="root", mode="700")
        backup_ops.owned_file(name=f"{repo1_gen.GENERATION_FILE}: pgBackRest repository generation {generation}",
                              dest=repo1_gen.GENERATION_FILE, content=repo1_gen.generation_text(generation),
                              user="root", group="root", mode=0o644)
    if host_name == repo:
        _repository_host(tier, src)
    if host_name == src:
        _backup_host(tier, repo)
    if host_name in (src, repo):
        # One call site for both hosts: pyinfra orders operations by where they are called.
        _runner(tier, host_name, {k: v for k, v in timers(b).items()
                                  if (host_name == repo if on_repository_host(k) else host_name == src)})


@deploy("siaga backup: SSH keys of the backup accounts")
def backup_keys(tier: DataTier, host_name: str) -> None:
    """The root-owned keys files sshd reads for the backup accounts (roles/backup/keys.py; the
    `Match User` blocks are roles/ssh_hardening's): the repository account's on the repository host,
    postgres' on the database host, none elsewhere. Called by deploys/data_tier.py before the BK-2
    pre-change backup, which logs in with them. The old files in the accounts' homes are removed:
    sshd no longer reads them, and a key found there later was put there by someone else."""
    site, b = tier.site, tier.site.backup
    if not b.enabled:
        return
    src, repo = backup_host(tier), repository_host(tier)
    u = b.repository_user
    files.directory(name=f"{KEYS_DIR} (backup accounts' SSH keys, root's)", path=KEYS_DIR, user="root", group="root",
                    mode="755")
    if host_name == repo:
        _, pg_pub = secret_custody.ssh_key(tier, "pgbackrest_key")
        _, restic_pub = secret_custody.ssh_key(tier, "restic_key")
        config_file(name=f"{keys_file(u)}: two keys, forced commands, from {src} only", dest=keys_file(u), mode=0o644,
                    content=render(ROLE_DIR, "authorized_keys.j2", header=HEADER, b=b, backup_host=src,
                                   from_addresses=str(site.hosts[src].address), pgbackrest_key=pg_pub, restic_key=restic_pub))
    else:
        files.file(name=f"{keys_file(u)} absent (not the repository host)", path=keys_file(u), present=False)
    if host_name == src:
        _, repo_pub = secret_custody.ssh_key(tier, "repo_key")
        config_file(name=f"{keys_file('postgres')}: the repository host, pgBackRest remote only", dest=keys_file("postgres"),
                    mode=0o644, content=db_account_keys(HEADER, repo, str(site.hosts[repo].address), repo_pub))
    else:
        files.file(name=f"{keys_file('postgres')} absent (not the database source)", path=keys_file("postgres"), present=False)
    for old in (f"/var/lib/{u}/.ssh/authorized_keys", f"{PG_SSH_DIR}/authorized_keys"):
        files.file(name=f"{old} absent (sshd reads {KEYS_DIR} only)", path=old, present=False)


def _repository_host(tier: DataTier, src: str) -> None:
    b, site = tier.site.backup, tier.site
    u = b.repository_user
    home = f"/var/lib/{u}"
    # restic here too: reading the restic repository on this host (escrow restore, a lost data
    # host) needs no other host. SOP BK-8.
    ensure_installed(["restic"], "backups (restic, to read the repository here)")
    server.group(name=f"Group {u} (backup repository)", group=u, system=True)
    server.user(name=f"Account {u}: owns the repositories, SSH only with forced commands", user=u, group=u,
                home=home, shell="/bin/sh", system=True, create_home=False)
    files.directory(name=f"{home} (home of {u})", path=home, user=u, group=u, mode="750")
    files.directory(name=f"{home}/.ssh", path=f"{home}/.ssh", user="root", group=u, mode="750")
    files.directory(name=f"{b.repository_path} (repositories)", path=b.repository_path, user=u, group=u, mode="750")
    # The repository in use only: a retired one (a rotation's) is left as it is until it is removed.
    for d in (repo1_location(tier), f"{b.repository_path}/restic", f"{b.repository_path}/log"):
        files.directory(name=d, path=d, user=u, group=u, mode="750")
    files.put(name=f"{REMOTE_WRAPPER} (forced command: pgBackRest remote only)", src=str(ROLE_DIR / "files/siaga-backup-remote"),
              dest=REMOTE_WRAPPER, user="root", group="root", mode="755")
    files.put(name=f"{OFFLINE_COPY} (copy to the offline media, verified there: SOP BK-9)", src=str(ROLE_DIR / "files/siaga-offline-copy"),
              dest=OFFLINE_COPY, user="root", group="root", mode="755")
    files.directory(name=REPO_CONFIG_PATH, path=REPO_CONFIG_PATH, user="root", group=u, mode="750")
    files.directory(name=f"{REPO_CONFIG_PATH}/conf.d", path=f"{REPO_CONFIG_PATH}/conf.d", user="root", group=u, mode="750")
    src_address = str(site.hosts[src].address)
    secret_file(name=f"{REPO_CONFIG_PATH}/pgbackrest.conf (repo1, encrypted; 0640 root:{u})",
                dest=f"{REPO_CONFIG_PATH}/pgbackrest.conf", user="root", group=u, mode=0o640,
                content=repo_config(tier, repo1_location(tier), secret_custody.password(tier, "repo1")))
    # The backup itself runs here (on the repository host, as pgBackRest 2.45 requires and 2.55 allows),
    # as {u}, over SSH to postgres@src.
    repo_key, _ = secret_custody.ssh_key(tier, "repo_key")
    files.directory(name=f"{home}/.ssh-client", path=f"{home}/.ssh-client", user=u, group=u, mode="700")
    secret_file(name=f"{home}/.ssh-client/id_ed25519 (key to postgres@{src})", dest=f"{home}/.ssh-client/id_ed25519",
                content=repo_key, user=u, group=u)
    config_file(name=f"{home}/.ssh-client/known_hosts: host key of {src}", dest=f"{home}/.ssh-client/known_hosts", mode=0o644,
                content=f"{src_address} {_host_key(tier, src)}\n")
    backup_ops.owned_file(name=f"{home}/.ssh/config (SSH to the database host)", dest=f"{home}/.ssh/config", user="root",
                          group=u, mode=0o640,
                          content=render(ROLE_DIR, "ssh_config.j2", header=HEADER, b=b, repo_host=src, repo_address=src_address,
                                         user="postgres", identity=f"{home}/.ssh-client/id_ed25519",
                                         known_hosts=f"{home}/.ssh-client/known_hosts"))


def _backup_host(tier: DataTier, repo: str) -> None:
    b, site = tier.site.backup, tier.site
    repo_address = str(site.hosts[repo].address)
    ensure_installed(["restic", "openssh-client"], "backups (restic)")
    for d, owner, mode in (("/etc/siaga", "root", "755"), (ETC, "root", "750"), (STATE_DIR, "root", "700"),
                           ("/var/cache/siaga-restic", "root", "700"), (str(Path(b.log_file).parent), "root", "750")):
        files.directory(name=d, path=d, user=owner, group="root" if d != ETC else "postgres", mode=mode)
    files.directory(name=PG_SSH_DIR, path=PG_SSH_DIR, user="postgres", group="postgres", mode="700")

    # Who the repository is: its host key pinned, for postgres (pgBackRest) and root (restic).
    config_file(name=f"{KNOWN_HOSTS}: host key of {repo}", dest=KNOWN_HOSTS, mode=0o644,
                content=f"{repo_address} {_host_key(tier, repo)}\n")
    pg_key, _ = secret_custody.ssh_key(tier, "pgbackrest_key")
    restic_key, _ = secret_custody.ssh_key(tier, "restic_key")
    secret_file(name=f"{PG_SSH_DIR}/siaga_backup_ed25519 (pgBackRest key)", dest=f"{PG_SSH_DIR}/siaga_backup_ed25519",
                content=pg_key, user="postgres", group="postgres")
    secret_file(name=f"{ETC}/restic_ed25519 (restic key)", dest=f"{ETC}/restic_ed25519", content=restic_key)
    files.put(name=f"{REMOTE_WRAPPER} (forced command: pgBackRest remote only)", src=str(ROLE_DIR / "files/siaga-backup-remote"),
              dest=REMOTE_WRAPPER, user="root", group="root", mode="755")
    ssh = dict(header=HEADER, b=b, repo_host=repo, repo_address=repo_address, known_hosts=KNOWN_HOSTS, user=b.repository_user)
    backup_ops.owned_file(name=f"{PG_SSH_DIR}/config (SSH to the repository)", dest=f"{PG_SSH_DIR}/config",
                          content=render(ROLE_DIR, "ssh_config.j2", identity=f"{PG_SSH_DIR}/siaga_backup_ed25519", **ssh),
                          user="postgres", group="postgres", mode=0o600)
    config_file(name=f"{ETC}/ssh_config (restic SFTP to the repository)", dest=f"{ETC}/ssh_config", mode=0o644,
                content=render(ROLE_DIR, "ssh_config.j2", identity=f"{ETC}/restic_ed25519", **ssh))

    # pgBackRest: repo1 over SSH.
    for d in ("/etc/pgbackrest", "/etc/pgbackrest/conf.d"):
        files.directory(name=d, path=d, user="root", group="postgres", mode="750")
    backup_ops.owned_file(name="/etc/pgbackrest/pgbackrest.conf (repo1 at the repository host)",
                          dest="/etc/pgbackrest/pgbackrest.conf", user="root", group="postgres", mode=0o640,
                          content=db_config(tier, repo1_location(tier)))
    files.file(name="Debian's example /etc/pgbackrest.conf removed (one config only)", path="/etc/pgbackrest.conf", present=False)
    for path in RETIRED_SECRETS:
        files.file(name=f"{path} absent (retired: the offline copy is made on the repository host)", path=path, present=False)
    # restic: passwords in files (RESTIC_PASSWORD_FILE), never on a command line.
    secret_file(name=f"{ETC}/restic-repo1.password", dest=f"{ETC}/restic-repo1.password",
                content=secret_custody.password(tier, "restic") + "\n")


def _runner(tier: DataTier, host_name: str, jobs: dict[str, tuple[str, str]]) -> None:
    """The runner, its configuration, the log directory and this host's timers."""
    b = tier.site.backup
    for d, mode in (("/etc/siaga", "755"), (STATE_DIR, "700"), (str(Path(b.log_file).parent), "750")):
        files.directory(name=d, path=d, user="root", group="root", mode=mode)
    files.put(name=f"{RUNNER} (runs a set, writes the backup log)", src=str(ROLE_DIR / "files/siaga-backup"),
              dest=RUNNER, user="root", group="root", mode="755")
    config_file(name=CONFIG_JSON, dest=CONFIG_JSON, mode=0o640,
                content=runner_config_text(tier, host_name))
    backup_ops.initialised(name="Repositories initialised", marker=init_marker(tier), runner=RUNNER)
    if host_name == repository_host(tier):
        rec = host.get_fact(FileContents, path=writer_record(tier))
        backup_ops.writer_recorded(name=f"{writer_record(tier)}: the newest pgBackRest that wrote the repository",
                                   record=writer_record(tier), installed=_installed_pgbackrest(host_name),
                                   recorded=rec[0].strip() if rec else None)
    all_jobs = timers(b)
    changed = []
    for job, (calendar, why) in all_jobs.items():
        here = job in jobs
        for kind, content in (("service", render(ROLE_DIR, "unit.service.j2", header=HEADER, job=job, why=why)),
                              ("timer", render(ROLE_DIR, "timer.j2", header=HEADER, job=job, on_calendar=calendar, why=why))):
            dest = f"/etc/systemd/system/siaga-backup-{job}.{kind}"
            changed.append(backup_ops.unit_file(name=f"{dest}" + (f" ({calendar})" if here else " absent (other host)"),
                                                dest=dest, content=content if here else None))
    changed.append(backup_ops.stale_timers(name="Timers of removed backup jobs removed", keep=sorted(all_jobs)))
    systemd.daemon_reload(name="systemd reloaded after a backup unit change",
                          _if=lambda: any(op.did_change() for op in changed))
    for job in jobs:
        systemd.service(name=f"siaga-backup-{job}.timer enabled and active", service=f"siaga-backup-{job}.timer",
                        running=True, enabled=True)

def set_names(b: BackupSettings) -> list[str]:
    return ["db", *(s.name for s in b.sets)]


def valid_set(b: BackupSettings, name: str) -> bool:
    return name in ("db", "all", "prechange", "offline", "prune") or bool(re.fullmatch(r"[a-z][a-z0-9-]*", name)) and name in set_names(b)
