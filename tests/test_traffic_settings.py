"""The site file's traffic settings (drc/site/traffic.py): refused with file:line, key and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from drc.site import SiteError, load_site
from tests.test_site_validation import LAB, edit

TRAFFIC = """\
traffic:
  public_name: lpse.lab.example
  addresses:
    primary: 198.51.100.10
    drc: 203.0.113.10
  method: dns-update
  dns_update:
    servers: [192.0.2.53, 192.0.2.54]
    zone: lab.example
    key_name: lpse-update
    key_file: ~/dns-update.key
"""


def load(tmp_path: Path, text: str):
    f = tmp_path / "site.yaml"
    f.write_text(text)
    return load_site(f)


def test_dns_update_settings_and_defaults(tmp_path):
    t = load(tmp_path, LAB + TRAFFIC).traffic
    assert t.ttl == 60 and t.method == "dns-update"
    assert t.dns_update.primary == "192.0.2.53" and t.dns_update.key_algorithm == "hmac-sha256"
    assert t.dns_update.key_file == Path("~/dns-update.key").expanduser()
    assert str(t.addresses["drc"]) == "203.0.113.10"


def test_no_traffic_section_is_allowed(tmp_path):
    assert load(tmp_path, LAB).traffic is None


def test_command_method(tmp_path):
    text = edit(TRAFFIC, ("method: dns-update", "method: command"),
                ("""  dns_update:
    servers: [192.0.2.53, 192.0.2.54]
    zone: lab.example
    key_name: lpse-update
    key_file: ~/dns-update.key
""", """  command:
    instructions: ask the city's DNS desk (tiket DNS) to point {name} at {address}
    check: [dig, +short, "@192.0.2.53", "{name}"]
"""))
    c = load(tmp_path, LAB + text).traffic.command
    assert c.run is None and c.check[-1] == "{name}"


@pytest.mark.parametrize("change,key,fix_word", [
    (("public_name: lpse.lab.example", "public_name: https://lpse.lab.example/"), "traffic.public_name", "fully qualified"),
    (("public_name: lpse.lab.example", "public_name: lpse.other.example"), "traffic.public_name", "zone"),
    (("    drc: 203.0.113.10\n", ""), "traffic.addresses", "traffic.addresses.drc"),
    (("    drc: 203.0.113.10\n", "    drc: 198.51.100.10\n"), "traffic.addresses", "each site"),
    (("    drc: 203.0.113.10\n", "    drc: 203.0.113.10\n    dr: 203.0.113.11\n"), "traffic.addresses.dr", "primary, drc"),
    (("method: dns-update", "method: command"), "traffic.command", "traffic.command"),
    (("method: dns-update", "method: nsupdate"), "traffic.method", "allowed values"),
    (("  method:", "  ttl: 0\n  method:"), "traffic.ttl", "larger"),
    (("    zone: lab.example", "    zone: lab_example"), "traffic.dns_update.zone", "fully qualified"),
    (("    servers: [192.0.2.53, 192.0.2.54]", "    servers: []"), "traffic.dns_update.servers", "at least one"),
    (("    key_file: ~/dns-update.key\n", ""), "traffic.dns_update.key_file", "add it"),
])
def test_bad_traffic_settings_name_file_line_key_and_fix(tmp_path, change, key, fix_word):
    text = LAB + edit(TRAFFIC, change)
    with pytest.raises(SiteError) as exc:
        load(tmp_path, text)
    msg = str(exc.value)
    assert f"key '{key}'" in msg and "Fix:" in msg and fix_word in msg.split("Fix:", 1)[1], msg
    assert str(tmp_path / "site.yaml") + ":" in msg


def test_command_placeholders_and_instructions_are_checked(tmp_path):
    base = edit(TRAFFIC, ("method: dns-update", "method: command"),
                ("""  dns_update:
    servers: [192.0.2.53, 192.0.2.54]
    zone: lab.example
    key_name: lpse-update
    key_file: ~/dns-update.key
""", """  command:
    run: [/usr/local/bin/edge-nat, "{adress}"]
    check: [/usr/local/bin/edge-nat, show]
"""))
    with pytest.raises(SiteError, match=r"key 'traffic.command.run': unknown placeholder \{adress\}"):
        load(tmp_path, LAB + base)
    with pytest.raises(SiteError, match="key 'traffic.command.instructions'"):
        load(tmp_path, LAB + edit(base, ('    run: [/usr/local/bin/edge-nat, "{adress}"]\n', "")))
