"""`siaga secrets rotate <ssh key>`: a new key pair for one of siaga's SSH keys, with the old key
working until the new one is proven (SOP BK-8; the admins' own keys are not part of this).

The keys (roles/secret_custody.secret_specs): `pgbackrest_key` (postgres on the database host ->
the repository account, pgBackRest), `restic_key` (root on the database host -> the repository
account, restic SFTP), `repo_key` (the repository account -> postgres on the database host,
pgBackRest backups), `uploads_sync` (root on the uploads source -> the receiving account on every
target, rrsync). Each rotation:

1. makes a new ed25519 pair on this workstation (`<secrets dir>/<name>.rotating`, 0600; a run that
   died half-way is finished with the same pair when started again);
2. checks that every host using the key holds this workstation's key (or already the new one);
3. adds the new public key BESIDE the old one in the root-owned keys files (same options: forced
   command, from=, restrict);
4. installs the new private key on every host using it (in place: owner kept, mode 0600);
5. proves the new key through its real path (`pgbackrest check`, `restic snapshots`, an rsync dry-run);
6. removes the old public key and proves with `ssh -i` from each using host that the old key is
   refused and the new one accepted;
7. writes the new pair into the secrets directory (atomically, 0600).

Any failure in 2-6 puts back every change made, in reverse order: the old key works throughout.
The keys files end exactly as the roles write them, so the next site deploy changes nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from drc.hosts import remote
from drc.hostside.key_rotate import split_line
from drc.secrets.rotation import SSH_KEYS, RotateError
from drc.site import Site
from drc.site.data_tier import data_tier_of
from roles.secret_custody import SecretSpec, spec_for, workstation_value
from roles.workstation_secrets import (
    SecretError,
    check_private,
    private_dir,
    public_key_of,
)

PROGRAM = "key_rotate"
KEYS = SSH_KEYS
PENDING = ".rotating"  # suffix of the new pair in the secrets directory while a rotation runs


@dataclass(frozen=True)
class Login:
    """One SSH login a key is for: from a host that uses it, to an account on a host that accepts it."""

    host: str
    user: str
    address: str
    known_hosts: str
    port: int | None = None  # None: ssh's default, as the role's ssh config has no Port

    def args(self) -> dict:
        return {"user": self.user, "address": self.address, "known_hosts": self.known_hosts, "port": self.port}


@dataclass(frozen=True)
class KeyPath:
    """Where one key is used (private halves), accepted (keys files), logged in with and proven."""

    name: str
    what: str
    using: tuple[tuple[str, str], ...]  # (host, private key file)
    authorizing: tuple[tuple[str, str], ...]  # (host, root-owned keys file)
    logins: tuple[Login, ...]
    proofs: tuple[tuple[str, dict], ...]  # (host, key-rotate prove args)
    public_text: Callable[[str], str] = field(repr=False)  # the key's text after the options, as the role writes it


def key_path(site: Site, name: str) -> KeyPath:
    """The hosts and files of one key, from the site file as the roles read it."""
    tier = data_tier_of(site)
    try:
        spec = spec_for(tier, name)
    except SecretError as exc:
        raise RotateError(str(exc)) from None
    if name in ("pgbackrest_key", "restic_key", "repo_key"):
        from roles.backup.keys import keys_file
        from roles.backup.layout import KNOWN_HOSTS
        from roles.backup.topology import backup_host, repository_host

        src, repo = backup_host(tier), repository_host(tier)
        u = site.backup.repository_user
        private = spec.locations[0].path

        def role_text(pub: str) -> str:  # roles/backup writes the .pub line as it is
            return pub.strip()

        if name == "repo_key":
            return KeyPath(name, spec.what, ((repo, private),), ((src, keys_file("postgres")),),
                           (Login(repo, "postgres", str(site.hosts[src].address), f"/var/lib/{u}/.ssh-client/known_hosts"),),
                           ((repo, {"how": "pgbackrest-check"}),), role_text)
        login = Login(src, u, str(site.hosts[repo].address), KNOWN_HOSTS)
        how = "pgbackrest-check" if name == "pgbackrest_key" else "restic-snapshots"
        return KeyPath(name, spec.what, ((src, private),), ((repo, keys_file(u)),), (login,), ((src, {"how": how}),), role_text)
    from roles.uploads_sync.deploy import authorized_keys, rsh, targets
    from roles.uploads_sync.layout import KNOWN_HOSTS as SYNC_KNOWN_HOSTS
    from roles.uploads_sync.layout import PRIVATE_KEY
    from roles.uploads_sync.topology import KEYS_DIR, receiving_account, source_hosts

    account, port = receiving_account(site), site.ssh_hardening.port
    sources, tgts = source_hosts(site), targets(site)

    def sync_text(pub: str) -> str:  # the key as roles/uploads_sync writes it (its own comment)
        _, kind, blob, comment = split_line(authorized_keys(site, pub).strip().splitlines()[-1])
        return f"{kind} {blob} {comment}"

    return KeyPath(
        name, spec.what, tuple((s, PRIVATE_KEY) for s in sources), tuple((t.name, f"{KEYS_DIR}/{account}") for t in tgts),
        tuple(Login(s, account, t.address, SYNC_KNOWN_HOSTS, port) for s in sources for t in tgts),
        tuple((s, {"how": "rsync-dry-run", "rsh": rsh(site), "source": site.spse_app.uploads_root,
                   "dest": f"{account}@{t.rsync_host}:"}) for s in sources for t in tgts),
        sync_text)


PROOF_WORDS = {"pgbackrest-check": "pgbackrest check (as the backup runner runs it)",
               "restic-snapshots": "restic snapshots (the runner's repository, password file and SFTP command)",
               "rsync-dry-run": "rsync --dry-run of the uploads with the sync's ssh command"}


def plan(site: Site, name: str) -> list[str]:
    kp = key_path(site, name)
    spec = spec_for(data_tier_of(site), name)

    def where(pairs) -> str:
        return ", ".join(f"{h}:{p}" for h, p in pairs)

    return [
        f"this workstation: a new ed25519 key pair ({spec.path}{PENDING}, 0600) for the {kp.what}",
        f"check that {where(kp.using)} hold this workstation's key (nothing changes otherwise)",
        f"add the new public key beside the old one, same forced command and from=: {where(kp.authorizing)}",
        f"install the new private key (owner kept, mode 0600): {where(kp.using)}",
        *(f"on {h}: {PROOF_WORDS[a['how']]}" + (f" to {a['dest']}" if a.get("dest") else "") for h, a in kp.proofs),
        f"remove the old public key from {where(kp.authorizing)}",
        *(f"on {lg.host}: ssh -i to {lg.user}@{lg.address}: the old key refused, the new one accepted" for lg in kp.logins),
        "if any step fails, every change is put back in reverse order (the old key keeps working)",
        f"this workstation: {spec.path} and .pub hold the new pair (atomically, 0600); the site deploy then changes nothing",
    ]


# --- the host side -------------------------------------------------------------------------------

def call(site: Site, host: str, args: dict, keys: dict | None = None, timeout: float = 600) -> dict:
    """key-rotate on a host (drc/hostside/key_rotate.py): arguments as one JSON word (no secret),
    keys as one JSON line on stdin (never on a command line). Failures are {"ok": False, "error"}.
    The line is written to the SSH channel at once: Invoke's in_stream feeds stdin one byte per
    10 ms, ten seconds for a pair of private keys."""
    cmd = remote.program_command(PROGRAM, args)
    data = (json.dumps(keys) + "\n").encode() if keys is not None else b""
    try:
        with remote.connection(site, host) as conn:
            conn.open()
            stdin, stdout, stderr = conn.client.exec_command(cmd, timeout=timeout)
            if data:
                stdin.write(data)
                stdin.flush()
            stdin.channel.shutdown_write()
            out, err = stdout.read().decode(errors="replace"), stderr.read().decode(errors="replace")
            exited = stdout.channel.recv_exit_status()
    except Exception as exc:  # noqa: BLE001 (any failure to reach a host is reported, with why)
        return {"ok": False, "error": f"{host}: {remote.why(exc)}"}
    result = remote.Result(host, reachable=True, exited=exited, stdout=out, stderr=err)
    missing = remote.program_missing(result, PROGRAM)
    if missing:
        return {"ok": False, "error": missing}
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"ok": False, "error": f"{host}: key-rotate exited {exited}: {(err or out).strip()[-500:]}"}


# --- the workstation side ------------------------------------------------------------------------

def pending_pair(spec: SecretSpec) -> tuple[str, str]:
    """(private, public) of the new pair: the one a run that died half-way left, else a new one."""
    path = spec.path.with_name(spec.name + PENDING)
    pub = path.with_name(path.name + ".pub")
    if path.exists():
        check_private(path)
        text = path.read_text()
        pub.write_text(public_key_of(path) + "\n")
        return text, pub.read_text().strip()
    private_dir(spec.directory)
    pub.unlink(missing_ok=True)
    old = os.umask(0o077)
    try:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", spec.comment, "-f", str(path)],
                       check=True, capture_output=True)
    finally:
        os.umask(old)
    return path.read_text(), pub.read_text().strip()


def drop_pending(spec: SecretSpec) -> None:
    path = spec.path.with_name(spec.name + PENDING)
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".pub").unlink(missing_ok=True)


def replace_atomically(path: Path, text: str, mode: int = 0o600) -> None:
    """`path` holds `text`: written beside it (created with its mode before any byte), fsync'd, renamed."""
    tmp = path.with_name(path.name + ".new")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def fingerprint_of(public: str) -> str:
    """ssh-keygen's SHA256 fingerprint of a public key line (what people compare keys by)."""
    out = subprocess.run(["ssh-keygen", "-l", "-f", "-"], input=public + "\n", capture_output=True, text=True, check=True)
    return out.stdout.split()[1]


def rotate(site: Site, name: str) -> dict:
    """Rotate one SSH key (see the module's docstring). {"ok", "steps", "old", "new"} (fingerprints);
    RotateError when it did not happen (everything put back, with what could not be)."""
    if name not in KEYS:
        raise RotateError(f"{name}: not one of siaga's SSH keys ({', '.join(KEYS)})")
    kp = key_path(site, name)
    spec = spec_for(data_tier_of(site), name)
    old_private = workstation_value(spec)
    if old_private is None:
        raise RotateError(f"{spec.path}: missing on this workstation. Fix: run the site deploy first (it fetches the hosts' copy)")
    old_private = spec.path.read_text()
    old_public = public_key_of(spec.path)
    new_private, new_public = pending_pair(spec)
    old_text, new_text = kp.public_text(old_public), kp.public_text(new_public)
    steps: list[str] = []
    undo: list[tuple[str, Callable[[], dict]]] = []

    def step(host: str, args: dict, keys: dict | None, done: str, timeout: float = 600) -> dict:
        r = call(site, host, args, keys, timeout)
        if not r.get("ok"):
            raise RotateError(f"{host}: {r.get('error') or r.get('detail')}")
        steps.append(f"{host}: {done}" + ("" if r.get("changed", True) else " (already)"))
        return r

    try:
        # SOP BK-8: the hosts must hold this workstation's key, else it is not the key in use.
        for host, path in kp.using:
            r = call(site, host, {"mode": "holds", "path": path}, {"old": old_private, "new": new_private}, 120)
            if not r.get("ok") or r.get("holds") not in ("old", "new"):
                raise RotateError(f"{host}:{path} " + (f"holds {r['holds']}, not this workstation's key {spec.path}: run the "
                                  "site deploy first (secret custody says which copy is in use)" if r.get("ok") else
                                  f"could not be read: {r.get('error')}"))
        steps.append(f"{', '.join(h for h, _ in kp.using)}: hold this workstation's key")
        for host, keys_file in kp.authorizing:
            undo.append((f"{host}:{keys_file} without the new key", lambda h=host, f=keys_file: call(
                site, h, {"mode": "unauthorize", "file": f}, {"remove": new_public, "keep": old_public}, 120)))
            step(host, {"mode": "authorize", "file": keys_file}, {"old": old_public, "new": new_text},
                 f"{keys_file}: the new key beside the old one (same options)", 120)
        for host, path in kp.using:
            undo.append((f"{host}:{path} holds the old key again", lambda h=host, p=path: call(
                site, h, {"mode": "install", "path": p}, {"expect": new_private, "new": old_private}, 120)))
            step(host, {"mode": "install", "path": path}, {"expect": old_private, "new": new_private},
                 f"{path} holds the new private key (owner kept, 0600)", 120)
        for host, args in kp.proofs:
            r = call(site, host, {"mode": "prove", **args}, None, 900)
            if not r.get("ok"):
                raise RotateError(f"{host}: the new key does not work: {r.get('detail') or r.get('error')}")
            steps.append(f"{host}: {r['detail']} with the new key")
        for host, keys_file in kp.authorizing:
            undo.append((f"{host}:{keys_file} accepts the old key again", lambda h=host, f=keys_file: call(
                site, h, {"mode": "authorize", "file": f}, {"old": new_public, "new": old_text}, 120)))
            step(host, {"mode": "unauthorize", "file": keys_file}, {"remove": old_public, "keep": new_public},
                 f"{keys_file}: the old key removed", 120)
        for lg in kp.logins:
            r = call(site, lg.host, {"mode": "logins", **lg.args()}, {"old": old_private, "new": new_private}, 180)
            got = r.get("logins") or {}
            if got.get("old") != "refused" or got.get("new") != "accepted":
                raise RotateError(f"{lg.host}: ssh -i to {lg.user}@{lg.address}: old key {got.get('old', '?')}, new key "
                                  f"{got.get('new', '?')} (wanted refused and accepted){': ' + r['error'] if r.get('error') else ''}")
            steps.append(f"{lg.host}: ssh -i to {lg.user}@{lg.address}: the old key refused, the new one accepted")
    except RotateError as exc:
        back, failed = [], []
        for what, fn in reversed(undo):
            r = fn()
            (back if r.get("ok") else failed).append(what if r.get("ok") else f"{what}: {r.get('error')}")
        if failed:
            raise RotateError(f"{exc}. Put back: {'; '.join(back) or 'nothing'}. NOT put back: {'; '.join(failed)}. "
                              f"The new pair stays in {spec.path}{PENDING}: run the rotation again to finish it") from None
        drop_pending(spec)
        raise RotateError(f"{exc}. Everything was put back ({'; '.join(back) or 'nothing had changed'}): the old key "
                          "works as before") from None
    # The hosts hold only the new key now: this workstation's copy follows (secret custody compares them).
    replace_atomically(spec.path, new_private)
    replace_atomically(spec.path.with_name(spec.name + ".pub"), new_public + "\n", 0o644)
    drop_pending(spec)
    steps.append(f"workstation: {spec.path} (0600) and .pub hold the new pair")
    return {"ok": True, "steps": steps, "old": fingerprint_of(old_public), "new": fingerprint_of(new_public)}
