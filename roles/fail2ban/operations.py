"""fail2ban operations pyinfra lacks: its configuration tested as a whole before it goes live."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation

from roles.managed_files import is_current, log_diff, upload

CONFIG_DIR = "/etc/fail2ban"


@operation()
def fail2ban_config(files: dict[str, str], running: bool, staged_dir: str = "/var/lib/siaga/fail2ban/staged"):
    """
    fail2ban's files (paths under /etc/fail2ban -> text), tested with ``fail2ban-client -t`` on a
    copy of the whole configuration with the new files in it, then installed; fail2ban reloaded
    (bans are kept) or started.

    + files: the files siaga owns in /etc/fail2ban
    + running: whether fail2ban runs now (reload) or not (start)
    + staged_dir: where the copy is tested

    A rejected configuration leaves /etc/fail2ban as it was and fails the operation.
    """
    changed = {path: text for path, text in files.items() if not is_current(path, text)}
    if not changed:
        if running:
            host.noop("fail2ban's configuration is up to date and it runs")
        else:
            yield StringCommand("systemctl", "start", "fail2ban.service")
        return
    for path, text in changed.items():
        log_diff(path, text)
    yield StringCommand("rm", "-rf", QuoteString(staged_dir), "&&", "install", "-d", "-m", "700", QuoteString(staged_dir),
                        "&&", "cp", "-a", f"{CONFIG_DIR}/.", QuoteString(staged_dir))
    for path, text in changed.items():
        yield from upload(text, staged_dir + path.removeprefix(CONFIG_DIR), 0o644)
    yield StringCommand(
        "fail2ban-client", "-c", QuoteString(staged_dir), "-t", ">/dev/null", "||", "{", "rm", "-rf", QuoteString(staged_dir), ";",
        "echo", QuoteString("siaga: fail2ban-client -t rejected the new configuration (see the error above); /etc/fail2ban is unchanged"),
        ">&2;", "exit", "1;", "}",
    )
    for path in changed:
        yield StringCommand("cp", "-p", QuoteString(staged_dir + path.removeprefix(CONFIG_DIR)), QuoteString(f"{path}.siaga-new"),
                            "&&", "mv", "-f", QuoteString(f"{path}.siaga-new"), QuoteString(path))
    yield StringCommand("rm", "-rf", QuoteString(staged_dir))
    yield StringCommand("systemctl", "reload" if running else "restart", "fail2ban.service")
