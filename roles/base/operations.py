"""Operations the base role needs and pyinfra lacks. Each reads facts and yields commands."""

from __future__ import annotations

import time

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation
from pyinfra.facts.files import FileContents, Link
from pyinfra.facts.server import Groups
from pyinfra.operations import files, server

from roles.managed_files import content_is_current, log_diff, upload, validated_install

from .facts import Account, Passwd

ZONEINFO = "/usr/share/zoneinfo"


@operation()
def timezone(timezone: str):
    """
    Set the system timezone: ``/etc/localtime`` links to the zone, ``/etc/timezone`` names it.

    + timezone: an IANA zone name, e.g. ``Asia/Jakarta`` (WIB), ``Asia/Makassar`` (WITA),
      ``Asia/Jayapura`` (WIT)
    """
    zone_file = f"{ZONEINFO}/{timezone}"
    link = host.get_fact(Link, path="/etc/localtime")
    if not link or link["link_target"] != zone_file:
        yield StringCommand(
            "test -f", QuoteString(zone_file), "|| {",
            "echo", QuoteString(f"siaga: unknown timezone {timezone} (no {zone_file})"), ">&2; exit 1; }",
        )
        yield StringCommand("ln", "-sfn", QuoteString(zone_file), "/etc/localtime")
    current = host.get_fact(FileContents, path="/etc/timezone")
    if current != [timezone]:
        yield from upload(f"{timezone}\n", "/etc/timezone", 0o644)
    if link and link["link_target"] == zone_file and current == [timezone]:
        host.noop(f"timezone is {timezone}")


@operation()
def sudoers_file(filename: str, content: str):
    """
    Install a sudoers drop-in ``/etc/sudoers.d/<filename>`` only if ``visudo -cf`` accepts it.

    + filename: file name in /etc/sudoers.d (no dot: sudo skips names containing one)
    + content: the drop-in text

    A rejected file never reaches /etc/sudoers.d under its real name, so sudo keeps working.
    """
    if "." in filename or "/" in filename:
        raise ValueError(f"sudoers drop-in name {filename!r} must not contain '.' or '/'")
    path = f"/etc/sudoers.d/{filename}"
    if (yield from content_is_current(path, content, 0o440)):
        return
    log_diff(path, content)
    yield from validated_install(
        content,
        path,
        # The staged name contains a dot, so sudo ignores it even if it were left behind.
        check=lambda staged: StringCommand("visudo", "-cf", QuoteString(staged)),
        failure=f"visudo rejected the new {path}; sudo rules are unchanged",
        mode=0o440,
    )


@operation()
def locked_account(user: str, group: str):
    """
    Lock a former admin's account: password locked, account expired (so PAM refuses key logins
    too) and removed from ``group``. The account and its files stay for the audit trail.

    + user: the account name
    + group: the admin group it must leave
    """
    account = host.get_fact(Account, user=user)
    if account is None:
        host.noop(f"no account {user}")
        return
    today = int(time.time() // 86400)
    expired = account["expire_day"] is not None and account["expire_day"] <= today
    if not (account["locked"] and expired):
        yield StringCommand("usermod", "--lock", "--expiredate", "1", QuoteString(user))
    if group in account["groups"]:
        yield StringCommand("gpasswd", "--delete", QuoteString(user), QuoteString(group))
    if account["locked"] and expired and group not in account["groups"]:
        host.noop(f"{user} is locked, expired and not in {group}")


@operation()
def unexpired_account(user: str):
    """
    Clear the expiry of an account that is expired, e.g. an admin listed again after having been
    in ``removed_admins``. Password locks are left alone: admins log in with keys.

    + user: the account name
    """
    account = host.get_fact(Account, user=user)
    today = int(time.time() // 86400)
    if account and account["expire_day"] is not None and account["expire_day"] <= today:
        yield StringCommand("usermod", "--expiredate", "''", QuoteString(user))
    else:
        host.noop(f"{user} is not expired")


@operation()
def admin_account(user: str, groups: list[str], public_keys: list[str], shell: str = "/bin/bash",
                  comment: str | None = None):
    """
    An admin's account: created with a home if missing, in ``groups`` (appended, other groups
    kept), with this shell and comment, its home owned by it, and exactly ``public_keys`` in
    ``~/.ssh/authorized_keys`` (pyinfra's ``server.user`` with ``append`` and ``delete_keys``,
    reading one ``getent`` instead of every account on the host).

    + user: the account name
    + groups: supplementary groups it must be in
    + public_keys: its SSH keys, exactly (others are removed)
    + shell: login shell
    + comment: GECOS field (full name)
    """
    entry = host.get_fact(Passwd, user=user)
    home = entry["home"] if entry else f"/home/{user}"
    joined = QuoteString(",".join(groups))
    if entry is None:
        args = ["-d", QuoteString(home), "-s", QuoteString(shell)]
        if user in host.get_fact(Groups):
            args += ["-g", QuoteString(user)]
        if groups:
            args += ["-G", joined]
        if comment:
            args += ["-c", QuoteString(comment)]
        yield StringCommand("useradd", *args, "-m", QuoteString(user))
    else:
        account = host.get_fact(Account, user=user)
        mod = []
        if entry["shell"] != shell:
            mod += ["-s", QuoteString(shell)]
        if groups and not set(groups).issubset(account["groups"] if account else []):
            mod += ["-a", "-G", joined]
        if comment and entry["comment"] != comment:
            mod += ["-c", QuoteString(comment)]
        if mod:
            yield StringCommand("usermod", *mod, QuoteString(user))
    yield from files.directory._inner(path=home, user=user, group=user, _no_fail_on_link=True)
    yield from server.user_authorized_keys._inner(user=user, public_keys=public_keys, group=None, delete_keys=True,
                                                  authorized_key_directory=f"{home}/.ssh", authorized_key_filename=None)
