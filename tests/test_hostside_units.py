"""The programs siaga runs on the hosts (drc/hostside), on the workstation: linted with ruff, standard
library only, shipped by a role, run through one wrapper that names a missing program, and their
logic on recorded inputs (psql, find, pg_controldata, pgBackRest and the runner's files)."""

from __future__ import annotations

import ast
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from drc import hostside
from drc.hosts import remote
from drc.hostside import PROGRAMS, backup_read, empty_standby, prod_restore, restore_probe, status_probe
from drc.site.platform import DEFAULT_PLATFORM, PLATFORMS

REPO = Path(__file__).resolve().parent.parent
HOSTSIDE = REPO / "drc/hostside"
PG = PLATFORMS[DEFAULT_PLATFORM].postgresql  # the default platform's PostgreSQL major


# --- lint ---------------------------------------------------------------------------------------------

def python_programs_in_role_files() -> list[Path]:
    """The roles' programs that are Python (siaga-backup etc. have no .py: told by their shebang)."""
    out = []
    for f in sorted(REPO.glob("roles/*/files/**/*")):
        if f.is_file() and (f.suffix == ".py" or f.read_bytes()[:64].split(b"\n")[0].startswith(b"#!") and b"python" in
                            f.read_bytes()[:64].split(b"\n")[0]):
            out.append(f)
    return out


def ruff(paths: list[Path]) -> subprocess.CompletedProcess:
    """Errors that break a program at run time: pyflakes (undefined names, unused imports...) and syntax."""
    return subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--isolated", "--select", "F,E9",
                           "--output-format", "concise", *map(str, paths)], capture_output=True, text=True, cwd=REPO)


def test_the_role_programs_found_are_the_python_ones():
    names = {f.name for f in python_programs_in_role_files()}
    assert {"siaga-backup", "siaga-backup-remote", "siaga-offline-copy", "standin.py"} <= names
    assert not any(n.endswith((".sql", ".j2")) for n in names)


def test_host_programs_pass_ruff():
    paths = sorted(HOSTSIDE.glob("*.py")) + python_programs_in_role_files()
    r = ruff(paths)
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_fails_on_an_undefined_name(tmp_path):
    # The same check on a program with a typo: it must not pass (a lint that cannot fail proves nothing).
    bad = tmp_path / "siaga-broken"
    bad.write_text("#!/usr/bin/python3\nimport json\n\n\ndef main():\n    print(json.dumps(reslt))\n")
    r = ruff([bad])
    assert r.returncode == 1 and "F821" in r.stdout and "reslt" in r.stdout, r.stdout + r.stderr


# --- shape: real files, stdlib only, a main, shipped by their role -------------------------------------

@pytest.mark.parametrize("module", sorted(PROGRAMS))
def test_each_program_is_a_standalone_stdlib_file_with_a_main(module):
    p = PROGRAMS[module]
    source = p.source.read_text()
    assert source.startswith("#!/usr/bin/python3\n")
    tree = ast.parse(source)
    assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)
    assert 'if __name__ == "__main__":\n    sys.exit(main())' in source
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(tree)), "relative import"
    assert imported <= sys.stdlib_module_names, f"not standard library: {imported - sys.stdlib_module_names}"
    assert p.path == f"/usr/local/lib/siaga/{p.name}" and "_" not in p.name


def test_every_file_in_hostside_is_in_the_table():
    assert {f.stem for f in HOSTSIDE.glob("*.py")} - {"__init__"} == set(PROGRAMS)


def test_the_table_imports_nothing_of_siaga_nor_pyinfra():
    code = ("import sys, drc.hostside; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('pyinfra', 'fabric', 'paramiko', 'pydantic', 'roles') or m.startswith('drc.') and not m.startswith('drc.hostside')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("role", sorted({p.role for p in PROGRAMS.values()}))
def test_each_role_ships_its_programs(role):
    source = (REPO / f"roles/{role}/deploy.py").read_text()
    assert f'host_programs.ship("{role}")' in source


def test_base_makes_the_programs_directory_once():
    deploys = {f: f.read_text() for f in REPO.glob("roles/*/deploy.py")}
    makers = [f.parent.name for f, s in deploys.items() if "host_programs.lib_directory()" in s]
    assert makers == ["base"]
    assert not any('path=LIB' in s for s in deploys.values())


def test_no_program_is_sent_as_a_string_any_more():
    found = [f"{f.relative_to(REPO)}" for top in ("drc", "roles", "deploys") for f in (REPO / top).rglob("*.py")
             if "python3 -c" in f.read_text() or "sh -c {shlex.quote(" in f.read_text()]
    assert not found


# --- the wrapper the workstation runs: a missing program is named, with the fix -----------------------

def run_wrapper(module: str, args: dict | None, sudo: bool = False) -> remote.Result:
    """The shell command run_program sends, run here by sh (what the host's login shell does with it)."""
    p = subprocess.run(["sh", "-c", remote.program_command(module, args, sudo=sudo)], capture_output=True, text=True,
                       timeout=60)
    return remote.Result("drc", reachable=True, exited=p.returncode, stdout=p.stdout, stderr=p.stderr)


def test_a_missing_host_program_is_named_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(hostside, "LIB", str(tmp_path / "lib"))
    r = run_wrapper("backup_read", {"config": "/nonexistent"})
    assert r.exited == remote.MISSING_EXIT and r.stdout == ""
    why = remote.program_missing(r, "backup_read")
    assert why == (f"host program backup-read missing on drc ({tmp_path}/lib/backup-read, shipped by roles/backup): "
                   "run the site deploy")


def test_an_installed_host_program_runs_with_its_json_arguments(tmp_path, monkeypatch):
    lib = tmp_path / "lib"
    lib.mkdir()
    monkeypatch.setattr(hostside, "LIB", str(lib))
    installed = lib / "backup-read"
    shutil.copy(PROGRAMS["backup_read"].source, installed)
    installed.chmod(0o755)
    config = tmp_path / "backup's config.json"  # a quote in the argument: one JSON word all the same
    log = tmp_path / "backup.jsonl"
    config.write_text(json.dumps({"runs": ["db"], "log_file": str(log), "init_marker": str(tmp_path / "nope")}))
    log.write_text('{"id": "a", "result": "success"}\n')
    r = run_wrapper("backup_read", {"config": str(config)})
    assert remote.program_missing(r, "backup_read") is None
    if not os.access("/usr/bin/python3", os.X_OK):
        pytest.skip("no /usr/bin/python3 (the hosts' interpreter) on this workstation")
    assert r.exited == 0, r.stderr
    assert json.loads(r.stdout) == {"runs": ["db"], "records": [{"id": "a", "result": "success"}], "bad_lines": 0,
                                    "initialised": None}


def test_run_program_turns_a_missing_program_into_an_error(monkeypatch):
    seen = {}

    def run(site, host, command, timeout, connect_timeout=5.0):
        seen["command"] = command
        return remote.Result(host, reachable=True, exited=127, stderr=f"{remote.MISSING_MARK} /usr/local/lib/siaga/status-probe\n")

    monkeypatch.setattr(remote, "run", run)
    r = remote.run_program(None, "primary", "status_probe", {"timeout": 5}, 60, sudo=False)
    assert not r.ok and r.reachable and "host program status-probe missing on primary" in r.error and "run the site deploy" in r.error
    assert seen["command"].endswith("/usr/local/lib/siaga/status-probe '{\"timeout\": 5}'")
    assert "sudo" not in seen["command"]
    assert "sudo -n /usr/local/lib/siaga/prod-restore '{}'" in remote.program_command("prod_restore", {})


# --- status-probe ---------------------------------------------------------------------------------------

def test_status_probe_reads_psql_rows_of_a_primary_and_a_standby():
    primary = status_probe.parse_pg("f|0/3000148||||||\n")
    assert primary == {"in_recovery": False, "current_lsn": "0/3000148", "receive_lsn": None, "replay_lsn": None,
                       "replay_age_s": None, "receiver_status": None, "sender_host": None, "receiver_contact_age_s": None}
    standby = status_probe.parse_pg("t||0/3000148|0/3000100|12.5|streaming|10.213.13.10|0.42\n")
    assert standby["in_recovery"] is True and standby["replay_age_s"] == 12.5 and standby["receiver_contact_age_s"] == 0.42
    assert standby["receiver_status"] == "streaming" and standby["sender_host"] == "10.213.13.10"
    assert "unexpected answer" in status_probe.parse_pg("t|0/1\n")["error"]


def test_status_probe_reads_find_listings_with_any_file_name():
    raw = b"a/b.pdf\x00123\x001718000000.5000000000\x00odd name \xff\n.txt\x000\x001718000001.0000000000\x00"
    assert status_probe.parse_listing(raw) == [["a/b.pdf", 123, 1718000000.5], ["odd name \udcff\n.txt", 0, 1718000001.0]]
    assert status_probe.parse_listing(b"") == []


def test_status_probe_main_needs_its_json_argument(capsys):
    assert status_probe.main([]) == 2 and "usage" in capsys.readouterr().err


# --- restore-probe --------------------------------------------------------------------------------------

VERIFY_OK = f"""2026-11-26 00:40:01.123 P00   INFO: verify command begin 2.55.1: --config-path=/etc/siaga/pgbackrest-repo --stanza=spse
2026-11-26 00:40:02.456 P00   INFO: stanza: spse
                                    status: ok
                                    wal archive min/max ({PG}): 000000010000000000000001/000000010000000000000007
                                    backup: 20261126-003000F, status: valid, total files checked: 980, total valid files: 980
2026-11-26 00:40:02.500 P00   INFO: verify command end: completed successfully (1379ms)
"""
VERIFY_BAD = VERIFY_OK.replace("status: ok", "status: error").replace(
    "status: valid, total files checked: 980, total valid files: 980",
    "status: invalid, total files checked: 980, total valid files: 979\n                                    checksum invalid: 1")


def test_restore_probe_verify_is_good_only_when_pgbackrest_lists_no_bad_file():
    assert restore_probe.verify_result(0, VERIFY_OK, "")["ok"] is True
    bad = restore_probe.verify_result(0, VERIFY_BAD, "")  # exit 0 and "completed successfully" all the same
    assert bad["ok"] is False and "invalid" in bad["output"]
    assert restore_probe.verify_result(0, VERIFY_OK.replace("status: ok", "missing: 1"), "")["ok"] is False
    assert restore_probe.verify_result(56, "", "ERROR: [056]: unable to find primary cluster")["ok"] is False


def test_restore_probe_refuses_a_scratch_root_that_overlaps_production(tmp_path):
    prod = tmp_path / "var/lib/postgresql"
    prod.mkdir(parents=True)
    assert restore_probe.scratch_overlap(str(tmp_path / "var/tmp/rt"), [str(prod)]) is None
    for root in (prod, prod / PG / "scratch", tmp_path / "var/lib"):
        assert "overlaps production path" in restore_probe.scratch_overlap(str(root), [str(prod)])
    link = tmp_path / "innocent"
    link.symlink_to(prod)
    assert "overlaps production path" in restore_probe.scratch_overlap(str(link), [str(prod)])


def test_restore_probe_waits_for_the_segment_on_the_same_timeline():
    want = "00000001000000000000000A"
    assert restore_probe.archived_past(want, want) and restore_probe.archived_past("00000001000000000000000B", want)
    assert not restore_probe.archived_past("000000010000000000000009", want)
    assert not restore_probe.archived_past("", want)
    assert not restore_probe.archived_past("00000002000000000000000C", want)  # another timeline


def test_restore_probe_recovery_target_and_query_rows():
    assert restore_probe.target_args({}) == ["--type=immediate"]
    assert restore_probe.target_args({"target_time": "2026-11-26 00:40:00.000000+00"}) == [
        "--type=time", "--target=2026-11-26 00:40:00.000000+00"]
    assert restore_probe.query_result(0, "3|abc|3\n", "") == {"ok": True, "rows": [["3", "abc", "3"]], "error": None}
    assert restore_probe.query_result(2, "", "psql: error: connection refused\n") == {
        "ok": False, "rows": None, "error": "psql: error: connection refused"}


def test_restore_probe_answers_errors_as_json_never_a_traceback():
    assert restore_probe.answer({"mode": "drop-everything"})["error"].startswith("unknown mode 'drop-everything'")
    assert restore_probe.answer({"mode": "db", "port": 5432, "production_port": 5432}) == {
        "error": "scratch port 5432 is production's: refused"}
    assert restore_probe.answer({"mode": "sql"})["error"] == "KeyError: 'port'"


# --- prod-restore ---------------------------------------------------------------------------------------

class Host:
    """Answers commands from a recorded script: (match, exit, output) tried in order."""

    def __init__(self, answers):
        self.answers, self.commands = answers, []

    def run(self, cmd, timeout):
        self.commands.append(cmd)
        text = " ".join(cmd)
        for match, rc, out in self.answers:
            if match in text:
                return rc, out
        raise AssertionError(f"unexpected command {text}")


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


ARGS = {"version": PG, "stanza": "spse", "timeout_s": 3600, "restore_args": ["--set=20261126-003000F", "--type=immediate",
                                                                              "--target-action=promote"]}


def restore_with(answers):
    host, clock = Host(answers), Clock()
    return prod_restore.restore(ARGS, run=host.run, sleep=clock.sleep, clock=clock), host


def test_prod_restore_runs_every_step_in_order_and_leaves_nothing_pending():
    out, host = restore_with([("SELECT pg_is_in_recovery()::text", 0, "false 0"), ("SELECT pg_is_in_recovery()", 0, "f"),
                              ("", 0, "")])
    assert out["ok"] is True
    assert [s["step"] for s in out["steps"]] == ["stop", "restore", "start", "promoted", "recovery settings cleared",
                                                 "restarted, nothing pending a restart"]
    cmds = [" ".join(c) for c in host.commands]
    assert cmds[0] == f"systemctl stop postgresql@{PG}-main"
    assert cmds[1] == ("runuser -u postgres -- pgbackrest --stanza=spse --delta --log-level-console=warn "
                       "--set=20261126-003000F --type=immediate --target-action=promote restore")
    assert cmds[2] == f"systemctl start postgresql@{PG}-main"
    reset = host.commands[4]
    for setting in prod_restore.RECOVERY_SETTINGS:
        assert f"ALTER SYSTEM RESET {setting}" in reset
    assert reset[-1] == "SELECT pg_reload_conf()" and "ON_ERROR_STOP=1" in reset
    assert cmds[5] == f"systemctl restart postgresql@{PG}-main"


def test_prod_restore_stops_at_the_first_failed_step():
    out, host = restore_with([("pgbackrest", 1, "ERROR: [075]: no backup set found to restore"), ("", 0, "")])
    assert out["ok"] is False and [s["step"] for s in out["steps"]] == ["stop", "restore"]
    assert "no backup set" in out["steps"][-1]["output"] and len(host.commands) == 2


def test_prod_restore_that_never_promotes_fails_and_clears_nothing():
    out, host = restore_with([("SELECT pg_is_in_recovery()", 0, "t"), ("", 0, "")])
    assert out["ok"] is False and [s["step"] for s in out["steps"]][-1] == "promoted"
    assert not any("ALTER SYSTEM" in " ".join(c) for c in host.commands)


def test_prod_restore_with_a_setting_still_pending_fails():
    out, _ = restore_with([("SELECT pg_is_in_recovery()::text", 0, "false 1"), ("SELECT pg_is_in_recovery()", 0, "f"),
                           ("", 0, "")])
    assert out["ok"] is False and out["steps"][-1] == {"step": "restarted, nothing pending a restart", "ok": False,
                                                       "output": "false 1"}


# --- empty-standby --------------------------------------------------------------------------------------

CONTROLDATA = """pg_control version number:            1300
Catalog version number:               202209061
Database system identifier:           7441625049839312345
Database cluster state:               in archive recovery
pg_control last modified:             Thu 26 Nov 2026 00:41:03 AM UTC
Latest checkpoint location:           0/5000060
"""


def test_empty_standby_reads_pg_controldata():
    c = empty_standby.parse_controldata(CONTROLDATA)
    assert c["Database system identifier"] == "7441625049839312345"
    assert c["Database cluster state"] == "in archive recovery"
    assert c["pg_control last modified"] == "Thu 26 Nov 2026 00:41:03 AM UTC"


@pytest.mark.parametrize("want, in_recovery, state, allowed", [
    ("7441625049839312345", "t", "in archive recovery", True),
    ("7441625049839312345", "stopped", "shut down in recovery", True),
    ("7441625049839312345", "f", "in production", False),  # a primary: never emptied
    ("7441625049839312345", "stopped", "shut down", False),  # a stopped primary
    ("9999999999999999999", "t", "in archive recovery", False),  # a standby of another system
    ("", "t", "in archive recovery", False),  # the primary's identifier was not read
])
def test_empty_standby_empties_only_a_standby_of_the_restored_system(want, in_recovery, state, allowed):
    control = empty_standby.parse_controldata(CONTROLDATA.replace("in archive recovery", state))
    why = empty_standby.refusal(want, in_recovery, control)
    assert (why is None) == allowed
    if not allowed:
        assert why.startswith("refused: not a standby of system")


def test_empty_standby_refuses_a_cluster_without_control_data():
    assert "system: ?" in empty_standby.refusal("7441625049839312345", "stopped", empty_standby.parse_controldata(""))


# --- backup-read ----------------------------------------------------------------------------------------

def test_backup_read_reads_runs_records_and_init_time(tmp_path):
    log, marker = tmp_path / "backup.jsonl", tmp_path / "initialised"
    log.write_text('{"id": "1", "result": "success"}\n\n{"id": "2", "res\n{"id": "3", "result": "failure"}\n')
    marker.write_text("2026-11-26T00:30:00+07:00\n")
    config = tmp_path / "backup.json"
    config.write_text(json.dumps({"runs": ["uploads", "system"], "log_file": str(log), "init_marker": str(marker)}))
    assert backup_read.read(str(config)) == {"runs": ["uploads", "system"], "records": [{"id": "1", "result": "success"},
                                                                                         {"id": "3", "result": "failure"}],
                                             "bad_lines": 1, "initialised": "2026-11-26T00:30:00+07:00"}
    log.unlink()
    assert backup_read.read(str(config))["records"] == []


def test_backup_read_says_why_it_cannot_read(tmp_path):
    assert backup_read.read(str(tmp_path / "absent.json"))["error"].startswith(f"cannot read {tmp_path}/absent.json")
    config = tmp_path / "backup.json"
    config.write_text(json.dumps({"runs": [], "log_file": str(tmp_path)}))  # a directory: unreadable as a log
    assert backup_read.read(str(config))["error"].startswith(f"cannot read {tmp_path}")


def test_backup_read_runs_as_a_program(tmp_path):
    config = tmp_path / "backup.json"
    config.write_text(json.dumps({"runs": ["db"], "log_file": str(tmp_path / "log")}))
    src = PROGRAMS["backup_read"].source
    assert src.stat().st_mode & stat.S_IRUSR
    r = subprocess.run([sys.executable, str(src), json.dumps({"config": str(config)})], capture_output=True, text=True)
    assert r.returncode == 0 and json.loads(r.stdout) == {"runs": ["db"], "records": [], "bad_lines": 0, "initialised": None}


def test_restore_probe_takes_its_arguments_on_stdin_when_they_are_too_long_for_one(monkeypatch, capsys):
    """A sample of thousands of paths is longer than one argument may be (128 kB): `-` reads stdin."""
    import io

    paths = [f"2026/11/26/{i:032x}-probe-document-{i:07d}" for i in range(5000)]
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps({"mode": "no-such-mode", "paths": paths})))
    assert len(json.dumps(paths)) > 131072
    assert restore_probe.main(["-"]) == 0
    assert "unknown mode 'no-such-mode'" in json.loads(capsys.readouterr().out)["error"]


def test_files_that_go_while_the_uploads_are_listed_or_hashed_are_left_out_not_an_error(tmp_path, monkeypatch):
    """Under write load the app's temporary files are renamed into place while the switch-over lists
    and hashes the uploads (a CI run refused a switch-over on find's 'No such file or directory')."""
    from drc.hostside import uploads_digest

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "kept.pdf").write_bytes(b"kept")
    real_walk = os.walk

    def walk_with_a_vanished_file(root):
        for dirpath, dirnames, filenames in real_walk(root):
            yield dirpath, dirnames, [*filenames, ".tmp-gone"]  # listed, then renamed away
    monkeypatch.setattr(uploads_digest.os, "walk", walk_with_a_vanished_file)
    monkeypatch.setattr(uploads_digest.os.path, "isfile", lambda p: True)
    out = uploads_digest.digest(str(tmp_path), [])
    assert set(out) == {"d/kept.pdf"} and out["d/kept.pdf"][0] == 4
    # status-probe's listing asks find to ignore the same race (its exit status is then 0).
    src = Path(status_probe.__file__).read_text()
    assert '"-ignore_readdir_race"' in src.split("def uploads(")[1].split("def parse_listing")[0]
