"""Secrets siaga keeps on the admin workstation and hands to hosts without showing them.

Where they live: ``<secrets_dir>/<name>``, by default ``~/.local/state/siaga/<site>/`` (outside any
repository; the directory 0700, each file 0600). A role setting ``secrets_dir`` moves them, e.g.
into the lab's own directory so `siaga lab down` removes them with the lab.

Nothing here makes a secret on first use: which secrets are made, fetched back from the hosts or
refused is decided once per deploy by ``roles/secret_custody.py`` (an existing secret is never
replaced implicitly: SOP BK-8). The roles only *read* them here (``read_password``,
``read_ssh_key``).

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


def secrets_path(site_name: str, configured: str | Path | None = None) -> Path:
    """Where this site's secrets live on the admin workstation (nothing created)."""
    if configured:
        return Path(configured).expanduser()
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local/state") / "siaga" / site_name


def secrets_dir(site_name: str, configured: str | Path | None = None) -> Path:
    """The directory holding this site's secrets on the admin workstation (created 0700)."""
    return private_dir(secrets_path(site_name, configured))


def private_dir(path: Path) -> Path:
    """`path` as a directory only its owner can enter (created, or its mode fixed, 0700)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def check_private(path: Path) -> None:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise SecretError(f"{path} is readable by others (mode {mode:o}). Fix: chmod 600 {path}, and treat it as leaked")


def _missing(path: Path) -> SecretError:
    return SecretError(f"{path}: missing on this workstation. Fix: run the data-tier or site deploy, whose secret "
                       "custody step (roles/secret_custody.py) fetches it from the hosts, or makes it for a new site")


def write_private(path: Path, text: str) -> None:
    """A new file holding a secret: created 0600 before a byte is written, never over an existing one."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def valid_password(value: str) -> bool:
    return bool(value) and all(c in ALPHABET for c in value)


def read_password(directory: Path, name: str) -> str:
    """The password stored in ``directory/name`` (never printed). Missing: SecretError."""
    path = directory / name
    if not path.exists():
        raise _missing(path)
    check_private(path)
    value = path.read_text().strip()
    if not valid_password(value):
        raise SecretError(f"{path}: expected one line of letters and digits. Fix: if the hosts hold this secret, move "
                          f"the file away and deploy: siaga fetches the hosts' copy")
    return value


def generate_password(directory: Path, name: str, length: int = 40) -> str:
    """A new random password in ``directory/name`` (0600). Only for a secret no host holds
    (roles/secret_custody decides); refuses to replace an existing file."""
    value = "".join(_random.choice(ALPHABET) for _ in range(length))
    write_private(directory / name, value + "\n")
    return value


def public_key_of(private_key: Path) -> str:
    """The public key line (with its comment) of an OpenSSH private key file, by ssh-keygen."""
    out = subprocess.run(["ssh-keygen", "-y", "-f", str(private_key)], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def read_ssh_key(directory: Path, name: str) -> tuple[str, str]:
    """(private key text, public key line) of the key kept in ``directory/name`` (+ ``.pub``; made
    from the private key when only that is there). Missing: SecretError."""
    path = directory / name
    if not path.exists():
        raise _missing(path)
    check_private(path)
    pub = path.with_name(name + ".pub")
    if not pub.exists():
        pub.write_text(public_key_of(path) + "\n")
    return path.read_text(), pub.read_text().strip()


def generate_ssh_key(directory: Path, name: str, comment: str) -> tuple[str, str]:
    """A new ed25519 key pair in ``directory/name`` (0600) and ``.pub``. Only for a key no host
    holds (roles/secret_custody decides); refuses to replace an existing file."""
    path = directory / name
    if path.exists():
        raise SecretError(f"{path} exists: siaga never replaces a key implicitly")
    private_dir(directory)
    path.with_name(name + ".pub").unlink(missing_ok=True)  # a stale half of another pair
    old = os.umask(0o077)
    try:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                       check=True, capture_output=True)
    finally:
        os.umask(old)
    return read_ssh_key(directory, name)


def store_ssh_key(directory: Path, name: str, private_key: str) -> tuple[str, str]:
    """A private key fetched from a host written to ``directory/name`` (0600), its ``.pub`` made
    from it with ssh-keygen (same comment)."""
    path = directory / name
    write_private(path, private_key if private_key.endswith("\n") else private_key + "\n")
    pub = path.with_name(name + ".pub")
    pub.unlink(missing_ok=True)  # a stale half of another pair must not stay beside it
    pub.write_text(public_key_of(path) + "\n")
    return read_ssh_key(directory, name)


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
