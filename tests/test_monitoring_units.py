"""roles/monitoring and drc/hostside/monitor_figures.py on recorded inputs (SOP IN-3, IN-4, BK-3)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from drc.hostside import monitor_figures as mf
from drc.site import SiteError, load_site, parse_site
from roles.monitoring.deploy import (
    defaults_files,
    render_alertmanager,
    render_blackbox,
    render_prometheus,
    render_rules,
)
from tests.test_roles_render import lab_like
from tests.test_site_validation import LAB, write

HOSTSIDE = Path(mf.__file__).parent


def site(**monitoring):
    return parse_site(lab_like(monitoring=monitoring, spse_app={"server_name": "lpse.example.go.id"}), Path("lab.yaml"))


# --- siaga's figures ------------------------------------------------------------------------------

def test_wal_positions_become_bytes_and_a_standby_reports_its_receiver():
    assert mf.lsn_bytes("16/B374D848") == (0x16 << 32) + 0xB374D848
    primary = {"in_recovery": False, "current_lsn": "0/3000060", "receive_lsn": None, "replay_lsn": None}
    assert mf.pg_figures(primary) == [("siaga_pg_up", {}, 1), ("siaga_pg_in_recovery", {}, 0),
                                      ("siaga_pg_wal_lsn_bytes", {"kind": "current"}, 0x3000060)]
    standby = {"in_recovery": True, "current_lsn": None, "receive_lsn": "0/3000060", "replay_lsn": "0/3000000",
               "receiver_status": "catchup", "replay_age_s": 4.5, "receiver_contact_age_s": None}
    got = {(n, tuple(sorted(lab.items()))): v for n, lab, v in mf.pg_figures(standby)}
    assert got[("siaga_pg_wal_lsn_bytes", (("kind", "replay"),))] == 0x3000000
    assert got[("siaga_pg_wal_receiver_streaming", ())] == 0  # not streaming: ReplicationStopped
    assert got[("siaga_pg_replay_age_seconds", ())] == 4.5
    assert ("siaga_pg_receiver_contact_age_seconds", ()) not in got
    assert mf.pg_figures({"error": "psql: could not connect"}) == [("siaga_pg_up", {}, 0)]


def test_the_uploads_heartbeat_is_written_at_the_source_and_read_where_it_is_synced(tmp_path):
    """SOP EM-3, IN-4: the source writes the time (atomically, under a name the sync excludes while
    it is written); a receiving host reports when the newest heartbeat it holds was written."""
    path = tmp_path / ".siaga-uploads-heartbeat"
    assert mf.heartbeat_figures(str(path)) == []  # none yet: no figure, not a zero
    assert mf.beat(str(path), 1780000000.25) == [("siaga_uploads_sync_heartbeat_timestamp_seconds", {}, 1780000000.25)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".siaga-uploads-heartbeat"]
    assert mf.heartbeat_figures(str(path)) == [("siaga_uploads_sync_heartbeat_received_timestamp_seconds", {}, 1780000000.25)]
    path.write_text("half")
    assert mf.heartbeat_figures(str(path)) == []


def test_the_heartbeat_goes_where_lsyncd_sends_from_and_to():
    from roles.monitoring.deploy import uploads_heartbeat

    s = site()
    assert uploads_heartbeat(s, "primary") == {"role": "source", "path": "/home/file/.siaga-uploads-heartbeat"}
    assert uploads_heartbeat(s, "drc")["role"] == "target"
    lost = parse_site(lab_like(active_site="drc", lost_site="primary"), Path("lab.yaml"))
    assert uploads_heartbeat(lost, "drc") is None and uploads_heartbeat(lost, "primary") is None  # nothing to send to


def test_backup_age_is_the_last_success_per_set_that_runs_here():
    read = {"runs": ["db", "offline", "prune"], "initialised": "2026-11-01T00:00:00+00:00", "records": [
        {"set": "db", "result": "success", "end": "2026-11-20T01:00:00+00:00"},
        {"set": "db", "result": "success", "end": "2026-11-21T01:00:00+00:00"},
        {"set": "db", "result": "failure", "end": "2026-11-22T01:00:00+00:00"},
        {"set": "uploads", "result": "success", "end": "2026-11-23T01:00:00+00:00"},  # runs elsewhere
        {"set": "prune", "result": "success", "end": "2026-11-23T01:00:00+00:00"},
    ]}
    got = {(n, lab.get("set")): v for n, lab, v in mf.backup_figures(read)}
    assert got == {
        ("siaga_backup_last_success_timestamp_seconds", "db"): mf.timestamp("2026-11-21T01:00:00+00:00"),
        ("siaga_backup_last_run_ok", "db"): 0,  # the last run failed
        # never a verified offline copy: its age counts from the repositories' initialisation
        ("siaga_backup_last_success_timestamp_seconds", "offline"): mf.timestamp("2026-11-01T00:00:00+00:00"),
    }
    assert mf.backup_figures({"error": "cannot read /etc/siaga/backup.json"}) == []


def test_restore_tests_from_the_workstations_copy(tmp_path):
    """On a DRC host: the restore tests the workstation recorded (its copy there), read with
    backup-read's own parse_log; the last success's end and whether the last test passed (BK-4)."""
    recs = [{"result": "success", "end": "2026-09-01T10:00:00+07:00"},
            {"result": "failure", "end": "2026-11-01T10:00:00+07:00"}]
    got = {n: v for n, _, v in mf.restore_test_figures(recs)}
    assert got == {"siaga_restore_test_last_ok": 0,
                   "siaga_restore_test_last_success_timestamp_seconds": mf.timestamp("2026-09-01T10:00:00+07:00")}
    assert mf.restore_test_figures([]) == []
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "status-probe").write_text("def pg(port, timeout):\n    return {'error': 'psql: no server'}\n")
    (lib / "backup-read").write_text((HOSTSIDE / "backup_read.py").read_text().replace(
        'CONFIG_JSON = "/etc/siaga/backup.json"', f'CONFIG_JSON = "{tmp_path}/none.json"'))
    records = tmp_path / "records"
    records.mkdir()
    (records / "restore-tests.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n{torn")
    figures = {n: v for n, _, v in mf.collect({"records": str(records)}, lib=str(lib))}
    assert figures["siaga_restore_test_last_ok"] == 0 and "siaga_restore_test_last_success_timestamp_seconds" in figures


def test_other_roles_figures_are_copied_and_a_vanished_one_removed(tmp_path):
    private = tmp_path / "integrity"
    private.mkdir(mode=0o700)
    (private / "siaga_integrity.prom").write_text("siaga_integrity_unexplained_changes 2\n")
    out = tmp_path / "textfile"
    out.mkdir()
    (out / "siaga_clamav.prom").write_text("siaga_clamav_quarantined_total 1\n")  # copied before; gone now
    mf.copy_figures([str(private / "siaga_integrity.prom"), str(tmp_path / "clamav" / "siaga_clamav.prom")], str(out))
    assert (out / "siaga_integrity.prom").read_text() == "siaga_integrity_unexplained_changes 2\n"
    assert oct((out / "siaga_integrity.prom").stat().st_mode & 0o777) == "0o644"
    assert not (out / "siaga_clamav.prom").exists()


def test_the_textfile_has_help_and_type_once_and_parses_as_numbers():
    text = mf.render([("siaga_backup_last_run_ok", {"set": "db"}, 1), ("siaga_backup_last_run_ok", {"set": "uploads"}, 0),
                      ("siaga_figures_ok", {}, 1)])
    assert text.count("# TYPE siaga_backup_last_run_ok gauge") == 1
    assert 'siaga_backup_last_run_ok{set="db"} 1.0' in text.splitlines()
    assert "siaga_figures_ok 1.0" in text.splitlines()


def test_figures_read_the_backup_log_with_backup_reads_own_code(tmp_path):
    """The program loads backup-read and status-probe from their installed files (no .py) and
    reads the runner's real log format; PostgreSQL unreachable is a figure, never a crash."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "status-probe").write_text("def pg(port, timeout):\n    return {'error': 'psql: no server'}\n")
    log = tmp_path / "backup.jsonl"
    log.write_text(json.dumps({"set": "db", "result": "success", "end": "2026-11-21T01:00:00+00:00"}) + "\n")
    cfg = tmp_path / "backup.json"
    cfg.write_text(json.dumps({"runs": ["db"], "log_file": str(log)}))
    # backup-read itself, reading this test's configuration instead of /etc/siaga/backup.json
    (lib / "backup-read").write_text((HOSTSIDE / "backup_read.py").read_text().replace(
        'CONFIG_JSON = "/etc/siaga/backup.json"', f'CONFIG_JSON = "{cfg}"'))
    figures = {n: v for n, _, v in mf.collect({"pg_port": 5432}, lib=str(lib))}
    assert figures["siaga_backup_last_success_timestamp_seconds"] == mf.timestamp("2026-11-21T01:00:00+00:00")
    assert figures["siaga_pg_up"] == 0 and figures["siaga_figures_ok"] == 1
    out = tmp_path / "siaga.prom"
    mf.write_atomically(str(out), mf.render(mf.collect({}, lib=str(lib))))
    assert oct(out.stat().st_mode & 0o777) == "0o644" and "siaga_figures_timestamp_seconds" in out.read_text()


def test_uploads_are_walked_only_when_the_last_walk_is_old(tmp_path):
    calls = []

    class Probe:
        @staticmethod
        def uploads(directory, timeout):
            calls.append(directory)
            return {"dir": directory, "files": [["a.pdf", 100, 1.0], ["b/c.pdf", 23, 2.0]]}

    state, args = tmp_path / "state.json", {"uploads_dir": "/home/file/file_prod", "uploads_every_s": 900}
    first, ok = mf.cached_uploads(args, Probe, 1000.0, str(state))
    assert ok and first == [("siaga_uploads_bytes", {}, 123), ("siaga_uploads_files", {}, 2)]
    again, _ = mf.cached_uploads(args, Probe, 1500.0, str(state))
    assert [tuple(f) for f in again] == [tuple(f) for f in first] and len(calls) == 1  # from the state file
    mf.cached_uploads(args, Probe, 2000.0, str(state))
    assert len(calls) == 2  # 1000 s later: walked again


# --- the role's files -----------------------------------------------------------------------------

def test_each_prometheus_scrapes_both_sites_and_probes_only_the_active_one():
    cfg = yaml.safe_load(render_prometheus(site()))
    assert "external_labels" not in cfg["global"]  # identical alerts from both sites: one mail
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    node = [(c["targets"][0], c["labels"]["site"]) for c in jobs["node"]["static_configs"]]
    assert node == [("10.213.1.10:9100", "primary"), ("10.213.2.10:9100", "drc")]
    assert cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["10.213.1.10:9093", "10.213.2.10:9093"]
    assert [c["targets"] for c in jobs["https"]["static_configs"]] == [["https://10.213.1.10/eproc4/health"]]
    moved = yaml.safe_load(render_prometheus(parse_site(lab_like(active_site="drc"), Path("lab.yaml"))))
    https = next(j for j in moved["scrape_configs"] if j["job_name"] == "https")
    assert [c["labels"]["host"] for c in https["static_configs"]] == ["drc"]


def test_rules_carry_the_site_files_thresholds():
    rules = {r.get("alert") or r.get("record"): r for g in yaml.safe_load(render_rules(site(disk_used_percent=70, down_for_s=6)))["groups"]
             for r in g["rules"]}
    assert {"HostDown", "AppDown", "DiskFull", "MemoryHigh", "ReplicationLag", "BackupMissing", "CertificateExpiry",
            "OfflineCopyMissing", "ReplicationStopped", "RestoreTestOld", "VirusFound", "IntegrityChanged"} <= set(rules)
    assert rules["DiskFull"]["expr"].endswith("> 70") and rules["HostDown"]["for"] == "6s"
    assert rules["ReplicationLag"]["expr"] == f"siaga:replication_lag_bytes > {1024 * 1024}"  # status.max_lag_bytes
    # The uploads lag: status.max_lag_seconds (60) plus one figures interval (60), the heartbeat's period.
    assert rules["UploadsLag"]["expr"] == "siaga:uploads_lag_seconds > 120"
    assert "siaga_uploads_sync_heartbeat_received_timestamp_seconds" in rules["siaga:uploads_lag_seconds"]["expr"]
    assert "{{ $labels.host }}" in rules["HostDown"]["annotations"]["summary"]


def test_alertmanager_mails_and_posts_and_the_password_only_when_given():
    s = site(mail={"to": ["a@lpse.example.go.id", "b@lpse.example.go.id"], "smarthost": "mail.example.go.id:587",
                   "sender": "siaga@lpse.example.go.id"}, webhooks=["https://chat.example.go.id/hook"])
    cfg = yaml.safe_load(render_alertmanager(s))
    assert cfg["global"]["smtp_smarthost"] == "mail.example.go.id:587" and cfg["global"]["smtp_require_tls"] is True
    receiver = cfg["receivers"][0]
    assert receiver["email_configs"][0]["to"] == "a@lpse.example.go.id, b@lpse.example.go.id"
    assert receiver["webhook_configs"][0]["url"] == "https://chat.example.go.id/hook"
    assert "smtp_auth_password" not in cfg["global"]
    assert yaml.safe_load(render_alertmanager(s, "it's secret"))["global"].get("smtp_auth_password") is None  # no username
    with_login = site(mail={"to": ["a@lpse.example.go.id"], "auth_username": "siaga"})
    assert yaml.safe_load(render_alertmanager(with_login, "it's secret"))["global"]["smtp_auth_password"] == "it's secret"
    assert "email_configs" not in yaml.safe_load(render_alertmanager(site()))["receivers"][0]


def test_the_alertmanagers_are_one_cluster_and_prometheus_stays_read_only():
    args = defaults_files(site(), "primary")
    am = args["prometheus-alertmanager"][1]["ARGS"]
    assert "--cluster.peer=10.213.2.10:9094" in am and "--cluster.advertise-address=10.213.1.10:9094" in am
    assert "--cluster.peer=10.213.1.10:9094" not in am
    prom = args["prometheus"][1]["ARGS"]
    assert "--storage.tsdb.retention.time=90d" in prom
    assert "admin-api" not in prom and "lifecycle" not in prom  # LKPP's access reads only (SOP IN-3)
    assert "user=prometheus host=/run/postgresql" in args["prometheus-postgres-exporter"][1]["DATA_SOURCE_NAME"]
    bb = yaml.safe_load(render_blackbox(site()))["modules"]["siaga_https"]["http"]
    assert bb["headers"]["Host"] == "lpse.example.go.id" and bb["tls_config"]["server_name"] == "lpse.example.go.id"


# --- the site file -------------------------------------------------------------------------------

@pytest.mark.parametrize("block,key,fix", [
    ("monitoring:\n  mail:\n    to: [not-an-address]\n", "monitoring.mail.to", "one address per list item"),
    ("monitoring:\n  mail:\n    smarthost: mail.example.go.id\n", "monitoring.mail.smarthost", "host:port"),
    ("monitoring:\n  webhooks: [ftp://x]\n", "monitoring.webhooks", "http(s) URL"),
])
def test_bad_monitoring_settings_are_refused_with_key_and_fix(tmp_path, block, key, fix):
    with pytest.raises(SiteError) as exc:
        load_site(write(tmp_path, LAB + block))
    assert f"key '{key}'" in str(exc.value) and fix in str(exc.value)


def test_the_smtp_password_file_must_be_private_and_go_with_a_login(tmp_path):
    pw = tmp_path / "smtp-password"
    pw.write_text("s3cret\n")
    os.chmod(pw, 0o644)
    block = f"monitoring:\n  mail:\n    auth_username: siaga\n    auth_password_file: {pw}\n"
    with pytest.raises(SiteError, match=r"key 'monitoring.mail.auth_password_file': .*readable by others.*Fix: chmod 600"):
        load_site(write(tmp_path, LAB + block))
    os.chmod(pw, 0o600)
    assert load_site(write(tmp_path, LAB + block)).monitoring.mail.auth_password_file == pw
    with pytest.raises(SiteError, match="auth_username"):
        load_site(write(tmp_path, LAB + block.replace("    auth_username: siaga\n", "")))
    # Not there yet (a restored workstation): the site loads, the deploy names the file and the fix.
    from pyinfra.api.exceptions import DeployError

    from roles.monitoring.deploy import smtp_password

    assert smtp_password(load_site(write(tmp_path, LAB + block))) == "s3cret"
    pw.unlink()
    with pytest.raises(DeployError, match=r"monitoring.mail.auth_password_file: cannot read .*Fix: "):
        smtp_password(load_site(write(tmp_path, LAB + block)))


# --- the capacity report's figures ----------------------------------------------------------------

def test_trend_and_days_until_full():
    from drc.capacity.figures import DAY_S, days_until_full, disk_rows, slope_per_day

    day = [(i * DAY_S, 100.0 + 10 * i) for i in range(5)]  # 10 bytes a day
    assert slope_per_day(day) == pytest.approx(10.0)
    assert slope_per_day(day[:1]) is None and slope_per_day([(5, 1), (5, 2)]) is None
    assert days_until_full(50, 10) == 5 and days_until_full(50, 0) is None and days_until_full(50, -3) is None
    [row] = disk_rows({("primary", "/"): day}, {("primary", "/"): [(0, 200.0)]})
    assert (row.now, row.total, row.days_left) == (140.0, 200.0, pytest.approx(6.0))  # 60 free at 10 a day
    assert row.used_percent == pytest.approx(70.0)


def test_the_report_renders_in_indonesian_with_its_plots():
    from drc.capacity.command import analyse, render

    t0 = 1_790_000_000.0
    series = {"disk_used": {("primary", "/"): [(t0, 10 * 1024**3), (t0 + 86400, 11 * 1024**3)]},
              "disk_size": {("primary", "/"): [(t0 + 86400, 20 * 1024**3)]},
              "memory": {("primary", ""): [(t0, 1024**3)]}, "memory_total": {("primary", ""): [(t0, 4 * 1024**3)]},
              "database": {("primary", "epns_prod"): [(t0, 5 * 1024**2), (t0 + 86400, 6 * 1024**2)]}, "uploads": {}}
    rows = analyse(series)
    html = render(site(), "http://10.213.1.10:9090", 30, series, rows, "2026-11-26 10:00 WIB")
    assert "LAPORAN KAPASITAS SERVER" in html and html.count("data:image/png;base64,") == 4
    assert "9 hari lagi" in html  # 9 GiB free, 1 GiB a day
    assert "epns_prod" in html and "1.0 MiB" in html and "25.0 %" in html
    assert "belum ada data" in html  # no uploads figures yet
