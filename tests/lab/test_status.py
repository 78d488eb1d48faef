"""`siaga status` on the real lab, as cron or an operator runs it (the CLI, `--json`, exit code):
after the site deploy it is OK; with the WAN cut and writes on primary it reports the lag and
exits 1; healed, the DRC catches up by itself and it exits 0 again; a host it cannot reach is
"unknown", never "primary". SOP EM-3 (make sure DRC data is up to date), EM-5, IN-4."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import lab_host

REPO = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
STATUS_DEADLINE_S = 60.0  # one status run, even with a host that does not answer
CATCH_UP_DEADLINE_S = 120.0


def siaga_status(site_file: Path) -> tuple[int, dict, float]:
    """Run `siaga status SITE --json`: exit code, report, seconds it took."""
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "drc.cli", "status", str(site_file), "--json"], cwd=REPO,
                          capture_output=True, text=True, timeout=STATUS_DEADLINE_S)
    took = time.monotonic() - start
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    return proc.returncode, json.loads(proc.stdout), took


def poll_status(site_file: Path, what: str, want, deadline_s: float) -> tuple[int, dict, float]:
    """Run status until want(code, report) holds; returns the last run and seconds waited."""
    start = time.monotonic()
    while True:
        code, report, _ = siaga_status(site_file)
        if want(code, report):
            return code, report, time.monotonic() - start
        if time.monotonic() - start > deadline_s:
            raise AssertionError(f"{what}: not within {deadline_s:.0f} s; last exit {code}, problems {report['problems']}")
        time.sleep(0.5)


def psql(host, sql: str, db: str = "postgres") -> str:
    cmd = host.run("runuser -u postgres -- psql -XAtq -d %s -c %s", db, sql)
    assert cmd.rc == 0, cmd.stderr
    return cmd.stdout.strip()


@pytest.fixture(scope="module")
def pg_primary(lab, deployed):
    return lab_host(lab, "primary")


def test_after_deploy_one_primary_and_a_streaming_drc(lab, deployed):
    code, report, waited = poll_status(lab.site_file, "status OK after the deploy", lambda c, r: c == 0, CATCH_UP_DEADLINE_S)
    hosts = report["hosts"]
    assert report["roles"] == {"primary": ["primary"], "standby": ["drc"], "unknown": []}
    assert hosts["primary"]["app"] == "ok"
    assert hosts["drc"]["app"] == "down"  # installed, stopped while standby
    drc = hosts["drc"]["database"]
    assert drc["receiver"]["status"] == "streaming"
    assert drc["receiver"]["sender_host"] == lab.address("primary")
    assert drc["lag_bytes"] <= MiB and drc["lag_seconds"] <= 60
    assert hosts["drc"]["uploads"]["lag_seconds"] <= 60
    comps = {(c["name"], h): c["state"] for h, d in hosts.items() for c in d["components"]}
    assert comps[("Server utama: aplikasi SPSE", "primary")] == "up"
    assert comps[("Web server Apache (HTTPS)", "primary")] == "up"
    assert comps[("Server utama: database PostgreSQL", "drc")] == "up"
    assert comps[("Replikasi database ke DRC", "drc")] == "up"
    print(f"status OK after {waited:.1f} s: drc lag {drc['lag_bytes']} B / {drc['lag_seconds']} s")


def test_wan_cut_reports_the_lag_and_the_drc_catches_up_after_heal(lab, deployed, pg_primary):
    psql(pg_primary, "CREATE TABLE IF NOT EXISTS siaga_lab_lag_probe (id serial, pad text)")
    try:
        lab.set_wan(cut=True)
        # ~3 MiB of WAL the DRC cannot receive (more than the 1 MiB threshold), written on primary.
        psql(pg_primary, "INSERT INTO siaga_lab_lag_probe (pad) SELECT repeat(md5(g::text), 30) FROM generate_series(1, 3000) g")
        code, report, waited = poll_status(
            lab.site_file, "status to report the lag while the WAN is cut",
            lambda c, r: c == 1 and (r["hosts"]["drc"]["database"]["lag_bytes"] or 0) > MiB, 30)
        drc = report["hosts"]["drc"]
        assert report["roles"] == {"primary": ["primary"], "standby": ["drc"], "unknown": []}  # a cut changes no role
        assert any("behind primary" in p and "status.max_lag_bytes" in p for p in report["problems"]), report["problems"]
        print(f"WAN cut: drc {drc['database']['lag_bytes']} B / {drc['database']['lag_seconds']} s behind, "
              f"receiver {drc['database']['receiver']['status']} (seen after {waited:.1f} s)")
    finally:
        lab.set_wan(cut=False)
    code, report, waited = poll_status(lab.site_file, "the DRC to catch up by itself after the heal",
                                       lambda c, r: c == 0, CATCH_UP_DEADLINE_S)
    drc = report["hosts"]["drc"]["database"]
    assert drc["receiver"]["status"] == "streaming" and drc["lag_bytes"] <= MiB
    print(f"healed: status OK again after {waited:.1f} s (lag {drc['lag_bytes']} B / {drc['lag_seconds']} s)")
    psql(pg_primary, "DROP TABLE siaga_lab_lag_probe")


def _site_copy(lab, tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load(lab.site_file.read_text())
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            data[section][field] = value
        else:
            data[section] = value
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_host_it_cannot_reach_is_unknown_not_primary(lab, deployed, tmp_path):
    # The DRC's entry points at an unused address of its site: nothing answers there.
    import ipaddress

    data = yaml.safe_load(lab.site_file.read_text())
    unused = str(ipaddress.ip_address(lab.address("drc")) + 99)
    site = _site_copy(lab, tmp_path, hosts={**data["hosts"], "drc": {"address": unused}})
    code, report, took = siaga_status(site)
    drc = report["hosts"]["drc"]
    assert code == 1
    assert (drc["role"], drc["reachable"], drc["app"]) == ("unknown", False, "unknown")
    assert report["roles"] == {"primary": ["primary"], "standby": [], "unknown": ["drc"]}
    assert report["problems"][0].startswith("drc: role unknown")
    assert took < 30, f"status took {took:.1f} s with an unreachable host"
    print(f"unreachable drc: unknown in {took:.1f} s ({drc['error']})")


def test_an_unknown_host_key_is_refused(lab, deployed, tmp_path):
    # Strict host key checking: with no known key for a host, status does not talk to it.
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    site = _site_copy(lab, tmp_path, connection={**yaml.safe_load(lab.site_file.read_text())["connection"],
                                                  "known_hosts_file": str(empty)})
    code, report, _ = siaga_status(site)
    assert code == 1
    for h in ("primary", "drc"):
        assert report["hosts"][h]["role"] == "unknown" and not report["hosts"][h]["reachable"]
        assert "known_hosts" in report["hosts"][h]["error"] or "not found" in report["hosts"][h]["error"]


def test_a_stopped_drc_is_unknown_and_ok_again_once_it_is_back(lab, deployed):
    # A real site loss of the DRC: its machine is shut down, then brought back by `lab up`.
    try:
        lab.stop_host("drc")
        code, report, took = siaga_status(lab.site_file)
        drc = report["hosts"]["drc"]
        assert code == 1
        assert (drc["role"], drc["reachable"]) == ("unknown", False)
        assert report["roles"] == {"primary": ["primary"], "standby": [], "unknown": ["drc"]}
        assert took < 30, f"status took {took:.1f} s with a stopped host"
        print(f"stopped drc: unknown in {took:.1f} s ({drc['error']})")
    finally:
        lab.up(log=lambda _m: None)
    _, report, waited = poll_status(lab.site_file, "status OK once the DRC is back", lambda c, r: c == 0, CATCH_UP_DEADLINE_S)
    print(f"drc back: status OK {waited:.1f} s after boot")


def test_the_probe_is_the_shipped_file_and_a_missing_one_is_named_with_the_fix(lab, deployed):
    # The probe is a real file the deploy installed (roles/base), the same as drc/hostside/status_probe.py.
    import hashlib

    from drc.hostside import PROGRAMS

    probe = PROGRAMS["status_probe"]
    drc = lab_host(lab, "drc")
    f = drc.file(probe.path)
    assert (f.user, f.group, f.mode) == ("root", "root", 0o755)
    assert f.sha256sum == hashlib.sha256(probe.source.read_bytes()).hexdigest()
    away = f"{probe.path}.away"
    try:
        drc.check_output("mv %s %s", probe.path, away)
        code, report, _ = siaga_status(lab.site_file)
        h = report["hosts"]["drc"]
        assert code == 1 and (h["role"], h["reachable"]) == ("unknown", True)
        assert h["error"] == (f"host program status-probe missing on drc ({probe.path}, shipped by roles/base): "
                              "run the site deploy")
        assert report["problems"][0].startswith("drc: role unknown (host program status-probe missing on drc")
        print(report["problems"][0])
    finally:
        drc.check_output("mv %s %s", away, probe.path)
    poll_status(lab.site_file, "status OK with the probe back", lambda c, r: c == 0, CATCH_UP_DEADLINE_S)
