"""The fence's host program (drc/hostside/fence.py), on the workstation: the guard's decision and
what it reads. The lab tests (tests/lab/test_failover.py) run it on real hosts. SOP EM-3."""

from __future__ import annotations

import importlib.util
import subprocess

import pytest

from drc.hostside import program

spec = importlib.util.spec_from_file_location("fence", program("fence").source)
fence = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fence)

LOCAL = {"timeline": 3, "system_identifier": "7400"}


def peer(tl: int, standby: bool, sysid: str = "7400") -> dict:
    return {"system_identifier": sysid, "timeline": tl, "lsn": "0/3000060", "standby": standby}


@pytest.mark.parametrize("answers,authority,starts,why", [
    ({"drc": peer(3, True)}, False, True, "not a primary"),  # steady state: the DRC follows us
    ({"drc": peer(4, False)}, True, False, "superseded"),  # the DRC was promoted: even with authority
    ({"drc": peer(3, False)}, False, False, "superseded"),  # two primaries on one timeline: stay down
    ({"drc": peer(5, True)}, False, True, "not a primary"),  # a standby on a newer timeline (a PITR here)
    ({"drc": peer(9, False, sysid="1111")}, False, True, "not a primary"),  # another database (a fresh cluster)
    ({"drc": None}, False, False, "no authority"),  # cannot ask: it may have been superseded
    ({"drc": None}, True, True, "holds the authority"),  # the failover's new primary, its peer lost
])
def test_the_guard_lets_a_primary_start_only_when_it_was_not_superseded(answers, authority, starts, why):
    ok, reason = fence.verdict(LOCAL, answers, authority, standby=False)
    assert ok is starts and why in reason


def test_a_standby_always_starts_it_is_never_writable():
    assert fence.verdict(LOCAL, {"drc": peer(9, False)}, False, standby=True)[0]


def test_identify_system_and_hot_standby_are_read():
    assert fence.parse_identify("7400|4|0/5000148|\noff\n") == {"system_identifier": "7400", "timeline": 4,
                                                               "lsn": "0/5000148", "standby": False}
    assert fence.parse_identify("7400|4|0/5000148|\non\n")["standby"] is True
    assert fence.parse_identify("") is None and fence.parse_identify("psql: error") is None


def test_the_fence_table_closes_web_and_database_ports_but_to_the_peer_and_nft_accepts_it():
    script = fence.nft_script({"closed_ports": [80, 443, 5432]}, "10.9.0.10")
    assert "tcp dport { 80, 443, 5432 } ip saddr != 10.9.0.10 reject" in script and " 22" not in script
    check = subprocess.run(["nft", "-c", "-f", "-"], input=script, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


WALDUMP = """\
rmgr: Heap        len (rec/tot):     59/    59, tx:        745, lsn: 0/03000148, prev 0/03000110, desc: INSERT+INIT off: 1, flags: 0x00, blkref #0: rel 1663/16384/16390 blk 0
rmgr: Heap        len (rec/tot):     59/    59, tx:        745, lsn: 0/03000190, prev 0/03000148, desc: INSERT off: 2, flags: 0x00, blkref #0: rel 1663/16384/16390 blk 0
rmgr: Standby     len (rec/tot):     50/    50, tx:          0, lsn: 0/030001C8, prev 0/03000190, desc: RUNNING_XACTS nextXid 746
rmgr: Transaction len (rec/tot):     34/    34, tx:        745, lsn: 0/030001D0, prev 0/030001C8, desc: COMMIT 2026-11-26 15:00:25.123456 WIB
rmgr: Heap        len (rec/tot):     72/    72, tx:        746, lsn: 0/03000200, prev 0/030001D0, desc: HOT_UPDATE old_xmax: 746, blkref #0: rel 1663/16384/16401 blk 3
rmgr: Transaction len (rec/tot):     34/    34, tx:        746, lsn: 0/03000248, prev 0/03000200, desc: ABORT 2026-11-26 15:00:25.2 WIB
rmgr: Heap        len (rec/tot):     54/    54, tx:        747, lsn: 0/03000280, prev 0/03000248, desc: DELETE off: 4, blkref #0: rel 1663/16384/16390 blk 0
"""


def test_the_writes_lost_on_an_old_primary_are_its_committed_transactions_after_the_fork():
    """Fail-back lists what the old primary committed that the new one never got (pg_waldump's
    lines): aborted and unfinished transactions wrote nothing that survives."""
    lost = fence.parse_waldump(WALDUMP)
    assert [x["xid"] for x in lost] == [745]
    assert lost[0]["ops"] == {"1663/16384/16390": {"INSERT": 2}} and lost[0]["commit_time"].startswith("2026-11-26 15:00:25")


# pg_rewind's own words (PostgreSQL 17), as it prints them on failure.
@pytest.mark.parametrize("out,impossible,retry_safe", [
    ("pg_rewind: error: could not find common ancestor of the source and target cluster's timelines", True, False),
    ('pg_rewind: error: target server needs to use either data checksums or "wal_log_hints = on"', True, False),
    ("pg_rewind: servers diverged at WAL location 0/5000000 on timeline 1\npg_rewind: error: could not find previous WAL "
     'record at 0/4FFFF80: could not open file "/var/lib/postgresql/17/main/pg_wal/000000010000000000000004": No such file '
     "or directory", True, False),
    ("pg_rewind: servers diverged at WAL location 0/5000000 on timeline 1\npg_rewind: rewinding from last common checkpoint "
     "at 0/4000028 on timeline 1\npg_rewind: reading source file list\npg_rewind: reading target file list\npg_rewind: "
     "reading WAL in target\npg_rewind: need to copy 51 MB (total source directory size is 70 MB)\npg_rewind: error: could "
     "not fetch remote file \"base/5/16384\": server closed the connection unexpectedly", True, False),
    ('pg_rewind: error: could not connect to server: connection to server at "10.213.2.10", port 5432 failed: timeout '
     "expired", False, True),
    ('pg_rewind: error: connection to server at "10.213.2.10", port 5432 failed: FATAL:  password authentication failed',
     False, True),
])
def test_a_failed_rewind_says_whether_a_fresh_copy_is_the_way_or_a_retry_is_safe(out, impossible, retry_safe):
    """SOP EM-3.8: a fresh copy only when a rewind is impossible; a rewind that changed the data
    directory is never tried again; one that stopped before changing anything may be."""
    got = fence.rewind_failure(out)
    assert (got["impossible"], got["retry_safe"]) == (impossible, retry_safe), got
    assert bool(got["why"]) == impossible


def controldata(checkpoint: str, redo: str, tli: int) -> str:
    return (f"Database cluster state:               in production\nLatest checkpoint location:           {checkpoint}\n"
            f"Latest checkpoint's REDO location:    {redo}\nLatest checkpoint's TimeLineID:       {tli}\n")


@pytest.mark.parametrize("checkpoint,redo,tli,fork,expected", [
    ("0/5000080", "0/5000028", 1, "0/50011C8", "0/5000028"),  # died after its last checkpoint: replay starts at its REDO
    ("0/5002000", "0/5001F00", 1, "0/50011C8", None),  # a checkpoint after the fork: the common one is unknown here
    ("0/5000080", "0/5000028", 2, "0/50011C8", None),  # another timeline's checkpoint
    ("1/5000080", "1/4FFF000", 1, "1/50011C8", "1/4FFF000"),  # LSNs compare as positions, not as text
])
def test_the_rewound_hosts_replay_start_is_its_last_checkpoint_before_the_fork(monkeypatch, checkpoint, redo, tli, fork,
                                                                                expected):
    # SOP EM-3.8: the fail-back keeps the serving host's WAL from here on (pg_rewind copies it).
    monkeypatch.setattr(fence, "run", lambda cmd, timeout=60, user=None: (0, controldata(checkpoint, redo, tli), ""))
    assert fence.common_redo({"version": "17", "cluster": "main"}, 1, fork) == expected


def test_no_replay_start_when_pg_controldata_fails(monkeypatch):
    monkeypatch.setattr(fence, "run", lambda cmd, timeout=60, user=None: (1, "", "could not open"))
    assert fence.common_redo({"version": "17", "cluster": "main"}, 1, "0/50011C8") is None


def rewind_lines() -> list[tuple[float, str]]:
    """pg_rewind 17's --progress --debug output of a fail-back (its messages as they come), timed."""
    out = [
        (0.0, 'pg_rewind: executing "/usr/lib/postgresql/17/bin/postgres" for target server to complete crash recovery'),
        (2.0, "pg_rewind: servers diverged at WAL location 1/30001C8 on timeline 1"),
        (2.1, "pg_rewind: rewinding from last common checkpoint at 1/3000080 on timeline 1"),
        (2.2, "pg_rewind: reading source file list"),
        (2.6, "pg_rewind: need to copy 50 MB (total source directory size is 1200 MB)"),
        (2.6, "pg_rewind: debug: pg_wal/000000010000000100000002 (COPY)"),
        (2.6, "pg_rewind: debug: pg_wal/000000020000000100000003 (COPY)"),
        (2.6, "pg_rewind: debug: pg_wal/000000010000000100000003.partial (COPY)"),
        (2.6, "pg_rewind: debug: pg_xact/0000 (COPY)"),
        (2.6, "pg_rewind: debug: base/5/16384 (NONE)"),
        (2.6, "pg_rewind: debug: block 7"),
        (2.6, "pg_rewind: debug: base/5/16400 (COPY)"),
        (2.6, "pg_rewind: debug: base/5/16384_vm (COPY)"),
    ]
    chunks = [("pg_wal/000000010000000100000002", 16 * 2**20), ("pg_wal/000000020000000100000003", 16 * 2**20),
              ("pg_wal/000000010000000100000003.partial", 16 * 2**20), ("pg_xact/0000", 8192),
              ("base/5/16384", 8192), ("base/5/16400", 40960), ("base/5/16384_vm", 8192)]
    for path, size in chunks:
        for off in range(0, size, 2**20):
            out.append((3.0, f'pg_rewind: debug: received chunk for file "{path}", offset {off}, size {min(2**20, size - off)}'))
    out += [(7.0, "pg_rewind: creating backup label and updating control file"),
            (7.1, "pg_rewind: syncing target data directory"), (9.5, "pg_rewind: Done!")]
    return out


def test_what_a_rewind_fetched_is_summed_by_kind_and_its_phases_timed():
    """SOP EM-3.8: the fail-back says what pg_rewind copied (the serving host's WAL before the old
    primary's replay start is not needed by it) and where its time went."""
    got = fence.rewind_breakdown(rewind_lines(), common_redo="1/3000028")
    mib = 2**20
    assert got["fetched_bytes"] == {"other files, whole": 8192 * 2, "pg_wal before the replay start": 16 * mib,
                                    "pg_wal from the replay start": 16 * mib, "pg_wal other (history, .partial)": 16 * mib,
                                    "relation blocks": 8192, "relation files, whole": 40960}
    assert got["fetched_files"] == 7
    assert got["largest_other_files"][0] == ("pg_xact/0000", 8192)
    assert got["phase_seconds"] == {"start": 0.0, "crash recovery": 2.0, "diverged": 0.6, "copy": 4.4, "control file": 0.1,
                                    "sync": 2.4}
    # Without the replay start, all WAL segments count as needed.
    assert "pg_wal before the replay start" not in fence.rewind_breakdown(rewind_lines())["fetched_bytes"]


def test_a_rewinds_output_is_logged_line_by_line_with_its_time(tmp_path):
    rc, lines = fence.run_logged(["sh", "-c", "echo one; echo two >&2; exit 3"], 30, str(tmp_path / "r.log"))
    assert rc == 3 and [ln for _, ln in lines] == ["one", "two"]
    assert (tmp_path / "r.log").stat().st_mode & 0o777 == 0o600
    assert [ln.split(None, 1)[1] for ln in (tmp_path / "r.log").read_text().splitlines()] == ["one", "two"]
    rc, _ = fence.run_logged(["sleep", "5"], 0.5, str(tmp_path / "t.log"))
    assert rc == 124
