"""`siaga workstation restore`: a new workstation takes over from the DRC's copy and the escrow
(issue 11 point 4; SOP BK-8 for the secrets, EM-3 for the DRC holding what the site needs).

On a clean machine (a new or empty `--site-dir`), with the admin's own SSH key:
1. the escrow is opened first (a wrong passphrase touches nothing);
2. the DRC host's copy (drc/workstation/mirror.py) is read over SSH, its host key checked against a
   known_hosts file or a fingerprint the admin read off the host, every file against MIRROR.json;
3. the files go under `--site-dir`: `site.yaml`, `files/` (known_hosts, public certificates, ...),
   `records/`, and `secrets/` (0700; files 0600): the repository passphrase, the restic password
   and the retired secrets from the escrow, the TLS private key read from a host that holds it.
   The site file's workstation paths are rewritten to those places (comments kept: ruamel.yaml);
   nothing else in it changes;
4. proven: the escrowed secrets' sha256 prefixes against every host's (secrets-host
   `fingerprints`), and a dry site deploy that plans no change (its custody step fetches the
   secrets the escrow does not hold, the replication password and the SSH keys, from the hosts);
5. the workstation carries on the copy's lineage, so its next command updates the DRC's copy.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import shlex
from pathlib import Path

from drc.hosts import remote
from drc.records import mirror as m
from drc.records import store
from drc.site import Site, load_site
from drc.workstation import mirror as push

RESTORES = "workstation-restores.jsonl"


class RestoreError(RuntimeError):
    pass


# --- reaching the DRC before there is a site file ------------------------------------------------

def key_fingerprint(key) -> str:
    """OpenSSH's form: SHA256:<base64 without padding> of the host key's blob."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def bootstrap_connection(address: str, user: str, key_file: Path, port: int = 22, known_hosts: Path | None = None,
                         host_key: str | None = None, timeout: float = remote.CONNECT_TIMEOUT_S):
    """A Fabric connection as drc.hosts.remote makes them (no agent, no ssh config), with the host
    key checked against a known_hosts file or one fingerprint: an unknown key is refused."""
    from fabric import Config, Connection
    from paramiko import MissingHostKeyPolicy, RejectPolicy, SSHException

    class Fingerprint(MissingHostKeyPolicy):
        def missing_host_key(self, client, hostname, key):
            got = key_fingerprint(key)
            if got != host_key:
                raise SSHException(f"host key of {hostname} is {got}, not the {host_key} given: refused")

    if not known_hosts and not host_key:
        raise RestoreError("no way to check the DRC host's key. Fix: give --known-hosts FILE, or --host-key SHA256:... "
                           "as `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` shows it on the host's console")
    conn = Connection(host=address, user=user, port=port, connect_timeout=int(max(1, timeout)),
                      config=Config(overrides={"load_ssh_configs": False}),
                      connect_kwargs={"key_filename": str(key_file), "allow_agent": False, "look_for_keys": False,
                                      "banner_timeout": timeout, "auth_timeout": timeout})
    conn.client.set_missing_host_key_policy(Fingerprint() if host_key and not known_hosts else RejectPolicy())
    if known_hosts:
        conn.client.load_host_keys(str(known_hosts))
    return conn


# --- the site file's workstation paths -----------------------------------------------------------

def file_names(man: dict) -> dict[str, str]:
    """Each copied public file's name in <site-dir>/files: its own name, or with its setting in
    front when two settings name files of the same name."""
    out: dict[str, str] = {}
    for name in sorted(set(man.get("settings", {}).values())):
        setting, base = name.removeprefix("site/files/").split("--", 1)
        out[name] = base if base not in out.values() else f"{setting}--{base}"
    return out


def relocation(man: dict, site_dir: Path, key_file: Path, original: Site) -> dict[str, str]:
    """Each workstation path setting -> its place on this workstation."""
    out = {"records_dir": str(site_dir / "records"), "replication.secrets_dir": str(site_dir / "secrets"),
           m.ADMIN_KEY: str(key_file)}
    for dotted in ("backup.secrets_dir", "uploads_sync.secrets_dir"):
        if m.setting(original, dotted):
            out[dotted] = str(site_dir / "secrets")
    local = file_names(man)
    for dotted, name in man.get("settings", {}).items():
        out[dotted] = str(site_dir / "files" / local[name])
    for dotted in m.SECRET_FILES:
        value = m.setting(original, dotted)
        if value is not None:
            out[dotted] = str(site_dir / "secrets" / Path(value).name)
    return out


def _scalar(value: str) -> str:
    """A path as a YAML scalar: plain when YAML reads it back as the same string, else quoted."""
    import json

    import yaml

    try:
        plain = yaml.safe_load(f"k: {value}") == {"k": value} and " #" not in value
    except yaml.YAMLError:
        plain = False
    return value if plain else json.dumps(value)


def rewrite_paths(text: str, new: dict[str, str]) -> str:
    """The site file's text with those settings set, every other byte kept (comments, layout,
    quoting): each value is replaced where ruamel.yaml says it sits. A setting the file lacks is
    added only for records_dir and replication.secrets_dir (other ones were never set). The result
    is checked to read as the old file with exactly those values changed."""
    import yaml
    from ruamel.yaml import YAML

    doc = YAML().load(text)
    lines = text.splitlines(keepends=True)
    want = yaml.safe_load(text) or {}
    edits: list[tuple[int, int, str]] = []  # (line, col, new scalar) of values in place
    appended: list[str] = []
    for dotted, value in new.items():
        parts = dotted.split(".")
        node, target = doc, want
        for part in parts[:-1]:
            node = node.get(part) if hasattr(node, "get") else None
            target = target.get(part) if isinstance(target, dict) else None
            if node is None:
                break
        key = parts[-1]
        if node is not None and key in node and isinstance(node[key], str):
            line, col = node.lc.value(key)
            edits.append((line, col, _scalar(value)))
            target[key] = value
        elif dotted == "records_dir":
            appended.append(f"records_dir: {_scalar(value)}\n")
            want["records_dir"] = value
        elif dotted == "replication.secrets_dir":
            if node is None:
                appended.append(f"replication:\n  secrets_dir: {_scalar(value)}\n")
                want["replication"] = {"secrets_dir": value}
            else:  # the section is there without the key: a line right below its own
                line, col = doc.lc.key("replication")
                child = next(iter(node), None)
                indent = node.lc.key(child)[1] if child is not None else col + 2
                lines[line] = lines[line] + " " * indent + f"secrets_dir: {_scalar(value)}\n"
                want["replication"]["secrets_dir"] = value
    for line, col, scalar in edits:
        rest = lines[line][col:]
        if rest[:1] in ("'", '"'):
            close = rest.index(rest[0], 1)
            while rest[0] == "'" and rest[close + 1:close + 2] == "'":  # '' inside single quotes
                close = rest.index("'", close + 2)
            tail = rest[close + 1:]
        else:
            cut = rest.find(" #")
            tail = rest[cut:] if cut >= 0 else rest[len(rest.rstrip("\r\n")):]
        lines[line] = lines[line][:col] + scalar + tail
    out = "".join(lines)
    if appended:
        out = out + ("" if out.endswith("\n") else "\n") + "".join(appended)
    if yaml.safe_load(out) != want:
        raise RestoreError("rewriting the copied site file's paths went wrong (nothing written): edit it by hand")
    return out


def _clean(site_dir: Path) -> None:
    if site_dir.exists() and (not site_dir.is_dir() or any(site_dir.iterdir())):
        raise RestoreError(f"{site_dir} is not empty: a restore writes only into a new or empty directory. "
                           "Fix: name a new --site-dir")


def _write(path: Path, data: bytes, mode: int = 0o640) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    path.write_bytes(data)
    path.chmod(mode)


# --- secrets -------------------------------------------------------------------------------------

def put_escrow_secrets(site: Site, doc: dict) -> list[str]:
    """The escrow's secrets into the site's secrets directory (0700, files 0600); names written."""
    from drc.secrets import escrow as esc
    from drc.site.data_tier import data_tier_of
    from roles.secret_custody import spec_for
    from roles.workstation_secrets import private_dir, write_private

    tier = data_tier_of(site)
    written = []
    for key, value in (("repo1", doc["pgbackrest"]["cipher_pass"]), ("restic", doc["restic"]["password"])):
        spec = spec_for(tier, key)
        private_dir(spec.directory)
        write_private(spec.path, value + "\n")
        written.append(spec.name)
    dns = doc.get("dns_update_key") or {}
    key_file = m.setting(site, "traffic.dns_update.key_file")
    if dns.get("text") and key_file is not None:  # SOP EM-2 step 6: the failover's traffic step needs it
        private_dir(Path(key_file).parent)
        write_private(Path(key_file), dns["text"])
        written.append(Path(key_file).name)
    retired = doc["pgbackrest"].get("retired", []) + doc["restic"].get("retired", [])
    if retired:
        esc.write_retired(site, esc.merge_retired(retired))
        written.append(esc.RETIRED)
    return written


def fetch_tls_key(site: Site) -> dict:
    """spse_app.tls_key_source read back from a host holding spse_app.tls_key_file (the active
    site's first): the deploy puts it there from the workstation, so the hosts hold the same key."""
    from roles.workstation_secrets import private_dir, write_private

    src, dest = site.spse_app.tls_key_source, site.spse_app.tls_key_file
    if not src or not dest:
        return {"needed": False}
    order = site.hosts_in(site.active_site) + [h for h in site.hosts if h not in site.hosts_in(site.active_site)]
    tried = []
    for host in order:
        r = remote.run(site, host, f"sudo -n base64 -w0 {shlex.quote(dest)}", timeout=30)
        if r.ok and r.stdout.strip():
            private_dir(Path(src).parent)
            write_private(Path(src), base64.b64decode(r.stdout.strip()).decode())
            return {"needed": True, "ok": True, "from": f"{host}:{dest}", "path": str(src)}
        tried.append(f"{host}: {r.error or (r.stderr.strip() or 'empty')[:200]}")
    return {"needed": True, "ok": False, "error": "; ".join(tried)}


def prove_secrets(site: Site) -> dict:
    """Each escrowed secret as this workstation now holds it, against every host's copy (sha256
    prefixes only): held by at least one host, and no host holds another."""
    from drc.secrets.host import call
    from drc.site.data_tier import data_tier_of
    from roles.secret_custody import fingerprint, secret_specs, workstation_value

    specs = [s for s in secret_specs(data_tier_of(site)) if s.key in ("repo1", "restic")]
    items = [{"path": loc.path, "form": loc.form} for s in specs for loc in s.locations]
    answers = remote.parallel(list(site.hosts), lambda h: call(site, h, {"mode": "fingerprints", "items": items}, None, 60), 90,
                              lambda h: {"ok": False, "error": f"{h}: no answer within 90 s"})
    out: dict = {}
    for s in specs:
        want = fingerprint(workstation_value(s) or "")
        row = {"fingerprint": want, "match": [], "differ": [], "absent": [], "unread": []}
        for host, a in answers.items():
            for loc in s.locations:
                got = (a.get("fingerprints") or {}).get(loc.path) if a.get("ok") else None
                if got is None:
                    row["unread"].append(f"{host}: {a.get('error')}")
                elif got == want:
                    row["match"].append(f"{host}:{loc.path}")
                elif got.startswith("sha256:"):
                    row["differ"].append(f"{host}:{loc.path} ({got})")
                else:
                    row["absent"].append(f"{host}:{loc.path} ({got})")
        row["ok"] = bool(row["match"]) and not row["differ"]
        out[s.key] = row
    return {"ok": all(r["ok"] for r in out.values()), "secrets": out}


def deploy_proof(site_file: Path) -> dict:
    """A dry site deploy from the restored workstation: it must plan no change."""
    from drc.hosts.deploy import no_change_problem, run_deploy

    res = run_deploy(site_file, "site", "--dry")
    problem = no_change_problem(res)
    return {"ok": problem is None, "problem": problem, "seconds": round(res.seconds, 1),
            "operations": len(res.operations), "output_tail": None if problem is None else res.output[-3000:]}


# --- the restore ---------------------------------------------------------------------------------

def adopt_copies(site: Site, man: dict, fetched_from: str, fetched_sha: str) -> dict:
    """The workstation's bookkeeping after a restore: the copy's lineage, and each DRC host's copy
    of that lineage as the one to replace next (so the next push is accepted)."""
    state = {"lineage": man["lineage"], "instance": m.new_id(), "seq": int(man.get("seq", 0)), "hosts": {},
             "restored_at": m.now(), "restored_from": fetched_from, "files": None, "behind_since": m.now()}
    for host in push.mirror_hosts(site):
        if host == fetched_from:
            state["hosts"][host] = {"mirror_sha": fetched_sha}
            continue
        a = push.read_manifest(site, host)
        if a.get("state") == "present" and a["manifest"].get("lineage") == man["lineage"]:
            state["hosts"][host] = {"mirror_sha": a["sha"]}
    m.write_state(site, state)
    return state


def restore(doc: dict, address: str, site_dir: Path, user: str, key_file: Path, port: int = 22,
            known_hosts: Path | None = None, host_key: str | None = None, deploy_check: bool = True) -> dict:
    site_dir = site_dir.expanduser().absolute()
    key_file = key_file.expanduser().absolute()
    _clean(site_dir)
    if not key_file.is_file():
        raise RestoreError(f"--key {key_file}: not found (the admin's own SSH key: it is never in the DRC's copy nor the escrow)")
    t0 = dt.datetime.now()
    conn = bootstrap_connection(address, user, key_file, port, known_hosts, host_key)
    try:
        with conn:
            man, files, msha = push.fetch_with(conn, doc["site"])
    except m.MirrorError as exc:
        raise RestoreError(f"{address}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 (the host could not be reached or refused us: say why)
        raise RestoreError(f"{address}: {remote.why(exc)}") from None
    if man["site"] != doc["site"]:
        raise RestoreError(f"the copy on {address} is of site '{man['site']}', the escrow of '{doc['site']}'")

    import tempfile

    from drc.site import parse_site

    text = files[m.SITE_FILE].decode()
    # The original site, to know which settings it had (its own paths need not exist here).
    with tempfile.TemporaryDirectory() as tmp:
        original = _original(text, Path(tmp), man)
    moved = relocation(man, site_dir, key_file, original)
    site_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    local = file_names(man)
    for name, data in files.items():
        if name.startswith("records/"):
            _write(site_dir / name, data)
        elif name in local:
            _write(site_dir / "files" / local[name], data, 0o644)
    if known_hosts and "connection.known_hosts_file" not in man.get("settings", {}) \
            and original.connection.known_hosts_file is None:
        _write(site_dir / "files" / "known_hosts", known_hosts.read_bytes(), 0o644)
        moved["connection.known_hosts_file"] = str(site_dir / "files" / "known_hosts")
    new_text = rewrite_paths(text, moved)
    site_file = site_dir / "site.yaml"
    import yaml

    parse_site(yaml.safe_load(new_text), site_file, new_text)  # refused here, before the file is written
    _write(site_file, new_text.encode(), 0o640)
    site = load_site(site_file)

    host_name = next((h for h, v in site.hosts.items() if str(v.address) == address or h == address), address)
    written = put_escrow_secrets(site, doc)
    tls = fetch_tls_key(site)
    missing = []
    if tls.get("needed") and not tls.get("ok"):
        missing.append(f"spse_app.tls_key_source ({site.spse_app.tls_key_source}): not read from any host ({tls.get('error')}). "
                       "Fix: put the certificate's private key there (0600)")
    dns_key = m.setting(site, "traffic.dns_update.key_file")
    if dns_key is not None and not Path(dns_key).exists():
        missing.append(f"traffic.dns_update.key_file ({dns_key}): the DNS update key is on no site host nor in the escrow. "
                       "Fix: get it from the DNS server's admins and put it there (0600) before a switch-over")
    state = adopt_copies(site, man, host_name, msha)
    proof = prove_secrets(site)
    deploy = deploy_proof(site_file) if deploy_check and proof["ok"] else None
    rec = {"id": f"workstation-restore-{m.now()}", "kind": "workstation-restore", "at": m.now(), "from": f"{host_name} ({address})",
           "copy": {"pushed_at": man.get("pushed_at"), "pushed_by": man.get("pushed_by"), "seq": man.get("seq"),
                    "files": len(files)},
           "secrets_from_escrow": written, "tls_key": {k: v for k, v in tls.items() if k != "path"},
           "proof_secrets": {k: {"ok": v["ok"], "match": len(v["match"])} for k, v in proof["secrets"].items()},
           "deploy_dry_no_change": None if deploy is None else deploy["ok"], "missing": missing,
           "seconds": round((dt.datetime.now() - t0).total_seconds(), 1)}
    rec["result"] = "success" if proof["ok"] and (deploy is None or deploy["ok"]) else "failure"
    store.append_new(store.records_dir(site) / RESTORES, [rec])
    return {"ok": rec["result"] == "success", "site_file": str(site_file), "site_dir": str(site_dir), "from": rec["from"],
            "copy": rec["copy"], "records": sum(1 for n in files if n.startswith("records/")),
            "files": sorted(moved.items()), "secrets_from_escrow": written, "tls_key": tls, "missing": missing,
            "proof": proof, "deploy": deploy, "lineage": state["lineage"], "seconds": rec["seconds"]}


def _original(text: str, tmp: Path, man: dict) -> Site:
    """The copied site file as a Site. Files it names that must exist to load (the apt key) are
    given their copied contents in a scratch directory."""
    import yaml

    from drc.site import parse_site

    data = yaml.safe_load(text)
    apt = ((data.get("backup") or {}).get("pgbackrest_apt") or {})
    if apt.get("key_file"):
        name = man.get("settings", {}).get("backup.pgbackrest_apt.key_file")
        (tmp / "apt.key").write_text("")
        apt["key_file"] = str(tmp / "apt.key") if name else apt["key_file"]
    return parse_site(data, tmp / "site.yaml", text)
