"""Security updates (roles/base/updates.py) without a lab: the reboot-window rule of the site file
(never both sites at once), the apt configuration as apt itself reads it, the reboot timer's units,
and the host program that decides whether to reboot. SOP IN-2, IN-4, EM-3."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

from drc.hostside import reboot_window
from drc.site import SiteError, load_site
from roles.base.defaults import SECURITY_ORIGINS, SecurityUpdatesSettings, minutes_apart_in_a_day, windows_overlap
from roles.base.updates import render_reboot_units, render_unattended, render_upgrade_time
from tests.test_site_validation import LAB, edit, line_of, write

BASE = "  timezone: Asia/Jakarta"


def with_updates(block: str) -> str:
    """LAB with `block` (indented under base:) after the timezone line."""
    return edit(LAB, (BASE, BASE + "\n" + block.rstrip("\n")))


# --- the site file: windows ------------------------------------------------------------------------

def test_default_windows_are_apart_and_security_only(tmp_path):
    site = load_site(write(tmp_path, LAB))
    u = site.base.security_updates
    assert u.enabled and u.reboot.enabled
    assert u.reboot.windows == {"primary": "Sun 02:00", "drc": "Sun 04:00"} and u.reboot.window_minutes == 60
    assert u.origins == SECURITY_ORIGINS and all("Security" in o for o in u.origins)
    # the defaults pass the settings' own validation (a default_factory is not validated by pydantic)
    assert SecurityUpdatesSettings.model_validate({"origins": SECURITY_ORIGINS}).origins == SECURITY_ORIGINS


@pytest.mark.parametrize("a, b, minutes, overlap", [
    ("Sun 02:00", "Sun 04:00", 60, False),
    ("Sun 02:00", "Sun 03:15", 60, False),   # 60 min + 15 min to boot: just apart
    ("Sun 02:00", "Sun 03:14", 60, True),
    ("Sun 03:14", "Sun 02:00", 60, True),    # either order
    ("Sun 02:00", "Sun 02:00", 60, True),    # identical
    ("Sun 23:30", "Mon 00:10", 60, True),    # across the week's end
    ("Mon 00:10", "Sun 23:30", 60, True),
    ("Sat 02:00", "Sun 02:00", 360, False),
])
def test_window_overlap(a, b, minutes, overlap):
    assert windows_overlap(a, b, minutes) is overlap


# (id, block under base:, key, fix text, snippet on the line the message points at)
WINDOW_CASES = [
    ("identical", "  security_updates:\n    reboot:\n      windows: {primary: 'Sun 02:00', drc: 'Sun 02:00'}",
     "base.security_updates.reboot.windows.drc", "at least 75 minutes apart", "windows:"),
    ("overlapping", "  security_updates:\n    reboot:\n      windows:\n        primary: Sun 02:00\n        drc: Sun 02:30",
     "base.security_updates.reboot.windows.drc", "at least 75 minutes apart", "drc: Sun 02:30"),
    ("longer-window-overlaps", "  security_updates:\n    reboot:\n      window_minutes: 180",
     "base.security_updates.reboot.windows.drc", "at least 195 minutes apart", "reboot:"),  # windows not in the file
    ("not-day-and-time", "  security_updates:\n    reboot:\n      windows:\n        primary: Sunday 2am\n        drc: Sun 04:00",
     "base.security_updates.reboot.windows.primary", "'Day HH:MM'", "primary: Sunday 2am"),
    ("hour-out-of-range", "  security_updates:\n    reboot:\n      windows:\n        primary: Sun 24:00\n        drc: Sun 04:00",
     "base.security_updates.reboot.windows.primary", "'Day HH:MM'", "primary: Sun 24:00"),
    ("unknown-site", "  security_updates:\n    reboot:\n      windows:\n        primary: Sun 02:00\n        dr: Sun 04:00",
     "base.security_updates.reboot.windows.dr", "name the windows 'primary' and 'drc'", "dr: Sun 04:00"),
    ("site-without-window", "  security_updates:\n    reboot:\n      windows:\n        primary: Sun 02:00",
     "base.security_updates.reboot.windows", "add drc: 'Day HH:MM'", "windows:"),
    ("upgrade-times-too-close", "  security_updates:\n    upgrade_times:\n      primary: '05:30'\n      drc: '05:00'",
     "base.security_updates.upgrade_times.drc", "at least 60 minutes apart", "drc: '05:00'"),
    ("upgrade-times-close-over-midnight", "  security_updates:\n    upgrade_times:\n      primary: '23:50'\n      drc: '00:20'",
     "base.security_updates.upgrade_times.drc", "at least 60 minutes apart", "drc: '00:20'"),
    ("upgrade-time-not-a-time", "  security_updates:\n    upgrade_times:\n      primary: 6am\n      drc: '05:00'",
     "base.security_updates.upgrade_times.primary", "'HH:MM'", "primary: 6am"),
    ("upgrade-time-missing-site", "  security_updates:\n    upgrade_times:\n      drc: '05:00'",
     "base.security_updates.upgrade_times", "add primary: 'HH:MM'", "upgrade_times:"),
    ("window-too-short", "  security_updates:\n    reboot:\n      window_minutes: 5",
     "base.security_updates.reboot.window_minutes", "use a larger number", "window_minutes: 5"),
    ("unknown-key", "  security_updates:\n    reboot:\n      window: Sun 02:00",
     "base.security_updates.reboot.window", "check its spelling", "window: Sun 02:00"),
    ("origin-not-key-value", "  security_updates:\n    origins: [Debian-Security]",
     "base.security_updates.origins", "key=value", "origins:"),
    ("origin-breaks-apt-syntax", "  security_updates:\n    origins: ['origin=Debian\";evil']",
     "base.security_updates.origins", "quote", "origins:"),
    ("origin-with-a-brace", "  security_updates:\n    origins: ['origin=Debian,label=}']",
     "base.security_updates.origins", "brace", "origins:"),
]


@pytest.mark.parametrize("block, key, fix, snippet", [c[1:] for c in WINDOW_CASES], ids=[c[0] for c in WINDOW_CASES])
def test_bad_updates_settings_are_refused_with_file_line_key_and_fix(tmp_path, block, key, fix, snippet):
    text = with_updates(block)
    path = write(tmp_path, text)
    with pytest.raises(SiteError) as exc:
        load_site(path)
    msg = str(exc.value)
    assert f"{path}:{line_of(text, snippet)}: key '{key}':" in msg
    assert fix in msg


@pytest.mark.parametrize("a, b, apart", [("05:00", "06:30", 90), ("06:30", "05:00", 90), ("23:50", "00:20", 30), ("12:00", "00:00", 720)])
def test_upgrade_times_apart(a, b, apart):
    assert minutes_apart_in_a_day(a, b) == apart


def test_upgrade_time_drop_in_per_site(tmp_path):
    site = load_site(write(tmp_path, LAB))
    assert site.base.security_updates.upgrade_times == {"primary": "06:30", "drc": "05:00"}  # the DRC first
    drc = render_upgrade_time(site, "lpse-drc")
    # Debian's OnCalendar (06:00) is reset first, else the timer would fire at both times
    assert "[Timer]\nOnCalendar=\nOnCalendar=*-*-* 05:00:00\nRandomizedDelaySec=0\n" in drc
    assert "OnCalendar=*-*-* 06:30:00" in render_upgrade_time(site, "lpse-primary")
    off = load_site(write(tmp_path, with_updates("  security_updates:\n    enabled: false\n    upgrade_times: {primary: '05:00', drc: '05:00'}")))
    assert render_upgrade_time(off, "lpse-drc") is None  # nothing runs: the times may be anything


def test_overlap_does_not_matter_when_siaga_does_not_reboot(tmp_path):
    same = "      windows: {primary: 'Sun 02:00', drc: 'Sun 02:00'}"
    for off in ("  security_updates:\n    reboot:\n      enabled: false\n" + same,
                "  security_updates:\n    enabled: false\n    reboot:\n" + same):
        site = load_site(write(tmp_path, with_updates(off)))
        assert render_reboot_units(site, "lpse-primary") is None


# --- the apt configuration, read by apt itself -----------------------------------------------------

# Debian 12's 50unattended-upgrades (its active lines): its list also takes point releases.
DEBIAN_50 = """\
Unattended-Upgrade::Origins-Pattern {
        "origin=Debian,codename=${distro_codename},label=Debian";
        "origin=Debian,codename=${distro_codename},label=Debian-Security";
        "origin=Debian,codename=${distro_codename}-security,label=Debian-Security";
};
Unattended-Upgrade::Package-Blacklist {
};
"""
DEBIAN_20 = 'APT::Periodic::Update-Package-Lists "0";\nAPT::Periodic::Unattended-Upgrade "0";\n'


def apt_dump(tmp_path, ours: str) -> dict[str, list[str]]:
    """apt-config's view of an apt.conf.d holding Debian's 20/50 files and ours: key -> values."""
    if not shutil.which("apt-config"):
        pytest.skip("apt-config not installed here (the lab deploy runs it)")
    parts = tmp_path / "apt.conf.d"
    parts.mkdir()
    (parts / "20auto-upgrades").write_text(DEBIAN_20)
    (parts / "50unattended-upgrades").write_text(DEBIAN_50)
    (parts / "52siaga-unattended-upgrades").write_text(ours)
    main = tmp_path / "apt.conf"
    main.write_text(f'Dir::Etc::Parts "{parts}";\n')
    proc = subprocess.run(["apt-config", "dump"], capture_output=True, text=True, env={**os.environ, "APT_CONFIG": str(main)})
    assert proc.returncode == 0, proc.stderr
    out: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(" ")
        out.setdefault(key, []).append(value.rstrip(";").strip('"'))
    return out


def test_apt_reads_security_origins_only_and_no_automatic_reboot(tmp_path):
    text = render_unattended(SecurityUpdatesSettings())
    assert text.startswith("// Managed by siaga (roles/base)")
    conf = apt_dump(tmp_path, text)
    # Debian's list (with the point-release origin) is replaced, not added to.
    assert conf["Unattended-Upgrade::Origins-Pattern::"] == SECURITY_ORIGINS
    assert conf["Unattended-Upgrade::Automatic-Reboot"] == ["false"]
    # ours is read after Debian's 20auto-upgrades, which says "0" here
    assert conf["APT::Periodic::Unattended-Upgrade"] == ["1"]
    assert conf["APT::Periodic::Update-Package-Lists"] == ["1"]


def test_apt_reads_the_disabled_and_custom_settings(tmp_path):
    custom = SecurityUpdatesSettings(enabled=False, origins=["origin=Debian,codename=${distro_codename}-security"])
    conf = apt_dump(tmp_path, render_unattended(custom))
    assert conf["APT::Periodic::Unattended-Upgrade"] == ["0"]
    assert conf["APT::Periodic::Update-Package-Lists"] == ["1"]
    assert conf["Unattended-Upgrade::Origins-Pattern::"] == ["origin=Debian,codename=${distro_codename}-security"]


def test_apt_config_refuses_a_broken_file_as_the_deploy_check_does(tmp_path):
    if not shutil.which("apt-config"):
        pytest.skip("apt-config not installed here")
    bad = tmp_path / "52siaga-unattended-upgrades.siaga-new"
    bad.write_text(render_unattended(SecurityUpdatesSettings()).replace('"false";', '"false"'))
    good = tmp_path / "good"
    good.write_text(render_unattended(SecurityUpdatesSettings()))
    # the deploy's check: apt-config -c <staged> dump
    assert subprocess.run(["apt-config", "-c", str(bad), "dump"], capture_output=True).returncode != 0
    assert subprocess.run(["apt-config", "-c", str(good), "dump"], capture_output=True).returncode == 0


# --- the reboot timer and its program --------------------------------------------------------------

def test_reboot_units_carry_each_sites_window(tmp_path):
    site = load_site(write(tmp_path, LAB))
    primary, drc = render_reboot_units(site, "lpse-primary"), render_reboot_units(site, "lpse-drc")
    assert "OnCalendar=Sun *-*-* 02:00:00\n" in primary["siaga-reboot-window.timer"]
    assert "OnCalendar=Sun *-*-* 04:00:00\n" in drc["siaga-reboot-window.timer"]
    assert "Persistent=false" in primary["siaga-reboot-window.timer"]
    service = drc["siaga-reboot-window.service"]
    exec_line = next(line for line in service.splitlines() if line.startswith("ExecStart="))
    assert exec_line == """ExecStart=/usr/local/lib/siaga/reboot-window '{"day":"Sun","start":"04:00","minutes":60}'"""
    assert "TimeoutStartSec=70min" in service
    if shutil.which("systemd-analyze"):
        calendar = primary["siaga-reboot-window.timer"].split("OnCalendar=")[1].splitlines()[0]
        proc = subprocess.run(["systemd-analyze", "calendar", calendar], capture_output=True, text=True)
        assert proc.returncode == 0 and "Sun" in proc.stdout, proc.stdout + proc.stderr


def at(text: str) -> time.struct_time:
    """'Sun 02:30' as the struct_time the program reads from time.localtime() (2026-11-23 is a Monday)."""
    return time.strptime(f"2026-11-{23 + reboot_window.DAYS.index(text[:3])} {text[4:]}", "%Y-%m-%d %H:%M")


ARGS = {"day": "Sun", "start": "02:00", "minutes": 60}


def test_at_builds_the_right_weekday():
    assert at("Mon 10:00").tm_wday == 0 and at("Sun 02:00").tm_wday == 6


@pytest.mark.parametrize("now, required, busy, action", [
    ("Sun 02:00", ["linux-image-6.1.0-41-amd64"], [], "reboot"),
    ("Sun 02:59", [], [], "reboot"),
    ("Sun 03:00", ["libc6"], [], "skip"),          # window over
    ("Sun 01:59", ["libc6"], [], "skip"),
    ("Sat 02:30", ["libc6"], [], "skip"),          # right time, wrong day
    ("Sun 02:30", None, [], "skip"),               # nothing asked for a reboot
    ("Sun 02:30", ["libc6"], ["siaga-backup-offline.service"], "wait"),
    ("Sun 02:30", ["libc6"], ["dpkg lock"], "wait"),
])
def test_reboot_decision(now, required, busy, action):
    got, why = reboot_window.decide(ARGS, at(now), required, busy)
    assert got == action, why


def test_window_past_midnight():
    late = {"day": "Sun", "start": "23:30", "minutes": 60}
    assert reboot_window.minutes_into_window(at("Sun 23:45"), **late) == 15
    assert reboot_window.minutes_into_window(at("Mon 00:29"), **late) == 59
    assert reboot_window.minutes_into_window(at("Mon 00:30"), **late) is None


def test_run_waits_for_a_backup_then_reboots_and_gives_up_at_the_window_end(monkeypatch, capsys):
    monkeypatch.setattr(reboot_window, "read_required", lambda: ["libc6"])
    monkeypatch.setattr(reboot_window, "dpkg_locked", lambda: False)
    clock = {"t": time.mktime(at("Sun 02:50"))}
    busy = iter([["siaga-backup-offline.service"], []])
    monkeypatch.setattr(reboot_window, "busy_units", lambda: next(busy))
    reboots = []

    def sleep(s):
        clock["t"] += s

    assert reboot_window.run(ARGS, clock=lambda: clock["t"], sleep=sleep, reboot=lambda: reboots.append(1)) == 0
    assert reboots == [1]
    assert "waiting for siaga-backup-offline.service" in capsys.readouterr().out

    clock["t"] = time.mktime(at("Sun 02:58"))  # the backup outlasts the window: no reboot this week
    monkeypatch.setattr(reboot_window, "busy_units", lambda: ["siaga-backup-offline.service"])
    reboots.clear()
    assert reboot_window.run(ARGS, clock=lambda: clock["t"], sleep=sleep, reboot=lambda: reboots.append(1)) == 0
    assert reboots == [] and "outside the window" in capsys.readouterr().out


def test_reboot_window_main_refuses_bad_arguments(capsys):
    assert reboot_window.main([]) == 2
    assert reboot_window.main([json.dumps({"day": "Sunday", "start": "02:00", "minutes": 60})]) == 2
    assert "bad arguments" in capsys.readouterr().err


def test_check_shows_the_updates_and_the_reboot_windows(monkeypatch, capsys):
    from pathlib import Path

    from rich.console import Console

    from drc import cli

    monkeypatch.setattr(cli, "console", Console(width=250))
    example = Path(__file__).resolve().parents[1] / "inventory" / "production.example.yaml"
    assert cli.main(["check", str(example)]) == 0
    out = capsys.readouterr().out
    assert "daily by unattended-upgrades from 2 origin(s)" in out
    assert "reboots when needed: primary Sun 02:00, drc Sun 04:00 (60 min each)" in out
    assert "daily at primary 06:30, drc 05:00" in out
