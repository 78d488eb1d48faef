"""The backup role without a lab: settings, rendered configs, and the host runner's records
(one JSON line per run, also on failure). SOP BK-1, BK-3, BK-8, BK-9."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from roles.backup.deploy import timers
from roles.backup.layout import render_archive_conf
from roles.backup.defaults import BackupSettings

REPO = Path(__file__).resolve().parent.parent


def load_runner():
    path = REPO / "roles/backup/files/siaga-backup"
    loader = importlib.machinery.SourceFileLoader("siaga_backup_runner", str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_defaults_weekly_full_daily_incremental_and_bk8_sets():
    b = BackupSettings()
    jobs = timers(b)
    assert jobs["db-full"][0] == "Sun *-*-* 01:00" and jobs["db-incr"][0] == "Mon..Sat *-*-* 01:00"
    assert {"uploads", "system", "prune", "offline"} <= set(jobs)
    assert [s.name for s in b.sets] == ["uploads", "system"]
    assert "archive_mode = on" in render_archive_conf(b) and "archive-push %p" in render_archive_conf(b)


@pytest.mark.parametrize("sets, problem", [
    ([{"name": "db", "paths": ["/x"]}], "reserved"),
    ([{"name": "a", "paths": ["/x"]}, {"name": "a", "paths": ["/y"]}], "twice"),
    ([{"name": "a", "paths": ["relative"]}], "absolute"),
])
def test_bad_sets_are_refused(sets, problem):
    with pytest.raises(ValidationError, match=problem):
        BackupSettings(sets=sets)


def run_args(**kw):
    return SimpleNamespace(**{"trigger": "manual", "by": "budi", "set": "uploads", "type": None, **kw})


def test_a_run_writes_one_record_on_success_and_on_failure(tmp_path, capsys):
    runner = load_runner()
    cfg = {"log_file": str(tmp_path / "log/backup.jsonl"), "host": "primary", "site": "lab"}
    with runner.Run(cfg, run_args(), "uploads", "repo1", "incr") as run:
        run.record["size_bytes"] = 42
    with runner.Run(cfg, run_args(), "db", "repo1", "incr"):
        raise runner.RunError("ssh: connect to host 10.0.2.10 port 22: Connection timed out")
    with runner.Run(cfg, run_args(), "db", "repo1", "incr"):
        raise ValueError("runner bug")
    records = [json.loads(line) for line in Path(cfg["log_file"]).read_text().splitlines()]
    assert [r["result"] for r in records] == ["success", "failure", "failure"]
    ok, cut, bug = records
    assert ok["size_bytes"] == 42 and ok["error"] is None and ok["set"] == "uploads" and ok["repository"] == "repo1"
    assert "Connection timed out" in cut["error"] and "runner bug" in bug["error"]
    for r in records:
        assert {"id", "host", "set", "repository", "start", "end", "duration_s", "size_bytes", "result", "error", "trigger"} <= set(r)
        assert r["duration_s"] >= 0 and r["start"] <= r["end"]
    assert len({r["id"] for r in records}) == 3
    assert "RECORD " in capsys.readouterr().out


def test_skip_is_recorded_with_its_reason(tmp_path):
    runner = load_runner()
    cfg = {"log_file": str(tmp_path / "backup.jsonl"), "host": "primary"}
    assert runner.cmd_skip(cfg, run_args(reason="emergency fix, DRC down", trigger="pre-change")) == 0
    r = json.loads(Path(cfg["log_file"]).read_text())
    assert r["result"] == "skipped" and r["details"]["reason"] == "emergency fix, DRC down" and r["trigger"] == "pre-change"


def test_a_set_that_runs_elsewhere_is_a_logged_failure(tmp_path):
    runner = load_runner()
    cfg = {"log_file": str(tmp_path / "backup.jsonl"), "host": "primary", "runs": ["uploads"], "lock_dir": str(tmp_path),
           "restic": {"sets": [{"name": "uploads", "paths": ["/x"]}]}}
    assert runner.cmd_run(cfg, run_args(set="db")) == 1
    r = json.loads(Path(cfg["log_file"]).read_text())
    assert r["result"] == "failure" and "do not run on this host" in r["error"]


def test_offline_copy_and_database_jobs_run_on_the_repository_host():
    from roles.backup.deploy import on_repository_host

    assert [j for j in timers(BackupSettings()) if on_repository_host(j)] == ["db-full", "db-incr", "offline"]
