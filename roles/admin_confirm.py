"""A change that can shut the admin out, kept only if a NEW admin SSH session still gets in.

The one mechanism behind the firewall's ruleset (roles/firewall) and sshd's configuration
(roles/ssh_hardening), SOP RA-2, IN-2: never lock the operator out. The operation that makes the
change first saves what it replaces and writes a script that puts it back, then:

1. `arm(unit, script, seconds)`: a transient systemd timer on the host runs the script after
   `seconds` unless it is stopped: the host undoes the change by itself, whatever happens to the
   controller or its connection;
2. makes the change (load the ruleset, reload sshd);
3. `confirm(...)`: from the controller (admin workstation), a fresh SSH session with the
   inventory's connection data runs `true`. pyinfra's own session proves nothing: conntrack keeps
   it through a new ruleset and sshd keeps it through a reload. If it gets in, the change stays;
   if not, it waits until the timer has undone the change (a new session works again) and fails
   the operation with the caller's message;
4. `disarm(unit)`: stops the timer once the change is confirmed.

The generators yield commands inside an `@operation`, like roles/managed_files.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from pyinfra import host, logger
from pyinfra.api import FunctionCommand, QuoteString, StringCommand
from pyinfra.connectors.ssh import SSHConnector
from pyinfra.connectors.sshuserclient import SSHClient


def arm(unit: str, script: str, seconds: int) -> StringCommand:
    """Schedule `/bin/sh script` in `seconds` as the transient timer `unit` (replacing a stale one)."""
    return StringCommand(
        "systemctl", "stop", f"{unit}.timer", "2>/dev/null;",
        "systemctl", "reset-failed", f"{unit}.timer", f"{unit}.service", "2>/dev/null;",
        "systemd-run", "--quiet", f"--unit={unit}", f"--on-active={int(seconds)}s",
        "--timer-property=AccuracySec=1s", "/bin/sh", QuoteString(script),
    )


def disarm(unit: str) -> StringCommand:
    return StringCommand("systemctl", "stop", f"{unit}.timer")


def confirm(rollback_seconds: int, script: str, blocked_message: str, what: str) -> Iterator:
    """Yield the controller-side check of step 3 (nothing to check on a non-SSH connection)."""
    if isinstance(host.connector, SSHConnector):
        yield FunctionCommand(_confirm_admin_ssh, (rollback_seconds, script, blocked_message, what), {})
    else:
        logger.info(f"{host.print_prefix}not an SSH connection: no lockout possible, confirming {what} directly")


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


def _confirm_admin_ssh(state, host, rollback_seconds: int, script: str, blocked_message: str, what: str) -> bool:
    """FunctionCommand: True if a new admin SSH session gets in; otherwise wait for the host's
    rollback and return False (the operation fails; `blocked_message` says why)."""
    started = time.monotonic()
    attempt_timeout = max(3.0, min(10.0, rollback_seconds / 4))
    # Keep trying for up to half the rollback window (sshd may be slow to accept right after a change).
    while True:
        error = new_ssh_session_error(state, host, attempt_timeout)
        if error is None:
            host.log(f"new SSH session works ({time.monotonic() - started:.1f}s): {what} confirmed", logger.info)
            return True
        if time.monotonic() - started > rollback_seconds / 2:
            break
        time.sleep(1)

    host.log_styled(f"new SSH session refused after the {what} ({error}); waiting for the rollback timer",
                    fg="yellow", log_func=logger.warning)
    deadline = started + rollback_seconds + 30
    while time.monotonic() < deadline:
        time.sleep(2)
        if new_ssh_session_error(state, host, attempt_timeout) is None:
            host.log_styled(f"{blocked_message} (after {time.monotonic() - started:.0f}s)", fg="red", log_func=logger.error)
            return False
    host.log_styled(
        f"the {what} blocked admin SSH and the rollback could not be confirmed within {rollback_seconds + 30}s: "
        f"use the console (or `nsenter` in the lab) and run /bin/sh {script}",
        fg="red",
        log_func=logger.error,
    )
    return False
