"""The offline copy without a lab: the runner's `offline` job (what the weekly timer runs) is one
backup-log record also when the media is absent or the copy is not verified; media in rotation
(labels, which one is due), retention per medium that never deletes its last verified copy, the
last clean copy across media, and the list kept on the workstation while every medium is away
(SOP BK-1, BK-3, BK-9, EM-3.7). The runner and siaga-offline-copy are the role's own files, run
here as programs or loaded as a module (drc.backup.media.program())."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
from pathlib import Path

from drc.backup import media, offline as backup_offline
from roles.backup.layout import ROLE_DIR
from tests.test_backup_cli_units import site  # noqa: F401  (fixture)

RUNNER = ROLE_DIR / "files/siaga-backup"
COPY = ROLE_DIR / "files/siaga-offline-copy"

T0 = dt.datetime(2026, 11, 22, 14, 0, tzinfo=dt.timezone(dt.timedelta(hours=7)))


def copy(name, verified=True, medium=None):
    return {"name": name, "medium": medium, "copied_at": T0.isoformat(), "verified": verified, "bytes_copied": 10, "size_bytes": 20,
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
    backup_offline.remember(site, {"medium": "OFFLINE-A", "copies": [copy("20261115T010000"), copy("20261122T010000", False)]})
    backup_offline.remember(site, {"medium": "OFFLINE-A", "copies": [copy("20261108T010000"), copy("20261129T010000")],
                                   "removed": ["20261108T010000"]})
    copies = backup_offline.listing(site)
    assert [c["name"] for c in copies] == ["20261115T010000", "20261122T010000", "20261129T010000"]
    assert [c["verified"] for c in copies] == [True, False, True] and {c["medium"] for c in copies} == {"OFFLINE-A"}
    # The medium attached again no longer holds one (removed by hand or by an older program): gone from the list.
    backup_offline.remember(site, {"medium": "OFFLINE-A", "attached": True, "copies": [copy("20261122T010000", False), copy("20261129T010000")]})
    assert [c["name"] for c in backup_offline.listing(site)] == ["20261122T010000", "20261129T010000"]


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


# --- media in rotation (BK-1), retention per medium, the last clean copy (EM-3.7) ----------------

PROG = media.program()
AT = dt.datetime(2026, 11, 1, 4, 0, tzinfo=dt.timezone(dt.timedelta(hours=7)))


def on_medium(root: Path, label: str | None, results: list[bool], start: dt.datetime = AT) -> list[str]:
    """Copies on a medium directory as siaga-offline-copy leaves them (a manifest in each), weekly."""
    root.mkdir(parents=True, exist_ok=True)
    if label:
        (root / "medium.json").write_text(json.dumps({"label": label}))
    names = []
    for i, ok in enumerate(results):
        t = start + dt.timedelta(days=7 * i)
        name = t.strftime("%Y%m%dT%H%M%S")
        (root / name / "pgbackrest").mkdir(parents=True)
        (root / name / "manifest.json").write_text(json.dumps({"name": name, "medium": label, "copied_at": t.isoformat(), "verified": ok}))
        names.append(name)
    return names


def retain(root: Path, keep: int) -> list[str]:
    """What siaga-offline-copy's copy mode does after a copy: its retention, applied to the directory."""
    gone = PROG.retention(PROG.copies(str(root), "OFFLINE-A"), keep)
    for n in gone:
        shutil.rmtree(root / n)
    return gone


def test_a_run_of_failed_copies_never_deletes_the_last_verified_copy(tmp_path):
    root = tmp_path / "siaga-offline"
    names = on_medium(root, "OFFLINE-A", [True, True, False, False, False, False, False, False])
    gone = retain(root, keep=2)
    left = sorted(p.name for p in root.iterdir() if PROG.NAME.match(p.name))
    # Both verified copies stay (failed ones never count towards keep); only the oldest failed go.
    assert names[0] in left and names[1] in left and gone == names[2:6] and left == [names[0], names[1], *names[6:]]
    # keep=1: one verified copy and one failed one (the newest, for the analysis) stay; then more
    # copies fail: the last verified copy is still there.
    assert retain(root, keep=1) == [names[0], names[6]]
    for k in range(3):
        on_medium(root, None, [False], start=AT + dt.timedelta(days=100 + 7 * k))
        retain(root, keep=1)
    assert names[1] in {p.name for p in root.iterdir()}
    # A verified copy later: older failed ones and verified ones beyond keep are removed.
    newest = on_medium(root, None, [True], start=AT + dt.timedelta(days=400))[0]
    retain(root, keep=1)
    assert sorted(p.name for p in root.iterdir() if PROG.NAME.match(p.name)) == [newest]


def test_copies_link_only_to_a_verified_copy_on_the_same_medium(tmp_path):
    a, b = tmp_path / "a" / "siaga-offline", tmp_path / "b" / "siaga-offline"
    names = on_medium(a, "OFFLINE-A", [True, False])
    assert PROG.link_base(str(a), PROG.copies(str(a), "OFFLINE-A")) == str(a / names[0])  # never the failed newer one
    # Medium B holds no verified copy: a full copy, whatever medium A holds (it may be in the safe).
    on_medium(b, "OFFLINE-B", [False])
    assert PROG.link_base(str(b), PROG.copies(str(b), "OFFLINE-B")) is None


def test_the_due_medium_rotates_by_the_last_verified_copy_on_each():
    labels, week = ["OFFLINE-A", "OFFLINE-B", "OFFLINE-C"], 7 * 86400

    def h(label, day, ok=True):
        return {"medium": label, "name": f"n{day}", "copied_at": (AT + dt.timedelta(days=day)).isoformat(), "verified": ok}

    rot = PROG.rotation([], labels, week, AT)
    assert rot["due"] == "OFFLINE-A" and not rot["overdue"]
    hist = [h("OFFLINE-A", 0)]
    assert PROG.rotation(hist, labels, week, AT + dt.timedelta(days=1))["due"] == "OFFLINE-B"
    hist += [h("OFFLINE-B", 7), h("OFFLINE-C", 14)]
    rot = PROG.rotation(hist, labels, week, AT + dt.timedelta(days=15))
    assert rot["due"] == "OFFLINE-A" and rot["due_at"] == (AT + dt.timedelta(days=21)).isoformat() and not rot["overdue"]
    assert PROG.rotation(hist, labels, week, AT + dt.timedelta(days=22))["overdue"]
    # A failed copy on A does not make A's turn done: A is still due.
    assert PROG.rotation([*hist, h("OFFLINE-A", 21, ok=False)], labels, week, AT + dt.timedelta(days=21))["due"] == "OFFLINE-A"
    assert PROG.rotation([*hist, h("OFFLINE-A", 21)], labels, week, AT + dt.timedelta(days=21))["due"] == "OFFLINE-B"
    # A label left out of the site's rotation does not count.
    assert PROG.rotation([h("OFFLINE-Z", 30)], labels, week, AT)["due"] == "OFFLINE-A"


def test_the_last_clean_copy_is_chosen_across_media_by_time_and_verification():
    def c(label, day, ok=True):
        t = AT + dt.timedelta(days=day)
        return {"medium": label, "name": t.strftime("%Y%m%dT%H%M%S"), "copied_at": t.isoformat(), "verified": ok}

    copies = [c("OFFLINE-A", 0), c("OFFLINE-B", 7), c("OFFLINE-C", 14), c("OFFLINE-A", 21, ok=False), c("OFFLINE-B", 28)]
    assert media.last_clean_copy(copies) == copies[4]
    # Infected on day 20: the newest verified copy before then (the failed one after it never counts).
    assert media.last_clean_copy(copies, before=AT + dt.timedelta(days=20)) == copies[2]
    assert media.last_clean_copy(copies, before=AT + dt.timedelta(days=29)) == copies[4]
    assert media.last_clean_copy(copies, before=AT) is None and media.last_clean_copy([]) is None
    assert media.parse_time("2026-11-15 04:00").tzinfo is not None


def program_with(monkeypatch, root: Path, **args):
    monkeypatch.setattr(PROG, "A", {"media": ["OFFLINE-A", "OFFLINE-B"], **args})
    monkeypatch.setattr(PROG, "media_root", lambda: str(root))


def outcome(fn):
    try:
        return fn()
    except SystemExit as exc:
        return json.loads(str(exc))


def test_a_medium_is_labelled_once_and_a_medium_with_copies_is_never_relabelled(tmp_path, monkeypatch):
    root = tmp_path / "siaga-offline"
    root.mkdir()
    program_with(monkeypatch, root, label="OFFLINE-Q")
    assert "not in the site's rotation" in outcome(PROG.mode_init)["error"] and not (root / "medium.json").exists()
    program_with(monkeypatch, root, label="OFFLINE-A")
    assert outcome(PROG.mode_init)["initialised"] and json.loads((root / "medium.json").read_text())["label"] == "OFFLINE-A"
    assert outcome(PROG.mode_init)["initialised"] is False  # again: nothing to do
    program_with(monkeypatch, root, label="OFFLINE-B")
    assert outcome(PROG.mode_init)["initialised"]  # still empty: relabelling is allowed
    on_medium(root, None, [True])
    program_with(monkeypatch, root, label="OFFLINE-A")
    res = outcome(PROG.mode_init)
    assert not res["ok"] and "refused to relabel" in res["error"] and json.loads((root / "medium.json").read_text())["label"] == "OFFLINE-B"
    # A medium from before labels (copies, no label file) takes a label and keeps its copies.
    legacy = tmp_path / "legacy"
    names = on_medium(legacy, None, [True, True])
    program_with(monkeypatch, legacy, label="OFFLINE-A")
    res = outcome(PROG.mode_init)
    assert res["initialised"] and [(c["name"], c["medium"]) for c in res["copies"]] == [(n, "OFFLINE-A") for n in names]
    # A medium replaced under the same label (a new, blank OFFLINE-A): the copies the host remembers
    # on the old one no longer count for the rotation.
    hist = tmp_path / "offline-media.json"
    hist.write_text(json.dumps({"copies": [{"medium": "OFFLINE-A", "name": "20261001T040000", "copied_at": "2026-10-01T04:00:00+07:00",
                                            "verified": True}]}))
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    program_with(monkeypatch, fresh, label="OFFLINE-A", history_file=str(hist))
    res = outcome(PROG.mode_init)
    assert res["initialised"] and res["history"][0]["removed"] and json.loads(hist.read_text())["copies"][0]["removed"]
    assert PROG.rotation(res["history"], ["OFFLINE-A", "OFFLINE-B"], 86400, AT)["last_verified"]["OFFLINE-A"] is None
    # Copying to a medium never labelled is refused with the fix.
    blank = tmp_path / "blank"
    blank.mkdir()
    program_with(monkeypatch, blank)
    assert "siaga backup offline --init-medium OFFLINE-A" in outcome(PROG.mode_copy)["error"]


def offline_cli(site, capsys, monkeypatch, *argv, host_answer=None):  # noqa: F811
    from drc.backup import command
    from drc.cli import build_parser

    calls = []
    monkeypatch.setattr(backup_offline, "load_site", lambda _f: site)
    monkeypatch.setattr(backup_offline, "program_on_host", lambda *a, **kw: calls.append((a[2], kw)) or dict(host_answer or {}))
    assert command  # the subcommand registered by drc.backup.command
    args = build_parser().parse_args(["backup", "offline", "site.yaml", "--json", *argv])
    from rich.console import Console

    code = args.func(args, Console(file=__import__("sys").stdout))
    return code, json.loads(capsys.readouterr().out), calls


def test_list_shows_each_medium_where_it_is_kept_the_due_one_and_the_last_clean_copy(site, capsys, monkeypatch):  # noqa: F811
    a1 = {**copy("20261101T040000", medium="OFFLINE-A"), "copied_at": "2026-11-01T04:00:00+07:00", "host": "drc"}
    b1 = {**copy("20261108T040000", medium="OFFLINE-B"), "copied_at": "2026-11-08T04:00:00+07:00", "host": "drc"}
    a2 = {**copy("20261115T040000", False, medium="OFFLINE-A"), "copied_at": "2026-11-15T04:00:00+07:00", "host": "drc"}
    backup_offline.remember(site, {"medium": "OFFLINE-A", "attached": True, "copies": [a1]})
    backup_offline.remember(site, {"medium": "OFFLINE-B", "attached": True, "copies": [b1]})
    code, out, _ = offline_cli(site, capsys, monkeypatch, "--stored", "OFFLINE-A", "--location", "lemari besi kantor",
                               "--since", "2026-11-01T09:00+07:00")
    assert code == 0
    # The host remembers a later (failed) copy on A; no medium is attached now.
    code, out, calls = offline_cli(site, capsys, monkeypatch, "--list", "--before", "2026-11-07T00:00+07:00",
                                   host_answer={"ok": False, "attached": False, "error": "not attached",
                                                "history": [{k: a2[k] for k in ("medium", "name", "copied_at", "verified", "host")}]})
    assert code == 0 and calls == [("list", {})] and out["source"].startswith("workstation records")
    assert out["error"] is None and out["note"] == "not attached"  # no medium attached is the usual case, not an error
    rows = {m["label"]: m for m in out["media"]}
    assert rows["OFFLINE-A"]["last_verified"] == a1["name"] and rows["OFFLINE-A"]["copies"] == 2
    # A was plugged in after it was recorded stored (the failed copy on the 15th): not in the safe any more.
    assert rows["OFFLINE-A"]["location"].startswith("server drc") and rows["OFFLINE-A"]["since"] == a2["copied_at"]
    assert rows["OFFLINE-B"]["location"].startswith("server drc") and not rows["OFFLINE-B"]["stored"]  # never recorded put away
    assert rows["OFFLINE-C"]["last_verified"] is None and rows["OFFLINE-C"]["location"] is None
    assert out["due"] == "OFFLINE-C" and [m["label"] for m in out["media"] if m["due"]] == ["OFFLINE-C"]
    assert out["last_clean"]["name"] == a1["name"] and out["last_verified"] == a1["name"]  # before the 7th: A's
    code, out, _ = offline_cli(site, capsys, monkeypatch, "--stored", "OFFLINE-A", "--location", "brankas kantor kabupaten")
    code, out, _ = offline_cli(site, capsys, monkeypatch, "--list", host_answer={"ok": False, "reached": False, "error": "drc: timeout"})
    rows = {m["label"]: m for m in out["media"]}
    assert code == 0 and rows["OFFLINE-A"]["location"] == "brankas kantor kabupaten" and out["last_clean"]["name"] == b1["name"]


def test_an_unknown_label_is_refused_before_any_host_is_touched(site, capsys, monkeypatch):  # noqa: F811
    import pytest

    for argv in (["--init-medium", "OFFLINE-Z"], ["--stored", "OFFLINE-Z", "--location", "x"]):
        with pytest.raises(SystemExit, match="not in the rotation.*Fix:"):
            offline_cli(site, capsys, monkeypatch, *argv)
    with pytest.raises(SystemExit, match="--before 'last week' is not a time. Fix:"):
        offline_cli(site, capsys, monkeypatch, "--list", "--before", "last week")
    with pytest.raises(SystemExit, match="needs --location"):
        offline_cli(site, capsys, monkeypatch, "--stored", "OFFLINE-A")
