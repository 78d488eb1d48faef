"""os_hardening operations pyinfra lacks: kernel settings applied where this host may write them, a
mount's options applied now."""

from __future__ import annotations

from pyinfra import host, logger
from pyinfra.api import QuoteString, StringCommand, operation

from .facts import MountOptions, SysctlState


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


@operation()
def mount_options_applied(path: str, options: list[str]):
    """
    Remount `path` now with these options where it lacks one (its /etc/fstab line applies them at
    every boot). Nothing mounted there: reported, never failed.

    + path: the mount point, e.g. /dev/shm
    + options: mount options it must have, e.g. ["nosuid", "nodev", "noexec"]
    """
    have = host.get_fact(MountOptions, path=path)
    if have is None:
        host.log_styled(f"{path}: nothing mounted there, options not applied now", fg="yellow", log_func=logger.warning)
        return
    if set(options) <= have:
        host.noop(f"{path} is mounted {','.join(options)}")
        return
    yield StringCommand("mount", "-o", QuoteString(",".join(["remount", *options])), QuoteString(path))
