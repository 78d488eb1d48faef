"""roles/uploads_sync without a host: who sends and receives, the rendered lsyncd config, re-sync
script, units and keys files, the firewall and sshd pieces, the workstation key. SOP EM-3, IN-2."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from drc.site import SiteError
from roles.firewall.rules import inbound_rules
from roles.ssh_hardening.deploy import allow_groups, render_sshd_config
from roles.uploads_sync.deploy import authorized_keys, known_hosts_line, render_file
from roles.uploads_sync.layout import KNOWN_HOSTS, PRIVATE_KEY
from roles.uploads_sync.topology import KEYS_DIR, forced_command, receiving_account, source_hosts, sync_sources, target_hosts
from roles.uploads_sync.facts import GroupMembers, SshHostKey
from roles.workstation_secrets import generate_ssh_key, read_ssh_key
from tests.test_roles_render import make_site

REPO = Path(__file__).resolve().parent.parent
PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHNpYWdhLXN5bmMta2V5LW5vdC1mb3ItYW55LWhvc3Qh siaga-uploads-sync@lab"


def test_direction_follows_the_active_site():
    site = make_site()
    assert (source_hosts(site), target_hosts(site)) == (["primary"], ["drc"])
    reversed_site = make_site(active_site="drc")
    assert (source_hosts(reversed_site), target_hosts(reversed_site)) == (["drc"], ["primary"])
    assert receiving_account(site) == "appserv"
    assert receiving_account(make_site(uploads_sync={"account": "filesync"})) == "filesync"


def test_lsyncd_config_pushes_uploads_to_the_target_over_the_pinned_ssh():
    conf = render_file(make_site(), "lsyncd.conf.lua.j2")
    assert 'source = "/home/file/"' in conf
    assert 'target = "appserv@10.213.2.10:"' in conf
    assert "delay = 1," in conf and "delete = true," in conf and "insist = true" in conf
    assert 'exclude = { ".tmp-*" }' in conf
    rsh = re.search(r'rsh = "([^"]+)"', conf)[1]
    for option in (f"-i {PRIVATE_KEY}", "IdentitiesOnly=yes", "BatchMode=yes", "StrictHostKeyChecking=yes",
                   f"UserKnownHostsFile={KNOWN_HOSTS}", "GlobalKnownHostsFile=/dev/null", "HostKeyAlgorithms=ssh-ed25519",
                   "-p 22", "-F /dev/null"):
        assert option in rsh
    assert "owner = false" in conf  # the receiver is not root
    assert "bwlimit" not in conf


def test_lsyncd_config_follows_settings_and_reverses():
    site = make_site(active_site="drc", uploads_sync={"delay_s": 5, "delete": False, "exclude": [".tmp-*", 'a"b'],
                                   "bandwidth_limit_kbps": 2048}, ssh_hardening={"port": 2222})
    conf = render_file(site, "lsyncd.conf.lua.j2")
    assert 'target = "appserv@10.213.1.10:"' in conf
    assert "delay = 5," in conf and "delete = false," in conf and "bwlimit = 2048," in conf
    assert r'exclude = { ".tmp-*", "a\"b" }' in conf  # quoted as a Lua string
    assert "-p 2222" in conf


def lua_syntax_error(path: Path) -> str | None:
    """Lua's own parser on a file (lsyncd in Debian 12 and 13 runs Lua 5.3: `make setup` installs lua5.3)."""
    luac = shutil.which("luac5.3") or shutil.which("luac")
    assert luac, "luac not installed: run `make setup` (Debian package lua5.3)"
    r = subprocess.run([luac, "-p", str(path)], capture_output=True, text=True)
    return None if r.returncode == 0 else r.stderr.strip()


def test_lsyncd_config_is_valid_lua(tmp_path):
    path = tmp_path / "lsyncd.conf.lua"
    path.write_text(render_file(make_site(), "lsyncd.conf.lua.j2"))
    assert lua_syntax_error(path) is None
    # The same check refuses a config with a syntax error (so it can fail).
    path.write_text(render_file(make_site(), "lsyncd.conf.lua.j2").replace("settings {", "settings {{"))
    assert lua_syntax_error(path)


def test_resync_script_is_valid_sh_and_mirrors_lsyncd(tmp_path):
    script = render_file(make_site(), "resync.sh.j2")
    path = tmp_path / "resync.sh"
    path.write_text(script)
    assert subprocess.run(["sh", "-n", str(path)]).returncode == 0
    assert script.startswith("#!/bin/sh\n")
    assert "--delete" in script and "--exclude='.tmp-*'" in script
    assert "push drc appserv@10.213.2.10:" in script and "/home/file/ \"$dest\"" in script
    assert "/var/lib/siaga-uploads-sync/last-full-resync" in script
    no_delete = render_file(make_site(uploads_sync={"delete": False}), "resync.sh.j2")
    assert "--delete" not in no_delete


def test_units_and_timer():
    site = make_site(uploads_sync={"full_resync_on_calendar": "*-*-* 02:30:00"})
    timer = render_file(site, "siaga-uploads-resync.timer.j2")
    assert "OnCalendar=*-*-* 02:30:00" in timer and "Persistent=true" in timer
    service = render_file(site, "siaga-uploads-resync.service.j2")
    assert "Type=oneshot" in service and "ExecStart=/usr/local/sbin/siaga-uploads-resync" in service
    sync = render_file(site, "siaga-uploads-sync.service.j2")
    assert "ExecStart=/usr/bin/lsyncd -nodaemon /etc/siaga/uploads-sync/lsyncd.conf.lua" in sync
    assert "Restart=always" in sync


@pytest.mark.parametrize("calendar", ["hourly; rm -rf /", "daily\nExecStart=/bin/sh"])
def test_calendar_cannot_inject_into_the_unit(calendar):
    with pytest.raises(SiteError):
        make_site(uploads_sync={"full_resync_on_calendar": calendar})


def test_authorized_keys_forces_rrsync_write_only_from_the_source():
    keys = authorized_keys(make_site(), PUB)
    lines = [line for line in keys.splitlines() if line and not line.startswith("#")]
    assert lines == ['restrict,command="/usr/bin/rrsync -wo /home/file",from="10.213.1.10" '
                     "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHNpYWdhLXN5bmMta2V5LW5vdC1mb3ItYW55LWhvc3Qh siaga-uploads-sync@lab"]
    assert forced_command(make_site(spse_app={"uploads_root": "/srv/file"})) == "/usr/bin/rrsync -wo /srv/file"


def test_known_hosts_line_pins_the_port():
    site = make_site()
    assert known_hosts_line(site, "10.213.2.10", "ssh-ed25519 AAAA") == "10.213.2.10 ssh-ed25519 AAAA\n"
    moved = make_site(ssh_hardening={"port": 2222})
    assert known_hosts_line(moved, "10.213.2.10", "ssh-ed25519 AAAA") == "[10.213.2.10]:2222 ssh-ed25519 AAAA\n"


def test_firewall_opens_ssh_from_the_source_on_the_target_only():
    site = make_site()
    assert sync_sources(site, "drc") == ("10.213.1.10/32",) and sync_sources(site, "primary") == ()
    drc_sync = [r for r in inbound_rules(site, "drc") if "uploads sync" in r.comment]
    assert [(r.port, r.sources) for r in drc_sync] == [(22, ("10.213.1.10/32",))]
    assert not [r for r in inbound_rules(site, "primary") if "uploads sync" in r.comment]
    flipped = make_site(active_site="drc")
    assert sync_sources(flipped, "primary") == ("10.213.2.10/32",) and sync_sources(flipped, "drc") == ()
    off = make_site(uploads_sync={"enabled": False})  # EM-3.7: replication stopped
    assert sync_sources(off, "drc") == ()


def test_sshd_lets_the_sync_group_in_for_rrsync_only():
    site = make_site()
    assert allow_groups(site)[0] == "lpse-admin" and "siaga-sync" in allow_groups(site)
    config = render_sshd_config(site)
    match = config[config.index("\nMatch Group siaga-sync\n"):]
    assert f"AuthorizedKeysFile {KEYS_DIR}/%u" in match
    assert "ForceCommand /usr/bin/rrsync -wo /home/file" in match
    assert "PermitTTY no" in match and "DisableForwarding yes" in match
    # Only Match blocks (the backup accounts', roles/backup/keys.py) after it: no global keyword.
    assert not re.search(r"^(?!#|Match )\S", match.split("\n", 2)[2], re.M), "nothing global after the Match block"
    off = make_site(uploads_sync={"enabled": False})
    assert "siaga-sync" not in allow_groups(off)
    assert "Match Group siaga-sync" in render_sshd_config(off)  # still rrsync only


def test_sync_group_and_account_cannot_be_people():
    with pytest.raises(SiteError, match="uploads_sync.group"):
        make_site(uploads_sync={"group": "lpse-admin"})
    with pytest.raises(SiteError, match="uploads_sync.account"):
        make_site(uploads_sync={"account": "budi"})


def test_facts_parse():
    assert SshHostKey().process(["ssh-ed25519 AAAAC3Nz root@drc"]) == "ssh-ed25519 AAAAC3Nz"
    assert SshHostKey().process([]) is None
    assert GroupMembers().process(["siaga-sync:x:998:appserv,other"]) == ["appserv", "other"]
    assert GroupMembers().process(["siaga-sync:x:998:"]) == []
    assert GroupMembers().process([]) is None


def test_sync_key_is_generated_once_0600_and_is_in_no_rendered_file(tmp_path):
    private, public = generate_ssh_key(tmp_path, "uploads-sync.id_ed25519", "siaga-uploads-sync@lab")
    assert (tmp_path / "uploads-sync.id_ed25519").stat().st_mode & 0o777 == 0o600
    assert public.startswith("ssh-ed25519 ") and "PRIVATE KEY" in private
    assert read_ssh_key(tmp_path, "uploads-sync.id_ed25519") == (private, public)
    site = make_site()
    rendered = [render_file(site, t) for t in ("lsyncd.conf.lua.j2", "resync.sh.j2", "siaga-uploads-sync.service.j2")]
    rendered.append(authorized_keys(site, public))
    body = private.splitlines()[1]
    assert not any(body in text for text in rendered)

