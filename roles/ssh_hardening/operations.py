"""Operations for sshd that pyinfra lacks: a config that is tested before it goes live, host keys,
DH moduli. Each reads facts and yields commands, like pyinfra's own operations."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation
from pyinfra.facts.files import File

from roles.managed_files import content_is_current, log_diff, validated_install

from .facts import WeakDhModuli

SSHD = "/usr/sbin/sshd"


@operation()
def sshd_config(content: str, path: str = "/etc/ssh/sshd_config", service: str = "ssh.service"):
    """
    Install an sshd configuration only if ``sshd -t`` accepts it, then reload sshd.

    + content: the whole sshd_config text
    + path: the live configuration file
    + service: the systemd unit reloaded after a change

    The new text is staged beside ``path`` and tested with ``sshd -t -f``; a rejected config is
    removed, the live file is left as it was, sshd is not reloaded and the operation fails.
    """
    if (yield from content_is_current(path, content, 0o600)):
        return

    log_diff(path, content)
    yield from validated_install(
        content,
        path,
        check=lambda staged: StringCommand(SSHD, "-t", "-f", QuoteString(staged)),
        failure=f"sshd -t rejected the new sshd_config (see the error above); {path} is unchanged and sshd was not reloaded",
        mode=0o600,
    )
    # sshd re-reads its config on reload; established sessions (this one too) stay up.
    yield StringCommand("systemctl", "reload", QuoteString(service))


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
