"""What the DRC keeps of the admin workstation (issue 11 point 4: the workstation may be lost with
the main site). Data only: drc/workstation/mirror.py carries it over SSH.

The copy holds the site file, the workstation files the site file names that are not secret
(known_hosts, public certificates, the apt key) and the records directory (backup log, restore
tests, runbook journals, rotations, reports). Never a secret: the secrets directories are left
out (the escrow covers the secrets, SOP BK-8), and so are the files the site file names that are
secret (the TLS private key, the DNS update key, the admin's SSH key). `MIRROR.json` beside the
files says what was sent: each file's sha256, which site setting names which file, and who sent it.

The workstation's own bookkeeping (`.mirror-state.json` in the records directory, never sent):
the lineage (which workstation's history this is; a restored workstation carries it on), the last
copy sent to each DRC host (sha256 of its MIRROR.json, so a push replaces only the copy this
workstation last wrote), and since when the copy is behind.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import io
import json
import os
import secrets
import socket
import tarfile
from dataclasses import dataclass
from pathlib import Path

from drc.records import store
from drc.site import Site

FORMAT = "siaga-workstation-mirror/1"
MANIFEST = "MIRROR.json"
STATE = ".mirror-state.json"
# Failed pushes, as records: the next push carries them, so the DRC's copy shows what it missed.
FAILURES = "workstation-mirror.jsonl"
SITE_FILE = "site/site.yaml"

# Settings naming a workstation file that is not secret: copied (site/files/<setting>-<name>).
PUBLIC_FILES = ("connection.known_hosts_file", "backup.pgbackrest_apt.key_file", "spse_app.tls_certificate_source",
                "spse_app.tls_chain_source", "traffic.ca_file")
# Settings naming a secret file: never copied. The value is where a restore can read it again (a
# setting naming the file on the hosts), or None (the admin brings it: not on any site host).
SECRET_FILES = {"spse_app.tls_key_source": "spse_app.tls_key_file", "traffic.dns_update.key_file": None,
                "monitoring.mail.auth_password_file": None}
ADMIN_KEY = "connection.key_file"  # the admin's own key: each admin has theirs
SECRET_DIRS = ("replication.secrets_dir", "backup.secrets_dir", "uploads_sync.secrets_dir")


class MirrorError(RuntimeError):
    pass


def setting(site: Site, dotted: str):
    """The value of a dotted setting of the site (None when a section or the value is unset)."""
    obj = site
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def secret_dirs(site: Site) -> list[Path]:
    """The workstation's secrets directories of this site (as roles/secret_custody finds them)."""
    from roles.workstation_secrets import secrets_path

    r = site.replication.secrets_dir
    dirs = [secrets_path(site.site, r), secrets_path(site.site, site.backup.secrets_dir or r),
            secrets_path(site.site, site.uploads_sync.secrets_dir or r)]
    return sorted({d.expanduser().resolve() for d in dirs})


@dataclass(frozen=True)
class Entry:
    name: str  # path inside the copy
    path: Path  # the file on the workstation
    sha256: str


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def public_file_name(dotted: str, path: Path) -> str:
    return f"site/files/{dotted.replace('.', '-')}--{path.name}"


def entries(site: Site, site_file: Path) -> tuple[list[Entry], dict[str, str]]:
    """The files to copy (sorted by name) and which setting names which copied file. A records
    directory that is, or holds, a secrets directory keeps those files out."""
    rdir = store.records_path(site).expanduser().resolve()
    secret = secret_dirs(site)
    if rdir in secret:
        raise MirrorError(f"records_dir {rdir} is the secrets directory: nothing copied (it would copy secrets). "
                          "Fix: set records_dir to a directory of its own")
    out = [Entry(SITE_FILE, site_file, sha256_file(site_file))]
    named: dict[str, str] = {}
    for dotted in PUBLIC_FILES:
        value = setting(site, dotted)
        if value is None:
            continue
        p = Path(value).expanduser()
        if p.is_file():
            if b"PRIVATE KEY" in p.read_bytes():
                raise MirrorError(f"{dotted} ({p}) holds a private key: nothing copied. Fix: name the public file there")
            name = public_file_name(dotted, p)
            out.append(Entry(name, p, sha256_file(p)))
            named[dotted] = name
    if rdir.is_dir():
        for dirpath, dirnames, filenames in os.walk(rdir):
            here = Path(dirpath)
            # A secrets directory inside the records directory stays out (the default layout is the
            # other way round: records inside the secrets directory, whose own files are not walked).
            dirnames[:] = sorted(d for d in dirnames if (here / d).resolve() not in secret)
            for f in sorted(filenames):
                p = here / f
                if f == STATE or f.startswith(".") or p.is_symlink() or not p.is_file():
                    continue
                out.append(Entry("records/" + p.relative_to(rdir).as_posix(), p, sha256_file(p)))
    return sorted(out, key=lambda e: e.name), named


def files_of(items: list[Entry]) -> dict[str, str]:
    return {e.name: e.sha256 for e in items}


# --- the workstation's bookkeeping ---------------------------------------------------------------

def state_path(site: Site) -> Path:
    return store.records_path(site) / STATE


def read_state(site: Site) -> dict:
    try:
        return json.loads(state_path(site).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def write_state(site: Site, state: dict) -> None:
    """Replaced through a new file, so a crash leaves the old state or the new one."""
    path = state_path(site)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    tmp = path.with_name(STATE + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(state, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def new_id() -> str:
    return secrets.token_hex(8)


def ensure_identity(state: dict) -> dict:
    """A workstation's lineage (its history, carried on by a restore) and instance (this machine)."""
    state.setdefault("lineage", new_id())
    state.setdefault("instance", new_id())
    state.setdefault("hosts", {})
    return state


def now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def manifest(site: Site, items: list[Entry], named: dict[str, str], state: dict, seq: int) -> dict:
    return {"format": FORMAT, "site": site.site, "lineage": state["lineage"], "instance": state["instance"], "seq": seq,
            "pushed_at": now(), "pushed_by": f"{getpass.getuser()}@{socket.gethostname()}", "site_file": SITE_FILE,
            "settings": named, "files": files_of(items)}


def tarball(items: list[Entry], manifest_text: str) -> bytes:
    """The copy as one gzipped tar: MIRROR.json, then the files (regular files, mode 0600, root)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in [(MANIFEST, manifest_text.encode())] + [(e.name, e.path.read_bytes()) for e in items]:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, int(dt.datetime.now().timestamp())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def unpack(data: bytes) -> tuple[dict, dict[str, bytes]]:
    """MIRROR.json and the files of a copy read back from the DRC; every file checked against the
    manifest's sha256, and every file the manifest lists present."""
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for m in tar.getmembers():
            if not m.isfile():
                continue
            name = m.name.removeprefix("./")
            if name.startswith("/") or ".." in Path(name).parts:
                raise MirrorError(f"the copy holds an unsafe path {m.name!r}")
            files[name] = tar.extractfile(m).read()
    if MANIFEST not in files:
        raise MirrorError(f"the copy has no {MANIFEST}")
    man = json.loads(files.pop(MANIFEST))
    if man.get("format") != FORMAT:
        raise MirrorError(f"the copy's format {man.get('format')!r} is not {FORMAT!r}")
    bad = [n for n, h in man["files"].items() if n not in files or hashlib.sha256(files[n]).hexdigest() != h]
    if bad:
        raise MirrorError(f"the copy on the DRC is damaged: {len(bad)} files missing or not as its manifest says ({', '.join(bad[:5])})")
    return man, {n: files[n] for n in man["files"]}


def manifest_bytes(data: bytes) -> bytes:
    """MIRROR.json's bytes as they are in a copy's tarball."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for mem in tar.getmembers():
            if mem.isfile() and mem.name.removeprefix("./") == MANIFEST:
                return tar.extractfile(mem).read()
    raise MirrorError(f"the copy has no {MANIFEST}")


def compare(local: dict[str, str], remote: dict[str, str]) -> dict:
    """How a copy stands against the workstation's files now."""
    return {"missing": sorted(set(local) - set(remote)), "differ": sorted(n for n in local if n in remote and remote[n] != local[n]),
            "extra": sorted(set(remote) - set(local))}
