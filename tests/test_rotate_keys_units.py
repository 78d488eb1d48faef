"""Rotation of siaga's SSH keys on the workstation (drc/secrets/rotate_keys.py) and the host program
key-rotate (drc/hostside/key_rotate.py) on real files: keys files end exactly as the roles write
them (so the next deploy changes nothing), a private key is replaced in place only over the key
expected, and a failed proof puts every change back. SOP BK-8."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess

import pytest

from drc.hostside import key_rotate as kr
from drc.secrets import rotate_keys
from drc.secrets.rotate import NOT_YET, SUPPORTED, RotateError
from tests.test_roles_render import make_site


def keypair(tmp_path, name="k", comment="c@lab"):
    path = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
    return path.read_text(), path.with_name(name + ".pub").read_text().strip()


def answer(args: dict, keys: dict | None = None) -> dict:
    return kr.answer(args, io.StringIO(json.dumps(keys) + "\n" if keys is not None else ""))


# --- keys files ---------------------------------------------------------------------------------------

def test_an_authorized_keys_line_is_split_with_quoted_blanks_in_its_options():
    line = 'restrict,from="10.0.0.1",command="/usr/lib/openssh/sftp-server -d /srv/x y" ssh-ed25519 AAAAB c@d e'
    assert kr.split_line(line) == ('restrict,from="10.0.0.1",command="/usr/lib/openssh/sftp-server -d /srv/x y"',
                                   "ssh-ed25519", "AAAAB", "c@d e")
    assert kr.split_line("ssh-ed25519 AAAAB") == ("", "ssh-ed25519", "AAAAB", "")
    assert kr.split_line("# restrict ssh-ed25519 AAAAB") is None
    assert kr.split_line("   ") is None


@pytest.mark.parametrize("name", ["pgbackrest_key", "restic_key", "repo_key", "uploads_sync"])
def test_the_new_key_beside_the_old_then_the_old_removed_is_what_the_role_writes(tmp_path, name):
    """The keys file after a rotation equals the role's own rendering with the new key: the next deploy changes nothing."""
    from roles.backup.keys import db_account_keys
    from roles.backup.layout import HEADER, ROLE_DIR
    from roles.templating import render
    from roles.uploads_sync.deploy import authorized_keys

    site = make_site()
    _, old = keypair(tmp_path, "old", "x@lab")
    _, new = keypair(tmp_path, "new", "x@lab")

    def role(pub: str) -> str:
        if name == "uploads_sync":
            return authorized_keys(site, pub)
        if name == "repo_key":
            return db_account_keys(HEADER, "drc", "10.213.2.10", pub)
        other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherKeyOfTheSameFile y@lab"
        keys = {"pgbackrest_key": pub, "restic_key": other} if name == "pgbackrest_key" else {"pgbackrest_key": other, "restic_key": pub}
        return render(ROLE_DIR, "authorized_keys.j2", header=HEADER, b=site.backup, backup_host="primary",
                      from_addresses="10.213.1.10", **keys)

    kp = rotate_keys.key_path(site, name)
    both = kr.with_new_key(role(old), old, kp.public_text(new))
    assert len(kr.key_lines(both, kr.blob_of(old))) == len(kr.key_lines(both, kr.blob_of(new))) == 1
    old_line, new_line = kr.key_lines(both, kr.blob_of(old))[0], kr.key_lines(both, kr.blob_of(new))[0]
    assert kr.split_line(old_line)[0] == kr.split_line(new_line)[0]  # same forced command, from=, restrict
    assert kr.without_key(both, old) == role(new)
    assert kr.with_new_key(role(old), new, "ssh-ed25519 AAAAnothere z") is None  # no line of that key


def test_authorize_and_unauthorize_keep_the_file_owner_and_mode_and_never_leave_no_key(tmp_path):
    _, old = keypair(tmp_path, "old")
    _, new = keypair(tmp_path, "new")
    f = tmp_path / "keys"
    f.write_text(f'# header\nrestrict,command="/bin/true" {old}\n')
    os.chmod(f, 0o644)
    assert answer({"mode": "authorize", "file": str(f)}, {"old": old, "new": new}) == {"ok": True, "changed": True, "lines": 1}
    assert answer({"mode": "authorize", "file": str(f)}, {"old": old, "new": new})["changed"] is False
    assert f.read_text() == f'# header\nrestrict,command="/bin/true" {old}\nrestrict,command="/bin/true" {new}\n'
    assert stat.S_IMODE(f.stat().st_mode) == 0o644
    assert answer({"mode": "unauthorize", "file": str(f)}, {"remove": old, "keep": new})["changed"] is True
    assert f.read_text() == f'# header\nrestrict,command="/bin/true" {new}\n'
    refused = answer({"mode": "unauthorize", "file": str(f)}, {"remove": new, "keep": old})
    assert not refused["ok"] and "leave no key" in refused["error"]
    assert kr.key_lines(f.read_text(), kr.blob_of(new))


# --- private keys -------------------------------------------------------------------------------------

def test_a_private_key_is_replaced_in_place_only_over_the_expected_one(tmp_path):
    old, _ = keypair(tmp_path, "old")
    new, _ = keypair(tmp_path, "new")
    other, _ = keypair(tmp_path, "other")
    f = tmp_path / "id"
    f.write_text(old)
    os.chmod(f, 0o640)  # a mode the role never sets: the new key is 0600 all the same
    assert answer({"mode": "holds", "path": str(f)}, {"old": old, "new": new})["holds"] == "old"
    res = answer({"mode": "install", "path": str(f)}, {"expect": old, "new": new})
    assert res["ok"] and res["changed"] and res["mode"] == "600" and f.read_text() == new
    assert answer({"mode": "install", "path": str(f)}, {"expect": old, "new": new})["changed"] is False
    assert answer({"mode": "holds", "path": str(f)}, {"old": old, "new": new})["holds"] == "new"
    refused = answer({"mode": "install", "path": str(f)}, {"expect": old, "new": other})
    assert not refused["ok"] and "neither" in refused["error"] and f.read_text() == new
    assert answer({"mode": "holds", "path": str(tmp_path / "none")}, {"old": old})["holds"] == "absent"
    assert "missing on this host" in answer({"mode": "install", "path": str(tmp_path / "none")}, {"expect": old, "new": new})["error"]


def test_keys_only_from_stdin_and_no_key_in_an_answer(tmp_path):
    for mode in ("authorize", "unauthorize", "install", "holds", "logins"):
        assert "no keys on stdin" in kr.answer({"mode": mode}, io.StringIO(""))["error"]
    old, _ = keypair(tmp_path, "old")
    f = tmp_path / "id"
    f.write_text(old)
    res = answer({"mode": "holds", "path": str(f)}, {"old": old, "new": old})
    assert old.splitlines()[1] not in json.dumps(res)


# --- the workstation's side ----------------------------------------------------------------------------

def test_every_ssh_key_is_rotatable_and_none_is_refused_by_name():
    assert set(rotate_keys.KEYS) <= set(SUPPORTED)
    assert not set(rotate_keys.KEYS) & set(NOT_YET)


def test_each_key_path_names_the_hosts_that_use_accept_and_prove_it():
    site = make_site()
    p = rotate_keys.key_path(site, "pgbackrest_key")
    assert p.using == (("primary", "/var/lib/postgresql/.ssh/siaga_backup_ed25519"),)
    assert p.authorizing == (("drc", "/etc/ssh/siaga-backup-keys/siagabak"),)
    assert [(lg.host, lg.user, lg.address) for lg in p.logins] == [("primary", "siagabak", "10.213.2.10")]
    assert p.proofs == (("primary", {"how": "pgbackrest-check"}),)
    p = rotate_keys.key_path(site, "restic_key")
    assert p.using == (("primary", "/etc/siaga/backup/restic_ed25519"),) and p.proofs == (("primary", {"how": "restic-snapshots"}),)
    p = rotate_keys.key_path(site, "repo_key")
    assert p.using == (("drc", "/var/lib/siagabak/.ssh-client/id_ed25519"),)
    assert p.authorizing == (("primary", "/etc/ssh/siaga-backup-keys/postgres"),)
    assert [(lg.host, lg.user, lg.known_hosts) for lg in p.logins] == [
        ("drc", "postgres", "/var/lib/siagabak/.ssh-client/known_hosts")]
    p = rotate_keys.key_path(site, "uploads_sync")
    assert p.using == (("primary", "/etc/siaga/uploads-sync/id_ed25519"),)
    assert [h for h, _ in p.authorizing] == ["drc"] and p.authorizing[0][1].startswith("/etc/ssh/siaga-sync-keys/")
    [(host, proof)] = p.proofs
    assert host == "primary" and proof["how"] == "rsync-dry-run" and proof["dest"].endswith("@10.213.2.10:")
    with pytest.raises(RotateError, match="role enabled"):
        rotate_keys.key_path(make_site(uploads_sync={"enabled": False}), "uploads_sync")


def test_the_plan_names_every_step_and_no_secret(tmp_path):
    site = make_site(replication={"secrets_dir": str(tmp_path / "s")})
    steps = rotate_keys.plan(site, "repo_key")
    text = "\n".join(steps)
    for word in ("beside the old", "install the new private key", "pgbackrest check", "remove the old public key",
                 "old key refused", "put back", "atomically, 0600"):
        assert word in text, word
    assert not (tmp_path / "s").exists()  # a plan makes nothing


@pytest.fixture
def local_key(tmp_path, monkeypatch):
    """The uploads key of a site whose 'hosts' are files here, run through the real host program (its
    answer() on these files): the rotation's order, its proofs and its put-back on real files."""
    site = make_site(replication={"secrets_dir": str(tmp_path / "secrets")})
    spec = rotate_keys.spec_for(rotate_keys.data_tier_of(site), "uploads_sync")
    spec.directory.mkdir(mode=0o700)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", spec.comment, "-f", str(spec.path)], check=True)
    old_private, old_public = spec.path.read_text(), spec.path.with_name(spec.name + ".pub").read_text().strip()
    host_key, keys_file = tmp_path / "id_ed25519", tmp_path / "keys"
    host_key.write_text(old_private)
    os.chmod(host_key, 0o600)
    keys_file.write_text(f'# header\nrestrict,command="rrsync -wo /home/file" {old_public}\n')
    real = rotate_keys.key_path(site, "uploads_sync")
    kp = rotate_keys.KeyPath(real.name, real.what, (("primary", str(host_key)),), (("drc", str(keys_file)),),
                             (rotate_keys.Login("primary", "appserv", "10.213.2.10", "/dev/null"),),
                             (("primary", {"how": "local"}),), real.public_text)
    monkeypatch.setattr(rotate_keys, "key_path", lambda s, n: kp)
    state = {"proof": {"ok": True, "detail": "proven"}, "calls": []}

    def call(site, host, args, keys=None, timeout=600):
        state["calls"].append((host, args["mode"]))
        if args["mode"] == "prove":
            return state["proof"]
        if args["mode"] == "logins":  # sshd's decision, from the keys file as it is now
            text = keys_file.read_text()

            def accepted(private: str) -> bool:
                public = subprocess.run(["ssh-keygen", "-y", "-f", "/dev/stdin"], input=private, capture_output=True,
                                        text=True, check=True).stdout
                return bool(kr.key_lines(text, kr.blob_of(public)))

            return {"ok": True, "logins": {k: "accepted" if accepted(v) else "refused" for k, v in keys.items()}}
        return answer(args, keys)

    monkeypatch.setattr(rotate_keys, "call", call)
    return {"site": site, "spec": spec, "old_private": old_private, "old_public": old_public, "host_key": host_key,
            "keys_file": keys_file, "state": state}


def test_a_rotation_installs_proves_removes_the_old_key_and_writes_the_workstation_last(local_key):
    k = local_key
    res = rotate_keys.rotate(k["site"], "uploads_sync")
    spec = k["spec"]
    new_private, new_public = spec.path.read_text(), spec.path.with_name(spec.name + ".pub").read_text().strip()
    assert res["ok"] and res["old"] != res["new"] and res["new"].startswith("SHA256:")
    assert new_private != k["old_private"] and k["host_key"].read_text() == new_private
    assert stat.S_IMODE(spec.path.stat().st_mode) == 0o600 and stat.S_IMODE(k["host_key"].stat().st_mode) == 0o600
    assert not kr.key_lines(k["keys_file"].read_text(), kr.blob_of(k["old_public"]))
    assert k["keys_file"].read_text() == f'# header\nrestrict,command="rrsync -wo /home/file" {new_public}\n'
    assert [m for _, m in k["state"]["calls"]] == ["holds", "authorize", "install", "prove", "unauthorize", "logins"]
    assert not list(spec.directory.glob("*.rotating*"))
    assert any("the old key refused" in s for s in res["steps"])


def test_a_failed_proof_puts_everything_back_and_the_workstation_keeps_the_old_key(local_key):
    k = local_key
    before = (k["keys_file"].read_text(), k["host_key"].read_text())
    k["state"]["proof"] = {"ok": False, "detail": "rsync --dry-run: Permission denied"}
    with pytest.raises(RotateError, match="Everything was put back") as err:
        rotate_keys.rotate(k["site"], "uploads_sync")
    assert "Permission denied" in str(err.value) and "BEGIN" not in str(err.value)
    assert (k["keys_file"].read_text(), k["host_key"].read_text()) == before
    assert k["spec"].path.read_text() == k["old_private"]
    assert not list(k["spec"].directory.glob("*.rotating*"))
    assert [m for _, m in k["state"]["calls"]][-2:] == ["install", "unauthorize"]  # reverse order


def test_a_host_holding_another_key_stops_before_any_change(local_key):
    k = local_key
    other, _ = keypair(k["host_key"].parent, "other")
    k["host_key"].write_text(other)
    before = k["keys_file"].read_text()
    with pytest.raises(RotateError, match="holds other, not this workstation's key"):
        rotate_keys.rotate(k["site"], "uploads_sync")
    assert k["keys_file"].read_text() == before and k["host_key"].read_text() == other
    assert [m for _, m in k["state"]["calls"]] == ["holds"]


def test_a_rotation_that_died_half_way_is_finished_with_the_same_new_pair(local_key):
    k = local_key
    spec = k["spec"]
    pending, pending_public = rotate_keys.pending_pair(spec)  # what the run that died had made and half-installed
    assert stat.S_IMODE(spec.path.with_name(spec.name + rotate_keys.PENDING).stat().st_mode) == 0o600
    assert answer({"mode": "authorize", "file": str(k["keys_file"])},
                  {"old": k["old_public"], "new": pending_public})["ok"]
    assert answer({"mode": "install", "path": str(k["host_key"])}, {"expect": k["old_private"], "new": pending})["ok"]
    res = rotate_keys.rotate(k["site"], "uploads_sync")
    assert res["ok"] and spec.path.read_text() == pending == k["host_key"].read_text()
    assert any("(already)" in s for s in res["steps"])
    assert not kr.key_lines(k["keys_file"].read_text(), kr.blob_of(k["old_public"]))
