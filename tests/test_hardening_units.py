"""The security controls of issue 12 (SOP IN-2), rendered and checked without a lab: the shared
confirm-or-roll-back mechanism, sshd's listening ports and MACs, Apache's TLS and headers."""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import paramiko
import pytest

from drc.site import SiteError, load_site
from roles.spse_app.defaults import MOZILLA_INTERMEDIATE_CIPHERS, SpseAppSettings
from roles.spse_app.deploy import render_security_conf, render_vhost
from roles.ssh_hardening.defaults import SshHardeningSettings
from roles.ssh_hardening.deploy import render_sshd_config
from roles.ssh_hardening.operations import rollback_script
from tests.test_roles_render import lab_like, make_site

REPO = Path(__file__).resolve().parent.parent


def _functions(path: Path) -> set[str]:
    return {n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)}


def test_one_confirm_mechanism_for_firewall_and_sshd():
    """The new-session check and the rollback timer live in roles/admin_confirm.py only; both
    operations use it (one concept, one place)."""
    assert {"arm", "disarm", "confirm", "new_ssh_session_error"} <= _functions(REPO / "roles/admin_confirm.py")
    for role in ("firewall", "ssh_hardening"):
        ops = REPO / "roles" / role / "operations.py"
        assert not {"new_ssh_session_error", "_confirm_admin_ssh"} & _functions(ops), ops
        text = ops.read_text()
        assert "admin_confirm.arm(" in text and "admin_confirm.confirm(" in text and "admin_confirm.disarm(" in text


def test_sshd_rollback_script_restores_the_saved_file_and_reloads(tmp_path):
    live, previous = tmp_path / "sshd_config", tmp_path / "previous"
    live.write_text("AllowUsers vendor\n")
    previous.write_text("AllowGroups admins\n")
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("systemctl", "logger"):
        (bin_dir / name).write_text(f'#!/bin/sh\necho "{name} $*" >> {calls}\n')
        (bin_dir / name).chmod(0o755)
    script = rollback_script(str(live), str(previous), "ssh.service")
    proc = subprocess.run(["sh", "-c", script], env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert live.read_text() == "AllowGroups admins\n"
    assert calls.read_text().splitlines()[0] == "systemctl reload ssh.service"
    assert "previous" in calls.read_text() and "restored" in calls.read_text()


def _sshd_values(config: str, keyword: str) -> list[str]:
    return [ln.split(None, 1)[1] for ln in config.split("\nMatch ")[0].splitlines() if ln.startswith(keyword + " ")]


def test_sshd_keeps_the_connection_port_while_it_moves():
    """A port move takes two deploys: sshd listens on both meanwhile, so the confirming session (on
    connection.port) still gets in; the firewall opens both (roles/firewall/rules.py). SOP RA-2."""
    assert _sshd_values(render_sshd_config(make_site()), "Port") == ["22"]
    moving = make_site(ssh_hardening={"port": 2222})
    assert _sshd_values(render_sshd_config(moving), "Port") == ["2222", "22"]
    moved = make_site(ssh_hardening={"port": 2222}, connection={**lab_like()["connection"], "port": 2222})
    assert _sshd_values(render_sshd_config(moved), "Port") == ["2222"]


def test_macs_are_encrypt_then_mac_only_and_paramiko_speaks_one():
    """ssh-audit warns on encrypt-and-MAC (hmac-sha2-256/512 without -etm); paramiko 4 (pyinfra,
    Fabric) speaks the etm ones, and AES-GCM, whose MAC is built in."""
    macs = SshHardeningSettings().macs
    assert macs and all(m.endswith("-etm@openssh.com") for m in macs)
    assert set(macs) & set(paramiko.Transport._preferred_macs)
    assert {"aes128-gcm@openssh.com", "aes256-gcm@openssh.com"} & set(paramiko.Transport._preferred_ciphers)


def test_vhost_is_mozilla_intermediate_with_security_headers():
    vhost = render_vhost(SpseAppSettings(), "lpse.example")
    https = vhost.split("<VirtualHost *:443>")[1]
    assert "SSLProtocol -all +TLSv1.2 +TLSv1.3" in https
    assert f"SSLCipherSuite {':'.join(MOZILLA_INTERMEDIATE_CIPHERS)}" in https
    assert not any(c for c in MOZILLA_INTERMEDIATE_CIPHERS if "CBC" in c or c.endswith("-SHA"))
    assert "SSLSessionTickets off" in https
    for header in ('Strict-Transport-Security "max-age=63072000"', 'X-Content-Type-Options "nosniff"',
                   'X-Frame-Options "SAMEORIGIN"', "Content-Security-Policy \"frame-ancestors 'self'\"",
                   'Referrer-Policy "strict-origin-when-cross-origin"'):
        assert f"Header always set {header}" in https, header
    assert "Strict-Transport-Security" not in render_vhost(SpseAppSettings(hsts_max_age=0), "lpse.example")


def test_security_conf_hides_the_version_and_refuses_trace():
    conf = render_security_conf()
    lines = {ln.strip() for ln in conf.splitlines() if ln.strip() and not ln.startswith("#")}
    assert lines == {"ServerTokens Prod", "ServerSignature Off", "TraceEnable Off"}


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl not installed here")
def test_openssl_knows_every_default_suite_and_none_is_cbc():
    out = subprocess.run(["openssl", "ciphers", "-v", ":".join(MOZILLA_INTERMEDIATE_CIPHERS)],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    out = [ln for ln in out if " TLSv1.3 " not in ln]  # openssl lists its TLS 1.3 suites (all AEAD) besides
    assert len(out) == len(MOZILLA_INTERMEDIATE_CIPHERS)
    assert all("Enc=AESGCM" in ln or "Enc=CHACHA20" in ln for ln in out), out
    assert all("Kx=ECDH" in ln or "Kx=DH" in ln for ln in out), out


def test_a_cbc_suite_in_the_site_file_is_refused_with_key_and_fix(tmp_path):
    import yaml

    data = lab_like(spse_app={"tls_ciphers": ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-SHA"]})
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SiteError) as exc:
        load_site(path)
    msg = str(exc.value)
    assert "key 'spse_app.tls_ciphers" in msg and "ECDHE-RSA-AES128-SHA" in msg and "Fix: " in msg


def test_sysctl_boot_file_has_the_set_and_the_site_file_adjusts_it():
    from roles.os_hardening.deploy import render_sysctl, sysctl_settings
    from roles.os_hardening.sysctl import SYSCTL

    lines = [ln for ln in render_sysctl(make_site()).splitlines() if ln and not ln.startswith("#")]
    assert {ln.lstrip("-").split(" = ")[0]: ln.split(" = ")[1] for ln in lines} == SYSCTL
    assert all(ln.startswith("-") for ln in lines), "a key a kernel lacks must not fail systemd-sysctl"
    site = make_site(os_hardening={"sysctl_skip": ["net.ipv4.ip_forward"], "sysctl_extra": {"kernel.sysrq": "176"}})
    wanted = sysctl_settings(site)
    assert "net.ipv4.ip_forward" not in wanted and wanted["kernel.sysrq"] == "176"


def test_sysctl_set_spares_what_would_cut_the_admin_or_replication():
    from roles.os_hardening.sysctl import SYSCTL

    assert not {k for k in SYSCTL if "accept_ra" in k or "tcp_timestamps" in k or "modules_disabled" in k or "kexec" in k}


@pytest.mark.parametrize("over,key", [
    ({"sysctl_skip": ["net ipv4"]}, "os_hardening.sysctl_skip"),
    ({"sysctl_extra": {"kernel.sysrq": "1; reboot"}}, "os_hardening.sysctl_extra"),
    ({"password_min_length": 4}, "os_hardening.password_min_length"),  # weak passwords
    ({"password_hash_rounds": 1000}, "os_hardening.password_hash_rounds"),
])
def test_bad_hardening_settings_are_refused_with_key_and_fix(tmp_path, over, key):
    import yaml

    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(lab_like(os_hardening=over)))
    with pytest.raises(SiteError) as exc:
        load_site(path)
    assert f"key '{key}" in str(exc.value) and "Fix: " in str(exc.value)


def test_audit_rules_watch_privileged_commands_and_identity_files():
    from roles.os_hardening.deploy import SIAGA_PATHS, render_audit_rules

    rules = [ln for ln in render_audit_rules().splitlines() if ln and not ln.startswith("#")]
    assert "-a always,exit -F arch=b64 -S execve -C uid!=euid -F euid=0 -k privileged" in rules
    for path in ("/etc/sudoers", "/etc/sudoers.d/", "/etc/passwd", "/etc/shadow", "/etc/group", "/etc/ssh/", *SIAGA_PATHS):
        assert any(r.startswith(f"-w {path} -p wa") for r in rules), path
    assert "-w /usr/bin/sudo -p x -k sudo" in rules


def test_fail2ban_never_bans_the_sites_own_hosts_or_workstations():
    from roles.fail2ban.deploy import JAIL_FILE, config_files
    from roles.ssh_hardening.deploy import never_penalised

    site = make_site(fail2ban={"extra_ignore": ["192.0.2.0/24"]})
    jail = config_files(site)[JAIL_FILE]
    ignore = next(ln for ln in jail.splitlines() if ln.startswith("ignoreip = ")).split()[2:]
    assert set(ignore) == {"127.0.0.1/8", "::1", "192.0.2.0/24", *never_penalised(site)}
    assert {"10.213.0.1/32", "10.213.1.10/32", "10.213.2.10/32"} <= set(ignore)
    assert "banaction = nftables[type=multiport]" in jail
    sshd = jail.split("[sshd]")[1].split("[apache-auth]")[0]
    assert "backend = systemd" in sshd and "port = 22" in sshd
    moving = config_files(make_site(ssh_hardening={"port": 2222}))[JAIL_FILE]
    assert "port = 2222,22" in moving


def test_unused_modules_are_never_loaded_but_portable_media_are():
    from roles.os_hardening.deploy import render_modprobe

    text = render_modprobe()
    for module in ("dccp", "sctp", "rds", "tipc", "cramfs", "firewire-core"):
        assert f"install {module} /bin/false" in text and f"blacklist {module}" in text
    assert "usb-storage" not in text and "udf" not in text  # BK-9: offline copies on portable media


def test_core_dumps_off_by_default_and_a_site_may_keep_them():
    """SOP IN-2: no core of a process holding secrets, from a login session or a service."""
    from roles.os_hardening.deploy import HEADER, ROLE_DIR, render

    assert make_site().os_hardening.core_dumps is False

    limits = [ln.split() for ln in render(ROLE_DIR, "limits-core.conf.j2", header=HEADER).splitlines() if ln and not ln.startswith("#")]
    assert limits == [["*", "soft", "core", "0"], ["*", "hard", "core", "0"]]
    coredump = render(ROLE_DIR, "coredump.conf.j2", header=HEADER)
    assert "[Coredump]\nStorage=none\nProcessSizeMax=0\n" in coredump
    assert make_site(os_hardening={"core_dumps": True}).os_hardening.core_dumps is True


def test_password_quality_and_hash_rounds_follow_the_site_file():
    from roles.os_hardening.deploy import login_defs, render_pwquality

    assert login_defs(make_site()) == {"SHA_CRYPT_MIN_ROUNDS": "65536", "SHA_CRYPT_MAX_ROUNDS": "65536"}
    site = make_site(os_hardening={"password_min_length": 20, "password_hash_rounds": 100000})
    assert login_defs(site)["SHA_CRYPT_MIN_ROUNDS"] == "100000"
    text = render_pwquality(site)
    assert "minlen = 20" in text.splitlines() and "enforce_for_root" in text


def test_idle_shells_log_out_and_cannot_turn_it_off():
    from roles.os_hardening.deploy import HEADER, ROLE_DIR, render

    assert make_site().os_hardening.shell_idle_logout_seconds == 900
    lines = [ln for ln in render(ROLE_DIR, "idle-logout.sh.j2", header=HEADER, seconds=600).splitlines() if ln and not ln.startswith("#")]
    assert lines == ["TMOUT=600", "readonly TMOUT", "export TMOUT"]


def test_private_tmpdir_shm_noexec_and_needrestart_list_only_by_default():
    """SOP IN-2 (Lynis DEB-0280, FILE-6374, DEB-0831): on by default; needrestart lists, never restarts."""
    from roles.os_hardening.deploy import HEADER, ROLE_DIR, SHM_LINE, render
    from roles.upload_staging import STAGING_DIR

    s = make_site().os_hardening
    assert (s.private_tmpdir, s.dev_shm_noexec, s.needrestart) == (True, True, True)
    assert SHM_LINE.split() == ["tmpfs", "/dev/shm", "tmpfs", "rw,nosuid,nodev,noexec", "0", "0"]
    conf = [ln for ln in render(ROLE_DIR, "needrestart.conf.j2", header=HEADER).splitlines() if ln and not ln.startswith("#")]
    assert conf == ["$nrconf{restart} = 'l';"]
    # Uploads are staged where the admin's SFTP can write, never in sudo's private $TMPDIR.
    assert STAGING_DIR == "/tmp"
    off = make_site(os_hardening={"private_tmpdir": False, "dev_shm_noexec": False, "needrestart": False}).os_hardening
    assert (off.private_tmpdir, off.dev_shm_noexec, off.needrestart) == (False, False, False)


def test_debsums_runs_debians_daily_job_from_a_timer():
    """SOP IN-2 (Lynis PKGS-7370): Debian's own job, daily by a systemd timer (no cron on the hosts)."""
    from roles.file_integrity.debsums import DAILY_JOB, HEADER, ROLE_DIR, render

    fi = make_site().file_integrity
    assert fi.debsums is True and fi.debsums_time == "05:15"
    service = render(ROLE_DIR, "debsums.service.j2", header=HEADER, job=DAILY_JOB)
    assert f"ExecStart={DAILY_JOB}" in service.splitlines() and "IOSchedulingClass=idle" in service
    assert "OnCalendar=*-*-* 05:15:00" in render(ROLE_DIR, "debsums.timer.j2", header=HEADER, at="05:15").splitlines()
    with pytest.raises(SiteError):
        make_site(file_integrity={"debsums_time": "5:15pm"})
