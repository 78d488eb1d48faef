"""The workstation's copy on the DRC without a lab (issue 11 point 4): what is copied (never a
secret), the copy's tarball read back and checked, root's swap script run for real in a scratch
directory (a copy from another workstation is not replaced), the restored site file's paths, and
when a command pushes."""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from drc.records import mirror as m
from drc.records import store
from drc.site import load_site
from drc.workstation import mirror as push
from drc.workstation import restore

SITE = """\
# The LPSE's site file (a comment the restore keeps)
site: t
admin_workstations: [10.0.0.1/32]
ssh_allowlist: [10.0.0.0/24]
connection:
  user: budi
  key_file: {d}/id_ed25519
  known_hosts_file: {d}/known_hosts
admins:
- name: budi
  ssh_keys: [ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB budi@x]
sites:
  primary: {{networks: [10.0.1.0/24], hosts: [primary]}}
  drc: {{networks: [10.0.2.0/24], hosts: [drc]}}
hosts:
  primary: {{address: 10.0.1.10}}
  drc: {{address: 10.0.2.10}}
replication:
  secrets_dir: {d}/secrets   # 0700
spse_app:
  tls_certificate_file: /etc/ssl/certs/p.pem
  tls_key_file: /etc/ssl/private/p.key
  tls_certificate_source: {d}/tls/public.crt
  tls_key_source: {d}/tls/public.key
records_dir: {records}
"""


def write_site(d: Path, records: Path | None = None) -> Path:
    (d / "tls").mkdir(parents=True)
    (d / "tls/public.crt").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    (d / "tls/public.key").write_text("-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n")
    (d / "known_hosts").write_text("10.0.2.10 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB\n")
    (d / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n")
    sec = d / "secrets"
    sec.mkdir(mode=0o700)
    (sec / "restic-repo1.password").write_text("R" * 64 + "\n")
    f = d / "site.yaml"
    f.write_text(SITE.format(d=d, records=records or d / "records"))
    return f


@pytest.fixture
def ws(tmp_path):
    f = write_site(tmp_path)
    site = load_site(f)
    rdir = store.records_dir(site)
    store.append_new(rdir / "backup-log.jsonl", [{"id": "b1", "set": "db", "result": "success"}])
    (rdir / "runbooks").mkdir()
    store.append_new(rdir / "runbooks" / "switchover-drc-1.jsonl", [{"id": "j:0", "event": "begin"}])
    return site, f


def test_the_copy_holds_the_site_file_public_files_and_records_and_no_secret(ws, tmp_path):
    site, f = ws
    items, named = m.entries(site, f)
    names = [e.name for e in items]
    assert names == sorted(names)
    assert {"site/site.yaml", "records/backup-log.jsonl", "records/runbooks/switchover-drc-1.jsonl"} <= set(names)
    assert named == {"connection.known_hosts_file": "site/files/connection-known_hosts_file--known_hosts",
                     "spse_app.tls_certificate_source": "site/files/spse_app-tls_certificate_source--public.crt"}
    blob = b"".join(e.path.read_bytes() for e in items)
    assert b"PRIVATE KEY" not in blob and b"R" * 64 not in blob
    # The workstation's own bookkeeping never travels.
    m.write_state(site, m.ensure_identity({}))
    assert m.STATE not in {Path(n).name for n in (e.name for e in m.entries(site, f)[0])}


def test_a_secrets_directory_inside_the_records_directory_stays_out(tmp_path):
    d = tmp_path / "ws"
    d.mkdir()
    f = write_site(d, records=d)  # records_dir is the parent of the secrets directory
    site = load_site(f)
    names = {e.name for e in m.entries(site, f)[0]}
    assert not any(n.startswith("records/secrets/") for n in names) and "records/site.yaml" in names
    # The records directory being the secrets directory itself: refused, nothing copied.
    f.write_text(f.read_text().replace(f"records_dir: {d}", f"records_dir: {d}/secrets"))
    with pytest.raises(m.MirrorError, match="is the secrets directory"):
        m.entries(load_site(f), f)


def test_the_default_layout_copies_the_records_not_the_secrets_around_them(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    d = tmp_path / "ws"
    d.mkdir()
    f = write_site(d)
    f.write_text(f.read_text().replace(f"records_dir: {d}/records\n", "").replace(f"replication:\n  secrets_dir: {d}/secrets   # 0700\n", ""))
    site = load_site(f)
    sec = tmp_path / "state/siaga/t"  # secrets here, records in its records/ subdirectory
    sec.mkdir(parents=True)
    (sec / "restic-repo1.password").write_text("S" * 64 + "\n")
    store.append_new(store.records_dir(site) / "x.jsonl", [{"id": "1"}])
    names = {e.name for e in m.entries(site, f)[0]}
    assert "records/x.jsonl" in names and not any("restic" in n for n in names)


def test_a_public_setting_naming_a_private_key_is_refused(ws, tmp_path):
    site, f = ws
    Path(site.spse_app.tls_certificate_source).write_text("-----BEGIN PRIVATE KEY-----\n")
    with pytest.raises(m.MirrorError, match="holds a private key"):
        m.entries(site, f)


def test_the_tarball_reads_back_and_a_damaged_file_is_refused(ws):
    site, f = ws
    items, named = m.entries(site, f)
    state = m.ensure_identity({})
    man = m.manifest(site, items, named, state, 7)
    data = m.tarball(items, json.dumps(man))
    back, files = m.unpack(data)
    assert back["seq"] == 7 and back["lineage"] == state["lineage"] and set(files) == {e.name for e in items}
    assert files["site/site.yaml"] == f.read_bytes()
    man["files"]["records/backup-log.jsonl"] = hashlib.sha256(b"other").hexdigest()
    with pytest.raises(m.MirrorError, match="damaged"):
        m.unpack(m.tarball(items, json.dumps(man)))


HOST_PROGRAM = Path(__file__).resolve().parents[1] / "drc/hostside/workstation_mirror.py"


def program(root: Path, **args) -> dict:
    """The host program as root runs it on a DRC host, on a scratch root."""
    p = subprocess.run([sys.executable, str(HOST_PROGRAM), json.dumps({"root": str(root), **args})], check=False,
                       capture_output=True, text=True, timeout=60)
    out = json.loads(p.stdout)
    assert (p.returncode == 0) == out["ok"], p.stdout + p.stderr
    return out


def swap(root: Path, site: str, data: bytes, expect: str | None, force: bool = False) -> dict:
    root.parent.mkdir(parents=True, exist_ok=True)
    upload = root.parent / f"upload-{os.urandom(4).hex()}.tgz"
    upload.write_bytes(data)
    out = program(root, mode="swap", site=site, upload=str(upload), expect=expect, force=force)
    assert not upload.exists(), "the upload is removed whatever happened"
    return out


@pytest.mark.skipif(os.geteuid() != 0, reason="the host program makes root's directory: needs root")
def test_the_host_program_replaces_only_the_copy_this_workstation_wrote(ws, tmp_path):
    site, f = ws
    root = tmp_path / "drc/var/lib/siaga/workstation-mirror"
    assert program(root, mode="read", site="t") == {"ok": True, "state": "absent"}
    items, named = m.entries(site, f)
    state = m.ensure_identity({})
    first = json.dumps(m.manifest(site, items, named, state, 1))
    assert swap(root, "t", m.tarball(items, first), None) == {"ok": True, "sha": push.sha(first)}
    assert oct(root.stat().st_mode & 0o777) == "0o700" and oct((root / "t").stat().st_mode & 0o777) == "0o700"
    assert (root / "t/records/backup-log.jsonl").read_bytes() == (store.records_path(site) / "backup-log.jsonl").read_bytes()
    assert all(x.stat().st_mode & 0o077 == 0 and x.stat().st_uid == 0 for x in (root / "t").rglob("*"))
    read = program(root, mode="read", site="t")
    assert read["sha"] == push.sha(first) and push.parse_manifest_answer(read)["manifest"]["seq"] == 1
    # A second copy expecting no copy there (another workstation): refused, the first one kept.
    other = json.dumps(m.manifest(site, items, named, m.ensure_identity({}), 1))
    assert swap(root, "t", m.tarball(items, other), None) == {"ok": False, "conflict": push.sha(first)}
    assert (root / "t" / m.MANIFEST).read_text() == first
    # The one that wrote it replaces it; a take-over replaces any.
    second = json.dumps(m.manifest(site, items, named, state, 2))
    assert swap(root, "t", m.tarball(items, second), push.sha(first))["ok"]
    assert (root / "t" / m.MANIFEST).read_text() == second
    assert swap(root, "t", m.tarball(items, other), "0" * 64, force=True)["ok"]
    assert sorted(x.name for x in root.iterdir()) == [".lock", "t"]  # no .new/.old left
    # What a restore reads back is that copy, whole.
    got = program(root, mode="fetch", site="t")
    man, files = m.unpack(base64.b64decode(got["data"]))
    assert man["lineage"] != state["lineage"] and files["site/site.yaml"] == f.read_bytes()
    assert push.sha(m.manifest_bytes(base64.b64decode(got["data"]))) == push.sha(other)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_the_host_program_refuses_an_upload_leaving_the_copy(tmp_path):
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in ("MIRROR.json", "../../etc/evil"):
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"{}"))
    root = tmp_path / "root"
    out = swap(root, "t", buf.getvalue(), None)
    assert not out["ok"] and "only regular files inside the copy" in out["error"]
    assert sorted(x.name for x in root.iterdir()) == [".lock"] and not (tmp_path / "etc").exists()
    assert program(root, mode="read", site="../x") == {"ok": False, "error": "site '../x': not a site name"}


def test_the_restored_site_file_points_at_the_new_places_and_keeps_comments(ws, tmp_path):
    site, f = ws
    _, named = m.entries(site, f)
    man = {"settings": named}
    new = tmp_path / "new-ws"
    moved = restore.relocation(man, new, tmp_path / "key", site)
    assert moved["records_dir"] == str(new / "records") and moved["replication.secrets_dir"] == str(new / "secrets")
    assert moved["connection.known_hosts_file"] == str(new / "files/known_hosts")
    assert moved["spse_app.tls_key_source"] == str(new / "secrets/public.key")
    text = restore.rewrite_paths(f.read_text(), moved)
    assert "# The LPSE's site file (a comment the restore keeps)" in text and "# 0700" in text
    import yaml

    data = yaml.safe_load(text)
    assert data["spse_app"]["tls_certificate_source"] == str(new / "files/public.crt")
    assert data["connection"]["key_file"] == str(tmp_path / "key")
    # Only the paths changed.
    old = yaml.safe_load(f.read_text())
    for dotted in moved:
        for d in (old, data):
            node = d
            for p in dotted.split(".")[:-1]:
                node = node[p]
            node.pop(dotted.split(".")[-1], None)
    assert old == data


def test_a_missing_section_is_made_only_for_the_secrets_directory(tmp_path):
    text = "site: t\nhosts: {}\n"
    out = restore.rewrite_paths(text, {"replication.secrets_dir": "/n/secrets", "records_dir": "/n/records",
                                       "traffic.ca_file": "/n/files/ca.crt"})
    import yaml

    assert yaml.safe_load(out) == {"site": "t", "hosts": {}, "replication": {"secrets_dir": "/n/secrets"}, "records_dir": "/n/records"}


def test_a_host_key_fingerprint_as_ssh_keygen_shows_it(tmp_path):
    import paramiko

    if not shutil.which("ssh-keygen"):
        pytest.skip("needs ssh-keygen")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    want = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "k.pub")], capture_output=True, text=True, check=True).stdout.split()[1]
    assert restore.key_fingerprint(paramiko.Ed25519Key.from_private_key_file(str(tmp_path / "k"))) == want


def test_a_command_pushes_only_when_it_used_the_records_and_something_changed(ws, monkeypatch):
    site, f = ws
    calls = []
    monkeypatch.setattr(push, "push", lambda s, sf, force=False, items=None: calls.append(sf) or
                        {"ok": True, "hosts": {"drc": {"ok": True}}, "files": 1, "seq": 1, "bytes": 1, "behind_since": None})

    class Quiet:
        def print(self, *a, **k):
            pass

    def command(cmd: str, uses_records: bool, env: str = "on"):
        monkeypatch.setenv(push.ENV, env)
        with push.after_command(argparse.Namespace(site=str(f), cmd=cmd), Quiet()):
            if uses_records:
                store.records_dir(site)

    command("status", False)
    assert calls == []
    command("backup", True, env="off")
    assert calls == []
    command("lab", True)
    assert calls == []
    command("backup", True)
    assert calls == [f]
    # Nothing changed since a push to every DRC host: no SSH at all.
    state = m.ensure_identity(m.read_state(site))
    state.update({"files": m.files_of(m.entries(site, f)[0]), "hosts": {"drc": {"mirror_sha": "x"}}, "behind_since": None})
    m.write_state(site, state)
    command("backup", True)
    assert calls == [f]
    store.append_new(store.records_path(site) / "backup-log.jsonl", [{"id": "b2"}])
    command("backup", True)
    assert calls == [f, f]


def test_a_failed_push_warns_and_is_recorded_never_raised(ws, monkeypatch):
    site, f = ws
    monkeypatch.setattr(push, "push_host", lambda *a: {"ok": False, "error": "NoValidConnectionsError: unreachable"})
    res = push.push(site, f)
    assert not res["ok"] and res["behind_since"]
    assert m.read_state(site)["behind_since"] == res["behind_since"]
    rec = store.read(store.records_path(site) / m.FAILURES)
    assert rec[-1]["result"] == "failure" and "unreachable" in rec[-1]["error"] and rec[-1]["hosts"] == ["drc"]
    # The next push carries that record to the DRC, and clears "behind" when it succeeds.
    monkeypatch.setattr(push, "push_host", lambda *a: {"ok": True})
    res = push.push(site, f)
    assert res["ok"] and m.read_state(site)["behind_since"] is None


def test_runbook_step_ends_push_in_the_background_one_at_a_time(ws, monkeypatch):
    import threading

    site, f = ws
    started, release, calls = threading.Event(), threading.Event(), []

    def slow_sync(s, sf):
        calls.append(sf)
        started.set()
        release.wait(10)

    monkeypatch.setattr(push, "sync", slow_sync)
    push.push_soon(site, f)
    assert started.wait(10)
    for i in range(5):  # step ends while the first push runs: one more push after it, with the newest
        push.push_soon(site, tmp := f.with_name(f"s{i}.yaml"))
    release.set()
    push.wait_background(10)
    assert calls == [f, tmp] and push._bg["thread"] is None


def test_the_engine_pushes_after_each_step_when_its_context_names_a_site_file(ws, monkeypatch):
    from drc.runbooks.engine import Engine

    site, f = ws
    seen = []
    monkeypatch.setattr(push, "push_soon", lambda s, sf: seen.append(sf))

    class Ctx:
        pass

    e = Engine.__new__(Engine)
    e.ctx = Ctx()
    e._mirror()
    assert seen == []
    e.ctx.site, e.ctx.site_file = site, f
    e._mirror()
    assert seen == [f]


def test_only_the_path_values_change_byte_for_byte(tmp_path):
    text = ("site: t  # the LPSE\nadmin_workstations:\n- 10.0.0.1/32\nconnection:\n  user: budi\n"
            "  known_hosts_file: '/old/known hosts'   # quoted, with a comment\n  key_file: \"/old/id\"\n"
            "replication:\n    user: replicator\nspse_app:\n  tls_certificate_source: /old/tls/public.crt\n")
    out = restore.rewrite_paths(text, {"connection.known_hosts_file": "/new/files/known hosts", "connection.key_file": "/k/id",
                                       "spse_app.tls_certificate_source": "/new/files/public.crt",
                                       "replication.secrets_dir": "/new/secrets", "records_dir": "/new/records"})
    assert out == ("site: t  # the LPSE\nadmin_workstations:\n- 10.0.0.1/32\nconnection:\n  user: budi\n"
                   "  known_hosts_file: /new/files/known hosts   # quoted, with a comment\n  key_file: /k/id\n"
                   "replication:\n    secrets_dir: /new/secrets\n    user: replicator\nspse_app:\n"
                   "  tls_certificate_source: /new/files/public.crt\nrecords_dir: /new/records\n")
    assert restore._scalar("/a: b") == '"/a: b"' and restore._scalar("/a/b") == "/a/b"


def test_two_settings_naming_files_of_one_name_keep_both():
    man = {"settings": {"traffic.ca_file": "site/files/traffic-ca_file--ca.crt",
                        "spse_app.tls_chain_source": "site/files/spse_app-tls_chain_source--ca.crt"}}
    assert restore.file_names(man) == {"site/files/spse_app-tls_chain_source--ca.crt": "ca.crt",
                                       "site/files/traffic-ca_file--ca.crt": "traffic-ca_file--ca.crt"}


def test_check_says_current_only_for_this_workstations_copy_of_its_files_now(ws, monkeypatch):
    site, f = ws
    state = m.ensure_identity({})
    m.write_state(site, state)
    items, named = m.entries(site, f)
    copy = {"state": "present", "sha": "x", "manifest": m.manifest(site, items, named, state, 3)}
    monkeypatch.setattr(push, "read_manifest", lambda s, h: copy)
    res = push.check(site, f)
    assert res["ok"] and res["hosts"]["drc"]["current"] and res["hosts"]["drc"]["ours"]
    store.append_new(store.records_path(site) / "backup-log.jsonl", [{"id": "b9"}])
    row = push.check(site, f)["hosts"]["drc"]
    assert not row["current"] and row["differ"] == ["records/backup-log.jsonl"]
    # The same files written by a restored workstation (same lineage, another instance): not ours.
    copy["manifest"] = m.manifest(site, m.entries(site, f)[0], named, {**state, "instance": "other"}, 4)
    row = push.check(site, f)["hosts"]["drc"]
    assert not row["ours"] and not row["current"]
    monkeypatch.setattr(push, "read_manifest", lambda s, h: {"state": "unreachable", "error": "timeout"})
    assert push.check(site, f)["hosts"]["drc"] == {"state": "unreachable", "error": "timeout", "current": False}
