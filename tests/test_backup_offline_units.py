"""The offline copy without a lab: the runner's `offline` job (what the weekly timer runs) is one
backup-log record also when the media is absent or the copy is not verified, and the list of
offline copies kept on the workstation while the media is away (SOP BK-3, BK-9, EM-3.7).
The runner and siaga-offline-copy are the role's own files, run here as programs."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

from drc.backup import offline as backup_offline
from roles.backup.deploy import ROLE_DIR
from tests.test_backup_cli_units import site  # noqa: F401  (fixture)

RUNNER = ROLE_DIR / "files/siaga-backup"
COPY = ROLE_DIR / "files/siaga-offline-copy"

T0 = dt.datetime(2026, 11, 22, 14, 0, tzinfo=dt.timezone(dt.timedelta(hours=7)))


def copy(name, verified=True):
    return {"name": name, "copied_at": T0.isoformat(), "verified": verified, "bytes_copied": 10, "size_bytes": 20,
            "pgbackrest": {"ok": verified, "backups": ["L1", "L2"], "output": "" if verified else "checksum invalid: 1"},
            "restic": {"ok": True, "snapshots": ["aa", "bb"], "bad": []}}


def run_offline(tmp_path: Path, copy_program: Path) -> tuple[int, list[dict], Path]:
    """`siaga-backup run offline` with a configuration in tmp_path; its records and log."""
    log = tmp_path / "backup.jsonl"
    cfg = {"site": "t", "host": "drc", "log_file": str(log), "timeout_s": 60, "runs": ["db", "offline"], "lock_dir": str(tmp_path),
           "restic": {"sets": []}, "pgbackrest": {},
           "offline": {"mount_point": str(tmp_path / "media"), "device": None, "copy_program": str(copy_program),
                       "copy_args": {"mount_point": str(tmp_path / "media"), "repo_path": str(tmp_path / "repo")}}}
    (tmp_path / "backup.json").write_text(json.dumps(cfg))
    (tmp_path / "media").mkdir(exist_ok=True)
    proc = subprocess.run([sys.executable, str(RUNNER), "run", "offline", "--trigger", "timer"], capture_output=True, text=True,
                          env={"SIAGA_BACKUP_CONFIG": str(tmp_path / "backup.json"), "PATH": "/usr/bin:/bin"}, timeout=60)
    recs = [json.loads(ln[7:]) for ln in proc.stdout.splitlines() if ln.startswith("RECORD ")]
    return proc.returncode, recs, log


def test_no_media_is_a_failed_offline_run_in_the_log(tmp_path):
    # The real copy program: tmp_path/media is a directory, not a mount point.
    code, recs, log = run_offline(tmp_path, COPY)
    assert code == 1 and len(recs) == 1
    rec = recs[0]
    assert (rec["set"], rec["repository"], rec["kind"], rec["result"], rec["trigger"]) == ("offline", "offline", "copy", "failure", "timer")
    assert "not attached" in rec["error"] and "not a mount point" in rec["error"]
    assert [json.loads(ln)["id"] for ln in log.read_text().splitlines()] == [rec["id"]]


def copy_program(tmp_path: Path, result: dict) -> Path:
    prog = tmp_path / "copy"
    prog.write_text(f"#!{sys.executable}\nimport json\nprint(json.dumps({result!r}))\n")
    prog.chmod(0o755)
    return prog


def test_an_unverified_copy_is_a_failure_with_the_reason(tmp_path):
    _, recs, _ = run_offline(tmp_path, copy_program(tmp_path, {"ok": False, "attached": True, "copy": copy("20261122T140000", False)}))
    assert recs[0]["result"] == "failure" and "checksum invalid" in recs[0]["error"] and recs[0]["details"]["backups"] == ["L1", "L2"]
    code, recs, _ = run_offline(tmp_path, copy_program(tmp_path, {"ok": True, "attached": True, "copy": copy("20261122T150000")}))
    assert code == 0 and recs[0]["result"] == "success" and recs[0]["error"] is None
    assert recs[0]["details"]["snapshots"] == 2 and recs[0]["details"]["copy"] == "20261122T150000" and recs[0]["size_bytes"] == 10


def test_the_list_survives_detaching_oldest_first_without_removed_copies(site):  # noqa: F811
    backup_offline.remember(site, {"copies": [copy("20261115T010000"), copy("20261122T010000", False)]})
    backup_offline.remember(site, {"copies": [copy("20261108T010000"), copy("20261129T010000")], "removed": ["20261108T010000"]})
    copies, source = backup_offline.listing(site, {"attached": False})
    assert source.startswith("workstation records")
    assert [c["name"] for c in copies] == ["20261115T010000", "20261122T010000", "20261129T010000"]
    assert [c["verified"] for c in copies] == [True, False, True]
    on_media, source = backup_offline.listing(site, {"attached": True, "copies": [copy("X")]})
    assert source == "media" and on_media[0]["name"] == "X"


def test_a_copy_in_the_same_second_as_the_last_takes_the_next_second(tmp_path):
    """Two copies within one second (the timer's right after `siaga backup offline` on a small
    repository) once collided on the name: the rename onto the first copy failed."""
    import importlib.machinery
    import importlib.util

    loader = importlib.machinery.SourceFileLoader("siaga_offline_copy", str(ROLE_DIR / "files/siaga-offline-copy"))
    spec = importlib.util.spec_from_loader("siaga_offline_copy", loader)
    prog = importlib.util.module_from_spec(spec)
    loader.exec_module(prog)
    tz = dt.timezone(dt.timedelta(hours=7))
    times = iter([dt.datetime(2026, 11, 26, 9, 37, 22, 400000, tzinfo=tz), dt.datetime(2026, 11, 26, 9, 37, 23, 10000, tzinfo=tz)])
    slept = []
    (tmp_path / "20261126T093722").mkdir()
    now, name = prog.copy_name(str(tmp_path), clock=lambda: next(times), sleep=slept.append)
    assert name == "20261126T093723" and now.second == 23 and slept and 0.6 <= slept[0] <= 0.62
    # A free second is taken at once.
    now, name = prog.copy_name(str(tmp_path), clock=lambda: dt.datetime(2026, 11, 26, 9, 40, tzinfo=tz), sleep=slept.append)
    assert name == "20261126T094000" and len(slept) == 1
