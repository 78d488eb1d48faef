"""Operations of the monitoring role: a configuration file checked by the program that reads it
before it goes live (promtool, amtool, the blackbox exporter), then the daemon reloaded."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation

from roles.managed_files import content_is_current, log_diff, validated_install
from roles.postgresql.operations import as_postgres_sql

from .facts import PgRoleMember


@operation()
def checked_config(dest: str, content: str, check: list[str], unit: str, action: str = "reload", mode: int = 0o644,
                   user: str = "root", group: str = "root", secret: bool = False):
    """
    A configuration file staged beside ``dest``, checked with ``check + [staged path]`` and only
    then moved over it; ``unit`` is then reloaded (or restarted). A rejected file never goes live.

    + dest: the live file
    + content: its whole text
    + check: the checking command, the staged file's path appended
    + unit: the systemd unit that reads the file
    + action: ``reload`` or ``restart``
    + secret: the content holds a secret: no diff is ever shown
    """
    if (yield from content_is_current(dest, content, mode, user, group)):
        return
    if not secret:  # a file with a password in it is never shown, also not with --diff
        log_diff(dest, content)
    yield from validated_install(content, dest, lambda staged: StringCommand(*map(QuoteString, check), QuoteString(staged)),
                                 f"{' '.join(check)} rejected the new {dest}; the live file is unchanged", mode, user, group)
    yield StringCommand("systemctl", action, QuoteString(unit))


@operation()
def pg_role_member(role: str, group: str):
    """
    Grant database role ``group`` (e.g. pg_monitor) to ``role``, on the primary (a standby gets it
    by replication).
    """
    if host.get_fact(PgRoleMember, role=role, group=group):
        host.noop(f"{role} is a member of {group}")
        return
    yield as_postgres_sql(f"GRANT {group} TO {role}")
