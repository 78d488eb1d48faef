"""`siaga status` decisions on recorded probe data (what hosts answered), no host touched:
exit codes, the JSON shape, unknown hosts, lag in bytes and seconds, uploads lag. SOP EM-3, EM-5."""

from __future__ import annotations

import copy
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from drc import cli
from drc.hostside import status_probe
from drc.status import command as status
from drc.site import SiteError, load_site

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "inventory" / "production.example.yaml"
MiB = 1024 * 1024

# Recorded from the lab (a deployed, quiet site; names and addresses as in the example site file).
# The DRC last replayed a transaction an hour ago: that timestamp is stale, not a lag.
HEALTHY = {
    "spse-primary": {
        "reachable": True, "error": None, "now": 1780000000.0,
        "pg": {"in_recovery": False, "current_lsn": "0/3A0001C8", "receive_lsn": None, "replay_lsn": None,
               "replay_age_s": None, "receiver_status": None, "sender_host": None, "receiver_contact_age_s": None},
        "health": {"status": "ok", "http": 200, "detail": ""},
        "components": {"Server utama: aplikasi SPSE": {"state": "up", "detail": "active"},
                       "Server utama: database PostgreSQL": {"state": "up", "detail": "connects"},
                       "Web server Apache (HTTPS)": {"state": "up", "detail": "HTTP 200"},
                       "Jaringan internet utama": {"state": "up", "detail": "connects"}},
        "uploads": {"dir": "/home/file/file_prod", "files": [
            ["2026/11/22/a1-rks.pdf", 65536, 1779990000.5],
            ["2026/11/22/b2-hps.pdf", 1024, 1779999000.25],
            ["2026/11/22/.tmp-c3-upload.pdf", 10, 1779999999.0],  # being written: not replicated
        ]},
        "updates": {"security": 0, "other": 2, "packages": [], "lists_age_s": 5400.0},
        "reboot": {"required": False, "packages": []},
    },
    "spse-drc": {
        "reachable": True, "error": None, "now": 1780000000.4,
        "pg": {"in_recovery": True, "current_lsn": None, "receive_lsn": "0/3A0001C8", "replay_lsn": "0/3A0001C8",
               "replay_age_s": 3600.5, "receiver_status": "streaming", "sender_host": "10.10.1.10",
               "receiver_contact_age_s": 2.1},
        "health": {"status": "down", "http": None, "detail": "[Errno 111] Connection refused"},
        "components": {"Server utama: database PostgreSQL": {"state": "up", "detail": "connects"},
                       "Jaringan internet utama": {"state": "down", "detail": "timed out"},
                       "Replikasi database ke DRC": {"state": "up", "detail": "connects"}},
        "uploads": {"dir": "/home/file/file_prod", "files": [
            ["2026/11/22/a1-rks.pdf", 65536, 1779990000.5],
            ["2026/11/22/b2-hps.pdf", 1024, 1779999000.25],
        ]},
        "updates": {"security": 0, "other": 2, "packages": [], "lists_age_s": 5410.0},
        "reboot": {"required": False, "packages": []},
    },
}
UNREACHABLE = {"reachable": False, "error": "NoValidConnectionsError: [Errno None] Unable to connect to port 22 on 10.20.1.10"}


@pytest.fixture(scope="module")
def site():
    return load_site(EXAMPLE)


def probes(**changes) -> dict:
    """HEALTHY with host entries replaced or updated: probes(drc={...}) / probes(drc_pg={...})."""
    out = copy.deepcopy(HEALTHY)
    for key, value in changes.items():
        host, _, part = key.partition("_")
        name = f"spse-{host}"
        if not part:
            out[name] = value
        else:
            out[name][part].update(value)
    return out


def test_a_quiet_healthy_site_is_ok_and_a_stale_replay_timestamp_is_no_lag(site):
    report = status.evaluate(site, probes())
    assert status.exit_code(report) == 0, report["problems"]
    assert report["roles"] == {"primary": ["spse-primary"], "standby": ["spse-drc"], "unknown": []}
    drc = report["hosts"]["spse-drc"]
    assert drc["database"]["lag_bytes"] == 0
    assert drc["database"]["lag_seconds"] == 0.0  # not 3600: nothing to replay
    assert drc["database"]["receiver"] == {"status": "streaming", "sender_host": "10.10.1.10", "last_contact_s": 2.1}
    assert drc["uploads"] == {"files": 2, "error": None, "missing": 0, "outdated": 0, "extra": 0, "lag_seconds": 0.0}
    assert drc["app"] == "down" and report["hosts"]["spse-primary"]["app"] == "ok"
    # A component down is shown (with its criticality), not a verdict on the DRC's data.
    assert {c["name"]: c["state"] for c in drc["components"]}["Jaringan internet utama"] == "down"


def test_json_shape_is_stable_and_serialisable(site):
    report = json.loads(json.dumps(status.evaluate(site, probes())))
    assert set(report) == {"site", "checked_at", "ok", "thresholds", "roles", "hosts", "problems", "notices"}
    assert report["thresholds"] == {"max_lag_bytes": MiB, "max_lag_seconds": 60.0}
    assert report["notices"] == []
    for host in report["hosts"].values():
        assert set(host) == {"site", "address", "reachable", "error", "role", "app", "database", "uploads", "components",
                             "fence", "updates", "reboot"}
        assert set(host["updates"]) == {"security", "other", "packages", "lists_age_s", "error"}
        assert set(host["reboot"]) == {"required", "packages", "window"}
        assert set(host["database"]) == {"current_lsn", "receive_lsn", "replay_lsn", "lag_bytes", "lag_seconds", "receiver"}
        for c in host["components"]:
            assert set(c) == {"name", "criticality", "kind", "target", "state", "detail"}
            assert c["criticality"] in ("Tinggi", "Sedang")
    assert [c["name"] for c in report["hosts"]["spse-drc"]["components"]] == [
        "Server utama: database PostgreSQL", "Jaringan internet utama", "Replikasi database ke DRC"]


def test_wan_cut_lag_in_bytes_and_no_receiver_is_not_ok(site):
    # Primary wrote 3 MiB the DRC has not got; its WAL receiver gave up on the connection.
    report = status.evaluate(site, probes(
        primary_pg={"current_lsn": "0/3A3001C8"},
        drc_pg={"receiver_status": None, "sender_host": None, "receiver_contact_age_s": None, "replay_age_s": 95.0}))
    assert status.exit_code(report) == 1
    db = report["hosts"]["spse-drc"]["database"]
    assert db["lag_bytes"] == 3 * MiB
    assert db["lag_seconds"] == 95.0  # the age of the last replayed transaction bounds it
    assert db["receiver"]["status"] == "none"
    text = "\n".join(report["problems"])
    assert "3.0 MiB behind spse-primary" in text and "95 s behind" in text and "WAL receiver none" in text
    assert report["roles"]["primary"] == ["spse-primary"]  # roles unchanged by a cut WAN


def test_seconds_lag_uses_the_tighter_bound_and_its_own_threshold(site):
    # Little WAL, but the receiver heard nothing for 75 s and replayed all it had: >= 60 s behind at most 75 s.
    report = status.evaluate(site, probes(
        primary_pg={"current_lsn": "0/3A001000"},
        drc_pg={"replay_age_s": 400.0, "receiver_contact_age_s": 75.0}))
    db = report["hosts"]["spse-drc"]["database"]
    assert db["lag_bytes"] == 0x1000 - 0x1C8
    assert db["lag_seconds"] == 75.0
    assert status.exit_code(report) == 1
    assert report["problems"] == ["spse-drc: database 75 s behind spse-primary (> 60 s, status.max_lag_seconds)"]
    # Within both thresholds: ok.
    ok = status.evaluate(site, probes(primary_pg={"current_lsn": "0/3A001000"}, drc_pg={"replay_age_s": 0.4}))
    assert ok["hosts"]["spse-drc"]["database"]["lag_seconds"] == 0.4 and status.exit_code(ok) == 0


def test_thresholds_come_from_the_site_file(tmp_path):
    data = yaml.safe_load(EXAMPLE.read_text())
    data["status"] = {"max_lag_bytes": 1000, "max_lag_seconds": 5}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    tight = load_site(path)
    report = status.evaluate(tight, probes(primary_pg={"current_lsn": "0/3A001000"},
                                          drc_pg={"replay_age_s": 6.0, "receiver_contact_age_s": 7.0}))
    assert status.exit_code(report) == 1 and len(report["problems"]) == 2
    data["status"] = {"max_lag_seconds": 0}
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SiteError, match="status.max_lag_seconds"):
        load_site(path)


def test_standby_ahead_of_the_primary_reading_is_current(site):
    # The two hosts are read a few ms apart; a standby that already replayed newer WAL is not behind.
    report = status.evaluate(site, probes(drc_pg={"receive_lsn": "0/3A000F00", "replay_lsn": "0/3A000F00"}))
    assert report["hosts"]["spse-drc"]["database"]["lag_bytes"] == 0 and status.exit_code(report) == 0


def test_an_unreachable_drc_is_unknown_never_primary(site):
    report = status.evaluate(site, probes(drc=UNREACHABLE))
    drc = report["hosts"]["spse-drc"]
    assert drc["role"] == "unknown" and not drc["reachable"] and drc["app"] == "unknown"
    assert "Unable to connect" in drc["error"]
    assert {c["state"] for c in drc["components"]} == {"unknown"}
    assert report["roles"] == {"primary": ["spse-primary"], "standby": [], "unknown": ["spse-drc"]}
    assert status.exit_code(report) == 1
    assert report["problems"][0].startswith("spse-drc: role unknown (NoValidConnectionsError")


def test_an_unreachable_primary_leaves_the_drc_a_standby_with_unknown_lag(site):
    report = status.evaluate(site, probes(primary=UNREACHABLE))
    assert report["roles"] == {"primary": [], "standby": ["spse-drc"], "unknown": ["spse-primary"]}
    assert report["hosts"]["spse-drc"]["database"]["lag_bytes"] is None
    assert "0 primaries (none): there must be exactly one" in report["problems"]
    assert status.exit_code(report) == 1


def test_postgresql_down_on_a_reachable_host_is_unknown(site):
    down = {"error": "psql: connection to server on socket ... failed: No such file or directory"}
    report = status.evaluate(site, probes(drc={**HEALTHY["spse-drc"], "pg": down}))
    assert report["hosts"]["spse-drc"]["role"] == "unknown"
    assert report["hosts"]["spse-drc"]["reachable"] is True
    assert "psql: connection to server" in report["hosts"]["spse-drc"]["error"]
    assert status.exit_code(report) == 1


def test_two_primaries_is_not_ok(site):
    promoted = {"in_recovery": False, "current_lsn": "0/3B000000", "receive_lsn": None, "replay_lsn": None,
                "receiver_status": None, "sender_host": None, "receiver_contact_age_s": None, "replay_age_s": None}
    report = status.evaluate(site, probes(drc_pg=promoted))
    assert report["roles"]["primary"] == ["spse-primary", "spse-drc"]
    assert "2 primaries (spse-primary, spse-drc): there must be exactly one" in report["problems"]
    assert status.exit_code(report) == 1


def test_roles_follow_postgresql_not_the_site_file(site):
    # After a switch-over the DRC is primary and the old primary follows it: still one primary + standby.
    swapped = probes(primary=HEALTHY["spse-drc"], drc=HEALTHY["spse-primary"])
    report = status.evaluate(site, swapped)
    assert report["roles"] == {"primary": ["spse-drc"], "standby": ["spse-primary"], "unknown": []}
    assert status.exit_code(report) == 0


def test_uploads_missing_and_outdated_files_measure_from_the_oldest(site):
    drc_files = [["2026/11/22/a1-rks.pdf", 4096, 1779990000.5]]  # a1 partly copied; b2 missing
    report = status.evaluate(site, probes(drc_uploads={"files": drc_files}))
    up = report["hosts"]["spse-drc"]["uploads"]
    assert (up["missing"], up["outdated"], up["files"]) == (1, 1, 2)
    assert up["lag_seconds"] == pytest.approx(1780000000.0 - 1779990000.5)  # a1's age, on primary's clock
    assert status.exit_code(report) == 1
    assert "uploads 10000 s behind spse-primary (missing 1, out of date 1;" in report["problems"][0]


def test_a_fresh_upload_not_yet_copied_is_within_the_threshold(site):
    fresh = HEALTHY["spse-primary"]["uploads"]["files"] + [["2026/11/22/d4-new.pdf", 10, 1779999990.0]]
    report = status.evaluate(site, probes(primary_uploads={"files": fresh},
                                          drc_uploads={"files": HEALTHY["spse-drc"]["uploads"]["files"] + [["old/x", 1, 1.0]]}))
    up = report["hosts"]["spse-drc"]["uploads"]
    assert (up["missing"], up["extra"], up["lag_seconds"]) == (1, 1, 10.0)
    assert status.exit_code(report) == 0


def test_uploads_listing_failure_is_not_ok(site):
    report = status.evaluate(site, probes(drc={**HEALTHY["spse-drc"], "uploads": {"error": "find /home/file/file_prod: No such file or directory"}}))
    assert report["hosts"]["spse-drc"]["uploads"]["lag_seconds"] is None
    assert report["problems"] == ["spse-drc: uploads lag unknown (find /home/file/file_prod: No such file or directory)"]


def test_replay_delay_and_lsn_parsing():
    assert status.parse_lsn("16/B374D848") == (0x16 << 32) + 0xB374D848
    assert status.parse_lsn(None) is None and status.parse_lsn("garbage") is None
    assert status.replay_delay_s(None, {}) is None
    assert status.replay_delay_s(0, {"replay_age_s": 86400.0}) == 0.0
    assert status.replay_delay_s(10, {"replay_age_s": 3.0}) == 3.0
    # Contact age bounds only when everything received was replayed.
    pg = {"replay_age_s": 500.0, "receiver_contact_age_s": 20.0, "receive_lsn": "0/20", "replay_lsn": "0/10"}
    assert status.replay_delay_s(10, pg) == 500.0
    assert status.replay_delay_s(10, {**pg, "replay_lsn": "0/20"}) == 20.0
    assert status.replay_delay_s(10, {"replay_age_s": None}) is None


def test_excludes_match_like_rsync():
    assert status._excluded("2026/11/.tmp-x.pdf", [".tmp-*"])
    assert not status._excluded("2026/11/x.pdf", [".tmp-*"])
    assert status._excluded("cache/a/b", ["cache/*"])


def test_default_components_follow_em5_and_the_site_settings(site):
    by_name = {c.name: c for c in site.components}
    assert {c.criticality for c in site.components} == {"Tinggi"}
    assert by_name["Server utama: aplikasi SPSE"].target == "spse.service"
    assert by_name["Web server Apache (HTTPS)"].target == "https://127.0.0.1/eproc4/"
    assert by_name["Replikasi database ke DRC"].target == "10.10.1.10:5432"
    assert site.hosts_for(by_name["Replikasi database ke DRC"].run_on) == ["spse-drc"]
    assert site.hosts_for("active") == ["spse-primary"] and site.hosts_for("all") == ["spse-primary", "spse-drc"]


def test_components_in_the_site_file_replace_the_defaults_and_are_checked(tmp_path):
    data = yaml.safe_load(EXAMPLE.read_text())
    helpdesk = {"name": "Helpdesk", "criticality": "Sedang", "kind": "tcp", "target": "10.10.1.20:443", "run_on": "primary"}
    data["components"] = [helpdesk]
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    assert [(c.name, c.criticality) for c in load_site(path).components] == [("Helpdesk", "Sedang")]
    for bad, message in (
        ({"criticality": "Rendah"}, "components\\[0\\].criticality"),
        ({"target": "10.10.1.20"}, "tcp target '10.10.1.20' is not host:port"),
        ({"kind": "systemd", "target": "spse"}, "not a unit name"),
        ({"kind": "http", "target": "ftp://x"}, "not an http\\(s\\) URL"),
        ({"run_on": "spse-backup"}, "key 'components\\[0\\].run_on': 'spse-backup' names no host"),
    ):
        data["components"] = [{**helpdesk, **bad}]
        path.write_text(yaml.safe_dump(data))
        with pytest.raises(SiteError, match=message):
            load_site(path)


@pytest.fixture
def wide(monkeypatch):
    monkeypatch.setattr(cli, "console", Console(width=250))


def test_cli_json_and_exit_codes(wide, monkeypatch, capsys):
    monkeypatch.setattr(status, "probe_all", lambda site, timeout: probes())
    assert cli.main(["status", str(EXAMPLE), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["roles"]["primary"] == ["spse-primary"]
    monkeypatch.setattr(status, "probe_all", lambda site, timeout: probes(drc=UNREACHABLE))
    assert cli.main(["status", str(EXAMPLE)]) == 1
    out = capsys.readouterr().out
    for text in ("spse-drc", "unknown", "unreachable", "Tinggi", "NOT OK", "role unknown"):
        assert text in out, text
    assert cli.main(["status", str(REPO / "no-such-site.yaml")]) == 2


def test_probe_checks_tcp_and_http_for_real():
    class Health(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"status": "read-only"}).encode()
            self.send_response(503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        assert status_probe.health(f"http://127.0.0.1:{port}/eproc4/health", 2)["status"] == "read-only"
        assert status_probe.component("tcp", f"127.0.0.1:{port}", 2)["state"] == "up"
        assert status_probe.component("http", f"http://127.0.0.1:{port}/", 2) == {"state": "down", "detail": "HTTP 503"}
    finally:
        server.shutdown()
        server.server_close()
    assert status_probe.component("tcp", f"127.0.0.1:{port}", 2)["state"] == "down"
    assert status_probe.health(f"http://127.0.0.1:{port}/eproc4/health", 2)["status"] == "down"


# --- security updates and reboots (information only, never the exit code) ------------------------

# Recorded `apt-get -s -q dist-upgrade` lines of a Debian 12 host (a mix of what apt prints).
APT_SIMULATION = """\
NOTE: This is only a simulation!
      apt-get needs root privileges for real execution.
Reading package lists...
Building dependency tree...
Calculating upgrade...
The following packages will be upgraded:
  base-files libgcrypt20 libssl3 openssl
Inst base-files [12.4+deb12u11] (12.4+deb12u15 Debian:12.15/oldstable [amd64])
Inst libgcrypt20 [1.10.1-3] (1.10.1-3+deb12u1 Debian:12.15/oldstable, Debian-Security:12/oldstable-security [amd64])
Inst liblzma-dev [5.4.1-1] (5.4.1-1+deb12u2 Debian-Security:12/oldstable-security [amd64]) []
Inst linux-image-6.1.0-41-amd64 (6.1.158-1 Debian-Security:12/stable-security [amd64])
Inst bash [5.2.15-2+b8] (5.2.15-2+b13 Debian:12.15/oldstable [amd64])
Conf base-files (12.4+deb12u15 Debian:12.15/oldstable [amd64])
Conf libgcrypt20 (1.10.1-3+deb12u1 Debian:12.15/oldstable, Debian-Security:12/oldstable-security [amd64])
Remv nothing-security [1.0]
"""


def test_probe_counts_security_upgrades_in_a_recorded_simulation():
    got = status_probe.parse_simulation(APT_SIMULATION)
    # a version in both the point release and the security archive is a security update; a new
    # kernel package counts; Conf/Remv lines and the summary are not upgrades
    assert got == {"security": 3, "other": 2, "packages": ["libgcrypt20", "liblzma-dev", "linux-image-6.1.0-41-amd64"]}
    assert status_probe.parse_simulation("Reading package lists...\n0 upgraded, 0 newly installed.\n") == {
        "security": 0, "other": 0, "packages": []}


def test_probe_reads_the_reboot_flag_and_its_packages(tmp_path):
    flag = tmp_path / "reboot-required"
    assert status_probe.reboot_required(str(flag)) == {"required": False, "packages": []}
    flag.write_text("*** System restart required ***\n")
    assert status_probe.reboot_required(str(flag)) == {"required": True, "packages": []}
    (tmp_path / "reboot-required.pkgs").write_text("libc6\nlinux-image-6.1.0-41-amd64\nlibc6\n")
    assert status_probe.reboot_required(str(flag)) == {"required": True, "packages": ["libc6", "linux-image-6.1.0-41-amd64"]}


def test_pending_updates_and_a_needed_reboot_are_notices_not_an_em3_problem(site, wide, monkeypatch, capsys):
    pending = probes(drc_updates={"security": 2, "packages": ["libssl3", "openssl"]},
                     primary_reboot={"required": True, "packages": ["linux-image-6.1.0-41-amd64"]})
    report = status.evaluate(site, pending)
    assert report["ok"] and status.exit_code(report) == 0  # EM-3's verdict is about the DRC's data
    assert report["hosts"]["spse-drc"]["updates"]["security"] == 2
    primary = report["hosts"]["spse-primary"]["reboot"]
    assert primary == {"required": True, "packages": ["linux-image-6.1.0-41-amd64"], "window": "Sun 02:00 (60 min)"}
    assert report["hosts"]["spse-drc"]["reboot"]["window"] == "Sun 04:00 (60 min)"
    text = "\n".join(report["notices"])
    assert "spse-drc: 2 security update(s) pending (libssl3, openssl)" in text
    assert "spse-primary: reboot required for linux-image-6.1.0-41-amd64; siaga reboots it in its window Sun 02:00" in text

    monkeypatch.setattr(status, "probe_all", lambda s, timeout: pending)
    assert cli.main(["status", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    for cell in ("security updates", "2 pending", "needed", "window Sun 02:00 (60 min)", "note", "OK"):
        assert cell in out, cell


def test_unknown_stale_and_unreported_updates(site):
    report = status.evaluate(site, probes(drc=UNREACHABLE, primary_updates={"lists_age_s": 3 * 86400.0}))
    assert report["hosts"]["spse-drc"]["updates"]["security"] is None
    assert report["hosts"]["spse-drc"]["reboot"]["required"] is None
    assert "3.0 days old" in "\n".join(report["notices"])
    old_probe = probes()
    del old_probe["spse-primary"]["updates"]  # a host whose probe predates this (not re-deployed)
    report = status.evaluate(site, old_probe)
    assert "spse-primary: pending security updates unknown (not reported (run the site deploy))" in report["notices"]
    apt_broken = status.evaluate(site, probes(drc={**HEALTHY["spse-drc"], "updates": {"error": "apt-get -s: E: dpkg was interrupted"}}))
    assert "spse-drc: pending security updates unknown (apt-get -s: E: dpkg was interrupted)" in apt_broken["notices"]


def test_reboots_off_are_reported_as_by_hand(tmp_path):
    data = yaml.safe_load(EXAMPLE.read_text())
    data.setdefault("base", {})["security_updates"] = {"reboot": {"enabled": False}}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    report = status.evaluate(load_site(path), probes(drc_reboot={"required": True}))
    assert report["hosts"]["spse-drc"]["reboot"]["window"] is None
    assert "spse-drc: reboot required; reboot it by hand (base.security_updates.reboot is off)" in report["notices"]


def test_a_fenced_host_and_a_primary_serving_alone_are_said(site):
    """After a failover: the old primary fenced (or held down), the new one serving alone (issue 11)."""
    p = probes()
    names = list(p)
    new, old = names[1], names[0]
    p[old] = {"reachable": False, "error": "unreachable"}
    p[new]["pg"] = {**p[new]["pg"], "in_recovery": False, "current_lsn": "0/5000000"}
    p[new]["fence"] = {"fenced": None, "held": None, "authority": {"since": "t", "why": "failover f1: banjir"}}
    report = status.evaluate(site, p)
    assert any("DEGRADED" in x and new in x for x in report["problems"]), report["problems"]
    p[old] = {**probes()[old], "fence": {"fenced": {"since": "t", "why": "superseded"}, "held": None, "authority": None}}
    report = status.evaluate(site, p)
    assert any(x.startswith(f"{old}: FENCED") for x in report["problems"]), report["problems"]


# The security services' status files as the lab's hosts write them (roles/clamav, roles/file_integrity).
CHECKED = {"finished": "2026-05-29T03:50:00+07:00", "finished_ts": 1779999000, "aide_ok": True, "unexplained": [],
           "explained": {}, "differences": 0}
SCANNED = {"kind": "new", "finished": "2026-05-29T03:59:50+07:00", "finished_ts": 1779999990, "files": 3, "found": 0,
           "quarantined": 0, "ok": True, "error": ""}


def secured(primary_integrity=CHECKED, drc_integrity=CHECKED, scan=SCANNED, **clamav) -> dict:
    out = probes()
    out["spse-primary"]["security"] = {"integrity": {"last_check": primary_integrity} if primary_integrity else None,
                                       "clamav": {"last_scan": scan, **clamav} if scan else None}
    out["spse-drc"]["security"] = {"integrity": {"last_check": drc_integrity}, "clamav": None}
    return out


def test_security_services_checked_and_scanning_where_the_app_runs_are_no_problem(site):
    report = status.evaluate(site, secured())
    assert report["problems"] == [] and not any("ClamAV" in n for n in report["notices"])


@pytest.mark.parametrize("change,expected", [
    ({"primary_integrity": {**CHECKED, "unexplained": [{"path": "/usr/bin/tac", "kind": "changed", "changed": ["sha256"]}]}},
     "spse-primary: file integrity: 1 change(s) nobody explained since the baseline (/usr/bin/tac)"),
    ({"drc_integrity": {**CHECKED, "finished_ts": 1779999000 - 3 * 86400}}, "spse-drc: file integrity last checked"),
    ({"scan": {**SCANNED, "ok": False, "error": "clamdscan exit 2: can't connect to clamd"}},
     "spse-primary: ClamAV's last scan of the uploads failed: clamdscan exit 2"),
    ({"scan": {**SCANNED, "finished_ts": 1779999990 - 3600}}, "spse-primary: ClamAV last scanned the uploads at"),
])
def test_a_security_service_that_is_not_working_or_found_changes_is_a_problem(site, change, expected):
    """SOP IN-2: AIDE's unexplained changes and a stale or failing ClamAV scan fail `siaga status`."""
    report = status.evaluate(site, secured(**change))
    assert any(p.startswith(expected) for p in report["problems"]), report["problems"]
    assert status.exit_code(report) != 0


def test_a_new_baseline_or_a_scanner_yet_to_run_is_no_problem_until_overdue(site):
    """Right after a deploy: AIDE's baseline is made, its first check is the next daily run; ClamAV's
    first scan comes within a minute (a notice meanwhile). A baseline two days unchecked is a problem."""
    fresh = secured(primary_integrity=None, scan=None)
    fresh["spse-primary"]["security"]["integrity"] = {"baseline": {"at": "2026-05-29T03:00:00+07:00", "by": "init"}}
    report = status.evaluate(site, fresh)
    assert report["problems"] == [] and any("ClamAV has not scanned the uploads yet" in n for n in report["notices"])
    fresh["spse-primary"]["security"]["integrity"]["baseline"]["at"] = "2026-05-26T03:00:00+07:00"
    assert any(p.startswith("spse-primary: file integrity not checked since its baseline")
               for p in status.evaluate(site, fresh)["problems"])
    fresh["spse-primary"]["security"]["integrity"] = None
    assert any(p.startswith("spse-primary: file integrity has no baseline") for p in status.evaluate(site, fresh)["problems"])


def test_a_quarantined_upload_is_a_notice_and_the_standby_is_not_asked_to_scan(site):
    det = {"path": "/home/file/file_prod/2026/11/28/x-eicar.pdf", "signature": "Eicar-Signature", "at": "2026-11-28T05:59:50+07:00"}
    report = status.evaluate(site, secured(quarantined_total=1, last_detection=det))
    assert report["problems"] == []  # the DRC has no scan of its own: the uploads are scanned where they are written
    assert any(n.startswith("spse-primary: ClamAV quarantined 1 upload(s); the last: /home/file/file_prod/2026/11/28/x-eicar.pdf")
               for n in report["notices"]), report["notices"]
