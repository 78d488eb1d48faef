"""Helpers the roles share for the files they manage: diffs, validated installs, config files.

pyinfra's `files.*` operations have no validate hook, so a file that a daemon reads (sshd_config,
sudoers, the nftables ruleset) is staged beside its destination, checked by the program that reads
it, and only then moved into place. The generators here yield commands; they are meant to be used
inside an `@operation` with `yield from`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from io import StringIO
from pathlib import Path

from pyinfra import host, logger, state
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand, operation
from pyinfra.facts.files import File, FileContents, Sha1File
from pyinfra.operations.util.files import generate_color_diff

from roles.templating import MANAGED_HEADER, sha1_of  # noqa: F401 (re-exported: roles import them from here)
from roles.upload_staging import staging_path


def is_current(path: str, content: str) -> bool:
    """True when the file on the host has exactly this content."""
    return host.get_fact(Sha1File, path=path) == sha1_of(content)


def log_diff(path: str, content: str) -> None:
    """With `--diff`, show what would change in `path`, the way files.put does."""
    if not state.config.DIFF:
        return
    current = host.get_fact(FileContents, path=path)
    host.log(f"Will {'modify' if current is not None else 'create'} {path}", logger.info)
    current_lines = [line + "\n" for line in current or []]
    for line in generate_color_diff(current_lines, content.splitlines(keepends=True)):
        logger.info("  %s", line)
    logger.info("")


def fix_ownership(path: str, mode: int, user: str = "root", group: str = "root") -> Iterator[StringCommand]:
    """Yield chown/chmod only where the existing file differs."""
    info = host.get_fact(File, path=path)
    if not info:
        return
    if info["user"] != user or info["group"] != group:
        yield StringCommand("chown", f"{user}:{group}", QuoteString(path))
    if info["mode"] != int(f"{mode:o}"):
        yield StringCommand("chmod", f"{mode:o}", QuoteString(path))


def content_is_current(path: str, content: str, mode: int, user: str = "root", group: str = "root"):
    """Generator: if `path` already has `content`, yield only owner/mode fixes (or log a no-op)
    and return True; otherwise yield nothing and return False. Use `if (yield from ...): return`."""
    if not is_current(path, content):
        return False
    commands = list(fix_ownership(path, mode, user, group))
    if not commands:
        host.noop(f"{path} is up to date")
    yield from commands
    return True


def upload(content: str, dest: str, mode: int, user: str = "root", group: str = "root") -> Iterator:
    """Upload `content` to `dest` with the given owner and mode (no check, no diff)."""
    yield FileUploadCommand(StringIO(content), dest, remote_temp_filename=staging_path(dest))
    yield StringCommand("chown", f"{user}:{group}", QuoteString(dest))
    yield StringCommand("chmod", f"{mode:o}", QuoteString(dest))


def checked(check: StringCommand, staged: str, failure: str) -> StringCommand:
    """`check`; if it fails, remove the staged file and fail with `failure` on stderr."""
    return StringCommand(
        check, "||", "{", "rm", "-f", QuoteString(staged), ";",
        "echo", QuoteString(f"siaga: {failure}"), ">&2;", "exit", "1;", "}",
    )


def validated_install(
    content: str,
    dest: str,
    check: Callable[[str], StringCommand],
    failure: str,
    mode: int,
    user: str = "root",
    group: str = "root",
    staged: str | None = None,
) -> Iterator:
    """Stage `content`, run `check(staged_path)`, and move it over `dest` only if the check passed.

    The staged file sits in the same directory as `dest` so the final `mv` is an atomic rename;
    a rejected file is removed and `dest` is never touched.
    """
    staged = staged or f"{dest}.siaga-new"
    yield from upload(content, staged, mode, user, group)
    yield checked(check(staged), staged, failure)
    yield StringCommand("mv", "-f", QuoteString(staged), QuoteString(dest))


@operation()
def config_file(dest: str, content: str, mode: int = 0o644, restart: str | None = None):
    """
    A plain config file owned by root; restart the ``restart`` unit only when the file changed.

    + dest: path of the file
    + content: its whole text
    + mode: permission bits, e.g. ``0o644``
    + restart: systemd unit to restart after a change
    """
    if (yield from content_is_current(dest, content, mode)):
        return
    log_diff(dest, content)
    yield StringCommand("mkdir", "-p", QuoteString(str(Path(dest).parent)))
    yield from upload(content, dest, mode)
    if restart:
        yield StringCommand("systemctl", "restart", QuoteString(restart))
