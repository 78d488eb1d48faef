"""The site file is refused once, before any host is touched, with file:line, key and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from drc.site import SiteError, load_site

# Well-formed but fake: the blob decodes to a real ed25519 key structure, not a key anyone holds.
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHNpYWdhLXRlc3Qta2V5LW5vdC1mb3ItYW55LWhvc3Qh operator@lab"

LAB = f"""\
site: lab
active_site: primary
admin_workstations:
  - 10.77.0.1/32
ssh_allowlist:
  - 10.77.0.0/24
  - 203.0.113.7/32
connection:
  user: operator
  key_file: /var/lib/siaga/lab/id_ed25519
admins:
  - name: operator
    full_name: Lab Operator
    ssh_keys:
      - {KEY}
sites:
  primary:
    label: Data center
    networks: [10.77.1.0/24]
    hosts:
      - lpse-primary
  drc:
    label: DRC
    networks: [10.77.2.0/24]
    hosts:
      - lpse-drc
hosts:
  lpse-primary:
    address: 10.77.1.10
  lpse-drc:
    address: 10.77.2.10
base:
  timezone: Asia/Jakarta
firewall:
  rollback_seconds: 60
"""


def edit(text: str, *changes: tuple[str, str]) -> str:
    for old, new in changes:
        assert text.count(old) == 1, f"test edit is ambiguous or stale: {old!r}"
        text = text.replace(old, new)
    return text


def line_of(text: str, snippet: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if snippet in line)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return path


def test_lab_like_site_loads(tmp_path):
    site = load_site(write(tmp_path, LAB))
    assert site.site_of == {"lpse-primary": "primary", "lpse-drc": "drc"}
    assert site.peer_addresses("lpse-primary") == ["10.77.2.10"]
    assert site.firewall.rollback_seconds == 60
    assert site.admins[0].ssh_keys == [KEY]


def test_host_bits_in_workstation_address_is_fine(tmp_path):
    # A bare address is a /32, not an error.
    site = load_site(write(tmp_path, edit(LAB, ("  - 10.77.0.1/32", "  - 10.77.0.1"))))
    assert str(site.admin_workstations[0]) == "10.77.0.1/32"


# (id, edits, key, fix text, snippet on the line the message must point at)
CASES = [
    ("unknown-timezone", [("timezone: Asia/Jakarta", "timezone: WITA")],
     "base.timezone", "see inventory/production.example.yaml", "timezone: WITA"),
    ("cidr-bad-octet", [("  - 10.77.0.0/24", "  - 10.0.0.300/24")],
     "ssh_allowlist[0]", "CIDR form", "10.0.0.300/24"),
    ("cidr-host-bits", [("  - 10.77.0.0/24", "  - 10.77.0.5/24")],
     "ssh_allowlist[0]", "write the network 10.77.0.0/24, or 10.77.0.5/32", "10.77.0.5/24"),
    ("site-network-host-bits", [("[10.77.2.0/24]", "[10.77.2.1/24]")],
     "sites.drc.networks[0]", "write the network 10.77.2.0/24", "[10.77.2.1/24]"),
    ("unknown-top-level-key", [("base:\n", "bsae:\n")],
     "bsae", "check its spelling", "bsae:"),
    ("unknown-role-setting", [("rollback_seconds: 60", "rollback_secs: 60")],
     "firewall.rollback_secs", "check its spelling", "rollback_secs"),
    ("role-setting-out-of-range", [("rollback_seconds: 60", "rollback_seconds: 5")],
     "firewall.rollback_seconds", "use a larger number", "rollback_seconds: 5"),
    ("web-port-zero", [("rollback_seconds: 60", "rollback_seconds: 60\n  web_ports: [443, 0]")],
     "firewall.web_ports[1]", "use a larger number", "web_ports: [443, 0]"),
    ("web-port-too-large", [("rollback_seconds: 60", "rollback_seconds: 60\n  web_ports: [65536]")],
     "firewall.web_ports[0]", "use a smaller number", "web_ports: [65536]"),
    ("admin-empty-keys", [(f"    ssh_keys:\n      - {KEY}\n", "    ssh_keys: []\n")],
     "admins[0].ssh_keys", "at least one", "ssh_keys: []"),
    ("admin-no-keys-key", [(f"    ssh_keys:\n      - {KEY}\n", "")],
     "admins[0].ssh_keys", "add it", "- name: operator"),
    ("malformed-ssh-key", [(KEY, "ssh-ed25519 AAAA operator@lab")],
     "admins[0].ssh_keys[0]", ".pub file", "ssh-ed25519 AAAA operator@lab"),
    ("private-key-pasted", [(KEY, "-----BEGIN OPENSSH PRIVATE KEY-----")],
     "admins[0].ssh_keys[0]", "treat that private key as leaked", "PRIVATE KEY"),
    ("workstation-not-in-allowlist", [("  - 10.77.0.1/32", "  - 192.168.5.5/32")],
     "admin_workstations[0]", "add 192.168.5.5/32 (or its office network) to ssh_allowlist", "192.168.5.5/32"),
    ("allowlist-whole-internet", [("  - 203.0.113.7/32\n", "  - 203.0.113.7/32\n  - 0.0.0.0/0\n")],
     "ssh_allowlist[2]", "office network and permitted addresses only", "0.0.0.0/0"),
    ("allowlist-whole-internet-v6", [("  - 203.0.113.7/32\n", "  - 203.0.113.7/32\n  - ::/0\n")],
     "ssh_allowlist[2]", "office network and permitted addresses only", "::/0"),
    ("host-in-two-sites", [("      - lpse-drc\n", "      - lpse-drc\n      - lpse-primary\n")],
     "sites.drc.hosts[1]", "list it under one site only", "      - lpse-primary\nhosts"),
    ("host-in-no-site", [("hosts:\n  lpse-primary:", "hosts:\n  lpse-spare:\n    address: 10.77.1.11\n  lpse-primary:")],
     "hosts.lpse-spare", "list it under sites.primary.hosts or sites.drc.hosts", "lpse-spare:"),
    ("site-host-undefined", [("      - lpse-drc\n", "      - lpse-drc\n      - lpse-drc2\n")],
     "sites.drc.hosts[1]", "add hosts.lpse-drc2.address", "- lpse-drc2"),
    ("address-outside-site", [("address: 10.77.2.10", "address: 10.77.1.20")],
     "hosts.lpse-drc.address", "use an address inside 10.77.2.0/24", "10.77.1.20"),
    ("duplicate-address", [("      - lpse-primary\n", "      - lpse-primary\n      - lpse-app2\n"),
                           ("  lpse-drc:\n    address", "  lpse-app2:\n    address: 10.77.1.10\n  lpse-drc:\n    address")],
     "hosts.lpse-app2.address", "give each host its own address", "    address: 10.77.1.10\n  lpse-drc:"),
    ("address-not-an-address", [("address: 10.77.2.10", "address: lpse-drc.local")],
     "hosts.lpse-drc.address", "single address", "lpse-drc.local"),
    ("connection-user-not-admin", [("  user: operator", "  user: budi")],
     "connection.user", "name of an entry in admins", "user: budi"),
    ("root-as-admin", [("- name: operator", "- name: root"), ("  user: operator", "  user: root")],
     "admins[0].name", "person's own account name", "- name: root"),
    ("admin-listed-twice", [("sites:\n", f"  - name: operator\n    ssh_keys: ['{KEY}']\nsites:\n")],
     "admins[1].name", "merge the two entries", "  - name: operator\n    ssh_keys: ['"),
    ("admin-also-removed", [("  timezone: Asia/Jakarta", "  timezone: Asia/Jakarta\n  removed_admins: [operator]")],
     "base.removed_admins", "remove it from one of the two lists", "removed_admins"),
    ("unknown-site-name", [("  drc:\n    label", "  dr:\n    label")],
     "sites.dr", "name the sites 'primary' and 'drc'", "  dr:"),
    ("missing-drc-site", [("  drc:\n    label: DRC\n    networks: [10.77.2.0/24]\n    hosts:\n      - lpse-drc\n", "")],
     "sites", "add sites.drc", "sites:"),
    ("unknown-active-site", [("active_site: primary", "active_site: dr")],
     "active_site", "use 'primary' or 'drc'", "active_site"),
    ("list-given-as-string", [("ssh_allowlist:\n  - 10.77.0.0/24\n  - 203.0.113.7/32", "ssh_allowlist: 10.77.0.0/16")],
     "ssh_allowlist", "write a list", "ssh_allowlist:"),
    ("bad-admin-name", [("- name: operator", "- name: Budi Santoso"), ("  user: operator", "  user: budi")],
     "admins[0].name", "lowercase letters", "Budi Santoso"),
]


def _snippet_line(text: str, snippet: str) -> int:
    if "\n" in snippet:  # multi-line snippet: its first line
        start = text.index(snippet)
        return text.count("\n", 0, start) + 1
    return line_of(text, snippet)


@pytest.mark.parametrize("edits,key,fix,snippet", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_site_is_refused_with_file_line_key_and_fix(tmp_path, edits, key, fix, snippet):
    text = edit(LAB, *edits)
    path = write(tmp_path, text)
    with pytest.raises(SiteError) as exc:
        load_site(path)
    msg = str(exc.value)
    assert f"{path}:{_snippet_line(text, snippet)}: key '{key}':" in msg
    assert "Fix: " in msg and fix in msg.split("Fix: ", 1)[1]


def test_missing_required_section_names_key_without_line(tmp_path):
    text = edit(LAB, ("connection:\n  user: operator\n  key_file: /var/lib/siaga/lab/id_ed25519\n", ""))
    path = write(tmp_path, text)
    with pytest.raises(SiteError, match=rf"^{path}: key 'connection': Field required\. Fix: add it\.$"):
        load_site(path)


def test_every_error_of_a_file_is_reported(tmp_path):
    text = edit(LAB, ("  - 10.77.0.0/24", "  - 10.0.0.300/24"), ("rollback_seconds: 60", "rollback_secs: 60"))
    with pytest.raises(SiteError) as exc:
        load_site(write(tmp_path, text))
    lines = str(exc.value).splitlines()
    assert len(lines) == 2
    assert all("Fix: " in line for line in lines)


@pytest.mark.parametrize("text,line,fix", [
    (edit(LAB, ("  user: operator", "  user: [operator")), 10, "correct the YAML syntax there"),
    (edit(LAB, ("  user: operator", "\tuser: operator")), 9, "indent with spaces, not tabs"),
    (edit(LAB, ("  lpse-drc:\n    address: 10.77.2.10", "  lpse-primary:\n    address: 10.77.2.10")), 30,
     "keep one of the two entries (rename it if both are wanted)"),
], ids=["unclosed-bracket", "tab-indent", "duplicate-key"])
def test_invalid_yaml_points_at_the_line(tmp_path, text, line, fix):
    path = write(tmp_path, text)
    with pytest.raises(SiteError) as exc:
        load_site(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}:{line}: not valid YAML")
    assert f"Fix: {fix}." in msg


def test_unclosed_bracket_also_names_where_it_opened(tmp_path):
    path = write(tmp_path, edit(LAB, ("  user: operator", "  user: [operator")))
    with pytest.raises(SiteError, match="while parsing a flow sequence started at line 9"):
        load_site(path)


@pytest.mark.parametrize("text,got", [
    ("- lpse-primary\n- lpse-drc\n", "not a list"),
    ("just a sentence\n", "not a str"),
    ("", "not an empty file"),
], ids=["list", "scalar", "empty"])
def test_top_level_must_be_a_mapping(tmp_path, text, got):
    path = write(tmp_path, text)
    with pytest.raises(SiteError) as exc:
        load_site(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: key '(top level)':")
    assert got in msg and "Fix: start from inventory/production.example.yaml" in msg


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(SiteError) as exc:
        load_site(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: cannot read the site file (No such file or directory)")
    assert "Fix: give the path of an existing site YAML file" in msg


def _load(tmp_path, text: str):
    path = tmp_path / "site.yaml"
    path.write_text(text)
    return load_site(path)


def test_the_active_site_decides_the_database_primary_uploads_source_and_repository(tmp_path):
    """Issue 10: one fact decides which site serves; the settings that follow it may be left out,
    and a file that contradicts it is refused naming the key."""
    for active, repo in (("primary", "drc"), ("drc", "primary")):
        site = _load(tmp_path, LAB.replace("active_site: primary", f"active_site: {active}"))
        assert (site.replication.source_site, site.uploads_sync.source_site, site.backup.repository_site) == (active, active, repo)
    agreeing = LAB.replace("active_site: primary", "active_site: drc") + "replication:\n  source_site: drc\n"
    assert _load(tmp_path, agreeing).replication.source_site == "drc"
    with pytest.raises(SiteError) as e:
        _load(tmp_path, LAB + "backup:\n  repository_site: primary\n")
    assert "key 'backup.repository_site': 'primary' contradicts active_site 'primary'" in str(e.value)
    assert "Fix: remove backup.repository_site: it follows active_site" in str(e.value)
