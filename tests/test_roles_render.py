"""Roles rendered for a lab-like site, checked by the programs that read them (no lab needed).

The nftables rulesets are checked with `nft -c -f` and loaded in a throwaway network namespace,
so the rule placement (SSH allowlist, web on the active site, PostgreSQL from the peer) is read
back from the kernel, not from the text. SOP RA-2, RA-3, IN-2.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import paramiko
import pytest

from drc.hosts.inventory import pyinfra_groups
from drc.site import Site, parse_site
from roles.base.deploy import connection_key_problem, render_sudoers, render_timesyncd
from roles.base.defaults import BaseSettings
from roles.base.facts import Account
from roles.firewall.deploy import nft_comment, render_ruleset
from roles.firewall.facts import NftablesTable
from roles.ssh_hardening.deploy import render_sshd_config
from roles.ssh_hardening.defaults import SshHardeningSettings

REPO = Path(__file__).resolve().parent.parent
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHNpYWdhLXRlc3Qta2V5LW5vdC1mb3ItYW55LWhvc3Qh budi@lab"
KEY2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHNpYWdhLXRlc3Qta2V5LW5vdC1mb3ItYW55LWhvc3Qy sari@lab"


def lab_like(**over) -> dict:
    """The shape `siaga lab up` generates (addresses as in the brief)."""
    data = {
        "site": "lab",
        "admin_workstations": ["10.213.0.1/32"],
        "ssh_allowlist": ["10.213.0.0/24"],
        "connection": {"user": "budi", "key_file": "/tmp/siaga-test/id_ed25519"},
        "admins": [{"name": "budi", "full_name": "Budi", "ssh_keys": [KEY]}, {"name": "sari", "ssh_keys": [KEY2]}],
        "sites": {
            "primary": {"label": "A", "networks": ["10.213.1.0/24"], "hosts": ["primary"]},
            "drc": {"label": "B", "networks": ["10.213.2.0/24"], "hosts": ["drc"]},
        },
        "hosts": {"primary": {"address": "10.213.1.10"}, "drc": {"address": "10.213.2.10"}},
        "base": {"ntp_servers": ["10.213.0.1"]},
        "firewall": {"rollback_seconds": 20},
    }
    data.update(over)
    return data


def make_site(**over) -> Site:
    return parse_site(lab_like(**over), Path("lab.yaml"))


# --- firewall ---------------------------------------------------------------------------------

needs_netns = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("ip"),
    reason="needs root, nft and ip (network namespaces)",
)


@pytest.fixture
def netns():
    name = f"siagatest-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def nft(netns: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", netns, "nft", *args], input=stdin, capture_output=True, text=True)


def input_rules(netns: str, content: str) -> list[dict]:
    """Load `content` into the namespace and return the input chain's rules as nft JSON."""
    loaded = nft(netns, "-f", "-", stdin=content)
    assert loaded.returncode == 0, loaded.stderr
    listing = json.loads(nft(netns, "-j", "list", "chain", "inet", "siaga", "input").stdout)
    return [item["rule"] for item in listing["nftables"] if "rule" in item]


def accepts(rules: list[dict]) -> dict[int, list]:
    """dport -> the source match of each accepting rule for it ('anywhere' if none)."""
    out: dict[int, list] = {}
    for rule in rules:
        exprs = rule["expr"]
        if not any("accept" in e for e in exprs):
            continue
        port, source = None, "anywhere"
        for e in exprs:
            match = e.get("match", {})
            field = match.get("left", {}).get("payload", {}).get("field")
            if field == "dport":
                port = match["right"]
            elif field == "saddr":
                right = match["right"]
                source = sorted(_addr(x) for x in right["set"]) if isinstance(right, dict) and "set" in right else [_addr(right)]
        if isinstance(port, int):
            out.setdefault(port, []).append(source)
    return out


def _addr(x) -> str:
    if isinstance(x, dict) and "prefix" in x:
        return f"{x['prefix']['addr']}/{x['prefix']['len']}"
    return x if "/" in str(x) else f"{x}/32" if ":" not in str(x) else f"{x}/128"


@needs_netns
@pytest.mark.parametrize("host", ["primary", "drc"])
def test_nft_accepts_the_ruleset(netns, host):
    content, _ = render_ruleset(make_site(), host)
    path = Path(f"/tmp/siagatest-{os.getpid()}-{host}.nft")
    path.write_text(content)
    try:
        result = nft(netns, "-c", "-f", str(path))
    finally:
        path.unlink()
    assert result.returncode == 0, result.stderr


@needs_netns
def test_primary_active_opens_web_ssh_from_allowlist_postgresql_from_drc(netns):
    rules = accepts(input_rules(netns, render_ruleset(make_site(monitoring={"enabled": False}), "primary")[0]))
    # SSH from the allowlist, and from the DRC for pgBackRest (key forced, roles/backup).
    assert rules[22] == [["10.213.0.0/24"], ["10.213.2.10/32"]]
    assert rules[80] == ["anywhere"] and rules[443] == ["anywhere"]
    assert rules[5432] == [["10.213.2.10/32"]]
    assert set(rules) == {22, 80, 443, 5432}


@needs_netns
def test_drc_standby_has_no_web_and_postgresql_only_from_primary(netns):
    rules = accepts(input_rules(netns, render_ruleset(make_site(monitoring={"enabled": False}), "drc")[0]))
    assert set(rules) == {22, 5432}
    # SSH from the allowlist, and from primary for the uploads sync (rrsync only, roles/uploads_sync)
    # and backups (keys forced, roles/backup): one rule, the same source.
    assert rules[22] == [["10.213.0.0/24"], ["10.213.1.10/32"]]
    assert rules[5432] == [["10.213.1.10/32"]]


@needs_netns
def test_switching_the_active_site_moves_the_web_ports(netns):
    site = make_site(active_site="drc")
    assert 443 not in accepts(input_rules(netns, render_ruleset(site, "primary")[0]))
    assert accepts(input_rules(netns, render_ruleset(site, "drc")[0]))[443] == ["anywhere"]


@needs_netns
def test_ipv6_allowlist_and_extra_rules_load(netns):
    site = make_site(
        ssh_allowlist=["10.213.0.0/24", "2001:db8:5::/48"],
        firewall={"extra_allow": [{"port": 10050, "sources": ["198.51.100.20/32", "2001:db8:9::/64"], "comment": 'LKPP "zabbix"'}]},
    )
    rules = accepts(input_rules(netns, render_ruleset(site, "drc")[0]))
    assert rules[22] == [["10.213.0.0/24"], ["2001:db8:5::/48"], ["10.213.1.10/32"]]
    assert rules[10050] == [["198.51.100.20/32"], ["2001:db8:9::/64"]]


@needs_netns
def test_policy_drop_logged_and_other_tables_untouched(netns):
    assert nft(netns, "add", "table", "inet", "other").returncode == 0
    content, version = render_ruleset(make_site(), "primary")
    input_rules(netns, content)
    input_rules(netns, content)  # loading twice is fine (create-then-delete idiom)
    listing = nft(netns, "list", "ruleset").stdout
    assert "table inet other" in listing
    assert "hook input priority filter; policy drop;" in listing
    assert "hook forward priority filter; policy drop;" in listing
    assert "hook output priority filter; policy accept;" in listing
    assert 'log prefix "siaga-drop "' in listing and "limit rate 10/minute" in listing
    table = NftablesTable().process(nft(netns, "list", "table", "inet", "siaga").stdout.splitlines())
    assert table["comment"] == version


def test_log_drops_off_still_counts():
    content, _ = render_ruleset(make_site(firewall={"log_drops": False}), "primary")
    assert "siaga-drop" not in content and 'counter comment "dropped by the policy"' in content


def test_version_tracks_content():
    site = make_site()
    (a, va), (_b, vb) = render_ruleset(site, "primary"), render_ruleset(site, "drc")
    assert va != vb and f'comment "{va}"' in a
    assert render_ruleset(make_site(), "primary") == (a, va)
    assert render_ruleset(make_site(ssh_allowlist=["10.213.0.0/23"]), "primary")[1] != va


def test_nft_comment_is_safe():
    assert nft_comment('a "b" \\ c\nd') == "a 'b' ' c'd"
    assert len(nft_comment("x" * 300).encode()) <= 120


# --- ssh_hardening ----------------------------------------------------------------------------

def sshd_options(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            out.setdefault(key, []).append(value)
    return out


def test_sshd_config_renders_every_setting():
    s = SshHardeningSettings()
    opts = sshd_options(render_sshd_config(make_site(ssh_hardening={"extra_allow_groups": ["backup"]})))
    expected = {
        "Port": "22", "PermitRootLogin": "no", "PasswordAuthentication": "no", "MaxAuthTries": "2",
        "LoginGraceTime": "30s", "ClientAliveInterval": "300", "ClientAliveCountMax": "2",
        "MaxSessions": "4", "MaxStartups": "10:30:60", "AllowTcpForwarding": "no",
        "AllowAgentForwarding": "no", "X11Forwarding": "no", "PermitTunnel": "no", "LogLevel": "VERBOSE",
        "KexAlgorithms": ",".join(s.kex_algorithms), "Ciphers": ",".join(s.ciphers), "MACs": ",".join(s.macs),
        "HostKeyAlgorithms": ",".join(s.host_key_algorithms), "AllowGroups": "lpse-admin backup siaga-sync siagabak postgres",
        "Subsystem": "sftp internal-sftp -l INFO -f AUTH", "Banner": "/etc/issue.net",
        "AuthenticationMethods": "publickey", "UsePAM": "yes",
    }
    assert {k: opts[k][0] for k in expected} == expected
    assert opts["HostKey"] == ["/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_rsa_key"]
    glob = sshd_options(render_sshd_config(make_site()).split("\nMatch ")[0])  # before the Match blocks
    assert all(len(v) == 1 for k, v in glob.items() if k != "HostKey"), "each keyword once"
    assert "Include" not in opts


def test_sshd_config_options_follow_settings():
    opts = sshd_options(render_sshd_config(make_site(ssh_hardening={
        "port": 2222, "password_authentication": True, "sftp_enabled": False, "banner": "",
        "allow_tcp_forwarding": True, "extra_settings": {"Ciphers": "aes256-ctr"},
    })))
    # connection.port (22) stays while sshd moves to 2222 (roles/ssh_hardening listen_ports).
    assert opts["Port"] == ["2222", "22"] and opts["PasswordAuthentication"] == ["yes"]
    assert opts["AuthenticationMethods"] == ["any"] and opts["AllowTcpForwarding"] == ["yes"]
    assert "Subsystem" not in opts and opts["Banner"] == ["none"]
    # sshd keeps the first value: extra_settings come first so that they win.
    assert opts["Ciphers"][0] == "aes256-ctr"


def test_every_algorithm_list_keeps_one_paramiko_can_use():
    """pyinfra and Fabric connect with paramiko: each list must keep a common entry."""
    s, t = SshHardeningSettings(), paramiko.Transport
    assert set(s.kex_algorithms) & set(t._preferred_kex)
    assert set(s.ciphers) & set(t._preferred_ciphers)
    assert set(s.macs) & set(t._preferred_macs)
    assert set(s.host_key_algorithms) & set(t._preferred_keys)


@pytest.mark.skipif(not Path("/usr/sbin/sshd").exists(), reason="openssh-server not installed here (the lab tests run sshd -t)")
def test_sshd_accepts_the_config(tmp_path):
    for kind in ("ed25519", "rsa"):
        subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(tmp_path / f"ssh_host_{kind}_key")], check=True)
    config = tmp_path / "sshd_config"
    config.write_text(render_sshd_config(make_site(), host_key_dir=str(tmp_path)))
    result = subprocess.run(["/usr/sbin/sshd", "-t", "-f", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --- base -------------------------------------------------------------------------------------

def test_sudoers_follows_sudo_nopasswd():
    assert "%lpse-admin ALL=(ALL:ALL) NOPASSWD: ALL\n" in render_sudoers(BaseSettings())
    assert "%ops ALL=(ALL:ALL) ALL\n" in render_sudoers(BaseSettings(admin_group="ops", sudo_nopasswd=False))


@pytest.mark.skipif(not shutil.which("visudo"), reason="sudo not installed here (the lab deploy runs visudo -cf)")
def test_visudo_accepts_the_sudoers(tmp_path):
    path = tmp_path / "siaga-admins"
    path.write_text(render_sudoers(BaseSettings()))
    assert subprocess.run(["visudo", "-cf", str(path)], capture_output=True).returncode == 0


def test_timesyncd_lists_the_ntp_servers():
    assert "[Time]\nNTP=10.213.0.1\n" in render_timesyncd(make_site().base)


def test_account_fact_parses_lock_expiry_and_groups():
    fact = Account()
    assert fact.process([]) is None
    locked = fact.process(["sari:!:20000:0:99999:7::1:", "sari lpse-admin"])
    assert locked == {"locked": True, "expire_day": 1, "groups": ["sari", "lpse-admin"]}
    assert fact.process(["budi:*:20000:0:99999:7:::", "budi"])["expire_day"] is None


def test_connection_key_must_be_listed_for_its_admin(tmp_path):
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    public = " ".join(key.with_suffix(".pub").read_text().split()[:2])
    connection = {"user": "budi", "key_file": str(key)}
    listed = make_site(connection=connection, admins=[{"name": "budi", "ssh_keys": [public + " budi@pc"]}])
    assert connection_key_problem(listed) is None
    unlisted = make_site(connection=connection)
    assert "lock siaga out" in connection_key_problem(unlisted)
    key.with_suffix(".pub").unlink()  # the private key alone is enough
    assert connection_key_problem(listed) is None


# --- inventory and READMEs ----------------------------------------------------------------------

def test_pyinfra_groups_from_a_site_file(tmp_path):
    import yaml

    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(lab_like(connection={"user": "budi", "key_file": "/k", "known_hosts_file": "/kh", "port": 2200})))
    groups = pyinfra_groups(path)
    assert [n for n, _ in groups["primary"]] == ["primary"] and [n for n, _ in groups["drc"]] == ["drc"]
    data = dict(groups["drc"])["drc"]
    assert data == {
        "ssh_hostname": "10.213.2.10", "ssh_user": "budi", "ssh_key": "/k", "ssh_port": 2200,
        "ssh_known_hosts_file": "/kh", "ssh_strict_host_key_checking": "yes", "_sudo": True,
        "siaga_site_file": str(path.resolve()), "siaga_host": "drc",
    }


def test_invalid_site_stops_before_any_host(tmp_path, capsys):
    path = tmp_path / "site.yaml"
    path.write_text("site: lab\n")
    with pytest.raises(SystemExit) as exit_info:
        pyinfra_groups(path)
    assert exit_info.value.code == 2
    assert "key 'admins'" in capsys.readouterr().err


def test_production_example_inventory_builds_groups():
    groups = pyinfra_groups(REPO / "inventory" / "production.example.yaml")
    assert groups["primary"] and groups["drc"]


def _role_settings() -> list[tuple[str, type]]:
    """Every role whose settings the site file carries: (role folder, settings model)."""
    from drc.site import Site

    out = []
    for field in Site.model_fields.values():
        model = field.annotation
        module = getattr(model, "__module__", "")
        if module.startswith("roles.") and module.endswith(".defaults"):
            out.append((module.split(".")[1], model))
    return out


@pytest.mark.parametrize("role, model", _role_settings(), ids=lambda v: v if isinstance(v, str) else "")
def test_role_readme_lists_every_setting(role, model):
    readme = (REPO / "roles" / role / "README.md").read_text()
    documented = set(re.findall(r"^\| `([a-z0-9_]+)` \|", readme, re.M))
    assert documented == set(model.model_fields), "README settings table != defaults.py"


def test_the_sites_own_hosts_and_workstations_are_exempt_from_sshd_penalties_where_openssh_has_them():
    """OpenSSH >= 9.8 (Debian 13) penalises a source after failed logins: a peer's stale lsyncd or a
    key rotation's refused old key would shut the peer's backups and sync out for minutes. Debian 12's
    OpenSSH 9.2 does not know the option (sshd -t would refuse it)."""
    from drc.site import load_site

    site = load_site(REPO / "inventory/production.example.yaml")
    line = next(ln for ln in render_sshd_config(site).splitlines() if ln.startswith("PerSourcePenaltyExemptList"))
    exempt = set(line.split()[1].split(","))
    assert {f"{h.address}/32" for h in site.hosts.values()} <= exempt
    assert {str(n) for n in site.admin_workstations} <= exempt
    old = site.model_copy(update={"platform": "debian12"})
    assert "PerSourcePenalty" not in render_sshd_config(old)
