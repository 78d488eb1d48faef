"""os_hardening operations pyinfra lacks: kernel settings applied where this host may write them."""

from __future__ import annotations

from pyinfra import host, logger
from pyinfra.api import QuoteString, StringCommand, operation

from .facts import SysctlState


@operation()
def sysctl_applied(settings: dict[str, str]):
    """
    Set each kernel setting now where it differs and /proc/sys takes it (the boot file in
    /etc/sysctl.d sets them at every boot). Keys this host cannot write are reported, never failed:
    "read-only" in a container (its host's kernel decides them), "missing" on a kernel without them.

    + settings: sysctl key -> value
    """
    state = host.get_fact(SysctlState, keys=sorted(settings))
    readonly, missing, commands = [], [], []
    for key, want in sorted(settings.items()):
        kind, have = state.get(key, ("missing", ""))
        if have.split() == str(want).split():
            continue
        if kind == "rw":
            commands.append(StringCommand("sysctl", "-q", "-w", QuoteString(f"{key}={want}")))
        elif kind == "ro":
            readonly.append(f"{key} (is {have}, wanted {want})")
        else:
            missing.append(key)
    if readonly:
        host.log_styled(f"not applied, /proc/sys is read-only here (a container: its host's kernel decides): {', '.join(readonly)}",
                        fg="yellow", log_func=logger.warning)
    if missing:
        host.log(f"not applied, this kernel has no such setting: {', '.join(missing)}", logger.info)
    if not commands:
        host.noop("the kernel settings this host can write are as wanted")
    yield from commands
