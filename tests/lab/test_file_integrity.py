"""File integrity (AIDE) in the lab (issue 12, IN-2): after the site deploy the daily check finds
nothing; a tampered system binary and a tampered application file are reported (journal at crit,
status for monitoring) and keep being reported; once the binary is put back and a site deploy has
put the application file back, the check explains both (Debian's package, siaga's deploy), moves the
baseline, and the next check is clean. SOP IN-2."""

from __future__ import annotations

import json

import pytest

from drc.site import load_site
from drc.status.command import evaluate, probe_all
from roles.spse_app.deploy import app_dir
from tests.helpers import assert_no_change_rerun, run_deploy

BINARY = "/usr/bin/tac"  # coreutils: harmless to change for a moment, restored by the test
SERVICE = "siaga-integrity-check.service"


@pytest.fixture(scope="module")
def site(lab):
    return load_site(lab.site_file)


def check(host, site) -> dict:
    """Run the daily check now (the timer's own service) and read what it recorded."""
    host.run_expect([0], f"systemctl start {SERVICE}")
    return json.loads(host.file(f"{site.file_integrity.state_dir}/status.json").content_string)


def test_a_deployed_host_checks_clean(site, primary, drc):
    for host in (primary, drc):
        status = check(host, site)
        assert status["last_check"]["aide_ok"] and status["last_check"]["unexplained"] == [], status
        assert host.service("siaga-integrity-check.timer").is_enabled


def test_tampering_is_reported_until_repaired_and_a_deploy_is_not_an_alarm(lab, site, primary):
    app_file = f"{app_dir(site.spse_app)}/standin.py"
    before = json.loads(primary.file(f"{site.file_integrity.state_dir}/status.json").content_string).get("alerts_total", 0)
    primary.run_expect([0], f"cp -p {BINARY} /root/siaga-test-tac.orig && cp -p {app_file} /root/siaga-test-app.orig")
    try:
        primary.run_expect([0], f"printf '\\0' >> {BINARY} && printf '# tampered\\n' >> {app_file}")
        for _ in range(2):  # reported, and reported again: the baseline does not move
            status = check(primary, site)
            unexplained = {u["path"]: u for u in status["last_check"]["unexplained"]}
            assert set(unexplained) == {BINARY, app_file}, status["last_check"]
            assert "sha256" in unexplained[BINARY]["changed"], unexplained
        assert status["alerts_total"] == before + 2
        alerts = primary.check_output("journalctl -t siaga-integrity -p crit --no-pager -o cat")
        assert f"file integrity: {app_file} changed" in alerts and f"file integrity: {BINARY} changed" in alerts, alerts
        prom = primary.file(f"{site.file_integrity.state_dir}/siaga_integrity.prom").content_string
        assert "siaga_integrity_unexplained_changes 2\n" in prom
        # `siaga status` says it too, and fails (SOP IN-2).
        report = evaluate(site, probe_all(site))
        assert any(p.startswith("primary: file integrity: 2 change(s) nobody explained") for p in report["problems"]), report["problems"]
    except BaseException:
        # The application's file back too, or the next tests see a change to it (the deploy below
        # puts it back when all went well: that is what this test checks).
        primary.run_expect([0], f"cp -p /root/siaga-test-app.orig {app_file}")
        raise
    finally:
        primary.run_expect([0], f"cp /root/siaga-test-tac.orig {BINARY} && rm -f /root/siaga-test-tac.orig /root/siaga-test-app.orig")
    # The site deploy puts the application's file back (and changes nothing else here).
    res = run_deploy(lab)
    assert res.ok, res.output[-4000:]
    status = check(primary, site)
    last = status["last_check"]
    assert last["unexplained"] == [], last
    assert last["explained"][app_file] == "siaga's deploy" and last["explained"][BINARY] == "package coreutils", last
    assert check(primary, site)["last_check"]["differences"] == 0  # the baseline followed


def test_the_security_deploy_changes_nothing_the_second_time(lab):
    assert_no_change_rerun(lab, "deploys/security.py")
