"""Secrets siaga generates on the admin workstation and hands to hosts without showing them.

Where they live: ``<secrets_dir>/<name>``, by default ``~/.local/state/siaga/<site>/`` (outside any
repository; the directory 0700, each file 0600). A role setting ``secrets_dir`` moves them, e.g.
into the lab's own directory so `siaga lab down` removes them with the lab.

They never appear on a command line, in a log or in ``--diff`` output: a password travels to a host
only inside a file uploaded over SFTP into a root-owned 0700 staging directory, and is copied onto a
destination that already exists with its final owner and mode 0600 (``cp`` keeps both). SOP BK-8
treats password data as secret.
"""

from __future__ import annotations

import hashlib
import os
import secrets as _random
import string
import subprocess
from io import StringIO
from pathlib import Path

from pyinfra import host
from pyinfra.api import FileUploadCommand, OperationError, QuoteString, StringCommand, operation
from pyinfra.facts.files import File, Sha1File

ALPHABET = string.ascii_letters + string.digits  # nothing that needs quoting in .pgpass or conninfo


class SecretError(RuntimeError):
    pass


def secrets_dir(site_name: str, configured: str | Path | None = None) -> Path:
    """The directory holding this site's secrets on the admin workstation (created 0700)."""
    base = Path(configured).expanduser() if configured else (
        Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local/state") / "siaga" / site_name
    )
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    if base.stat().st_mode & 0o077:
        os.chmod(base, 0o700)
    return base


def _check_private(path: Path) -> None:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise SecretError(f"{path} is readable by others (mode {mode:o}). Fix: chmod 600 {path}, and treat it as leaked")


def ensure_password(directory: Path, name: str, length: int = 40) -> str:
    """The password stored in ``directory/name``; generated (0600) on first use, never printed."""
    path = directory / name
    if not path.exists():
        value = "".join(_random.choice(ALPHABET) for _ in range(length))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(value + "\n")
    _check_private(path)
    value = path.read_text().strip()
    if not value or any(c not in ALPHABET for c in value):
        raise SecretError(f"{path}: expected one line of letters and digits. Fix: delete it to generate a new one (and re-deploy)")
    return value


def ensure_ssh_key(directory: Path, name: str, comment: str) -> tuple[str, str]:
    """(private key text, public key line) of an ed25519 key kept in ``directory/name``."""
    path = directory / name
    if not path.exists():
        old = os.umask(0o077)
        try:
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                           check=True, capture_output=True)
        finally:
            os.umask(old)
    _check_private(path)
    return path.read_text(), path.with_name(name + ".pub").read_text().strip()


def sha1_text(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


@operation()
def secret_file(dest: str, content: str, user: str = "root", group: str = "root", mode: int = 0o600):
    """
    A file holding a secret: created with its owner and mode before any byte of it is written,
    replaced only when its content differs, never shown in ``--diff``.

    + dest: path on the host
    + content: the text (kept out of every log)
    + user, group: owner of the file
    + mode: permission bits, 0600 unless a reader in the group needs it
    """
    if mode & 0o007:
        raise OperationError(f"secret_file {dest}: mode {mode:o} lets everyone read it")
    info = host.get_fact(File, path=dest)
    current = host.get_fact(Sha1File, path=dest) if info else None
    if info and current == sha1_text(content):
        changed = False
        if info["user"] != user or info["group"] != group:
            changed = True
            yield StringCommand("chown", f"{user}:{group}", QuoteString(dest))
        if info["mode"] != int(f"{mode:o}"):
            changed = True
            yield StringCommand("chmod", f"{mode:o}", QuoteString(dest))
        if not changed:
            host.noop(f"{dest} holds the current secret")
        return
    ssh_user = host.data.get("ssh_user") or "root"
    staging = f"/run/siaga-upload-{ssh_user}"
    staged = f"{dest}.siaga-new"
    # A root-owned parent (/run), a 0700 directory of the SSH user: nobody else can open the
    # SFTP temp file. The destination exists 0600 before `cp` writes into it.
    yield StringCommand("install", "-d", "-m", "700", "-o", QuoteString(ssh_user), QuoteString(staging))
    yield StringCommand("install", "-m", f"{mode:o}", "-o", QuoteString(user), "-g", QuoteString(group),
                        "/dev/null", QuoteString(staged))
    yield FileUploadCommand(StringIO(content), staged,
                            remote_temp_filename=f"{staging}/{sha1_text(dest)}")
    yield StringCommand("mv", "-f", QuoteString(staged), QuoteString(dest))
