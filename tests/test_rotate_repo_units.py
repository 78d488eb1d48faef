"""The pure parts of `siaga secrets rotate repo1` (drc/secrets/rotate_repo.py, roles/backup/repo1.py)
and its host-side modes (drc/hostside/secrets_host.py) on local files. SOP BK-8, BK-9."""

from __future__ import annotations

import datetime as dt
import grp
import hashlib
import json
import os
import pwd

import pytest

from drc.hostside import secrets_host as sh
from drc.site import load_site
from drc.site.data_tier import data_tier_of
from roles.backup import repo1 as gen
from tests.test_site_validation import LAB, write

ROOT = "/srv/siaga-backup"


def test_the_repository_of_each_generation():
    assert gen.repo1_path(ROOT, 1) == f"{ROOT}/pgbackrest"  # sites before their first rotation keep theirs
    assert gen.repo1_path(ROOT, 2) == f"{ROOT}/pgbackrest-gen2"
    assert gen.generation_of_path(ROOT, f"{ROOT}/pgbackrest") == 1
    assert gen.generation_of_path(ROOT, f"{ROOT}/pgbackrest-gen12/") == 12
    for other in (f"{ROOT}/restic", f"{ROOT}/pgbackrest-gen1", f"{ROOT}/pgbackrest-gen0", "/elsewhere/pgbackrest", ROOT):
        assert gen.generation_of_path(ROOT, other) is None, other
    with pytest.raises(gen.GenerationError):
        gen.repo1_path(ROOT, 0)


def test_the_generation_is_the_highest_any_host_holds_and_a_garbled_file_stops():
    assert gen.current_generation({"primary": None, "drc": None}) == 1
    assert gen.current_generation({"primary": "2\n", "drc": None}) == 2  # a rebuilt host lags
    assert gen.current_generation({"primary": "2\n", "drc": "3\n"}) == 3
    assert gen.generation_text(3) == "3\n" and gen.parse_generation(gen.generation_text(3)) == 3
    with pytest.raises(gen.GenerationError, match=r"drc:/var/lib/siaga/backup/pgbackrest-repo1-generation: not a generation.*Fix"):
        gen.current_generation({"primary": "2\n", "drc": "two\n"})


def test_the_remote_config_of_the_new_repository_names_it_repo2():
    conf = "[global]\nrepo1-path=/x\nrepo1-cipher-pass=s\nlog-path=/l\n# repo1-path in a comment\n\n[spse]\npg1-path=/p\n"
    assert gen.as_repo2(conf) == conf.replace("repo1-path=/x", "repo2-path=/x").replace("repo1-cipher-pass", "repo2-cipher-pass")


def tier(tmp_path):
    return data_tier_of(load_site(write(tmp_path, LAB)))


def test_the_configs_render_the_generations_path_and_while_rotating_both_repositories(tmp_path):
    from roles.backup.deploy import db_config, repo_config

    t = tier(tmp_path)
    root = t.site.backup.repository_path
    old, new = gen.repo1_path(root, 1), gen.repo1_path(root, 2)
    plain = db_config(t, old)
    assert f"repo1-path={old}\n" in plain and "repo2" not in plain
    both = db_config(t, old, next_path=new)
    assert f"repo1-path={old}\n" in both and f"repo2-path={new}\n" in both
    assert f"repo2-host-config-path={gen.NEXT_REMOTE_CONFIG_DIR}\n" in both
    assert both.replace("\n".join(["# While `siaga secrets rotate repo1` runs: the new repository as repo2, WAL archived to both.",
                                   *gen.transitional_lines(str(t.site.hosts["lpse-drc"].address), "siagabak", new)]) + "\n", "") == plain
    rc = repo_config(t, new, "p" * 64)
    assert f"repo1-path={new}\n" in rc and "repo1-cipher-pass=" + "p" * 64 in rc
    assert repo_config(t, old, "x") == repo_config(t, old, "x")  # what the deploy writes is what the rotation writes


def test_the_runner_config_and_markers_follow_the_generation_and_generation_1_keeps_its_marker(tmp_path):
    from roles.backup.deploy import init_marker, runner_config, writer_record

    t = tier(tmp_path)
    b = t.site.backup
    legacy = "/var/lib/siaga/backup/initialised-" + hashlib.sha1(f"lpse-drc:{b.repository_path}:{b.stanza}".encode()).hexdigest()[:12]
    assert init_marker(t, 1) == legacy
    assert init_marker(t, 2) != legacy and writer_record(t, 2) == init_marker(t, 2).replace("/initialised-", "/pgbackrest-writer-")
    for host in ("lpse-primary", "lpse-drc"):
        cfg = runner_config(t, host, 2)
        assert cfg["pgbackrest"]["repo1_location"] == f"lpse-drc:{b.repository_path}/pgbackrest-gen2"
        assert cfg["offline"]["copy_args"]["pgbackrest_path"] == f"{b.repository_path}/pgbackrest-gen2"
        assert cfg["init_marker"] == init_marker(t, 2)
    assert runner_config(t, "lpse-drc", 1)["offline"]["copy_args"]["pgbackrest_path"] == f"{b.repository_path}/pgbackrest"


def test_the_plan_names_old_and_new_repository_and_the_retired_config():
    from drc.secrets.rotate_repo import make_plan, plan_lines

    p = make_plan(ROOT, "drc", "primary", 1)
    assert (p.old_generation, p.new_generation, p.old_path, p.new_path) == (1, 2, f"{ROOT}/pgbackrest", f"{ROOT}/pgbackrest-gen2")
    assert p.retired_config == "/etc/siaga/pgbackrest-retired/gen1"
    text = "\n".join(plan_lines(p, "spse", 4))
    assert f"a new repository {ROOT}/pgbackrest-gen2 (generation 2)" in text
    assert f"drc:{ROOT}/pgbackrest stays, readable with drc:/etc/siaga/pgbackrest-retired/gen1/pgbackrest.conf" in text
    assert "holds 4 full backups" in text and "put back" in text


NOW = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)


def entry(**kw):
    e = gen.retired_entry("old-pass", "sha256:abc", 1, f"{ROOT}/pgbackrest", "drc", "spse", NOW, 2)
    return {**e, **kw}


def fulls(n, kind="full"):
    return [{"label": f"L{i}", "type": kind, "timestamp": {"start": NOW.timestamp() + i, "stop": NOW.timestamp() + i + 1}}
            for i in range(n)]


def test_the_retired_entry_keeps_passphrase_and_where_the_repository_is():
    e = entry()
    assert e["key"] == "repo1" and e["value"] == "old-pass" and e["repository_path"] == f"{ROOT}/pgbackrest"
    assert e["repository_host"] == "drc" and e["generation"] == 1 and e["config_path"] == "/etc/siaga/pgbackrest-retired/gen1"
    assert f"drc:{ROOT}/pgbackrest" in e["needed_by"]  # the escrow's text shows needed_by with the value


def test_a_retired_repository_goes_only_when_its_backups_expired_and_the_new_one_verifies():
    assert gen.removal_problem(entry(), fulls(4), 4, True, 2) == ""
    assert "holds 3 full backup(s), backup.retention_full is 4" in gen.removal_problem(entry(), fulls(3) + fulls(5, "incr"), 4, True, 2)
    assert "last good copy" in gen.removal_problem(entry(), fulls(4), 4, False, 2)  # never the last verified copy
    assert "in use" in gen.removal_problem(entry(generation=2), fulls(9), 4, True, 2)
    assert "already removed" in gen.removal_problem(entry(repository_removed_at="x"), fulls(9), 4, True, 2)
    assert "names no repository" in gen.removal_problem({"key": "repo1", "value": "v", "retired_at": NOW.isoformat()},
                                                        fulls(9), 4, True, 2)


# --- host-side modes on local files ----------------------------------------------------------------

def me():
    return pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name


def test_file_put_swaps_only_what_it_expects_and_writes_the_owner_and_mode(tmp_path):
    user, group = me()
    path = tmp_path / "a" / "b" / "pgbackrest.conf"
    args = {"path": str(path), "user": user, "group": group, "file_mode": 0o640}
    with pytest.raises(sh.Refused, match="does not exist"):
        sh.mode_file_put({**args, "text": "one\n"}, {})
    r = sh.mode_file_put({**args, "text": "one\n", "expect": "absent", "parent": [0o750, user, group], "subdirs": ["conf.d"]}, {})
    assert r["changed"] and path.read_text() == "one\n" and (path.parent / "conf.d").is_dir()
    assert oct(path.stat().st_mode & 0o777) == "0o640" and oct(path.parent.stat().st_mode & 0o777) == "0o750"
    with pytest.raises(sh.Refused, match="not as expected"):
        sh.mode_file_put({**args, "text": "two\n", "expect": "0" * 64}, {})
    assert path.read_text() == "one\n"
    assert not sh.mode_file_put({**args, "text": "one\n", "expect": "0" * 64}, {})["changed"]  # already there
    one = hashlib.sha256(b"one\n").hexdigest()
    assert sh.mode_file_put({**args, "text": f"pass={sh.SECRET_PLACEHOLDER}\n", "expect": one}, {"secret": "two"})["previous"] == one
    assert path.read_text() == "pass=two\n"
    state = sh.mode_file_state({"paths": [str(path), str(tmp_path / "none")], "read": [str(path)]}, None)
    assert state["sha256"] == {str(path): hashlib.sha256(b"pass=two\n").hexdigest(), str(tmp_path / "none"): None}
    assert state["text"][str(path)] == "pass=two\n"
    assert "file-put" in sh.NEEDS_SECRETS  # a passphrase in the text comes on stdin only


def test_file_put_sends_a_secret_only_on_stdin(monkeypatch):
    from drc.secrets import rotate_repo

    sent = []
    monkeypatch.setattr(rotate_repo, "call", lambda site, host, args, secrets, timeout: sent.append((args, secrets)) or {"ok": True})
    rotate_repo.file_put(None, "drc", "/etc/x.conf", "repo1-cipher-pass=S3CRET-pass\n", "root", "siagabak", 0o640, secret="S3CRET-pass")
    args, stdin = sent[0]
    assert "S3CRET" not in json.dumps(args) and args["text"] == f"repo1-cipher-pass={sh.SECRET_PLACEHOLDER}\n"
    assert stdin == {"secret": "S3CRET-pass"} and rotate_repo.SECRET_PLACEHOLDER == sh.SECRET_PLACEHOLDER


def test_discard_removes_only_a_repository_no_config_names_and_only_the_rotations_config_dirs(tmp_path):
    root = tmp_path / "srv"
    (root / "pgbackrest-gen2" / "archive").mkdir(parents=True)
    (root / "restic").mkdir()
    conf = tmp_path / "pgbackrest.conf"
    conf.write_text(f"[global]\nrepo1-path={root}/pgbackrest-gen2\n")
    a = {"repository_path": str(root), "active_config": str(conf)}
    with pytest.raises(sh.Refused, match="in use"):
        sh.mode_repo1_discard({**a, "path": str(root / "pgbackrest-gen2")}, None)
    for bad in (root / "restic", root, tmp_path / "pgbackrest"):
        with pytest.raises(sh.Refused, match="not a pgBackRest repository"):
            sh.mode_repo1_discard({**a, "path": str(bad)}, None)
    with pytest.raises(sh.Refused, match="not a config directory"):
        sh.mode_repo1_discard({**a, "config_dir": "/etc/siaga/pgbackrest-repo"}, None)
    conf.write_text(f"[global]\nrepo1-path={root}/pgbackrest-gen3\n")
    assert sh.mode_repo1_discard({**a, "path": str(root / "pgbackrest-gen2")}, None)["removed"] == [str(root / "pgbackrest-gen2")]
    assert (root / "restic").is_dir()


def test_prepare_refuses_a_directory_left_with_content_and_a_config_naming_another(tmp_path):
    root = tmp_path / "srv"
    (root / "pgbackrest-gen2").mkdir(parents=True)
    (root / "pgbackrest-gen2" / "x").write_text("left")
    cdir = tmp_path / "next"
    cdir.mkdir()
    (cdir / "pgbackrest.conf").write_text(f"repo1-path={root}/pgbackrest-gen3\n")
    a = {"repository_path": str(root), "path": str(root / "pgbackrest-gen2"), "config_path": str(cdir), "stanza": "spse",
         "user": me()[0]}
    with pytest.raises(sh.Refused, match="does not name"):
        sh.mode_repo1_prepare(a, None)
    (cdir / "pgbackrest.conf").write_text(f"repo1-path={root}/pgbackrest-gen2\n")
    with pytest.raises(sh.Refused, match="exists and is not empty"):
        sh.mode_repo1_prepare(a, None)


def test_remove_expired_keeps_the_passphrase_and_records_the_removal(tmp_path, monkeypatch):
    """The retired entry stays (offline copies made before need its passphrase), marked removed."""
    from drc.secrets import rotate_repo

    site = load_site(write(tmp_path, LAB))
    entries = [entry(), {"key": "restic", "value": "r", "retired_at": NOW.isoformat()}]
    written, calls = [], []
    monkeypatch.setattr(rotate_repo.esc, "read_retired", lambda s: json.loads(json.dumps(entries)))
    monkeypatch.setattr(rotate_repo.esc, "write_retired", lambda s, e: written.append(e))
    monkeypatch.setattr(rotate_repo.esc, "sync_retired", lambda s: [])
    monkeypatch.setattr(rotate_repo, "read_generation", lambda s: 2)

    def fake_call(site_, host, args, secrets=None, timeout=0):
        calls.append((host, args["mode"], args.get("path")))
        if args["mode"] == "repo1-check":
            return {"ok": True, "path": f"{ROOT}/pgbackrest-gen2", "backups": fulls(4), "verify": {"ok": True}}
        return {"ok": True, "removed": [args["path"]]}

    monkeypatch.setattr(rotate_repo, "call", fake_call)
    assert rotate_repo.remove_expired(site, dry_run=True)["removed"] == [] and not written
    res = rotate_repo.remove_expired(site, dry_run=False)
    assert res["removed"] == [f"drc:{ROOT}/pgbackrest (generation 1)"]
    assert ("drc", "repo1-discard", f"{ROOT}/pgbackrest") in calls
    kept = written[-1]
    assert [e["key"] for e in kept] == ["repo1", "restic"] and kept[0]["value"] == "old-pass" and kept[0]["repository_removed_at"]


def test_a_rotation_that_stopped_after_the_switch_is_finished_on_the_workstation(tmp_path, monkeypatch):
    """The hosts use generation 2 with the passphrase still pending on the workstation (the rotation
    stopped before its last step): the next rotation finishes that one, changes no host."""
    from drc.secrets import rotate_repo
    from roles.backup.deploy import db_config, repo_config, runner_config_text
    from roles.backup.layout import CONFIG_JSON, REPO_CONFIG_PATH
    from roles.secret_custody import spec_for

    sdir = tmp_path / "secrets"
    site = load_site(write(tmp_path, LAB + f"backup:\n  secrets_dir: {sdir}\n"))
    t = data_tier_of(site)
    spec = spec_for(t, "repo1")
    old, new = "o" * 64, "n" * 64
    sdir.mkdir(mode=0o700)
    for path, value in ((spec.path, old), (spec.path.with_name(spec.name + ".next"), new)):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, (value + "\n").encode())
        os.close(fd)
    path2 = gen.repo1_path(t.site.backup.repository_path, 2)
    on_host = {f"{REPO_CONFIG_PATH}/pgbackrest.conf": repo_config(t, path2, new), rotate_repo.DB_CONF: db_config(t, path2),
               "/etc/siaga/pgbackrest-retired/gen1/pgbackrest.conf": "kept"}
    calls, retired = [], []

    def fake_call(site_, host, args, secrets=None, timeout=0):
        calls.append(args["mode"])
        assert args["mode"] == "file-state", args  # reads only: nothing on a host changes
        sums = {p: hashlib.sha256(on_host[p].encode()).hexdigest() if p in on_host else None for p in args.get("paths", [])}
        if CONFIG_JSON in sums:
            sums[CONFIG_JSON] = hashlib.sha256(runner_config_text(t, host, 2).encode()).hexdigest()
        return {"ok": True, "sha256": sums, "text": {p: "2\n" for p in args.get("read", [])}}

    monkeypatch.setattr(rotate_repo, "call", fake_call)
    monkeypatch.setattr(rotate_repo.esc, "add_retired", lambda s, e: retired.append(e))
    monkeypatch.setattr(rotate_repo.esc, "sync_retired", lambda s: [])
    res = rotate_repo.rotate(site)
    assert res["ok"] and res["generation"] == 2 and "finished an earlier rotation" in res["steps"][0]
    assert spec.path.read_text().strip() == new and not spec.path.with_name(spec.name + ".next").exists()
    assert retired[0]["value"] == old and retired[0]["generation"] == 1 and retired[0]["repository_path"].endswith("/pgbackrest")
