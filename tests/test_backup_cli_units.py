"""`siaga backup` without a lab: which host runs which set, the workstation's append-only log,
and a missing expected success recorded as a failure (SOP BK-3, BK-5)."""

from __future__ import annotations

import datetime as dt

import pytest

from drc.backup import runs as backup
from drc.records import store as records
from drc.site import parse_site

TZ = dt.timezone(dt.timedelta(hours=7))
HOSTS = {"primary": {"runs": ["uploads", "system", "prune"], "initialised": "2026-11-01T10:00:00+07:00"},
         "drc": {"runs": ["db", "offline"], "initialised": "2026-11-01T10:00:00+07:00"}}


@pytest.fixture
def site(tmp_path):
    key = tmp_path / "id"
    key.write_text("x")
    return parse_site({
        "site": "t", "admin_workstations": ["10.0.0.1/32"], "ssh_allowlist": ["10.0.0.0/24"],
        "connection": {"user": "budi", "key_file": str(key)},
        "admins": [{"name": "budi", "ssh_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB budi@x"]}],
        "sites": {"primary": {"networks": ["10.0.1.0/24"], "hosts": ["primary"]},
                  "drc": {"networks": ["10.0.2.0/24"], "hosts": ["drc"]}},
        "hosts": {"primary": {"address": "10.0.1.10"}, "drc": {"address": "10.0.2.10"}},
        "records_dir": str(tmp_path / "records"),
    }, tmp_path / "site.yaml")


def rec(set_name, end, result="success", repository="repo1", **kw):
    return {"id": f"{set_name}-{end}", "set": set_name, "start": end, "end": end, "result": result,
            "repository": repository, "kind": "incr", **kw}


def test_each_set_runs_on_the_host_that_owns_it(site):
    plan, problems = backup.plan_run(site, HOSTS, None)
    assert plan == {"drc": ["db"], "primary": ["uploads", "system"]} and not problems
    assert backup.plan_run(site, HOSTS, "uploads") == ({"primary": ["uploads"]}, [])
    plan, problems = backup.plan_run(site, HOSTS, "nope")
    assert plan == {} and "no host runs it" in problems[0]
    plan, problems = backup.plan_run(site, {**HOSTS, "drc": {"error": "timeout"}}, "db")
    assert plan == {} and "drc (timeout)" in problems[0]


def test_schedule_periods_from_the_calendars(site):
    periods = backup.expected_sets(site)
    # weekly full on Sunday + incremental Mon..Sat: one database backup a day.
    assert periods == {"db": 86400, "uploads": 86400, "system": 86400, "offline": 7 * 86400}
    assert backup.calendar_period_s("Sun *-*-* 01:00") == 7 * 86400


def test_no_period_is_guessed_without_systemd_analyze(site, monkeypatch):
    backup.calendar_period_s.cache_clear()
    monkeypatch.setattr(backup.shutil, "which", lambda _name: None)
    with pytest.raises(backup.ScheduleError, match="apt-get install systemd"):
        backup.expected_sets(site)
    backup.calendar_period_s.cache_clear()


def test_an_unreadable_calendar_is_named(site):
    with pytest.raises(backup.ScheduleError, match="'not a calendar'.*Fix: correct that OnCalendar"):
        backup.calendar_period_s("not a calendar")


def test_a_missing_success_is_a_failure_recorded_once_per_missed_period(site):
    log = [rec("db", "2026-11-20T01:05:00+07:00"), rec("uploads", "2026-11-21T01:31:00+07:00"),
           rec("system", "2026-11-19T01:46:00+07:00"), rec("system", "2026-11-21T01:46:00+07:00", result="failure"),
           rec("offline", "2026-11-15T04:05:00+07:00", repository="offline")]
    now = dt.datetime(2026, 11, 21, 12, 0, tzinfo=TZ)
    missing = backup.missing_records(site, log, HOSTS, now)
    # db: last success 20th 01:05, due 21st 07:05 -> missed; system: last success 19th -> 2 periods missed.
    by_set = {}
    for m in missing:
        by_set.setdefault(m["set"], []).append(m)
    assert sorted(by_set) == ["db", "system"]
    assert len(by_set["db"]) == 1 and len(by_set["system"]) == 2
    m = by_set["db"][0]
    assert (m["result"], m["kind"], m["host"], m["start"]) == ("failure", "missing", "drc", "2026-11-21T07:05:00+07:00")
    assert "no successful backup of set 'db'" in m["error"]
    # The same check again records nothing new (ids are deterministic).
    path = records.records_dir(site) / backup.LOG_RECORDS
    assert len(records.append_new(path, missing)) == 3
    assert records.append_new(path, backup.missing_records(site, log, HOSTS, now)) == []
    states = backup.set_states(site, log, HOSTS, now)
    assert states["db"]["late"] and not states["uploads"]["late"] and states["system"]["last_result"] == "failure"


def test_never_backed_up_counts_from_initialisation(site):
    now = dt.datetime(2026, 11, 1, 20, 0, tzinfo=TZ)
    assert backup.missing_records(site, [], HOSTS, now) == []  # within one day + 6 h of the init
    later = dt.datetime(2026, 11, 2, 17, 0, tzinfo=TZ)
    assert {m["set"] for m in backup.missing_records(site, [], HOSTS, later)} == {"db", "uploads", "system"}
    # A week (+ grace) without a verified offline copy, e.g. the media never attached (BK-9).
    week = dt.datetime(2026, 11, 8, 17, 0, tzinfo=TZ)
    offline = [m for m in backup.missing_records(site, [], HOSTS, week) if m["set"] == "offline"]
    assert [(m["host"], m["repository"]) for m in offline] == [("drc", "offline")]


def test_offline_copies_count_only_for_the_offline_set(site):
    log = [rec("db", "2026-11-21T01:05:00+07:00", repository="offline"), rec("offline", "2026-11-21T04:05:00+07:00", repository="offline")]
    now = dt.datetime(2026, 11, 21, 12, 0, tzinfo=TZ)
    hosts = {**HOSTS, "drc": {"runs": ["db", "offline"], "initialised": "2026-11-19T00:00:00+07:00"}}
    missing = {m["set"] for m in backup.missing_records(site, log, hosts, now)}
    assert "db" in missing and "offline" not in missing


def test_workstation_log_is_append_only_and_deduplicated(tmp_path):
    path = tmp_path / "log.jsonl"
    assert len(records.append_new(path, [{"id": "a", "n": 1}, {"id": "b"}, {"id": "a", "n": 2}])) == 2
    assert records.append_new(path, [{"id": "a", "n": 3}, {"id": "c"}]) == [{"id": "c"}]
    assert [r["id"] for r in records.read(path)] == ["a", "b", "c"]
    assert records.read(path)[0]["n"] == 1


def test_restore_report_says_gagal_for_a_failed_test_and_names_the_bk7_fields(site):
    from drc.backup.restore import render_berita_acara, table_queries

    q = table_queries([("public", "tender_document", "uploaded_at"), ("public", "x", None)], "epns_prod", 1700000000.0)
    assert 'WHERE "uploaded_at" < to_timestamp(1700000000.000000)' in q[0]["sql"] and "WHERE" not in q[1]["sql"].split("FROM")[-1]
    result = {"id": "ab" * 16, "site": "t", "start": "2026-11-22T14:00:00+07:00", "end": "2026-11-22T14:01:00+07:00",
              "duration_s": 60.0, "by": "budi", "requester": "Andi", "head": "Kepala LPSE", "result": "failure",
              "problems": ["database: pgbackrest verify failed: checksum invalid: 1"],
              "db": {"database": "epns_prod", "label": "L1", "type": "full", "chosen_from": 3, "backup_start": "s",
                     "backup_stop": "e", "location": "drc:/srv", "cutoff": "c", "verify": {"ok": False, "output": "checksum invalid: 1"},
                     "tables": {}, "cleanup": {"path": "/var/tmp/x", "removed": True}}, "files": None}
    html = render_berita_acara(result, site)
    for field in ("Pemohon", "Pelaksana", "Pimpinan", "Tanggal pelaksanaan", "Yang direstore", "Hasil", "GAGAL", "Andi"):
        assert field in html
    assert "BERHASIL" not in html
