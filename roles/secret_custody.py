"""Custody of the secrets siaga makes: an existing secret is never replaced implicitly (SOP BK-8).

The backups are only as readable as their secrets: a new pgBackRest repository passphrase or restic
password written over the hosts' copies makes every existing backup and offline copy unreadable.
So the workstation's secrets directory is not the authority for a secret the hosts already hold.
Once per deploy, before any operation runs, `reconcile(tier)` reads where each secret lives on
every host of the site and decides, per secret (`decide`, pure and unit-tested):

| workstation | hosts | what happens |
|---|---|---|
| has it | agree with it, or hold none | keep (the deploy puts it where it is missing) |
| has it | hold another value | **stop**: nothing changed, the message names both copies and the fix |
| lacks it | hold one value | **fetch** it into the secrets directory (0600) and go on |
| lacks it | hold different values | **stop** |
| lacks it | hold none, every host read | generate it (a new site) |
| lacks it | hold none, a host could not be read | **stop**: it may hold the secret |

A file on a host whose secret cannot be read (unreadable, or a config without the value) also
stops the deploy. SSH key pairs: the secret is the private key, on the host that uses it; its
public half (in the other host's root-owned keys file) is made from it on the workstation with
`ssh-keygen -y`, so a fetched key installs the same authorized key line.

The values travel only as the output of one command per host (`sudo` + `base64` of the files,
never a secret on a command line), read through pyinfra's connector with output printing off, so
neither pyinfra's log nor `-vvv` nor a failed read shows them; they are never cached, batched or
put in a fact plan (roles/factcache.py). Messages show a sha256 prefix of a value, never the value.
Explicit rotation and escrow are `siaga secrets rotate|escrow` (drc/secrets), never a deploy.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from roles.workstation_secrets import (
    SecretError, check_private, generate_password, generate_ssh_key, public_key_of, read_password, read_ssh_key,
    private_dir, secrets_path, store_ssh_key, valid_password, write_private,
)

if TYPE_CHECKING:
    from drc.site.data_tier import DataTier

KEY_BEGIN = "-----BEGIN OPENSSH PRIVATE KEY-----"


@dataclass(frozen=True)
class Location:
    """Where a secret sits on a host: a file, and how the secret is read out of it."""

    path: str
    form: str = "text"  # "text": the whole file; "ssh_key"; "ini:<key>": a key=value line; "pgpass": the replication lines


@dataclass(frozen=True)
class SecretSpec:
    key: str  # what the roles ask for (password(tier, key) / ssh_key(tier, key))
    name: str  # file name in the secrets directory
    what: str  # for people
    directory: Path  # the secrets directory on the workstation
    kind: str  # "password" | "ssh_key"
    locations: tuple[Location, ...]
    check: str  # how to tell which copy is the one in use, for the messages
    length: int = 40
    comment: str = ""

    @property
    def path(self) -> Path:
        return self.directory / self.name


@dataclass(frozen=True)
class Seen:
    """One location on one host, as read: "value", "absent", "none" (the file holds no such
    value), "unreadable" (there but not readable as this secret) or "unknown" (host not read)."""

    host: str
    path: str
    state: str
    value: str | None = field(default=None, repr=False)
    why: str = ""

    @property
    def where(self) -> str:
        return f"{self.host}:{self.path}"


@dataclass(frozen=True)
class Decision:
    action: str  # "keep" | "fetch" | "generate" | "stop"
    value: str | None = field(default=None, repr=False)
    source: Seen | None = None
    message: str = ""


def fingerprint(value: str) -> str:
    """A short sha256 prefix of a secret's value: lets people compare copies, reveals nothing."""
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:12]


# --- which secrets, where ------------------------------------------------------------------------

def secret_specs(tier: DataTier) -> list[SecretSpec]:
    """Every secret the data tier deploy of this site uses, with where hosts hold it."""
    from roles.backup.layout import ETC, PG_SSH_DIR, REPO_CONFIG_PATH, SECRETS
    from roles.replication.standby import PASSFILE, PASSWORD_FILE
    from roles.uploads_sync.layout import KEY_FILE, PRIVATE_KEY

    site, r = tier.site, tier.replication
    out = [SecretSpec(
        "replication", PASSWORD_FILE, f"replication password (PostgreSQL role {r.user})",
        secrets_path(site.site, r.secrets_dir), "password", (Location(PASSFILE, "pgpass"),),
        check=f"the standby streams only with the password of role {r.user} on the primary "
              f"(`sudo -u postgres psql \"host=<primary> user={r.user} dbname=replication replication=true\"` "
              f"with that host's {PASSFILE})")]
    b = site.backup
    if b.enabled:
        d = secrets_path(site.site, b.secrets_dir or r.secrets_dir)
        u = b.repository_user
        pgbr_info = f"`sudo -u {u} pgbackrest --config-path={REPO_CONFIG_PATH} --stanza={b.stanza} info` on the repository host"
        out += [
            SecretSpec("repo1", SECRETS["repo1"], "pgBackRest repository (repo1) cipher passphrase", d, "password",
                       (Location(f"{REPO_CONFIG_PATH}/pgbackrest.conf", "ini:repo1-cipher-pass"),), length=64,
                       check=f"only the passphrase the repository was made with reads it: {pgbr_info} "
                             "shows the backups (a wrong one fails to decrypt)"),
            SecretSpec("restic", SECRETS["restic"], "restic repository password", d, "password",
                       (Location(f"{ETC}/restic-repo1.password"),), length=64,
                       check="only the repository's password opens it: `restic snapshots` with "
                             "RESTIC_PASSWORD_FILE set to that file (roles/backup/README.md, Restore)"),
            SecretSpec("pgbackrest_key", SECRETS["pgbackrest_key"], f"backup SSH key postgres -> {u} (pgBackRest)", d,
                       "ssh_key", (Location(f"{PG_SSH_DIR}/siaga_backup_ed25519", "ssh_key"),),
                       comment=f"pgbackrest@{site.site}", check="the key whose public half is in the repository "
                       f"host's /etc/ssh/siaga-backup-keys/{u} is the one in use"),
            SecretSpec("restic_key", SECRETS["restic_key"], f"backup SSH key root -> {u} (restic SFTP)", d, "ssh_key",
                       (Location(f"{ETC}/restic_ed25519", "ssh_key"),), comment=f"restic@{site.site}",
                       check=f"the key whose public half is in the repository host's /etc/ssh/siaga-backup-keys/{u} is the one in use"),
            SecretSpec("repo_key", SECRETS["repo_key"], f"backup SSH key {u} -> postgres (pgBackRest backups)", d,
                       "ssh_key", (Location(f"/var/lib/{u}/.ssh-client/id_ed25519", "ssh_key"),),
                       comment=f"{u}@{site.site}", check="the key whose public half is in the database host's "
                       "/etc/ssh/siaga-backup-keys/postgres is the one in use"),
        ]
    us = site.uploads_sync
    if us.enabled:
        out.append(SecretSpec(
            "uploads_sync", KEY_FILE, "uploads sync SSH key", secrets_path(site.site, us.secrets_dir or r.secrets_dir),
            "ssh_key", (Location(PRIVATE_KEY, "ssh_key"),), comment=f"siaga-uploads-sync@{site.site}",
            check="the key whose public half is in the targets' /etc/ssh/siaga-sync-keys/<account> is the one in use"))
    return out


def spec_for(tier: DataTier, key: str) -> SecretSpec:
    for spec in secret_specs(tier):
        if spec.key == key:
            return spec
    raise SecretError(f"no secret '{key}' in this site's data tier (is its role enabled?)")


# --- reading a secret out of a file ----------------------------------------------------------------

def extract(form: str, text: str) -> str | None:
    """The secret held in a file's text (None: the file holds none). ValueError: it holds
    something siaga cannot take as one value."""
    if form == "text":
        return text.strip() or None
    if form == "ssh_key":
        if not text.strip():
            return None
        if not text.lstrip().startswith(KEY_BEGIN):
            raise ValueError("not an OpenSSH private key")
        return text.strip()
    if form.startswith("ini:"):
        key = form[4:]
        found = {line.split("=", 1)[1].strip() for line in text.splitlines()
                 if "=" in line and line.split("=", 1)[0].strip() == key}
    elif form == "pgpass":  # host:port:database:user:password, one line per peer
        found = {":".join(parts[4:]) for line in text.splitlines()
                 if not line.startswith("#") and len(parts := line.split(":")) >= 5 and parts[2] == "replication"}
    else:
        raise ValueError(f"unknown form {form!r}")
    found.discard("")
    if len(found) > 1:
        raise ValueError(f"{len(found)} different values in one file")
    return found.pop() if found else None


def observe(host: str, location: Location, state: str, text: str | None = None, why: str = "") -> Seen:
    """A location as read from a host (state "present" with its text, "absent", "unreadable",
    "unknown") turned into what it says about the secret."""
    if state != "present":
        return Seen(host, location.path, state, why=why)
    try:
        value = extract(location.form, text or "")
    except ValueError as exc:
        return Seen(host, location.path, "unreadable", why=str(exc))
    return Seen(host, location.path, "none") if value is None else Seen(host, location.path, "value", value)


# --- the decision --------------------------------------------------------------------------------

def _fix_tail() -> str:
    return "Changing a secret on purpose is an explicit rotation (`siaga secrets rotate NAME`), never a deploy."


def decide(spec: SecretSpec, workstation: str | None, seen: list[Seen]) -> Decision:
    """What to do with one secret, from the workstation's copy (None: none) and what the hosts hold."""
    label = f"secret '{spec.name}' ({spec.what})"
    values = [s for s in seen if s.state == "value"]
    distinct = sorted({s.value for s in values})
    if len(distinct) > 1:
        copies = "; ".join(f"{s.where} ({fingerprint(s.value)})" for s in values)
        return Decision("stop", message=(
            f"{label}: the hosts hold different copies: {copies}. Nothing was changed on any host. Fix: find the "
            f"copy in use ({spec.check}), make the other hosts' files hold that one (or remove them) by hand, "
            f"then deploy again. {_fix_tail()}"))
    broken = [s for s in seen if s.state in ("unreadable", "none")]
    if broken:
        s = broken[0]
        problem = f"cannot be read as this secret ({s.why})" if s.state == "unreadable" else "holds no such value"
        return Decision("stop", message=(
            f"{label}: {s.where} exists but {problem}: siaga cannot tell which secret is in use. Nothing was "
            f"changed on any host. Fix: repair or remove {s.path} on {s.host} by hand ({spec.check}), then deploy again."))
    held = values[0] if values else None
    if workstation is not None:
        if held is not None and workstation != held.value:
            return Decision("stop", message=(
                f"{label}: this workstation's copy {spec.path} ({fingerprint(workstation)}) differs from the one "
                f"the hosts hold, {held.where} ({fingerprint(held.value)}). The hosts' copy is the one in use; siaga "
                f"never replaces it implicitly. Nothing was changed on any host. Fix: if this workstation's copy is "
                f"stale or from another site, move it away (mv {shlex.quote(str(spec.path))} "
                f"{shlex.quote(str(spec.path) + '.stale')}) and deploy again: siaga then fetches the hosts' copy. "
                f"{_fix_tail()}"))
        return Decision("keep")
    if held is not None:
        if spec.kind == "password" and not valid_password(held.value):
            return Decision("stop", message=(
                f"{label}: {held.where} holds a value that is not letters and digits only, which siaga cannot "
                f"keep in .pgpass or conninfo. Nothing was changed. Fix: copy it by hand into {spec.path} (0600) "
                "only if you know it is right, or rotate it explicitly"))
        return Decision("fetch", value=held.value, source=held)
    unknown = [s for s in seen if s.state == "unknown"]
    if unknown:
        s = unknown[0]
        return Decision("stop", message=(
            f"{label}: not on this workstation ({spec.path}) and {s.host} could not be read ({s.why}): it may hold "
            f"the secret, so siaga makes no new one. Nothing was changed. Fix: deploy with {s.host} reachable "
            "(siaga then fetches its copy), or put the right copy into that file (0600)"))
    return Decision("generate")


# --- the workstation's side ----------------------------------------------------------------------

def workstation_value(spec: SecretSpec) -> str | None:
    """The workstation's copy as compared with the hosts' (None: there is none). A copy that is
    there but unusable (mode, format) raises SecretError with its fix."""
    path = spec.path
    if not path.exists():
        return None
    if spec.kind == "password":
        return read_password(spec.directory, spec.name)
    check_private(path)
    text = path.read_text()
    try:
        return extract("ssh_key", text)
    except ValueError:
        raise SecretError(f"{path}: not an OpenSSH private key. Fix: move it away and deploy: siaga fetches the hosts' copy") from None


def apply(spec: SecretSpec, decision: Decision) -> str:
    """Carry out a keep/fetch/generate decision on the workstation; a line for the deploy log
    (names and places only, never a value)."""
    directory = private_dir(spec.directory)
    if decision.action == "fetch":
        assert decision.value is not None and decision.source is not None
        if spec.kind == "password":
            write_private(spec.path, decision.value + "\n")
        else:
            store_ssh_key(directory, spec.name, decision.value)
        return (f"secret {spec.name} ({spec.what}) was missing on this workstation: fetched from "
                f"{decision.source.where} into {spec.path} (0600); the hosts keep theirs")
    if decision.action == "generate":
        if spec.kind == "password":
            generate_password(directory, spec.name, spec.length)
        else:
            generate_ssh_key(directory, spec.name, spec.comment)
        return f"secret {spec.name} ({spec.what}): no host holds one: made a new one in {spec.path} (0600)"
    if decision.action == "keep":
        if spec.kind == "ssh_key":
            return _public_half(spec)
        return ""
    raise SecretError(decision.message)


def _public_half(spec: SecretSpec) -> str:
    """The .pub beside a kept private key is made from it when missing or of another key."""
    pub = spec.path.with_name(spec.name + ".pub")
    derived = public_key_of(spec.path)
    if pub.exists() and pub.read_text().split()[:2] == derived.split()[:2]:
        return ""
    pub.unlink(missing_ok=True)
    pub.write_text(derived + "\n")
    return f"{pub}: made again from its private key"


# --- reading the hosts (pyinfra) -----------------------------------------------------------------

def read_script(paths: list[str]) -> str:
    """Shell run with sudo on a host: one line per path, "absent", "unreadable" or "present
    <base64>"; the value is printed only once read whole, and the script always exits 0 (pyinfra
    prints a failed command's output)."""
    quoted = " ".join(shlex.quote(p) for p in paths)
    return (f"for p in {quoted}; do if [ ! -e \"$p\" ]; then echo absent; "
            "elif v=$(base64 -w0 < \"$p\" 2>/dev/null); then echo \"present $v\"; else echo unreadable; fi; done; true")


def parse_read(lines: list[str], paths: list[str]) -> dict[str, tuple[str, str | None]]:
    """read_script's output -> {path: (state, text)}; a missing or odd line is "unreadable"."""
    out: dict[str, tuple[str, str | None]] = {}
    for i, path in enumerate(paths):
        line = lines[i] if i < len(lines) else ""
        word, _, data = line.partition(" ")
        if word == "absent":
            out[path] = ("absent", None)
        elif word == "present":
            try:
                out[path] = ("present", base64.b64decode(data, validate=True).decode())
            except (binascii.Error, UnicodeDecodeError):
                out[path] = ("unreadable", None)
        else:
            out[path] = ("unreadable", None)
    return out


def _read_host(name: str, paths: list[str]) -> dict[str, tuple[str, str | None, str]]:
    """{path: (state, text, why)} on one site host, through its pyinfra connector with output
    printing off (not a fact: never cached, batched, planned or printed)."""
    from pyinfra.api import FactBase, StringCommand
    from pyinfra.api.arguments import CONNECTOR_ARGUMENT_KEYS
    from pyinfra.api.facts import _handle_fact_kwargs

    from roles.site_hosts import inventory_host

    h = inventory_host(name)
    if h is None:
        return {p: ("unknown", None, "not in this deploy's inventory") for p in paths}
    try:
        if not h.connected:
            h.connect(reason="to read the hosts' copies of siaga's secrets", raise_exceptions=True)
        _, global_kwargs = _handle_fact_kwargs(h.state, h, FactBase, [], {})
        kwargs = {k: v for k, v in global_kwargs.items() if k in CONNECTOR_ARGUMENT_KEYS}
        status, output = h.connector.run_shell_command(StringCommand(read_script(paths)), print_output=False,
                                                       print_input=False, **kwargs)
    except Exception as exc:  # noqa: BLE001 - any failure: this host is not read
        return {p: ("unknown", None, f"{type(exc).__name__}: {exc}"[:200]) for p in paths}
    if not status:
        last = (output.stderr_lines or ["no output"])[-1][:200]
        return {p: ("unknown", None, f"reading failed: {last}") for p in paths}
    return {p: (state, text, "") for p, (state, text) in parse_read(output.stdout_lines, paths).items()}


def read_hosts(hosts: list[str], paths: list[str]) -> dict[str, dict[str, tuple[str, str | None, str]]]:
    """Every host read at once (greenlets: pyinfra runs on gevent)."""
    import gevent

    jobs = {name: gevent.spawn(_read_host, name, paths) for name in hosts}
    gevent.joinall(list(jobs.values()), timeout=120)
    out = {}
    for name, job in jobs.items():
        if job.successful():
            out[name] = job.value
        else:
            why = repr(job.exception) if job.ready() else "no answer within 120 s"
            out[name] = {p: ("unknown", None, why[:200]) for p in paths}
    return out


def decisions(tier: DataTier, readings: dict[str, dict[str, tuple[str, str | None, str]]]) -> list[tuple[SecretSpec, Decision]]:
    out = []
    for spec in secret_specs(tier):
        seen = [observe(host, loc, *(readings.get(host, {}).get(loc.path) or ("unknown", None, "not read")))
                for host in tier.site.hosts for loc in spec.locations]
        try:
            out.append((spec, decide(spec, workstation_value(spec), seen)))
        except SecretError as exc:
            out.append((spec, Decision("stop", message=f"secret '{spec.name}' ({spec.what}): {exc}")))
    return out


def _reconcile(tier: DataTier) -> None:
    from pyinfra import logger
    from pyinfra.api.exceptions import DeployError

    specs = secret_specs(tier)
    paths = sorted({loc.path for spec in specs for loc in spec.locations})
    readings = read_hosts(list(tier.site.hosts), paths)
    decided = decisions(tier, readings)
    stops = [d.message for _, d in decided if d.action == "stop"]
    if stops:
        raise DeployError("secret custody: the hosts' secrets and this workstation's disagree; nothing was changed "
                          "on any host:\n  - " + "\n  - ".join(stops))
    for spec, decision in decided:
        line = apply(spec, decision)
        if line and decision.action == "fetch":
            logger.warning(f"siaga: {line}")
        elif line:
            logger.info(f"siaga: {line}")


_runs: dict = {}


def reconcile(tier: DataTier) -> None:
    """Once per deploy run (every host's deploy file calls it; the first does the work, the others
    wait for it): the secrets on the workstation made to agree with the hosts', or DeployError."""
    import gevent.event
    from pyinfra.context import ctx_state

    key = (id(ctx_state.get()), tier.site.site)
    pending = _runs.get(key)
    if pending is None:
        pending = _runs[key] = gevent.event.AsyncResult()
        try:
            _reconcile(tier)
        except BaseException as exc:
            pending.set_exception(exc)
            raise
        pending.set(None)
        return
    pending.get()


# --- what the roles call ---------------------------------------------------------------------------

def password(tier: DataTier, key: str) -> str:
    """A password the roles put on hosts, after custody (never printed)."""
    spec = spec_for(tier, key)
    reconcile(tier)
    return read_password(spec.directory, spec.name)


def ssh_key(tier: DataTier, key: str) -> tuple[str, str]:
    """(private key, public key line) of a key the roles put on hosts, after custody."""
    spec = spec_for(tier, key)
    reconcile(tier)
    return read_ssh_key(spec.directory, spec.name)
