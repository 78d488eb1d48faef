"""The security services of issue 12 on the real lab hosts (SOP IN-2, IN-4): Apache's TLS and
headers seen from the outsider (the public), fail2ban banning a source that keeps failing while
the admin path keeps working, kernel and sysctl hardening, auditd.

The fail2ban test changes the lab's ssh_allowlist for one deploy and restores it (and the ban)
itself; it runs last in this file.
"""

from __future__ import annotations

import subprocess

import pytest

from drc.site import load_site
from tests.helpers import lab_host


@pytest.fixture(scope="module")
def site(lab, deployed):
    return load_site(lab.site_file)


def from_outsider(lab, *args: str) -> subprocess.CompletedProcess:
    return lab.netns_exec("outsider", list(args), check=False, input="", timeout=30)


def tls_handshake(lab, address: str, *options: str) -> bool:
    """An openssl s_client handshake from the outsider with these options; True if it completed."""
    proc = from_outsider(lab, "openssl", "s_client", "-connect", f"{address}:443", *options)
    return proc.returncode == 0 and "Cipher is (NONE)" not in proc.stdout


def test_tls_is_mozilla_intermediate_from_the_public_side(lab, site, deployed):
    """TLS 1.2 with an AEAD suite and TLS 1.3 get in; TLS 1.0/1.1 and CBC suites do not. SOP IN-2."""
    address = lab.address(site.hosts_in(site.active_site)[0])
    assert tls_handshake(lab, address, "-tls1_3")
    # Either key type (the lab CA's certificate or a site's own): both suite families offered.
    assert tls_handshake(lab, address, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256")
    assert tls_handshake(lab, address, "-tls1_2", "-cipher", "ECDHE-RSA-CHACHA20-POLY1305:ECDHE-ECDSA-CHACHA20-POLY1305")
    for options in (("-tls1_1",), ("-tls1",), ("-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA"),
                    ("-tls1_2", "-cipher", "ECDHE-RSA-AES256-SHA384:ECDHE-ECDSA-AES256-SHA384"),
                    ("-tls1_2", "-cipher", "AES128-GCM-SHA256:AES256-SHA")):
        assert not tls_handshake(lab, address, *options), options


@pytest.mark.parametrize("path", ["/eproc4/health", "/no-such-page"], ids=["app", "apache-error"])
def test_security_headers_and_no_version_on_every_answer(lab, site, deployed, path):
    address = lab.address(site.hosts_in(site.active_site)[0])
    proc = from_outsider(lab, "curl", "-sk", "-D-", "-o/dev/null", f"https://{address}{path}")
    headers = {}
    for line in proc.stdout.splitlines()[1:]:
        name, _, value = line.partition(":")
        if value:
            headers.setdefault(name.strip().lower(), []).append(value.strip())
    assert headers["strict-transport-security"] == [f"max-age={site.spse_app.hsts_max_age}"]
    assert headers["x-content-type-options"] == ["nosniff"]
    assert headers["x-frame-options"] == ["SAMEORIGIN"]
    assert "frame-ancestors 'self'" in headers["content-security-policy"]
    assert headers["referrer-policy"] == ["strict-origin-when-cross-origin"]
    assert headers["server"] == ["Apache"], "no product version, no OS, not the app's own"
    assert "x-powered-by" not in headers


def test_trace_is_refused(lab, site, deployed):
    """TRACE never echoes a request back: Apache's TraceEnable Off (405), or ModSecurity's CRS first
    where it runs (403, method not allowed)."""
    name = site.hosts_in(site.active_site)[0]
    address = lab.address(name)
    proc = from_outsider(lab, "curl", "-sk", "-X", "TRACE", "-o/dev/null", "-w", "%{http_code}", f"https://{address}/eproc4/health")
    assert proc.stdout in ("403", "405")
    assert "TraceEnable Off" in lab_host(lab, name).file("/etc/apache2/conf-enabled/siaga-security.conf").content_string


# --- kernel settings, auditd -----------------------------------------------------------------

def sysctl_state(host, keys) -> dict[str, tuple[str, str]]:
    """The same reading as the role's fact (roles/os_hardening/facts.SysctlState), on the host."""
    from roles.os_hardening.facts import SysctlState

    fact = SysctlState()
    return fact.process(host.check_output(fact.command(sorted(keys)).get_raw_value()).splitlines())


@pytest.mark.parametrize("name", ["primary", "drc"])
def test_kernel_settings_applied_where_writable_and_the_rest_reported(lab, site, deployed, name):
    """Every key of the set is at its value, or this host may not write it (a container's read-only
    /proc/sys, or a kernel without the key) and the deploy said so. SOP IN-2."""
    from roles.os_hardening.deploy import SYSCTL_FILE, sysctl_settings

    host = lab_host(lab, name)
    wanted = sysctl_settings(site)
    boot = host.file(SYSCTL_FILE).content_string
    assert all(f"-{k} = {v}" in boot for k, v in wanted.items())
    state = sysctl_state(host, wanted)
    off = {k: st for k, st in state.items() if st[1].split() != wanted[k].split()}
    assert all(kind in ("ro", "missing") for kind, _ in off.values()), off  # every writable key was set
    readonly = [k for k, (kind, _) in off.items() if kind == "ro"]
    if readonly:
        assert "not applied, /proc/sys is read-only here" in deployed.output
        assert all(k in deployed.output for k in readonly)


def test_audit_rules_installed_everywhere(lab, deployed):
    from roles.os_hardening.deploy import AUDIT_RULES, render_audit_rules

    for name in ("primary", "drc"):
        host = lab_host(lab, name)
        assert host.package("auditd").is_installed
        assert host.file(AUDIT_RULES).content_string == render_audit_rules()


def test_auditd_records_a_privileged_command(lab, deployed):
    """On a host whose kernel takes audit rules: sudo shows up under the key `privileged`. SOP IN-4."""
    from roles.os_hardening.facts import AuditAvailable

    host = lab_host(lab, "primary")
    if not AuditAvailable().process(host.check_output(AuditAvailable().command()).splitlines()):
        pytest.skip("the lab hosts are systemd-nspawn containers: the kernel's audit is one per machine and "
                    "nspawn's seccomp filter refuses the audit netlink socket in a container (auditctl -s: "
                    "'audit support not in kernel'); auditd is installed and configured but cannot run here")
    assert "-k privileged" in host.check_output("auditctl -l") or "key=privileged" in host.check_output("auditctl -l")
    marker = host.check_output("date +%s")
    host.run_expect([0], "sudo -u nobody sudo -n true || true")
    assert host.run(f"ausearch -k privileged --start @{marker}").rc == 0


@pytest.mark.parametrize("name", ["primary", "drc"])
def test_no_core_dumps_idle_logout_and_passwords_checked(lab, deployed, name):
    """A new admin login session may not dump core (pam_limits read siaga's file) and its login
    shell logs out when idle; a password set with passwd goes through pam_pwquality; login.defs
    hashes with siaga's rounds. SOP IN-2."""
    from roles.os_hardening.deploy import LOGIN_DEFS, login_defs

    site = load_site(lab.site_file)
    session = lab_host(lab, name, sudo=False)  # sshd's PAM session itself, not sudo's
    assert session.check_output("ulimit -Hc") == "0" and session.check_output("ulimit -Sc") == "0"
    # A login shell gets the idle logout, read-only: unsetting it fails.
    assert session.check_output("bash -lc 'echo $TMOUT'") == str(site.os_hardening.shell_idle_logout_seconds)
    assert session.run("bash -lc 'unset TMOUT'").rc != 0
    host = lab_host(lab, name)
    assert host.run("grep -E '^password.*pam_pwquality.so' /etc/pam.d/common-password").rc == 0
    defs = dict(ln.split(None, 1) for ln in host.file(LOGIN_DEFS).content_string.splitlines() if ln.startswith("SHA_CRYPT_"))
    assert defs == login_defs(site)


@pytest.mark.parametrize("name", ["primary", "drc"])
def test_private_tmpdir_shm_noexec_and_needrestart_lists_only(lab, deployed, name):
    """Each session its own $TMPDIR (libpam-tmpdir), the admin's login and sudo's alike; nothing runs
    from /dev/shm, now and at boot; needrestart is configured to list, never to restart. SOP IN-2."""
    from roles.os_hardening.deploy import FSTAB, NEEDRESTART_FILE, SHM_LINE, SHM_OPTIONS

    session = lab_host(lab, name, sudo=False)  # sshd's PAM session
    uid = session.check_output("id -u")
    assert session.check_output("echo $TMPDIR") == f"/tmp/user/{uid}"
    assert session.check_output('stat -c "%a %u" "$TMPDIR"') == f"700 {uid}"
    host = lab_host(lab, name)  # through sudo: root's own
    assert host.check_output("echo $TMPDIR") == "/tmp/user/0"
    assert host.check_output('stat -c "%a %u" "$TMPDIR"') == "700 0"
    assert session.run("ls /tmp/user/0").rc != 0  # the admin cannot look into root's

    options = set(host.check_output("findmnt -n -o OPTIONS --mountpoint /dev/shm").split(","))
    assert set(SHM_OPTIONS) <= options, options
    assert SHM_LINE in host.file(FSTAB).content_string.splitlines()
    probe = f"/dev/shm/siaga-exec-probe-{uid}"
    ran = session.run(f"cp /bin/true {probe} && chmod 755 {probe} && {probe}; rc=$?; rm -f {probe}; exit $rc")
    assert ran.rc == 126 and "Permission denied" in ran.stderr, (ran.rc, ran.stderr)

    assert host.package("needrestart").is_installed
    assert "$nrconf{restart} = 'l';" in host.file(NEEDRESTART_FILE).content_string.splitlines()
    # needrestart's own config (which reads conf.d/*.conf last) ends list-only.
    effective = host.run("perl -e 'our %nrconf; do q(/etc/needrestart/needrestart.conf); print $nrconf{restart}'")
    assert effective.stdout == "l", (effective.stdout, effective.stderr)


@pytest.mark.parametrize("name", ["primary", "drc"])
def test_debsums_daily_by_a_timer_runs_debians_job(lab, deployed, name):
    """debsums' own daily job is switched on and a systemd timer runs it (no cron on these hosts);
    debsums itself verifies a package against dpkg's checksums. SOP IN-2."""
    from roles.file_integrity.debsums import DAILY_JOB, DEFAULTS_FILE, UNIT

    host = lab_host(lab, name)
    assert "CRON_CHECK=daily" in host.file(DEFAULTS_FILE).content_string.splitlines()
    timer = host.service(f"{UNIT}.timer")
    assert timer.is_running and timer.is_enabled
    assert f"path={DAILY_JOB} " in host.check_output(f"systemctl show -p ExecStart {UNIT}.service")
    assert host.run("debsums -s libpam-tmpdir needrestart").rc == 0


# --- fail2ban (last: changes the lab's allowlist for one deploy and restores it) -----------------

def banned(host, jail: str) -> list[str]:
    return host.check_output(f"fail2ban-client get {jail} banip").split()


def ssh_attempt(argv_prefix: list[str], key, user: str, address: str) -> subprocess.CompletedProcess:
    """One login attempt. A ban that lands mid-attempt leaves the client waiting on a connection
    whose packets are now rejected (TCP ignores ICMP errors on an established connection), past
    ssh's ConnectTimeout: that attempt counts as failed after 10 s."""
    argv = [*argv_prefix, "ssh", "-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5",
            f"{user}@{address}", "true"]
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 255, "", "timed out")


def test_fail2ban_bans_a_source_that_keeps_failing_never_the_admin(lab, site, deployed, tmp_path):
    """A source the firewall lets reach sshd (an LPSE allowlisting a whole office network: here the
    outsider's address is added for one deploy) fails to log in again and again: fail2ban bans it in
    its own nftables table (its next connection is refused) and logs it; the admin workstation's own
    failures never get it banned and the admin keeps getting in. siaga's firewall reload keeps the
    ban, fail2ban's reload keeps siaga's table. SOP IN-2, IN-4, RA-2."""
    import yaml

    from drc.lab.lab import ADMINS, wait_for
    from tests.helpers import run_deploy, tcp_from

    target = site.hosts_in(site.active_site)[0]
    address, outsider = lab.address(target), lab.address("outsider")
    workstation = str(site.admin_workstations[0].network_address)
    host = lab_host(lab, target)
    key = tmp_path / "intruder"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    data = yaml.safe_load(lab.site_file.read_text())
    data["ssh_allowlist"].append(f"{outsider}/32")
    office_wide = tmp_path / "site.yaml"
    office_wide.write_text(yaml.safe_dump(data))
    restored = False
    # A clean start: failures of the outsider within find_time from another test (or from before a
    # fail2ban restart, which reads the journal back that far) may have banned it already.
    host.run("fail2ban-client set sshd unbanip %s", outsider)
    try:
        opened = run_deploy(lab, "deploys/remote_access.py", "--limit", target, site_file=office_wide)
        assert opened.ok, opened.output[-3000:]
        assert tcp_from(lab, "outsider", address, site.ssh_hardening.port) == "open"

        # The admin workstation fails more often than max_retry: ignored, never banned.
        for _ in range(site.fail2ban.max_retry + 1):
            assert ssh_attempt([], key, "no-such-admin", address).returncode != 0
        # The outsider keeps failing until its connection is refused (or the deadline passes).
        netns = ["ip", "netns", "exec", lab.state()["hosts"]["outsider"]["netns"]]

        def outsider_refused() -> bool:
            if tcp_from(lab, "outsider", address, site.ssh_hardening.port) == "refused":
                return True
            ssh_attempt(netns, key, "intruder", address)
            return False

        wait_for("the outsider banned after failed logins", outsider_refused, deadline_s=90)
        assert outsider in banned(host, "sshd")
        assert workstation not in banned(host, "sshd")
        log = host.file("/var/log/fail2ban.log").content_string
        assert f"[sshd] Ban {outsider}" in log
        assert f"[sshd] Ignore {workstation} by ip" in log
        assert subprocess.run([*lab.ssh_cmd(target, user=ADMINS[0]), "true"], capture_output=True, timeout=30).returncode == 0

        # The site file's allowlist back: siaga's firewall reloads its own table, the ban stays.
        back = run_deploy(lab, "deploys/remote_access.py", "--limit", target)
        restored = back.ok
        assert back.ok, back.output[-3000:]
        assert outsider in host.check_output("nft list table inet f2b-table")
        assert tcp_from(lab, "outsider", address, site.ssh_hardening.port) == "refused"
        # fail2ban's reload keeps siaga's table (and the ban).
        siaga_table = host.check_output("nft list table inet siaga")
        host.run_expect([0], "fail2ban-client reload")
        wait_for("the ban back after fail2ban's reload", lambda: outsider in banned(host, "sshd"), deadline_s=30)
        assert host.check_output("nft list table inet siaga") == siaga_table
    finally:
        if not restored:
            run_deploy(lab, "deploys/remote_access.py", "--limit", target)
        host.run("fail2ban-client set sshd unbanip %s", outsider)
    # Unbanned and no longer allowlisted: the firewall drops the outsider again.
    assert tcp_from(lab, "outsider", address, site.ssh_hardening.port) == "timeout"
