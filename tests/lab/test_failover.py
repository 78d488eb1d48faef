"""Unplanned failover and fail-back on the session's lab: the primary's machine killed under probe
load, `siaga failover` with the decision recorded, the service on the DRC, never two writable
primaries; the old primary rebooted while the WAN is still cut stays down, and fences itself when
the WAN heals: writes to it fail, its archive-push is refused, its uploads sync never runs, and it
cannot be released while the DRC is the primary. Then `siaga failback` lists exactly the writes the
probe lost, rejoins the old primary as a standby (pg_rewind; a fresh copy when its machine went down
mid-rewind), and the service comes home by switch-over.
SOP EM-2, EM-3.2-3.5, EM-3.8; issue 11 points 1, 2, 3 and 5."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from drc.lab.probing import ProbeRun
from drc.records.store import records_dir
from drc.runbooks import journal as journals
from drc.runbooks.failover import DECISIONS
from drc.site import load_site
from tests.helpers import REPO, assert_no_change_rerun, lab_host
from tests.lab.test_data_tier import poll
from tests.lab.test_switchover import assert_killed_at_each_step_once, kill_at_each_step, plan_of

TIMEOUT_S = 600
FENCE = "/usr/local/lib/siaga/fence"


@pytest.fixture(scope="module")
def labfo(lab, deployed):
    """The session's lab (`make test` runs this module after the switch-over's, on a lab of their
    own: it kills and partitions hosts). It ends with the service home on `primary`."""
    return lab


def siaga(lab, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drc.cli", *args, str(lab.site_file)], capture_output=True, text=True,
                          timeout=TIMEOUT_S, cwd=REPO, env={**os.environ, "COLUMNS": "200"})


def last_json(proc: subprocess.CompletedProcess) -> dict:
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, proc.stdout[-3000:] + proc.stderr[-2000:]
    return json.loads(lines[-1])


def fence_state(host) -> dict:
    return json.loads(host.check_output(f"{FENCE} '{{\"mode\": \"state\"}}'"))


def step_time(j: journals.Journal, step: str, event: str = "step-end") -> float:
    at = next(e["at"] for e in j.events if e.get("step") == step and e["event"] == event)
    return dt.datetime.fromisoformat(at).timestamp()


@pytest.fixture(scope="module")
def failed_over(labfo, tmp_path_factory):
    """The primary's machine killed under probe load, then the failover, decided and recorded."""
    log_dir = tmp_path_factory.mktemp("probe-failover")
    with ProbeRun(labfo, log_dir) as probe:
        poll("the probe's writes through the primary", lambda: probe_acks(log_dir) >= 30, 120)
        labfo.stop_host("primary", kill=True)
        proc = siaga(labfo, "failover", "--to", "drc", "--reason", "uji: ruang server primary terendam banjir",
                     "--decided-by", "Kepala LPSE", "--yes", "--json")
        out = last_json(proc)
        assert proc.returncode == 0 and out["outcome"] == "finished", proc.stdout[-4000:]
        after = probe_acks(log_dir)
        poll("the probe's writes through the DRC", lambda: probe_acks(log_dir) >= after + 30, 180)
    return out, probe.check()


def probe_acks(log_dir, via: str | None = None) -> int:
    """The probe's acknowledged writes so far (answered from address `via`, if given)."""
    path = log_dir / "probe.jsonl"
    rows = [json.loads(ln) for ln in path.read_text().splitlines() if '"event": "ack"' in ln] if path.exists() else []
    return sum(1 for r in rows if via is None or r.get("address") == via)


def test_site_loss_under_probe_load_then_failover_the_drc_serves_what_siaga_said_was_at_risk(labfo, failed_over):
    out, report = failed_over
    drc = lab_host(labfo, "drc")
    risk = out["readings"]["at_risk"]
    # What siaga reported before the decision: the WAL known to be missing, and that whatever the old
    # primary wrote after the DRC last saw it streaming is unknown. Every write the probe finds
    # missing lies in that window (replication is asynchronous: the last acknowledged writes may
    # never have left the primary); the exact list comes with the fail-back, from the old primary's WAL.
    assert risk["bytes"] is not None and risk["recorded_at"], risk
    seen = dt.datetime.fromisoformat(risk["recorded_at"]).timestamp()
    rows = map(json.loads, Path(report["log"]).read_text().splitlines())
    acked = {r["seq"]: r["acked"] for r in rows if r.get("event") == "ack"}
    lost_at = sorted(acked[seq] for seq in report["missing"])
    assert all(t >= seen - 1 for t in lost_at), (risk, lost_at[:5])
    assert (risk["bytes"] > 0) <= bool(lost_at), (risk, report["rpo_writes"])
    assert report["watcher"]["split_brain_rounds"] == 0 and report["watcher"]["rounds"] > 50, report["watcher"]
    assert len(report["timelines"]) >= 2, report  # acknowledged writes on both sides of the promotion
    assert drc.check_output("runuser -u postgres -- psql -XAtqc 'select pg_is_in_recovery()'") == "f"
    assert load_site(labfo.site_file).active_site == "drc"
    # The decision is on record (who, why, what was at risk) before anything changed.
    rdir = records_dir(load_site(labfo.site_file))
    decision = [json.loads(ln) for ln in (rdir / DECISIONS).read_text().splitlines()][-1]
    assert (decision["decided_by"], decision["run_id"]) == ("Kepala LPSE", out["run_id"]) and "banjir" in decision["reason"]
    j = journals.Journal.load(Path(out["journal"]))
    decided = step_time(j, "decision", "step-start")
    writes = step_time(j, "promote") - decided
    serving = step_time(j, "web") - decided
    print(f"failover: decision -> writes accepted by PostgreSQL on the DRC {writes:.1f} s, -> app serving behind open "
          f"ports {serving:.1f} s (goal <= 10 s); probe: {report['acked']} acknowledged, gap {report.get('rto_s')} s, "
          f"{report['rpo_writes']} lost, all after {risk['recorded_at']} (the DRC's last view of the primary); "
          f"known missing {risk['bytes']} bytes of WAL")
    assert serving <= 10, serving
    assert fence_state(drc)["authority"], "the DRC must be able to restart read-write while the primary is gone"
    # Backups go on while the main site is gone: into the repository at the DRC (degraded), every
    # set, and a restore test of them (SOP BK-1, BK-4, BK-9); nothing tries to sync to the lost site.
    site = load_site(labfo.site_file)
    assert site.lost_site == "primary" and site.backup.repository_site == "drc"
    assert [e.get("result") for e in j.events if e.get("step") == "backup" and e["event"] == "step-end"] == ["done"]
    proc = siaga(labfo, "backup", "run", "--json")
    runs = {r["set"]: r for r in json.loads(proc.stdout)["records"]}
    assert proc.returncode == 0 and all(r["result"] == "success" and r["host"] == "drc" for r in runs.values()), runs
    # Every document sampled: those whose file never reached the DRC (lost with the primary) are
    # missing from production too, so no backup fault; every other file restores whole (SOP BK-4).
    proc = siaga(labfo, "backup", "restore-test", "--slack", "0", "--label", "latest", "--snapshot", "latest",
                 "--files", "100000", "--json")
    rt = json.loads(proc.stdout)
    assert proc.returncode == 0 and rt["result"] == "success", rt.get("problems")
    gone = {int(p.rsplit("-", 1)[1]) for p in rt["files"].get("not_in_production", []) if report["run"] in p}
    acked = {json.loads(ln)["seq"] for ln in Path(report["log"]).read_text().splitlines() if '"event": "ack"' in ln}
    assert set(report["file_differs"]) <= gone and not (gone - set(report["file_differs"])) & acked, (gone, report)
    assert rt["files"]["files"], rt["files"]
    assert drc.run("systemctl is-active siaga-uploads-sync.service").stdout.strip() != "active"


def test_the_old_primary_rebooted_in_the_partition_stays_down_and_fences_itself_when_the_wan_heals(labfo, failed_over,
                                                                                                    tmp_path):
    with ProbeRun(labfo, tmp_path) as probe:
        labfo.set_wan(True)
        try:
            labfo.restart_host("primary")
            primary = lab_host(labfo, "primary")
            held, _ = poll("the guard keeping PostgreSQL down", lambda: (fence_state(primary).get("held") or {}).get("why"), 120)
            assert "no peer answers" in held
            assert primary.run("systemctl is-active postgresql@17-main").stdout.strip() != "active"
            for unit in ("siaga-uploads-sync.service", load_site(labfo.site_file).spse_app.unit):
                assert primary.run(f"systemctl is-active {unit}").stdout.strip() != "active", unit
        finally:
            labfo.set_wan(False)
        # The marker comes first (it holds the units), the firewall last: wait for the whole fence.
        st, took = poll("the old primary fenced after the heal",
                        lambda: (s := fence_state(primary))["fenced"] and s["firewall"] and s["postgresql"] != "active" and s, 60)
        print(f"fenced {took:.1f} s after the heal: {st['marker']['why']}")
        assert "superseded" in st["marker"]["why"] and st["firewall"] and st["postgresql"] != "active"
    report = probe.check()
    assert report["watcher"]["split_brain_rounds"] == 0, report["watcher"]
    # Writes sent to it fail: PostgreSQL does not start (the guard) and its ports are closed.
    start = primary.run("systemctl start postgresql@17-main")
    assert start.rc != 0 and primary.run("systemctl is-active postgresql@17-main").stdout.strip() != "active"
    assert primary.run("runuser -u postgres -- psql -XAtqc 'create table lost_write(i int)'").rc != 0
    outsider = lab_host(labfo, "outsider")
    for port in (443, 5432):
        probe_tcp = outsider.run(f"timeout 5 bash -c 'echo > /dev/tcp/{labfo.address('primary')}/{port}'")
        assert probe_tcp.rc != 0, f"port {port} of the fenced host answers the outsider"
    # Its archive-push is refused (pgBackRest stopped for the stanza), its uploads sync never runs.
    push = primary.run("runuser -u postgres -- pgbackrest --stanza=spse archive-push /var/lib/postgresql/x")
    assert push.rc != 0 and "stop file" in (push.stdout + push.stderr), push.stdout + push.stderr
    assert primary.run("systemctl start siaga-uploads-sync.service").rc != 0
    # A release while the DRC is the primary is refused: it would be a second writable copy.
    proc = subprocess.run([sys.executable, "-m", "drc.cli", "fence", "release", "primary", str(labfo.site_file), "--reason",
                           "uji", "--decided-by", "admin", "--yes"], capture_output=True, text=True, timeout=TIMEOUT_S, cwd=REPO,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 2 and "refused" in proc.stdout, proc.stdout
    status = siaga(labfo, "fence", "status", "--json")
    assert json.loads(status.stdout)["primary"]["fenced"] and not json.loads(status.stdout)["drc"]["fenced"]
    # `siaga status` says what is true: the old primary fenced, the DRC the primary, serving alone.
    report = json.loads(siaga(labfo, "status", "--json").stdout)
    assert report["roles"]["primary"] == ["drc"] and not report["ok"], report["roles"]
    assert any(x.startswith("primary: FENCED") for x in report["problems"]), report["problems"]
    assert any("drc: serving alone since a failover" in x for x in report["problems"]), report["problems"]
    assert any(x.startswith("site primary lost") and "DEGRADED" in x for x in report["problems"]), report["problems"]


def test_failback_lists_the_lost_writes_rejoins_the_old_primary_and_the_service_comes_home(labfo, failed_over):
    """The old primary's machine goes down again in the middle of its rewind (the WAN slowed so the
    rewind lasts; siaga killed first, as an operator's lost session): a half-rewound data directory
    can never be rewound again, so the fail-back, run again, makes a fresh copy, saying why, with the
    old data directory kept beside it (EM-3.8). The lost writes are still listed exactly."""
    _out, lost_report = failed_over
    primary = lab_host(labfo, "primary")
    labfo.set_wan_rate(2)
    try:
        first = subprocess.Popen([sys.executable, "-m", "drc.cli", "failback", "--json", str(labfo.site_file)], cwd=REPO,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            poll("pg_rewind at work on the old primary", lambda: primary.run("pgrep -x pg_rewind").rc == 0, 300)
        finally:
            first.kill()
            first.wait()
        labfo.stop_host("primary", kill=True)
    finally:
        labfo.set_wan_rate(None)
    labfo.restart_host("primary")
    primary = lab_host(labfo, "primary")
    proc = siaga(labfo, "failback", "--json")
    out = last_json(proc)
    assert proc.returncode == 0 and out["outcome"] == "finished", proc.stdout[-5000:]
    rejoin = out["readings"]["rejoin"]
    assert rejoin["method"] == "fresh-copy" and "interrupted" in rejoin["why"], rejoin
    assert primary.file(rejoin["kept"]).is_directory and primary.file(f"{rejoin['kept']}/PG_VERSION").exists, rejoin
    assert f"a rewind of primary is impossible: {rejoin['why']}" in " ".join(proc.stdout.split())  # told, not just done
    lost, uploads = out["readings"]["lost_writes"], out["readings"]["uploads"]
    documents = sum(n for t, n in lost["per_table"].items() if t.endswith(".tender_document"))
    # Every acknowledged write the probe found missing is listed by the fail-back, and no more: its
    # row among the transactions the old primary committed after the fork, its file among the uploads
    # only the old primary holds (a row that reached the DRC whose file had not been synced yet).
    run = lost_report["run"]

    def seqs(paths: list[str]) -> set[int]:  # the probe's files end with its write's sequence number
        return {int(p.rsplit("-", 1)[1]) for p in paths if run in p}

    copied, orphans = seqs(uploads["copied_to_serving"]), seqs(uploads["orphans"])
    assert documents == len(lost_report["missing"]) and set(lost_report["missing"]) <= orphans, (lost, lost_report, orphans)
    # A row that reached the DRC whose file had not: the file is copied there from the old primary.
    # The others copied are writes in flight at the loss: their row replicated, their answer never
    # reached the probe (the probe checks acknowledged writes only).
    acked = {json.loads(ln)["seq"] for ln in Path(lost_report["log"]).read_text().splitlines() if '"event": "ack"' in ln}
    assert set(lost_report["file_differs"]) <= copied and not (copied - set(lost_report["file_differs"])) & acked, (
        copied, lost_report["file_differs"])
    # The other files only the old primary held belong to writes never acknowledged (in flight at the loss).
    assert not (orphans - set(lost_report["missing"])) & acked, (orphans, lost_report["missing"])
    print(f"fail-back: {lost['transactions']} transactions lost on the old primary {lost['per_table']}, "
          f"{len(copied)} uploads copied from it to the DRC, {len(orphans)} kept there; the probe lost {lost_report['rpo_writes']} "
          f"({len(lost_report['missing'])} rows, {len(lost_report['file_differs'])} files)")
    record = json.loads(Path(next(ln.split("listed in ")[1].strip() for ln in proc.stdout.splitlines() if "listed in" in ln))
                        .read_text())
    assert record["fork"]["lsn"] and len(record["transactions"]) == lost["transactions"]
    drc = lab_host(labfo, "drc")
    assert primary.check_output("runuser -u postgres -- psql -XAtqc 'select status from pg_stat_wal_receiver'") == "streaming"
    assert not fence_state(primary)["fenced"] and not fence_state(drc)["authority"]
    assert load_site(labfo.site_file).lost_site is None  # two sites again: deployed, synced, backed up away
    # The service comes home with the planned switch-over; the site deploy then changes nothing.
    proc = siaga(labfo, "switchover", "--to", "primary", "--json")
    assert last_json(proc)["outcome"] == "finished", proc.stdout[-5000:]
    assert primary.check_output("runuser -u postgres -- psql -XAtqc 'select pg_is_in_recovery()'") == "f"
    for path in (p for p in uploads["copied_to_serving"] if run in p):  # those documents are whole on both sites
        for host in (primary, drc):
            assert host.file(f"{load_site(labfo.site_file).spse_app.uploads_dir}/{path}").exists, (host, path)
    assert_no_change_rerun(labfo)
    report = json.loads(siaga(labfo, "status", "--json").stdout)
    assert report["ok"], report["problems"]


def test_a_wan_partition_then_a_forced_failover_fences_the_old_primary_before_the_promotion(labfo, tmp_path):
    """The WAN cut, the workstation still reaching both sites: a failover is refused (the old primary
    answers), `--force primary` fences it first, then promotes; never two writable primaries; healed,
    it stays fenced; then fail-back and home again (issue 11 point 5)."""
    primary = lab_host(labfo, "primary")
    reason = ("--reason", "uji: WAN ke DRC putus", "--decided-by", "Kepala LPSE", "--yes", "--json")
    with ProbeRun(labfo, tmp_path) as probe:
        labfo.set_wan(True)
        try:
            refused = siaga(labfo, "failover", "--to", "drc", *reason)
            assert refused.returncode == 1 and "answers this workstation" in last_json(refused)["message"], refused.stdout[-3000:]
            # siaga killed as each step starts, and run again, until the failover ends by itself.
            j, killed_fo = kill_at_each_step(labfo, ["failover", "--to", "drc", "--force", "primary", *reason[:-1]], 0.0)
            assert j.outcome == "finished", j.events[-3:]
            # Every step but the decision (a line written on this workstation: over before the kill lands).
            assert_killed_at_each_step_once(j, killed_fo, set(plan_of(j)) - {"decision"})
            st = fence_state(primary)
            assert st["fenced"] and st["firewall"] and st["postgresql"] != "active", st
        finally:
            labfo.set_wan(False)
        assert step_time(j, "fence-old") <= step_time(j, "promote", "step-start")  # fenced before the promotion
        drc = labfo.address("drc")
        poll("the probe's writes through the DRC", lambda: probe_acks(tmp_path, via=drc) >= 10, 180)
    report = probe.check()
    assert report["watcher"]["split_brain_rounds"] == 0, report["watcher"]
    assert fence_state(primary)["fenced"]  # healed: it stays fenced
    assert primary.run("runuser -u postgres -- psql -XAtqc 'create table lost_write(i int)'").rc != 0
    # The fail-back killed half a second into each step (those that act on the hosts), run again.
    back, killed = kill_at_each_step(labfo, ["failback"], 0.5)
    assert back.outcome == "finished", back.events[-3:]
    assert_killed_at_each_step_once(back, killed, {"lost-writes", "rewind", "follow", "converge", "backup"}, "rewind")
    print(f"killed in {len(killed_fo)} steps of the failover ({', '.join(killed_fo)}) and {len(killed)} of the "
          f"fail-back ({', '.join(killed)})")
    assert load_site(labfo.site_file).lost_site is None and not fence_state(primary)["fenced"]
    assert primary.check_output("runuser -u postgres -- psql -XAtqc 'select status from pg_stat_wal_receiver'") == "streaming"
    home = siaga(labfo, "switchover", "--to", "primary", "--json")
    assert last_json(home)["outcome"] == "finished", home.stdout[-4000:]
    assert json.loads(siaga(labfo, "status", "--json").stdout)["ok"]
