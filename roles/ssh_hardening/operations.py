"""Operations for sshd that pyinfra lacks: a config that is tested before it goes live, host keys,
DH moduli. Each reads facts and yields commands, like pyinfra's own operations."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation
from pyinfra.facts.files import File

from roles import admin_confirm
from roles.managed_files import checked, content_is_current, log_diff, sha1_of, upload

from .facts import WeakDhModuli

SSHD = "/usr/sbin/sshd"


ROLLBACK_UNIT = "siaga-sshd-rollback"
BLOCKED_MESSAGE = "the new sshd_config shut out admin SSH; the previous sshd_config was restored"


def rollback_script(path: str, previous: str, service: str) -> str:
    return f"""#!/bin/sh
# Managed by siaga (roles/ssh_hardening). Started by the transient timer {ROLLBACK_UNIT} when a new
# sshd_config was not confirmed in time by a new admin SSH session: puts the previous one back.
cp -p {previous} {path}.siaga-rollback && mv -f {path}.siaga-rollback {path} || exit 1
systemctl reload {service}
logger -t siaga-sshd "new sshd_config not confirmed: previous {path} restored, sshd reloaded"
"""


@operation()
def sshd_config(
    content: str,
    path: str = "/etc/ssh/sshd_config",
    service: str = "ssh.service",
    rollback_seconds: int = 60,
    state_dir: str = "/var/lib/siaga/sshd",
):
    """
    Install an sshd configuration only if ``sshd -t`` accepts it, reload sshd, and keep it only if
    a new admin SSH session still gets in.

    + content: the whole sshd_config text
    + path: the live configuration file
    + service: the systemd unit reloaded after a change
    + rollback_seconds: the previous configuration comes back after this long unless confirmed
    + state_dir: where the previous configuration and the rollback script are kept on the host

    The new text is staged beside ``path`` and tested with ``sshd -t -f``; a rejected config is
    removed, the live file is left as it was, sshd is not reloaded and the operation fails.
    ``sshd -t`` passes configs that shut the admin out (``AllowGroups`` without the admins, a port
    nobody connects on), so the change is confirmed like the firewall's (roles/admin_confirm.py):
    previous file saved, rollback timer armed, new file in place, reload, a NEW admin session from
    the controller; refused, the host's timer puts the previous file back and reloads sshd.
    """
    if (yield from content_is_current(path, content, 0o600)):
        return

    log_diff(path, content)
    staged = f"{path}.siaga-new"
    previous = f"{state_dir}/previous.sshd_config"
    script = f"{state_dir}/rollback.sh"
    yield from upload(content, staged, 0o600)
    yield checked(
        StringCommand(SSHD, "-t", "-f", QuoteString(staged)), staged,
        f"sshd -t rejected the new sshd_config (see the error above); {path} is unchanged and sshd was not reloaded",
    )
    # What the rollback puts back, and the script that does it, before anything changes.
    yield StringCommand("install", "-d", "-m", "700", QuoteString(state_dir))
    yield StringCommand("cp", "-p", QuoteString(path), QuoteString(previous))
    yield from upload(rollback_script(path, previous, service), script, 0o700)
    yield admin_confirm.arm(ROLLBACK_UNIT, script, rollback_seconds)
    yield StringCommand("mv", "-f", QuoteString(staged), QuoteString(path))
    # sshd re-reads its config on reload; established sessions (this one too) stay up.
    yield StringCommand("systemctl", "reload", QuoteString(service))
    yield from admin_confirm.confirm(rollback_seconds, script, BLOCKED_MESSAGE, "new sshd_config")
    yield admin_confirm.disarm(ROLLBACK_UNIT)
    # If the timer fired before it was stopped, the previous file is back: say so.
    yield StringCommand(
        "echo", QuoteString(f"{sha1_of(content)}  {path}"), "|", "sha1sum", "-c", "--status", "||",
        "{", "echo", QuoteString(
            f"siaga: the rollback timer fired before the new sshd_config was confirmed; the previous {path} "
            f"is back. Re-run, or raise firewall.rollback_seconds",
        ), ">&2;", "exit", "1;", "}",
    )


@operation()
def host_key(key_type: str, bits: int | None = None, directory: str = "/etc/ssh"):
    """
    Ensure an SSH host key of ``key_type`` exists (generated once, never replaced).

    + key_type: ``ed25519`` or ``rsa``
    + bits: key size for RSA
    + directory: where sshd's host keys live
    """
    path = f"{directory}/ssh_host_{key_type}_key"
    if host.get_fact(File, path=path):
        host.noop(f"{path} exists")
        return
    size = ["-b", str(bits)] if bits else []
    yield StringCommand("ssh-keygen", "-q", "-t", key_type, *size, "-N", "''", "-C", "''", "-f", QuoteString(path))


@operation()
def dh_moduli(minimum_bits: int, path: str = "/etc/ssh/moduli"):
    """
    Remove Diffie-Hellman group-exchange primes smaller than ``minimum_bits`` from the moduli file.

    + minimum_bits: smallest prime size kept (e.g. 3072)
    + path: sshd's moduli file

    The file is left untouched if filtering would leave it empty.
    """
    weak = host.get_fact(WeakDhModuli, minimum_bits=minimum_bits, path=path)
    if not weak:
        host.noop(f"{path} has no primes below {minimum_bits} bits")
        return
    staged = f"{path}.siaga-new"
    keep = f"$1 ~ /^#/ || $5 >= {int(minimum_bits) - 1}"
    yield StringCommand("awk", QuoteString(keep), QuoteString(path), ">", QuoteString(staged))
    yield StringCommand(
        "if grep -qv '^#'", QuoteString(staged), "; then chmod 644", QuoteString(staged), "&& mv -f",
        QuoteString(staged), QuoteString(path), "; else rm -f", QuoteString(staged),
        "; echo 'siaga: no DH primes would be left; moduli file unchanged' >&2; exit 1; fi",
    )
