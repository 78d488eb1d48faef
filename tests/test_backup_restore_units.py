"""`siaga backup restore` and `restore-test --target-time` without a lab: a restore into production
is refused unless the target is named twice and a pre-restore backup succeeded first; every
attempt is recorded (SOP BK-2, BK-7)."""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json

import pytest
from rich.console import Console

from drc.backup import runs as backup, restore as backup_restore
from drc.records import store as records
from tests.test_backup_cli_units import site  # noqa: F401  (fixture)


def test_refusals(site):  # noqa: F811
    r = backup_restore.restore_refusal
    assert r(site, None, None) == "no --target given"
    assert "unknown host" in r(site, "nope", "nope")
    assert "name the target twice" in r(site, "primary", None)
    assert "--confirm-target was 'drc'" in r(site, "primary", "drc")
    assert "not the database source host" in r(site, "drc", "drc")
    assert r(site, "primary", "primary") is None


def test_restore_arguments_for_pgbackrest():
    t = dt.datetime(2026, 11, 22, 14, 5, 1, 250000, tzinfo=dt.timezone(dt.timedelta(hours=7)))
    assert backup_restore.restore_args(None, t) == ["--type=time", "--target=2026-11-22 07:05:01.250000+00", "--target-action=promote"]
    assert backup_restore.restore_args("L1", None) == ["--set=L1", "--type=immediate", "--target-action=promote"]
    assert backup_restore.restore_args(None, None) == []
    assert backup_restore.parse_target_time("2026-11-22T14:05:01+07:00") == t.replace(microsecond=0)
    with pytest.raises(argparse.ArgumentTypeError):
        backup_restore.parse_target_time("yesterday")
    q = backup_restore.table_queries([("public", "tender_document", "uploaded_at")], "db", None)
    assert "WHERE" not in q[0]["sql"].split("FROM")[-1]  # the restored copy: every row


def _args(**kw):
    base = dict(site=None, target="primary", confirm_target=None, label=None, target_time=None, requester="Andi",
                head="Kepala LPSE", json=True, timeout=1.0)
    return argparse.Namespace(**{**base, **kw})


@pytest.fixture
def no_hosts(site, monkeypatch):  # noqa: F811
    """Nothing may reach a host unless a test allows it."""
    monkeypatch.setattr(backup_restore, "load_site", lambda _: site)
    calls = []

    def forbidden(*a, **k):
        calls.append(a)
        raise AssertionError("a host was contacted")

    monkeypatch.setattr(backup, "read_hosts", forbidden)
    monkeypatch.setattr(backup, "run_sets", forbidden)
    monkeypatch.setattr(backup_restore.remote, "run", forbidden)
    return calls


def run_cmd(args) -> tuple[int, dict]:
    buf = io.StringIO()
    code = backup_restore.cmd_restore(args, Console(file=buf, width=200))
    return code, json.loads(buf.getvalue())


def test_unconfirmed_restore_is_refused_recorded_and_touches_no_host(site, no_hosts):  # noqa: F811
    for kw in ({}, {"confirm_target": "drc"}, {"target": "drc", "confirm_target": "drc"}):
        code, rec = run_cmd(_args(**kw))
        assert (code, rec["result"]) == (2, "refused") and rec["restore"] is None and rec["pre_restore_backup"] is None
    assert not no_hosts
    log = records.read(records.records_dir(site) / backup_restore.RESTORE_LOG)
    assert [r["result"] for r in log] == ["refused"] * 3 and all(r["requester"] == "Andi" for r in log)


def test_a_failed_pre_restore_backup_stops_the_restore(site, no_hosts, monkeypatch):  # noqa: F811
    seen = {}
    monkeypatch.setattr(backup, "read_hosts", lambda s, t: {"drc": {"runs": ["db"]}, "primary": {"runs": ["uploads"]}})

    def run_sets(s, plan, by, timeout, trigger="manual"):
        seen.update(plan=plan, trigger=trigger)
        return {"drc": {"records": [{"id": "x1", "set": "db", "result": "failure", "error": "unable to connect"}], "error": None}}

    monkeypatch.setattr(backup, "run_sets", run_sets)
    code, rec = run_cmd(_args(confirm_target="primary"))
    assert seen == {"plan": {"drc": ["db"]}, "trigger": "pre-restore"}
    assert (code, rec["result"]) == (2, "refused") and "pre-restore backup failed" in rec["error"] and rec["restore"] is None
    assert [r["id"] for r in records.read(records.records_dir(site) / backup.LOG_RECORDS)] == ["x1"]
