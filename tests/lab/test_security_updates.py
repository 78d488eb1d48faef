"""Security updates on the real lab (roles/base/updates.py): after the site deploy every host has
Debian's unattended-upgrades configured as rendered (security origins only, no automatic reboot),
`unattended-upgrade --dry-run` works against Debian's mirror, the reboot timer carries its site's
window, a second deploy changes nothing, and `siaga status --json` reports pending security updates
and a needed reboot per host. SOP IN-2, IN-4, EM-3."""

from __future__ import annotations

import re
import time

import pytest

from drc.site import load_site
from roles.base.updates import APT_CONF, APT_CONF_STAGED, render_reboot_units, render_unattended, render_upgrade_time
from tests.helpers import assert_no_change_rerun, lab_host
from tests.lab.test_status import siaga_status

HOSTS = ("primary", "drc")


@pytest.fixture(scope="module")
def site(lab):
    return load_site(lab.site_file)


@pytest.mark.parametrize("name", HOSTS)
def test_unattended_upgrades_installed_and_configured_as_rendered(lab, site, deployed, name):
    h = lab_host(lab, name)
    assert h.package("unattended-upgrades").is_installed
    conf = h.file(APT_CONF)
    assert conf.content_string == render_unattended(site.base.security_updates)
    assert (conf.user, conf.group, conf.mode) == ("root", "root", 0o644)
    assert not h.file(APT_CONF_STAGED).exists
    # what apt itself reads, with Debian's 20auto-upgrades and 50unattended-upgrades beside ours
    dump = h.check_output("apt-config dump Unattended-Upgrade::Origins-Pattern")
    origins = [line.split(" ", 1)[1].strip('";') for line in dump.splitlines() if line.startswith("Unattended-Upgrade::Origins-Pattern:: ")]
    assert origins == site.base.security_updates.origins
    assert h.check_output("apt-config dump Unattended-Upgrade::Automatic-Reboot") == 'Unattended-Upgrade::Automatic-Reboot "false";'
    assert h.check_output("apt-config dump APT::Periodic::Unattended-Upgrade") == 'APT::Periodic::Unattended-Upgrade "1";'
    for timer in ("apt-daily.timer", "apt-daily-upgrade.timer"):
        assert h.service(timer).is_enabled and h.service(timer).is_running, timer
    # the unattended run at the site's time, Debian's 06:00 cleared
    at = site.base.security_updates.upgrade_times[name]
    shown = h.check_output("systemctl show -p TimersCalendar --value apt-daily-upgrade.timer")
    assert f"OnCalendar=*-*-* {at}:00" in shown and "06:00:00" not in shown, shown
    assert h.file("/etc/systemd/system/apt-daily-upgrade.timer.d/siaga.conf").content_string == render_upgrade_time(site, name)


def test_unattended_upgrade_dry_run_allows_only_debian_security(lab, deployed):
    h = lab_host(lab, "primary")
    codename = h.check_output(". /etc/os-release && echo $VERSION_CODENAME")
    run = h.run("unattended-upgrade --dry-run -d")
    out = run.stdout + run.stderr
    assert run.rc == 0, out[-3000:]
    allowed = next((line for line in out.splitlines() if "Allowed origins are:" in line), "")
    assert f"origin=Debian,codename={codename}-security,label=Debian-Security" in allowed, allowed
    assert not re.search(r"label=Debian(?!-)", allowed), allowed  # Debian's point-release origin is cleared


@pytest.mark.parametrize("name, window", [("primary", "Sun 02:00"), ("drc", "Sun 04:00")])
def test_reboot_timer_carries_the_sites_window(lab, site, deployed, name, window):
    assert site.base.security_updates.reboot.windows[name] == window  # the lab's site file keeps the defaults
    h = lab_host(lab, name)
    for unit, text in render_reboot_units(site, name).items():
        assert h.file(f"/etc/systemd/system/{unit}").content_string == text
    timer = h.service("siaga-reboot-window.timer")
    assert timer.is_enabled and timer.is_running
    day, start = window.split()
    shown = h.check_output("systemctl show -p TimersCalendar --value siaga-reboot-window.timer")
    assert f"OnCalendar={day} *-*-* {start}:00" in shown, shown
    nxt = h.check_output("systemctl show -p NextElapseUSecRealtime --value siaga-reboot-window.timer")
    assert nxt.startswith(day) and f"{start}:00" in nxt, nxt  # the host's local time (base.timezone)
    # The service as systemd starts it (ExecStart's JSON argument); with no flag it never reboots.
    if not h.file("/var/run/reboot-required").exists:
        assert h.run("systemctl start siaga-reboot-window.service").rc == 0
        for _ in range(20):  # journald may write it a moment later
            log = h.check_output("journalctl -u siaga-reboot-window.service -n 5 --no-pager -o cat")
            if "reboot-window: no reboot required" in log:
                break
            time.sleep(0.5)
        assert "reboot-window: no reboot required" in log, log


def test_second_deploy_changes_nothing(lab, deployed):
    assert_no_change_rerun(lab, "deploys/site.py", preview=False)


def test_status_reports_pending_security_updates_and_a_needed_reboot(lab, site, deployed):
    _, report, _ = siaga_status(lab.site_file)
    for name in HOSTS:
        up, rb = report["hosts"][name]["updates"], report["hosts"][name]["reboot"]
        assert up["error"] is None and isinstance(up["security"], int) and up["security"] == len(up["packages"]), up
        assert up["lists_age_s"] is not None and up["lists_age_s"] >= 0
        assert rb["required"] is False and rb["window"] == f"{site.base.security_updates.reboot.windows[name]} (60 min)"
    drc = lab_host(lab, "drc")
    try:
        drc.run_expect([0], "echo '*** System restart required ***' > /var/run/reboot-required && echo libc6 > /var/run/reboot-required.pkgs")
        flagged_code, flagged, _ = siaga_status(lab.site_file)
        assert flagged["hosts"]["drc"]["reboot"] == {"required": True, "packages": ["libc6"], "window": "Sun 04:00 (60 min)"}
        assert flagged["hosts"]["primary"]["reboot"]["required"] is False
        assert "drc: reboot required for libc6; siaga reboots it in its window Sun 04:00 (60 min)" in flagged["notices"]
        # information, not EM-3's verdict: no problem, exit code as the report's ok says
        assert not any("reboot" in p for p in flagged["problems"]) and flagged_code == (0 if flagged["ok"] else 1)
    finally:
        drc.run("rm -f /var/run/reboot-required /var/run/reboot-required.pkgs")
    _, cleared, _ = siaga_status(lab.site_file)
    assert cleared["hosts"]["drc"]["reboot"]["required"] is False


def test_a_real_unattended_run_on_the_drc_installs_every_pending_security_update(lab, deployed):
    """apt-daily-upgrade.service as its timer starts it (Debian's mirror through the lab's NAT): after
    it, `siaga status` counts no security update pending on the DRC. The DRC, not primary: a standby."""
    _, before, _ = siaga_status(lab.site_file)
    h = lab_host(lab, "drc")
    run = h.run("systemctl start apt-daily-upgrade.service")
    log = h.check_output("tail -n 20 /var/log/unattended-upgrades/unattended-upgrades.log")
    assert run.rc == 0, run.stderr + log
    assert "All upgrades installed" in log or "No packages found that can be upgraded unattended" in log, log
    _, after, _ = siaga_status(lab.site_file)
    assert after["hosts"]["drc"]["updates"]["security"] == 0, after["hosts"]["drc"]["updates"]
    print(f"drc: {before['hosts']['drc']['updates']['security']} security updates pending before, 0 after")


def test_reboot_program_sees_a_running_backup_and_apts_lock_on_a_real_host(lab, deployed):
    """What makes reboot-window wait, read on a host: a siaga-backup-* unit running (systemctl) and
    the dpkg lock held (fcntl, as apt takes it). Nothing reboots: only the checks are called."""
    h = lab_host(lab, "drc")
    load = ("import importlib.machinery as m; "
            "rw = m.SourceFileLoader('rw', '/usr/local/lib/siaga/reboot-window').load_module(); ")
    # -B: no bytecode beside the program (an unexplained __pycache__ there fails later tests' idempotence).
    idle = h.check_output("python3 -B -c %s", load + "print(rw.busy_units(), rw.dpkg_locked())")
    assert idle == "[] False", idle
    h.run_expect([0], "systemd-run --unit siaga-backup-labtest --collect sleep 60")
    try:
        hold = ("import fcntl, os; fd = os.open('/var/lib/dpkg/lock-frontend', os.O_RDWR); "
                "fcntl.lockf(fd, fcntl.LOCK_EX); import subprocess, sys; "
                "print(subprocess.run([sys.executable, '-B', '-c', sys.argv[1]], capture_output=True, text=True).stdout.strip())")
        busy = h.check_output("python3 -B -c %s %s", hold, load + "print(rw.busy_units(), rw.dpkg_locked())")
        assert busy == "['siaga-backup-labtest.service'] True", busy
    finally:
        h.run("systemctl stop siaga-backup-labtest.service")
