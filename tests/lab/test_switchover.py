"""Planned switch-over on the real lab: preflight refusals change nothing; a round trip primary →
DRC → primary loses no acknowledged write or upload, leaves the old primary streaming from the new
one without a rebuild, writes the site file back, and the site deploy then changes nothing; siaga
killed mid-run (before and after the promotion) and run again ends on one consistent site.
SOP EM-2 step 6, EM-3. The module ends with the service back on `primary`."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from drc.records.store import records_dir
from drc.runbooks import journal as journals
from drc.site import load_site
from tests.helpers import REPO, assert_no_change_rerun, lost_writes
from tests.lab.test_data_tier import poll, psql, upload

TIMEOUT_S = 900


def siaga(lab, *args: str, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drc.cli", *args, str(lab.site_file)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env={**os.environ, "COLUMNS": "200"})


def outcome(proc: subprocess.CompletedProcess) -> dict:
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, proc.stdout[-3000:] + proc.stderr[-2000:]
    return json.loads(lines[-1])


def post(lab, host: str, content: bytes, name: str) -> dict:
    return upload(lab, content, name, host)


def active(host, unit: str) -> bool:
    return host.run("systemctl is-active %s", unit).stdout.strip() == "active"


def assert_serves_from(lab, serving, following, serving_name: str, following_name: str) -> None:
    site = load_site(lab.site_file)
    assert site.active_site == ("drc" if serving_name == "drc" else "primary")
    assert psql(serving, "SELECT pg_is_in_recovery()") == "f"
    assert psql(following, "SELECT pg_is_in_recovery()") == "t"
    status, sender = psql(following, "SELECT status, sender_host FROM pg_stat_wal_receiver").split("|")
    assert (status, sender) == ("streaming", lab.address(serving_name))
    unit = site.spse_app.unit
    assert active(serving, unit) and not active(following, unit)
    assert active(serving, "siaga-uploads-sync.service") and not active(following, "siaga-uploads-sync.service")


def has_document(host, doc: dict, content: bytes) -> bool:
    """The app's row (by its sha256) and its file (absolute path, same content) are on `host`."""
    rows = psql(host, f"SELECT count(*) FROM tender_document WHERE sha256 = '{doc['sha256']}'", db="epns_prod")
    f = host.file(doc["path"])
    return rows == "1" and f.exists and hashlib.sha256(f.content).hexdigest() == hashlib.sha256(content).hexdigest()


def backups_and_a_restore_test_work(lab, serving: str) -> None:
    """After a switch-over, every backup set runs from the new side into the repository at the other
    site and a restore-test of those backups succeeds (issue 10 point 7; SOP BK-1, BK-4)."""
    proc = siaga(lab, "backup", "run", "--json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    runs = {r["set"]: r for r in out["records"]}
    assert out["ok"] and set(runs) == {"db", "uploads", "system"}, out
    assert all(r["result"] == "success" for r in runs.values()) and runs["uploads"]["host"] == serving, runs
    proc = siaga(lab, "backup", "restore-test", "--slack", "0", "--label", "latest", "--snapshot", "latest", "--json")
    rt = json.loads(proc.stdout)
    assert proc.returncode == 0 and rt["result"] == "success", rt.get("problems")
    assert rt["db"]["tables"]["public.tender_document"]["match"] and all(f["match"] for f in rt["files"]["files"].values())
    print(f"serving from {serving}: {len(runs)} backup sets ok; restore-test {rt['db']['label']} BERHASIL")


@pytest.fixture(scope="module")
def home(lab, deployed, primary):
    """A database backup within its period (the preflight asks for one; a fresh lab has none yet), and
    whatever a test leaves, the module ends with `primary` serving (the other lab tests expect it)."""
    proc = subprocess.run([sys.executable, "-m", "drc.cli", "backup", "run", "--set", "db", str(lab.site_file)],
                          capture_output=True, text=True, timeout=TIMEOUT_S, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    yield
    if load_site(lab.site_file).active_site != "primary" or psql(primary, "SELECT pg_is_in_recovery()") != "f":
        siaga(lab, "switchover", "--to", "primary")


def test_a_paused_standby_lagging_behind_is_refused_and_nothing_changes(lab, primary, drc, home):
    psql(drc, "SELECT pg_wal_replay_pause()")
    try:
        # Some MBs of WAL the paused standby receives but does not replay (threshold: 1 MiB).
        psql(primary, "CREATE TABLE siaga_lag_probe AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 20000) g")
        proc = siaga(lab, "switchover", "--to", "drc", "--json")
        out = outcome(proc)
        assert proc.returncode == 1 and out["outcome"] == "refused", out
        assert "replay is paused" in out["message"] and "bytes of WAL behind" in out["message"]
    finally:
        psql(drc, "SELECT pg_wal_replay_resume()")
        psql(primary, "DROP TABLE IF EXISTS siaga_lag_probe")
    assert_serves_from(lab, primary, drc, "primary", "drc")
    assert not primary.file("/var/lib/siaga/maintenance.html").exists


def test_an_unreachable_backup_repository_is_refused_and_nothing_changes(lab, primary, drc, home):
    from roles.backup.repo1 import GENERATION_FILE, parse_generation, repo1_path

    # The repository in use (a repo1 rotation, run earlier in the session, moves it one generation on).
    generation = parse_generation(drc.run("cat %s", GENERATION_FILE).stdout) or 1
    repo = repo1_path(load_site(lab.site_file).backup.repository_path, generation)
    failing = "SELECT last_failed_time > coalesce(last_archived_time, 'epoch') FROM pg_stat_archiver"
    # Its third failure in a row: the archiver gives up and waits a minute (or for the next WAL file)
    # before it tries again; its tries within one round are seconds apart.
    gave_up = failing.replace(" FROM", " AND now() - last_failed_time > interval '15 s' FROM")
    assert drc.run("chmod 000 %s", repo).rc == 0
    try:
        psql(primary, "SELECT txid_current()")  # some WAL, so that the switch below closes a file to archive
        psql(primary, "SELECT pg_switch_wal()")
        poll("primary's archiver fails", lambda: psql(primary, failing) == "t", 120)
        proc = siaga(lab, "switchover", "--to", "drc", "--json")
        out = outcome(proc)
        assert proc.returncode == 1 and out["outcome"] == "refused", out
        assert "pgbackrest check" in out["message"]
        poll("primary's archiver waits out its failures", lambda: psql(primary, gave_up) == "t", 120)
    finally:
        assert drc.run("chmod 750 %s", repo).rc == 0
    assert_serves_from(lab, primary, drc, "primary", "drc")
    # Repaired: a run is accepted at once, though the archiver has not tried again yet (pgbackrest
    # check's WAL switch wakes it; CI once refused the next run for that backlog).
    assert psql(primary, failing) == "t"
    out = outcome(siaga(lab, "switchover", "--to", "drc", "--dry-run", "--json"))
    assert out["outcome"] == "planned" and out["message"] == "preflight: all checks pass", out


def test_a_round_trip_under_probe_load_loses_nothing_and_the_site_deploy_then_changes_nothing(lab, primary, drc, home,
                                                                                             tmp_path):
    """The probe writes through the public name every 100 ms from outside both sites while the
    service goes to the DRC, is deployed, backed up and restore-tested there, and comes back; the
    watcher polls every host's PostgreSQL meanwhile (issue 10 point 7)."""
    from drc.lab.probing import ProbeRun

    with ProbeRun(lab, tmp_path) as run:
        round_trip(lab, primary, drc)
    report = run.check()
    assert report["acked"] > 100 and report["rpo_writes"] == 0, lost_writes(report)
    assert report["watcher"]["split_brain_rounds"] == 0 and report["watcher"]["rounds"] > 100, report["watcher"]
    assert len(report["timelines"]) >= 3, report  # it wrote through both promotions


def round_trip(lab, primary, drc) -> None:
    before = os.urandom(2048)
    doc = post(lab, "primary", before, "sebelum-switchover.pdf")

    proc = siaga(lab, "switchover", "--to", "drc", "--json")
    assert outcome(proc)["outcome"] == "finished", proc.stdout[-4000:]
    assert_serves_from(lab, drc, primary, "drc", "primary")
    assert has_document(drc, doc, before)  # the converge step's check: a preview of the site deploy found no change
    backups_and_a_restore_test_work(lab, "drc")

    during = os.urandom(1024)
    doc2 = post(lab, "drc", during, "di-drc.pdf")  # the DRC serves writes through its app
    poll("the DRC's upload synced back to primary (lsyncd runs on the DRC now)",
         lambda: primary.file(doc2["path"]).exists, 60)
    # The old side's lsyncd started again (by hand, a reboot, a stale timer) deletes nothing on the
    # new side: its config and key are gone, and the DRC accepts no sync from it.
    primary.run("systemctl start siaga-uploads-sync.service siaga-uploads-resync.service")
    only_on_drc = post(lab, "drc", os.urandom(512), "hanya-di-drc.pdf")
    poll("the new upload reached primary", lambda: primary.file(only_on_drc["path"]).exists, 60)
    assert not active(primary, "siaga-uploads-sync.service")
    assert drc.file(doc2["path"]).exists and drc.file(only_on_drc["path"]).exists

    proc = siaga(lab, "switchover", "--to", "primary", "--json")
    out = outcome(proc)
    assert out["outcome"] == "finished", proc.stdout[-4000:]
    assert_serves_from(lab, primary, drc, "primary", "drc")
    assert has_document(primary, doc, before) and has_document(primary, doc2, during)
    assert_no_change_rerun(lab)
    backups_and_a_restore_test_work(lab, "primary")
    record = Path(out["journal"]).with_suffix(".html").read_text()
    assert "CATATAN PELAKSANAAN SWITCH-OVER KE PRIMARY" in record and "SELESAI" in record


def start_runbook(lab, args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "drc.cli", *args, str(lab.site_file)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def kill_at_each_step(lab, args: list[str], delay_s: float, on_kill=None) -> tuple[journals.Journal, list[str]]:
    """One runbook run (`siaga ARGS...`: switchover, failover, failback), SIGKILLed at each step in
    turn: started, killed `delay_s` after its next step started, started again (it resumes the same
    run), and so on until it finishes by itself. Returns the run's journal and the steps that were
    running when siaga was killed; `on_kill(step)` looks at the hosts while siaga is down."""
    rdir = records_dir(load_site(lab.site_file))
    known = {j.run_id for j in journals.runs(rdir)}
    run, killed = None, []
    for _ in range(40):  # more than the plan has steps: a run that never ends fails here
        seen = len(journals.Journal.load(run.path).events) if run else 0
        proc = start_runbook(lab, args)
        deadline = time.monotonic() + TIMEOUT_S
        try:
            while proc.poll() is None:
                assert time.monotonic() < deadline, f"no step started within {TIMEOUT_S} s (killed so far: {killed})"
                run = journals.Journal.load(run.path) if run else next(
                    (j for j in journals.runs(rdir, args[0]) if j.run_id not in known), None)
                plan = [p["step"] for p in run.begin.get("plan", [])] if run else []
                nxt = plan.index(killed[-1]) + 1 if killed else 0
                started = [e["step"] for e in run.events[seen:] if e["event"] == "step-start"] if run else []
                if any(plan.index(st) >= nxt for st in started):
                    time.sleep(delay_s)  # let the action get under way on the hosts
                    os.killpg(proc.pid, signal.SIGKILL)
                    if proc.wait(30) == -signal.SIGKILL:
                        events = journals.Journal.load(run.path).events
                        if events[-1]["event"] == "end":  # killed in its last words, after the run ended
                            return journals.Journal.load(run.path), killed
                        starts = [i for i, e in enumerate(events) if e["event"] == "step-start"]
                        step = events[starts[-1]]["step"]
                        if step == plan[-1] and any(e["event"] == "step-end" for e in events[starts[-1]:]):
                            continue  # killed after its last step, before its end: the next start ends it
                        killed.append(step)
                        if on_kill:
                            on_kill(killed[-1])
                    break
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
        if proc.returncode != -signal.SIGKILL:
            break  # it ran to its end without being killed again
    assert run is not None, f"siaga {args[0]} never opened a journal"
    return journals.Journal.load(run.path), killed


def plan_of(j: journals.Journal) -> list[str]:
    return [p["step"] for p in j.begin["plan"]]


def assert_killed_at_each_step_once(j: journals.Journal, killed: list[str], must: set[str], once: str = "promote") -> None:
    """Killed in `must` at least, each step at most once and in order; the no-return step `once`
    done by exactly one run (or found done by the run after one killed before it could say so)."""
    plan = plan_of(j)
    assert [plan.index(k) for k in killed] == sorted({plan.index(k) for k in killed}), killed
    assert must <= set(killed), (sorted(must - set(killed)), killed)
    ends = [e["result"] for e in j.events if e.get("step") == once and e["event"] == "step-end"]
    assert ends.count("done") <= 1 and ("done" in ends or "already done" in ends), ends


# To the DRC: killed as soon as each step starts; back home: half a second into each step's action.
@pytest.mark.parametrize("to,delay_s", [("drc", 0.0), ("primary", 0.5)])
def test_siaga_killed_at_each_step_in_turn_ends_on_one_consistent_site_with_nothing_lost(lab, primary, drc, home,
                                                                                          tmp_path, to, delay_s):
    """Issue 10 point 7: siaga killed at each step in turn and run again, under probe load."""
    from drc.lab.probing import ProbeRun

    from roles.uploads_sync.layout import RESYNC_TIMER, SYNC_UNIT

    source = primary if to == "drc" else drc
    pushing = {}  # step killed in -> the old source's uploads push units active or enabled then

    def push_units_on(step: str) -> None:
        pushing[step] = [u for u in (SYNC_UNIT, RESYNC_TIMER) if source.run(f"systemctl is-active {u} || systemctl is-enabled {u}").rc == 0]

    with ProbeRun(lab, tmp_path) as probe:
        j, killed = kill_at_each_step(lab, ["switchover", "--to", to], delay_s, push_units_on)
    print(f"switch-over to {to}: killed in {len(killed)} steps: {', '.join(killed)}")
    assert j.outcome == "finished", j.events[-3:]
    # Once the target can take writes, the old source never pushes its uploads (a restart of its
    # lsyncd would copy them over the new site's with --delete): off and disabled at every kill from
    # the promotion to the converge (which keeps them off by the site file).
    plan = plan_of(j)
    window = {k: v for k, v in pushing.items() if plan.index("promote") <= plan.index(k) < plan.index("converge")}
    assert window and not any(window.values()), pushing
    # Killed as soon as it starts, every step is hit but `ttl` (after the kills before it the TTL has
    # long passed: it is a look at the journal's clock, over before a kill lands, as the test saw on a
    # loaded machine); half a second into it, the steps that take longer than that (those that act on
    # the hosts: the others are over before the kill lands). Promoted once.
    must = set(plan_of(j)) - {"ttl"} if delay_s == 0 else {"shutdown", "uploads", "promote", "rejoin", "converge", "backup"}
    assert_killed_at_each_step_once(j, killed, must)
    serving, following = (drc, primary) if to == "drc" else (primary, drc)
    assert_serves_from(lab, serving, following, to, "primary" if to == "drc" else "drc")
    report = probe.check()
    assert report["acked"] > 50 and report["rpo_writes"] == 0, lost_writes(report)
    assert report["watcher"]["split_brain_rounds"] == 0, report["watcher"]
