"""Remote access after the site deploy, on the real lab hosts (SOP RA-1..RA-4, IN-2).

Tests that disrupt a host (a broken sshd setting, a firewall that blocks the admin, a reboot)
restore it by the mechanisms under test, and run after the read-only ones (file order).
"""

from __future__ import annotations

import subprocess

import pytest
import yaml

from drc.lab.lab import ADMINS
from drc.site import load_site
from roles.ssh_hardening.deploy import allow_groups
from tests.helpers import assert_no_change_rerun, lab_host, run_deploy, tcp_from

HOSTS = ("primary", "drc")


def ssh(lab, host: str, user: str, *args: str, key=None, command: str = "true") -> subprocess.CompletedProcess:
    cmd = lab.ssh_cmd(host, user=user, key=key)
    return subprocess.run([*cmd[:-1], *args, cmd[-1], command], capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def site(lab, deployed):
    return load_site(lab.site_file)


@pytest.mark.parametrize("name", HOSTS)
def test_sshd_effective_config_has_every_control(lab, site, name):
    s = site.ssh_hardening
    effective, allow = {}, []
    for line in lab_host(lab, name).check_output("sshd -T").splitlines():
        key, _, value = line.partition(" ")
        effective[key] = value
        if key == "allowgroups":  # sshd -T prints one line per group
            allow.append(value)
    expected = {
        "permitrootlogin": "no",
        "passwordauthentication": "no",
        "kbdinteractiveauthentication": "no",
        "pubkeyauthentication": "yes",
        "permitemptypasswords": "no",
        "maxauthtries": str(s.max_auth_tries),
        "logingracetime": "30",
        "clientaliveinterval": str(s.client_alive_interval),
        "clientalivecountmax": str(s.client_alive_count_max),
        "allowtcpforwarding": "no",
        "allowagentforwarding": "no",
        "allowstreamlocalforwarding": "no",
        "x11forwarding": "no",
        "permittunnel": "no",
        "gatewayports": "no",
        "loglevel": "VERBOSE",
        "ciphers": ",".join(s.ciphers),
        "macs": ",".join(s.macs),
        "kexalgorithms": ",".join(s.kex_algorithms),
        "banner": "/etc/issue.net",
    }
    wrong = {k: (effective.get(k), v) for k, v in expected.items() if effective.get(k) != v}
    assert not wrong, f"sshd -T differs (got, want): {wrong}"
    # The admins first; the service groups (uploads sync, backups) get forced commands only.
    assert allow == allow_groups(site)
    assert not any(c.endswith("-cbc") for c in effective["ciphers"].split(","))
    assert not any("sha1" in m or "md5" in m for m in effective["macs"].split(","))


@pytest.mark.parametrize("name", HOSTS)
def test_root_login_is_refused_even_with_an_authorized_key(lab, deployed, name):
    # The lab image authorises the lab key for root (as cloud images do): only sshd refuses it.
    assert lab_host(lab, name).file("/root/.ssh/authorized_keys").exists
    result = ssh(lab, name, "root")
    assert result.returncode == 255 and "Permission denied" in result.stderr


@pytest.mark.parametrize("name", HOSTS)
def test_password_login_is_not_offered(lab, deployed, name):
    result = ssh(lab, name, ADMINS[0], "-v", "-o", "PubkeyAuthentication=no",
                 "-o", "PreferredAuthentications=password,keyboard-interactive")
    assert result.returncode == 255
    assert "Authentications that can continue: publickey\n" in result.stderr


@pytest.mark.parametrize("name", HOSTS)
def test_each_admin_logs_in_with_own_key_and_can_sudo(lab, deployed, name):
    for who in ADMINS:
        result = ssh(lab, name, who, key=lab.admin_key(who), command="id -un; sudo -n id -u")
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [who, "0"]
    wrong_key = ssh(lab, name, ADMINS[1], key=lab.admin_key(ADMINS[0]))
    assert wrong_key.returncode == 255


def test_an_account_outside_the_admin_group_is_refused(lab, deployed):
    host = lab_host(lab, "drc")
    pub = lab.admin_key(ADMINS[1]).with_suffix(".pub").read_text().strip()
    host.run_expect([0], "useradd -m -s /bin/bash tamu && install -d -m700 -o tamu -g tamu ~tamu/.ssh")
    try:
        host.run_expect([0], f"echo '{pub}' > ~tamu/.ssh/authorized_keys && chown tamu: ~tamu/.ssh/authorized_keys")
        result = ssh(lab, "drc", "tamu", key=lab.admin_key(ADMINS[1]))
        assert result.returncode == 255 and "Permission denied" in result.stderr
    finally:
        host.run("userdel -r tamu")


@pytest.mark.parametrize("name", HOSTS)
def test_firewall_ruleset_loaded_default_deny(lab, site, name):
    host = lab_host(lab, name)
    ruleset = host.check_output("nft list table inet siaga")
    assert "hook input priority filter; policy drop;" in ruleset
    assert str(site.ssh_allowlist[0]) in ruleset
    assert host.service("nftables").is_enabled


def test_allowlist_refuses_the_outsider_and_admits_the_admin(lab, deployed):
    """From `outsider` SSH and PostgreSQL are dropped; from the admin workstation SSH works."""
    for name in HOSTS:
        address = lab.address(name)
        assert tcp_from(lab, "outsider", address, 22) == "timeout"
        assert tcp_from(lab, "outsider", address, 5432) == "timeout"
        assert ssh(lab, name, ADMINS[0]).returncode == 0


def test_postgresql_port_passes_only_between_the_sites(lab, deployed):
    # Through the firewall means 'open' (a server listens) or 'refused' (none yet): not dropped.
    assert tcp_from(lab, "drc", lab.address("primary"), 5432) in ("open", "refused")
    assert tcp_from(lab, "primary", lab.address("drc"), 5432) in ("open", "refused")
    # SSH between the sites is open too, but only for the forced-command keys of uploads sync and
    # backups (roles/uploads_sync, roles/backup); the outsider stays dropped (test above).


def test_web_ports_open_on_the_active_site_only(lab, site, deployed):
    active, standby = site.hosts_in(site.active_site)[0], next(h for h in HOSTS if h not in site.hosts_in(site.active_site))
    for port in site.firewall.web_ports:
        assert tcp_from(lab, "outsider", lab.address(active), port) in ("open", "refused")
        assert tcp_from(lab, "outsider", lab.address(standby), port) == "timeout"


def test_dropped_packets_are_counted_for_the_log(lab, deployed):
    host = lab_host(lab, "primary")
    before = host.check_output("nft list chain inet siaga input")
    tcp_from(lab, "outsider", lab.address("primary"), 2222, timeout=0.5)
    after = host.check_output("nft list chain inet siaga input")
    assert 'log prefix "siaga-drop ' in after
    assert before != after  # the drop rule's counter moved


def test_second_deploy_changes_nothing(lab, deployed):
    assert_no_change_rerun(lab, "deploys/site.py", preview=True)


# --- disruptive, self-restoring --------------------------------------------------------------

def test_broken_sshd_setting_is_never_put_live(lab, deployed, tmp_path):
    host = lab_host(lab, "primary")
    live_before = host.file("/etc/ssh/sshd_config").sha256sum
    data = yaml.safe_load(lab.site_file.read_text())
    data["ssh_hardening"] = {"extra_settings": {"Ciphers": "no-such-cipher"}}
    bad_site = tmp_path / "site.yaml"
    bad_site.write_text(yaml.safe_dump(data))
    result = run_deploy(lab, "deploys/site.py", "--limit", "primary", site_file=bad_site)
    assert not result.ok
    assert "sshd -t" in result.output
    assert host.file("/etc/ssh/sshd_config").sha256sum == live_before
    assert host.service("ssh").is_running
    assert ssh(lab, "primary", ADMINS[0]).returncode == 0
    assert "no-such-cipher" not in host.check_output("sshd -T")


def test_sshd_setting_that_shuts_the_admin_out_rolls_back_by_itself(lab, deployed, tmp_path):
    """`sshd -t` accepts `AllowUsers` naming only a vendor account (sshd then admits nobody else):
    the new config must be confirmed by a new admin SSH session or the host puts the old one back
    by itself (roles/admin_confirm.py). SOP RA-2, RA-3, IN-2."""
    host = lab_host(lab, "drc")
    live_before = host.file("/etc/ssh/sshd_config").sha256sum
    data = yaml.safe_load(lab.site_file.read_text())
    data.setdefault("ssh_hardening", {})["extra_settings"] = {"AllowUsers": "vendor-support"}
    data.setdefault("firewall", {})["rollback_seconds"] = 20  # the shortest window this test can wait for
    bad_site = tmp_path / "site.yaml"
    bad_site.write_text(yaml.safe_dump(data))
    result = run_deploy(lab, "deploys/remote_access.py", "--limit", "drc", site_file=bad_site)
    assert not result.ok
    assert "the new sshd_config shut out admin SSH; the previous sshd_config was restored" in result.output
    assert result.seconds < 20 + 60
    assert ssh(lab, "drc", ADMINS[0]).returncode == 0
    host = lab_host(lab, "drc")
    assert host.file("/etc/ssh/sshd_config").sha256sum == live_before
    assert "vendor-support" not in host.check_output("sshd -T")
    assert "previous /etc/ssh/sshd_config restored" in host.check_output("journalctl -q -t siaga-sshd --no-pager")
    assert not host.service("siaga-sshd-rollback.timer").is_running


def test_firewall_that_blocks_the_admin_rolls_back_by_itself(lab, site, deployed):
    host = lab_host(lab, "drc")
    before = host.check_output("nft list table inet siaga")
    result = run_deploy(lab, "tests/deploys/block_admin_firewall.py", "--limit", "drc")
    assert not result.ok
    assert "blocked admin SSH; the previous ruleset was restored" in result.output
    assert result.seconds < site.firewall.rollback_seconds + 60
    assert ssh(lab, "drc", ADMINS[0]).returncode == 0
    assert lab_host(lab, "drc").check_output("nft list table inet siaga") == before
    assert "192.0.2.0/24" not in lab_host(lab, "drc").file("/etc/nftables.conf").content_string


def test_ruleset_survives_a_reboot(lab, deployed):
    """A real reboot: the namespace (and kernel ruleset) is recreated, nftables.service reloads it."""
    lab_host(lab, "drc").run_expect([0], "nft add table inet reboot_probe")
    lab.restart_host("drc")
    host = lab_host(lab, "drc")
    tables = host.check_output("nft list tables")
    assert "reboot_probe" not in tables, "the restart did not reset kernel state"
    assert "table inet siaga" in tables
    assert tcp_from(lab, "outsider", lab.address("drc"), 22) == "timeout"
    assert ssh(lab, "drc", ADMINS[0]).returncode == 0
    # os_hardening's /etc/fstab line for /dev/shm applied by the boot itself (systemd-remount-fs). SOP IN-2.
    from roles.os_hardening.deploy import SHM_OPTIONS

    assert set(SHM_OPTIONS) <= set(host.check_output("findmnt -n -o OPTIONS --mountpoint /dev/shm").split(","))
