"""Operations the backup role needs and pyinfra lacks. Each reads facts and yields commands."""

from __future__ import annotations

import fnmatch
import os

from pyinfra import host, state
from pyinfra.api import QuoteString, StringCommand, operation
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.files import File, FindFiles

from roles.managed_files import content_is_current, log_diff, upload

SKIP_ENV = "SIAGA_SKIP_PRECHANGE_BACKUP"


@operation()
def owned_file(dest: str, content: str, user: str, group: str, mode: int):
    """
    A non-secret file with a given owner and mode (e.g. postgres' SSH config, pgBackRest's config).

    + dest: path of the file
    + content: its whole text
    + user, group, mode: owner and permission bits
    """
    if (yield from content_is_current(dest, content, mode, user, group)):
        return
    log_diff(dest, content)
    yield from upload(content, dest, mode, user, group)


@operation()
def initialised(marker: str, runner: str):
    """
    The repositories exist (pgBackRest stanza-create, restic init), once per repository location;
    `siaga-backup init` is idempotent and leaves `marker` when both are done.

    + marker: file on the host that says it is done for this repository
    + runner: path of siaga-backup
    """
    if host.get_fact(File, path=marker):
        host.noop("repositories already initialised")
        return
    yield StringCommand(QuoteString(runner), "init", "--trigger", "deploy")


@operation()
def stale_timers(keep: list[str], directory: str = "/etc/systemd/system"):
    """
    Timers of backup jobs no longer in the site file are stopped and removed.

    + keep: job names whose timers stay
    """
    found = [f for f in host.get_fact(FindFiles, path=directory, quote_path=True) or []
             if fnmatch.fnmatch(os.path.basename(f), "siaga-backup-*.timer")]
    stale = [f for f in found if os.path.basename(f)[len("siaga-backup-"):-len(".timer")] not in keep]
    stale += [f[:-len(".timer")] + ".service" for f in stale]
    if not stale:
        host.noop("no stale backup timers")
        return
    for path in stale:
        name = os.path.basename(path)
        yield StringCommand("systemctl", "disable", "--now", QuoteString(name), "||", "true")
        yield StringCommand("rm", "-f", QuoteString(path))


def later_changes(op_hash: str) -> list[str]:
    """Names of the operations after `op_hash` on this host that pyinfra found would change
    something when it planned the deploy. Operations with `_if` (restart after a change, ...)
    are left out: they only act when one of the others changes."""
    order = state.get_op_order()
    if op_hash not in order:
        return []
    out = []
    for h in order[order.index(op_hash) + 1:]:
        data = state.ops.get(host, {}).get(h)
        if data is None or data.global_arguments.get("_if"):
            continue
        if data.operation_meta.will_change:
            out.append(", ".join(state.get_op_meta(h).names) or h)
    return out


@operation()
def prechange_backup(runner: str, has_data: bool, backups_ready: bool):
    """
    SOP BK-2: before the data tier changes the database, the application or their configuration
    on this host, take a backup (`siaga-backup run prechange`) and stop the deploy if it fails.

    What will change is pyinfra's own plan: when this operation executes, every later operation
    of this host has already been planned and knows whether it changes something. Planning
    (and --dry) cannot know yet, so this operation shows no change there; it acts only in a real
    run. Override: SIAGA_SKIP_PRECHANGE_BACKUP='<reason>' in the deploy's environment, recorded in
    the host's backup log.

    + runner: path of siaga-backup on the host
    + has_data: this host's PostgreSQL is a primary holding user databases (read at planning)
    + backups_ready: siaga-backup is installed and its repositories initialised (read at planning)
    """
    if not state.is_executing or not has_data:
        host.noop(f"no pre-change backup needed ({'planning only' if not state.is_executing else 'no data here'})")
        return
    changes = later_changes(host.current_op_hash)
    if not changes:
        host.noop("nothing will change: no pre-change backup")
        return
    reason = os.environ.get(SKIP_ENV, "").strip()
    by = os.environ.get("SUDO_USER") or os.environ.get("USER") or "unknown"
    if reason:
        if not backups_ready:
            yield StringCommand("logger", "-t", "siaga-backup", QuoteString(f"BK-2 pre-change backup skipped by {by}: {reason}"))
            return
        yield StringCommand(QuoteString(runner), "skip", "--reason", QuoteString(reason[:500]), "--by", QuoteString(by),
                            "--trigger", "pre-change")
        return
    if not backups_ready:
        yield StringCommand("sh", "-c", QuoteString(
            "echo 'siaga: BK-2: this database holds data and will be changed, but backups are not set up here yet. "
            f"Set {SKIP_ENV}=<reason> to go on once (recorded); the deploy then sets up backups.' >&2; exit 1"))
        return
    yield StringCommand(QuoteString(runner), "run", "prechange", "--trigger", "pre-change", "--by", QuoteString(by))


@operation()
def unit_file(dest: str, content: str | None):
    """
    A systemd unit file of the backup jobs: written when `content` is given, removed when None
    (the job runs on the other host). One operation for both, so loops keep one order.

    + dest: path of the unit file
    + content: its text, or None for absent
    """
    if content is None:
        if host.get_fact(File, path=dest):
            yield StringCommand("systemctl", "disable", "--now", QuoteString(os.path.basename(dest)), "||", "true")
            yield StringCommand("rm", "-f", QuoteString(dest))
        else:
            host.noop(f"{dest} absent")
        return
    if (yield from content_is_current(dest, content, 0o644)):
        return
    log_diff(dest, content)
    yield from upload(content, dest, 0o644)


@operation()
def deb_backport(package: str, version: str, url: str, sha256: str, depends: str, installer: str):
    """
    A package from a newer Debian release installed as a backport (see files/siaga-deb-backport),
    unless that exact version is installed already.

    + package: Debian package name
    + version: the backport's version string on this host
    + url: the original .deb on the Debian mirror
    + sha256: its pinned checksum
    + depends: the Depends line rewritten to this release's package names
    + installer: path of siaga-deb-backport on the host
    """
    if version in host.get_fact(DebPackages).get(package, []):
        host.noop(f"{package} {version} installed")
        return
    yield StringCommand(QuoteString(installer), "--url", QuoteString(url), "--sha256", QuoteString(sha256),
                        "--version", QuoteString(version), "--depends", QuoteString(depends))
