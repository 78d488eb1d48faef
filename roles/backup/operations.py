"""Operations the backup role needs and pyinfra lacks. Each reads facts and yields commands."""

from __future__ import annotations

import fnmatch
import os

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation
from pyinfra.facts.files import File, FindFiles

from roles.managed_files import content_is_current, log_diff, upload

from drc.site.platform import version_tuple

from .prechange import SKIP_ENV



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


@operation()
def prechange_backup(runner: str, sets: list[str], why: str, ready: bool, by: str, skip_reason: str = "",
                     record_skip: bool = False, problem: str = ""):
    """
    SOP BK-2: the backups this host takes before the data tier changes the database or the
    application (roles/backup/prechange.py decides, at plan time, from the hosts' files). On the
    repository host `sets` is ['db'] (pgBackRest runs there); on the data host the file sets.
    Planned like any operation: `--dry` shows it as a change, with its reason in its name. If it
    fails the deploy stops (data_tier.py sets FAIL_PERCENT=0) before any change on any host.

    + runner: path of siaga-backup on the host
    + sets: what to back up here (empty: nothing needed; `why` says why)
    + why: the reason, recorded with each run (`details.why`)
    + ready: siaga-backup is installed and its repositories initialised here (read at planning)
    + by: who runs the deploy (recorded)
    + skip_reason: SIAGA_SKIP_PRECHANGE_BACKUP's reason: no backup, the skip is recorded instead
    + record_skip: this host records the skip (the data host: one record per skip)
    + problem: the backup cannot be taken in this deploy (e.g. the repository host is not in it)
    """
    if not sets and not problem:
        host.noop(f"no pre-change backup here: {why}")
        return
    if skip_reason:
        if not record_skip:
            host.noop(f"pre-change backup skipped ({SKIP_ENV}): {skip_reason}")
        elif ready:
            yield StringCommand(QuoteString(runner), "skip", "--reason", QuoteString(skip_reason), "--by", QuoteString(by),
                                "--trigger", "pre-change")
        else:
            yield StringCommand("logger", "-t", "siaga-backup",
                                QuoteString(f"BK-2 pre-change backup skipped by {by}: {skip_reason}"))
        return
    if problem or not ready:
        message = problem or ("this database holds data and will be changed, but backups are not set up here yet. "
                              f"Set {SKIP_ENV}=<reason> to go on once (recorded); the deploy then sets up backups")
        yield StringCommand("sh", "-c", QuoteString('echo "siaga: BK-2: $1" >&2; exit 1'), "bk2", QuoteString(message))
        return
    if sets == ["db"]:
        yield StringCommand(QuoteString(runner), "run", "db", "--trigger", "pre-change", "--by", QuoteString(by),
                            "--why", QuoteString(why[:1000]))
        return
    include = [x for s in sets for x in ("--only", QuoteString(s))]
    yield StringCommand(QuoteString(runner), "run", "prechange", *include, "--trigger", "pre-change", "--by", QuoteString(by),
                        "--why", QuoteString(why[:1000]))


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
def writer_recorded(record: str, installed: str | None, recorded: str | None):
    """
    The record of the newest pgBackRest that wrote the repository is at least the installed one
    (read by the next deploy: roles/backup/versions.py).

    + record: the record file on the repository host
    + installed: pgbackrest's installed version when planned (None: installed by this run)
    + recorded: the record's content (None: no record yet)
    """
    if recorded and installed and version_tuple(installed) <= version_tuple(recorded):
        host.noop(f"pgBackRest {recorded} recorded")
        return
    f = QuoteString(record)
    yield StringCommand("v=$(dpkg-query -W -f='${Version}' pgbackrest)", "&&", "old=$(cat", f, "2>/dev/null || true)", "&&",
                        "{", "[ -n \"$old\" ]", "&&", "dpkg --compare-versions \"$v\" le \"$old\"", "||",
                        "printf '%s\\n' \"$v\" >", f, ";", "}")

