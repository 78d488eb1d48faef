"""nftables operations (pyinfra has none): a ruleset applied with automatic rollback.

SOP RA-2 (SSH only from permitted addresses) and IN-2 (firewall), without ever locking the
operator out: a new ruleset only stays if a *new* SSH session from the admin workstation still
gets in; otherwise a timer on the host puts the previous ruleset back.
"""

from __future__ import annotations

import time

from pyinfra import host, logger
from pyinfra.api import FunctionCommand, QuoteString, StringCommand, operation
from pyinfra.connectors.ssh import SSHConnector
from pyinfra.connectors.sshuserclient import SSHClient
from pyinfra.facts.systemd import SystemdEnabled

from roles.managed_files import checked, is_current, log_diff, upload

from .facts import NftablesTable

ROLLBACK_UNIT = "siaga-firewall-rollback"
BLOCKED_MESSAGE = "new firewall rules blocked admin SSH; the previous ruleset was restored"


def rollback_script(table: str, path: str, state_dir: str) -> str:
    return f"""#!/bin/sh
# Managed by siaga (roles/firewall). Started by the transient timer {ROLLBACK_UNIT} when a new
# ruleset was not confirmed in time: puts back table inet {table} and {path} as they were before.
nft -f {state_dir}/previous.nft || exit 1
if [ -e {state_dir}/previous.conf ]; then cp -p {state_dir}/previous.conf {path}; else rm -f {path}; fi
logger -t siaga-firewall "new ruleset not confirmed: previous table inet {table} and {path} restored"
"""


@operation()
def nftables_ruleset(
    content: str,
    version: str,
    rollback_seconds: int = 60,
    table: str = "siaga",
    path: str = "/etc/nftables.conf",
    state_dir: str = "/var/lib/siaga/firewall",
):
    """
    Apply an nftables ruleset that owns one table, with automatic rollback.

    + content: the ruleset file; it must replace only ``table inet <table>`` (other tables stay)
    + version: the table comment ``content`` sets; how the loaded table is recognised
    + rollback_seconds: the previous ruleset comes back after this long unless confirmed
    + table: the inet table the ruleset owns
    + path: the file nftables.service loads at boot
    + state_dir: where the previous ruleset and the rollback script are kept on the host

    Steps when something differs: check the file with ``nft -c -f``; save the loaded table and
    ``path``; schedule their restore with a transient systemd timer; load the new ruleset; from
    the controller, open a NEW SSH session (the running one survives through conntrack, so it
    proves nothing). If it gets in: install ``path``, cancel the timer, enable nftables.service.
    If not: wait for the timer to restore the previous ruleset and fail.
    """
    loaded = host.get_fact(NftablesTable, family="inet", table=table)
    table_current = bool(loaded) and loaded["comment"] == version
    enabled = host.get_fact(SystemdEnabled, services=["nftables.service"]).get("nftables.service", False)

    if table_current and is_current(path, content):
        if enabled:
            host.noop(f"table inet {table} is loaded and {path} is up to date")
        else:
            yield StringCommand("systemctl", "enable", "--quiet", "nftables.service")
        return

    log_diff(path, content)
    staged = f"{state_dir}/nftables.conf.new"
    previous = f"{state_dir}/previous.nft"
    script = f"{state_dir}/rollback.sh"

    yield StringCommand("install", "-d", "-m", "700", QuoteString(state_dir))
    yield from upload(content, staged, 0o644)
    yield checked(
        StringCommand("nft", "-c", "-f", QuoteString(staged)), staged,
        "nft -c rejected the new ruleset (see the error above); nothing was changed",
    )

    # Save what is loaded now (only our table) and the boot file, and prove the saved copy loads.
    yield from upload(rollback_script(table, path, state_dir), script, 0o700)
    yield StringCommand(
        "{", "echo", QuoteString(f"table inet {table} {{}}"), ";",
        "echo", QuoteString(f"delete table inet {table}"), ";",
        "nft", "list", "table", "inet", QuoteString(table), "2>/dev/null", "||", "true", ";", "}",
        ">", QuoteString(previous),
    )
    yield checked(
        StringCommand("nft", "-c", "-f", QuoteString(previous)), staged,
        f"the loaded table inet {table} could not be saved in a form nft reloads; nothing was changed",
    )
    yield StringCommand(
        "rm", "-f", QuoteString(f"{state_dir}/previous.conf"), "&&",
        "{", "test", "!", "-e", QuoteString(path), "||",
        "cp", "-p", QuoteString(path), QuoteString(f"{state_dir}/previous.conf"), ";", "}",
    )

    # The rollback is armed before anything changes.
    yield StringCommand(
        "systemctl", "stop", f"{ROLLBACK_UNIT}.timer", "2>/dev/null;",
        "systemctl", "reset-failed", f"{ROLLBACK_UNIT}.timer", f"{ROLLBACK_UNIT}.service", "2>/dev/null;",
        "systemd-run", "--quiet", f"--unit={ROLLBACK_UNIT}", f"--on-active={int(rollback_seconds)}s",
        "--timer-property=AccuracySec=1s", "/bin/sh", QuoteString(script),
    )
    yield StringCommand("nft", "-f", QuoteString(staged))

    if isinstance(host.connector, SSHConnector):
        yield FunctionCommand(_confirm_admin_ssh, (rollback_seconds, script), {})
    else:
        logger.info(f"{host.print_prefix}not an SSH connection: no lockout possible, confirming directly")

    # Confirmed: make it the boot ruleset, then disarm the rollback.
    yield StringCommand(
        "cp", QuoteString(staged), QuoteString(f"{path}.siaga-new"), "&&",
        "chmod", "755", QuoteString(f"{path}.siaga-new"), "&&",
        "mv", "-f", QuoteString(f"{path}.siaga-new"), QuoteString(path),
    )
    yield StringCommand("systemctl", "stop", f"{ROLLBACK_UNIT}.timer")
    # If the timer fired before it was stopped, the previous ruleset is back: say so.
    yield StringCommand(
        "nft", "list", "table", "inet", QuoteString(table), "|", "grep", "-qF", QuoteString(f'comment "{version}"'),
        "||", "{", "echo", QuoteString(
            f"siaga: the rollback timer fired before the new ruleset was confirmed; the previous ruleset "
            f"and {path} are back. Re-run, or raise firewall.rollback_seconds",
        ), ">&2;", "exit", "1;", "}",
    )
    if not enabled:
        yield StringCommand("systemctl", "enable", "--quiet", "nftables.service")
    yield StringCommand("rm", "-f", QuoteString(staged))


def new_ssh_session_error(state, host, timeout: float) -> str | None:
    """Open a fresh SSH session with the host's connection data and run `true`.

    Returns None if it worked, else what went wrong. Runs on the controller (admin workstation).
    """
    kwargs = SSHConnector(state, host).make_paramiko_kwargs()
    hostname = kwargs.pop("hostname")
    kwargs.update(timeout=timeout, banner_timeout=timeout, auth_timeout=timeout)
    client = SSHClient()
    try:
        client.connect(hostname, **kwargs)
        _, stdout, _ = client.exec_command("true", timeout=timeout)
        status = stdout.channel.recv_exit_status()
        return None if status == 0 else f"`true` exited with {status}"
    except Exception as exc:  # any failure to get in counts as blocked
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    finally:
        client.close()


def _confirm_admin_ssh(state, host, rollback_seconds: int, rollback_script_path: str) -> bool:
    """FunctionCommand: True if a new admin SSH session gets in; otherwise wait for the rollback
    and return False (the operation fails with BLOCKED_MESSAGE)."""
    started = time.monotonic()
    attempt_timeout = max(3.0, min(10.0, rollback_seconds / 4))
    # Keep trying for up to half the rollback window (sshd may be slow to accept right after a load).
    while True:
        error = new_ssh_session_error(state, host, attempt_timeout)
        if error is None:
            host.log(f"new SSH session works ({time.monotonic() - started:.1f}s): rules confirmed", logger.info)
            return True
        if time.monotonic() - started > rollback_seconds / 2:
            break
        time.sleep(1)

    host.log_styled(f"new SSH session refused ({error}); waiting for the rollback timer", fg="yellow", log_func=logger.warning)
    deadline = started + rollback_seconds + 30
    while time.monotonic() < deadline:
        time.sleep(2)
        if new_ssh_session_error(state, host, attempt_timeout) is None:
            host.log_styled(
                f"{BLOCKED_MESSAGE} (after {time.monotonic() - started:.0f}s)", fg="red", log_func=logger.error,
            )
            return False
    host.log_styled(
        f"new firewall rules blocked admin SSH and the rollback could not be confirmed within "
        f"{rollback_seconds + 30}s: use the console (or `nsenter` in the lab) and run "
        f"/bin/sh {rollback_script_path}",
        fg="red",
        log_func=logger.error,
    )
    return False
