"""Facts the os_hardening role needs and pyinfra lacks. A fact only reads."""

from __future__ import annotations

from pyinfra.api import FactBase, QuoteString, StringCommand


class SysctlState(FactBase):
    """Each key's value in /proc/sys and whether this host may write it:

    .. code:: python

        {"kernel.kptr_restrict": ("rw", "0"), "kernel.yama.ptrace_scope": ("missing", ""), ...}

    "ro": the kernel has the key but /proc/sys is read-only here (a container: the host's kernel
    decides), "missing": this kernel has no such key.
    """

    def command(self, keys: list[str]) -> StringCommand:
        script = ('for k in "$@"; do p=/proc/sys/$(printf %s "$k" | tr . /); '
                  'if [ ! -e "$p" ]; then echo "$k missing"; '
                  'elif [ -w "$p" ]; then echo "$k rw $(tr -s "\\t" " " < "$p")"; '
                  'else echo "$k ro $(tr -s "\\t" " " < "$p")"; fi; done')
        return StringCommand("sh", "-c", QuoteString(script), "sysctl-state", *[QuoteString(k) for k in keys])

    def process(self, output: list[str]) -> dict[str, tuple[str, str]]:
        out = {}
        for line in output:
            key, state, *value = line.split(" ", 2)
            out[key] = (state, value[0].strip() if value else "")
        return out


class AuditAvailable(FactBase):
    """True when this host's kernel takes audit rules from it. False in a container (systemd-detect-virt:
    the kernel's audit is one per machine, and systemd-nspawn's seccomp filter refuses the audit
    netlink socket) and on a kernel booted with audit=0 (auditd's unit does not start then either).
    Independent of whether auditd is installed yet, so the plan is the same on the first run and after."""

    def command(self) -> str:
        return ("if systemd-detect-virt --container --quiet; then echo container; "
                "elif grep -qwE 'audit=(0|off)' /proc/cmdline; then echo off; else echo yes; fi")

    def process(self, output: list[str]) -> bool:
        return bool(output) and output[0].strip() == "yes"


class MountOptions(FactBase):
    """The options `path` is mounted with now, e.g. {"rw", "nosuid", "nodev", "size=2468412k"};
    None when nothing is mounted exactly there."""

    def command(self, path: str) -> StringCommand:
        return StringCommand("findmnt", "-n", "-o", "OPTIONS", "--mountpoint", QuoteString(path), "||", "true")

    def process(self, output: list[str]) -> set[str] | None:
        line = output[0].strip() if output else ""
        return set(line.split(",")) if line else None
