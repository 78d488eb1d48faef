"""The host program secrets-host (drc/hostside/secrets_host.py) on the workstation: which copy it
restores from, what it refuses before writing anything, how it rewrites a secret file, and that its
secrets come only from stdin (SOP BK-8, EM-3.7)."""

from __future__ import annotations

import io
import json
import os
import stat

import pytest

from drc.hostside import secrets_host as sh


def copies(*pairs):
    return [{"name": n, "verified": v} for n, v in pairs]


def test_the_newest_verified_copy_is_chosen_and_a_named_one_must_be_verified():
    c = copies(("20261101T010000", True), ("20261108T010000", True), ("20261115T010000", False))
    assert sh.choose_copy(c)["name"] == "20261108T010000"
    assert sh.choose_copy(c, "20261101T010000")["name"] == "20261101T010000"
    with pytest.raises(sh.Refused, match="not verified"):
        sh.choose_copy(c, "20261115T010000")
    with pytest.raises(sh.Refused, match="no copy 2026"):
        sh.choose_copy(c, "20260101T000000")
    with pytest.raises(sh.Refused, match="no verified copy"):
        sh.choose_copy(copies(("20261115T010000", False)))


def test_a_target_that_is_production_or_not_empty_is_refused(tmp_path):
    prod = tmp_path / "var/lib/postgresql"
    prod.mkdir(parents=True)
    for bad in (prod, prod / "15/main", tmp_path / "var"):
        with pytest.raises(sh.Refused, match="overlaps production"):
            sh.preflight_target(str(bad), [str(prod)])
    full = tmp_path / "t"
    full.mkdir()
    (full / "x").write_text("")
    with pytest.raises(sh.Refused, match="not empty"):
        sh.preflight_target(str(full), [str(prod)])
    sh.preflight_target(str(tmp_path / "new"), [str(prod)])


def test_offline_restore_refuses_production_port_and_a_missing_medium(tmp_path):
    a = {"mode": "offline-restore", "port": 5432, "production_port": 5432}
    assert "production's" in sh.answer(a, io.StringIO("{}\n"))["error"]
    a.update(port=54339, mount_point=str(tmp_path))
    assert "not attached" in sh.answer(a, io.StringIO("{}\n"))["error"]


def test_secrets_only_from_stdin():
    out = sh.answer({"mode": "write-secret", "path": "/nonexistent", "form": "text"}, io.StringIO(""))
    assert "no secrets on stdin" in out["error"]


@pytest.mark.parametrize("form,text,want", [
    ("text", "OLD\n", "NEW\n"),
    ("ini:repo1-cipher-pass", "[global]\nrepo1-cipher-pass=OLD\nx=1\n", "[global]\nrepo1-cipher-pass=NEW\nx=1\n"),
    ("pgpass", "10.0.0.1:5432:replication:rep:OLD\n10.0.0.2:5432:replication:rep:OLD\n",
     "10.0.0.1:5432:replication:rep:NEW\n10.0.0.2:5432:replication:rep:NEW\n"),
])
def test_a_secret_file_is_rewritten_only_from_its_old_value(form, text, want):
    assert sh.replace_in(text, form, "OLD", "NEW") == want
    assert sh.replace_in(text.replace("OLD", "OTHER"), form, "OLD", "NEW") is None


def test_write_secret_keeps_owner_and_mode_and_refuses_a_foreign_value(tmp_path):
    f = tmp_path / "restic.password"
    f.write_text("OLD\n")
    f.chmod(0o640)
    line = io.StringIO(json.dumps({"old": "OLD", "new": "NEW"}) + "\n")
    assert sh.answer({"mode": "write-secret", "path": str(f), "form": "text"}, line) == {"ok": True, "changed": True}
    assert f.read_text() == "NEW\n" and stat.S_IMODE(f.stat().st_mode) == 0o640
    again = io.StringIO(json.dumps({"old": "OLD", "new": "NEW"}) + "\n")
    assert sh.answer({"mode": "write-secret", "path": str(f), "form": "text"}, again)["already"]
    f.write_text("SOMETHING-ELSE\n")
    other = io.StringIO(json.dumps({"old": "OLD", "new": "NEW"}) + "\n")
    assert "neither the old nor the new" in sh.answer({"mode": "write-secret", "path": str(f), "form": "text"}, other)["error"]
    assert f.read_text() == "SOMETHING-ELSE\n"


def test_the_pgbackrest_config_reads_the_copy_and_holds_the_cipher(tmp_path):
    conf = sh.pgbackrest_conf({"stanza": "spse", "target": "/var/tmp/r"}, "/media/x/siaga-offline/20261101T010000",
                              {"cipher_type": "aes-256-cbc", "cipher_pass": "P" * 64}, "/run/siaga-secrets-1")
    assert "repo1-path=/media/x/siaga-offline/20261101T010000/pgbackrest" in conf
    assert f"repo1-cipher-pass={'P' * 64}" in conf and "[spse]\npg1-path=/var/tmp/r/pg" in conf


def test_secret_files_are_created_0600(tmp_path):
    p = sh.secret_file(str(tmp_path), "s", "x")
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    with pytest.raises(FileExistsError):
        sh.secret_file(str(tmp_path), "s", "y")


def test_fingerprints_name_the_secret_never_show_it(tmp_path):
    import hashlib

    conf = tmp_path / "pgbackrest.conf"
    conf.write_text("[global]\nrepo1-cipher-pass=SECRETVALUE\n")
    out = sh.answer({"mode": "fingerprints", "items": [{"path": str(conf), "form": "ini:repo1-cipher-pass"},
                                                        {"path": str(tmp_path / "none"), "form": "text"}]}, io.StringIO(""))
    fp = out["fingerprints"]
    assert fp[str(conf)] == "sha256:" + hashlib.sha256(b"SECRETVALUE").hexdigest()[:12]
    assert fp[str(tmp_path / "none")] == "absent" and "SECRETVALUE" not in json.dumps(out)
    from roles.secret_custody import fingerprint

    assert fp[str(conf)] == fingerprint("SECRETVALUE")


def test_an_unlabelled_medium_is_refused_with_the_fix(tmp_path, monkeypatch):
    (tmp_path / "siaga-offline").mkdir()
    monkeypatch.setattr(sh.os.path, "ismount", lambda p: True)
    with pytest.raises(sh.Refused, match="no readable label.*--init-medium"):
        sh.medium(str(tmp_path))
    (tmp_path / "siaga-offline/medium.json").write_text(json.dumps({"label": "OFFLINE-B"}))
    assert sh.medium(str(tmp_path))[1]["label"] == "OFFLINE-B"
