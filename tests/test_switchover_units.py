"""The switch-over's pure parts: pg_controldata parsing (the demotion token), LSN order, the
uploads digest, and the Indonesian record built from a real engine journal. SOP EM-2, EM-3."""

from __future__ import annotations

from pathlib import Path

from drc.hostside import pg_role, uploads_digest
from drc.runbooks import journal as journals
from drc.runbooks.command import record_of
from drc.records.render import render_report
from drc.runbooks.engine import Engine, Reading, Runbook, Step
from drc.runbooks.lock import FileLock
from drc.runbooks.switchover import lsn

CONTROLDATA = """pg_control version number:            1700
Database system identifier:           7441234567890123456
Database cluster state:               shut down
pg_control last modified:             Thu 26 Nov 2026 03:50:01 AM UTC
Latest checkpoint location:           0/3000028
Latest checkpoint's REDO location:    0/3000028
Latest checkpoint's TimeLineID:       2
Minimum recovery ending location:     0/0
"""


def test_the_demotion_token_is_read_from_pg_controldata():
    cd = pg_role.parse_controldata(CONTROLDATA)
    assert cd == {"system_identifier": "7441234567890123456", "state": "shut down", "checkpoint_lsn": "0/3000028",
                  "timeline": 2, "min_recovery_lsn": "0/0"}


def test_lsns_compare_as_wal_positions_not_as_text():
    assert lsn("0/3000028") < lsn("0/30000A0") < lsn("1/0") and lsn("A/0") > lsn("9/FFFFFFFF")
    assert lsn(None) is None and lsn("garbage") is None


def test_the_uploads_digest_has_size_and_sha256_and_honours_excludes(tmp_path):
    (tmp_path / "2026" / "t1").mkdir(parents=True)
    (tmp_path / "2026" / "t1" / "a.pdf").write_bytes(b"abc")
    (tmp_path / "2026" / "t1" / ".tmp-x").write_bytes(b"partial")
    (tmp_path / "link").symlink_to(tmp_path / "2026" / "t1" / "a.pdf")
    out = uploads_digest.digest(str(tmp_path), [".tmp-*"])
    assert out == {"2026/t1/a.pdf": [3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"]}


def test_the_record_lists_each_step_with_its_times_and_the_outage(tmp_path):
    steps = tuple(Step(n, "EM-2", f"does {n}", lambda _: None, lambda _: Reading(True)) for n in ("notice", "stop-app", "promote", "app"))
    out = Engine(Runbook("switchover", "drc", "Switch-over to DRC", (), steps), None, tmp_path, FileLock(tmp_path / "l")).run()
    rec = record_of(journals.Journal.load(out.journal), "lab", "primary", "drc")
    assert [s["step"] for s in rec["langkah"]] == ["notice", "stop-app", "promote", "app"]
    assert all(s["hasil"] == "done" and s["mulai"] and s["selesai"] for s in rec["langkah"])
    assert rec["hasil"] == "finished" and rec["jeda"].endswith("detik")
    html = render_report("catatan_runbook.html.j2", r=rec)
    assert "CATATAN PELAKSANAAN SWITCH-OVER KE DRC" in html and "SELESAI" in html and html.count("<td>does ") == 4
    assert Path(out.journal).name.startswith("switchover-drc-")


def test_the_figures_come_from_the_journal_times(tmp_path):
    from drc.runbooks.figures import switchover_figures

    names = ("notice", "stop-app", "shutdown", "promote", "app-up", "web", "rejoin")
    steps = tuple(Step(n, "EM-2", n, lambda _: None, lambda _: Reading(True)) for n in names)
    out = Engine(Runbook("switchover", "drc", "t", (), steps), None, tmp_path, FileLock(tmp_path / "l")).run()
    j = journals.Journal.load(out.journal)
    at = {(e["event"], e.get("step")): e["at"] for e in j.events}
    fig = switchover_figures(j)
    import datetime as dt

    gap = (dt.datetime.fromisoformat(at[("step-end", "web")]) - dt.datetime.fromisoformat(at[("step-start", "stop-app")])).total_seconds()
    assert fig["outcome"] == "finished" and fig["service_gap_s"] == round(gap, 2) and fig["service_gap_s"] >= 0
    assert fig["promotion_to_streaming_s"] is not None and fig["runbook_s"] >= fig["service_gap_s"]


def test_a_wal_trim_interrupted_before_its_reset_is_told_from_an_admins_alter_system():
    # SOP EM-3.8: the fail-back's temporary pair is reset on a re-run; an admin's own setting is left alone.
    assert pg_role.leftover({"wal_keep_size": "96MB", "wal_recycle": "off"})
    assert not pg_role.leftover({"wal_keep_size": "4GB"})
    assert not pg_role.leftover({"wal_recycle": "off"})
    assert not pg_role.leftover({"wal_keep_size": "96MB", "wal_recycle": "on"})


def test_wal_trim_refuses_what_is_not_an_lsn():
    for bad in (None, "0/5000028'; DROP TABLE x; --", "5000028", 7):
        out = pg_role.wal_trim({"version": "17", "cluster": "main", "port": 5432, "keep_from": bad})
        assert out["ok"] is False and "not an LSN" in out["error"]


SEG = 16 * 2**20


def test_the_wal_trim_keeps_the_replay_starts_segment_and_a_guard_for_the_wal_written_meanwhile():
    # SOP EM-3.8: the serving host keeps from the old primary's replay start on; the guard covers the
    # segment boundaries the WAL written before the trimming CHECKPOINT may cross (at least one).
    assert pg_role.trim_keep("1/3000028", "1/3000028", SEG, 0) == (1, 1)  # the same segment
    assert pg_role.trim_keep("1/30000028", "1/2F000100", SEG, 0.3 * 2**20) == (2, 1)  # the next one: 16 MB apart
    assert pg_role.trim_keep("1/9000000", "1/2FFFFFF", SEG, 0) == (8, 1)  # segments, not megabytes: 2 bytes short of 7
    assert pg_role.trim_keep("2/0", "1/FF000000", SEG, 0) == (2, 1)  # across the 4 GiB boundary of the LSN's halves
    assert pg_role.trim_keep("1/3000028", "1/3000028", SEG, 30 * 2**20) == (23, 23)  # a busy primary: 12 s at 30 MB/s


def test_the_rewound_host_asks_the_archive_for_each_segment_under_the_timeline_recovery_would_use():
    # SOP EM-3.8: before the fork segment the old timeline's names, from it on the serving timeline's
    # (a timeline that begins mid-segment owns that segment, as PostgreSQL's XLogFileReadAnyTLI reads).
    from drc.runbooks.failback import recovery_names

    assert recovery_names([(1, "0/5000100")], 2, "0/3000028", 6, SEG) == [
        "000000010000000000000003", "000000010000000000000004", "000000020000000000000005", "000000020000000000000006"]
    # Two failovers: timeline 2 began in segment 4, timeline 3 in segment 6; across an LSN's 4 GiB halves.
    assert recovery_names([(1, "0/4800000"), (2, "0/6000000")], 3, "0/3FFFFFF", 6, SEG) == [
        "000000010000000000000003", "000000020000000000000004", "000000020000000000000005", "000000030000000000000006"]
    assert recovery_names([(1, "0/FF000010")], 2, "0/FE000000", 256, SEG) == [
        "0000000100000000000000FE", "0000000200000000000000FF", "000000020000000100000000"]
    assert recovery_names([(1, "0/5000100")], 2, "0/7000028", 6, SEG) == []  # the replay start not yet archived


def test_the_serving_host_keeps_its_pg_wal_from_the_first_wal_file_the_archive_cannot_give():
    # SOP EM-3.8, BK-1: what the rewound host cannot fetch stays for pg_rewind to copy; never later.
    from drc.runbooks.failback import archive_keep_from, recovery_names

    names = recovery_names([(1, "0/5000100")], 2, "0/3000028", 6, SEG)
    assert archive_keep_from(names, set(names), "0/3000028", 6, SEG) == "0/7000000"  # all archived: after the last
    assert archive_keep_from(names, set(names) - {"000000020000000000000005"}, "0/3000028", 6, SEG) == "0/5000000"
    assert archive_keep_from(names, set(), "0/3000028", 6, SEG) == "0/3000028"  # nothing: from the replay start itself
    # The .partial of the old timeline or a file of another timeline does not count as the one asked for.
    assert archive_keep_from(names, set(names[:2]) | {"000000010000000000000005"}, "0/3000028", 6, SEG) == "0/5000000"
    assert archive_keep_from([], set(), "0/7000028", 6, SEG) == "0/7000028"


def test_the_fail_back_restore_command_reads_the_hosts_own_pgbackrest_archive():
    from roles.replication.standby import restore_line

    line = restore_line("spse")
    assert "restore_command = 'pgbackrest --stanza=spse archive-get %f \"%p\"'" in line and line.endswith("\n")


def test_the_fail_back_lets_the_old_primary_into_the_repository_with_the_pgbackrest_key_only(tmp_path):
    # SOP EM-3.8, BK-8: the pgBackRest-remote line also from the old primary; restic's line unchanged;
    # a second run changes nothing; a bad address is refused.
    keys = tmp_path / "siagabak"
    keys.write_text('# header\nrestrict,from="10.0.2.10",command="/usr/local/sbin/siaga-backup-remote" ssh-ed25519 AAA pg\n'
                    'restrict,from="10.0.2.10",command="/usr/lib/openssh/sftp-server -d /srv/r/restic" ssh-ed25519 BBB restic\n')
    keys.chmod(0o644)
    a = {"keys_file": str(keys), "wrapper": "/usr/local/sbin/siaga-backup-remote", "address": "10.0.1.10"}
    assert pg_role.repo_allow({**a, "check": True}) == {"ok": True, "allowed": False}
    assert pg_role.repo_allow(a) == {"ok": True, "allowed": True}
    text = keys.read_text()
    assert 'from="10.0.2.10,10.0.1.10",command="/usr/local/sbin/siaga-backup-remote" ssh-ed25519 AAA pg\n' in text
    assert 'restrict,from="10.0.2.10",command="/usr/lib/openssh/sftp-server -d /srv/r/restic"' in text
    assert oct(keys.stat().st_mode & 0o777) == "0o644"
    assert pg_role.repo_allow(a) == {"ok": True, "allowed": True} and keys.read_text() == text
    assert pg_role.repo_allow({**a, "address": '10.0.1.10" ssh-rsa X'})["ok"] is False
    assert pg_role.repo_allow({**a, "wrapper": "/bin/other"})["ok"] is False


def test_the_archive_backlog_is_read_after_pgbackrest_check_wakes_an_archiver_waiting_out_a_failure(monkeypatch):
    """CI: the repository repaired just before the run, PostgreSQL's archiver still waiting out its
    failure (a minute) — the preflight read its stale backlog before `pgbackrest check` had cleared it."""
    from drc.runbooks import switchover as sw

    names = [c.name for c in sw.PREFLIGHT]
    assert names.index("no WAL waits to be archived") > names.index(
        "WAL archiving works and the repository answers (pgbackrest check)")
    s = sw.Switch(Path(__file__).parent.parent / "inventory" / "production.example.yaml", "drc")
    failing = {"archive_ready": 1, "archiver": {"failing": True, "last_failed_wal": "000000010000000000000006"}}
    s.readings[s.source] = failing  # what the preflight's first read of the source saw
    monkeypatch.setattr(sw.H, "pg", lambda site, host, mode, **kw: {"archive_ready": 0, "archiver": {"failing": False}})
    assert sw.no_archive_backlog(s).ok
    monkeypatch.setattr(sw.H, "pg", lambda site, host, mode, **kw: failing)
    assert not sw.no_archive_backlog(s).ok
