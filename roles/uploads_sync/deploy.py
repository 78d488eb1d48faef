"""uploads_sync role: uploaded documents (/home/file/...) copied from the source site to the other
one, continuously (lsyncd -> rsync over SSH) and in full on a systemd timer. SOP EM-3 (make sure
DRC data is up to date; EM-3.7: stop replication for a virus), IN-2 (access control).

The source host pushes with a dedicated ed25519 key kept on the admin workstation (0600, never
printed, never on a command line; made for a new site, fetched back from the source host
otherwise, never replaced implicitly: roles/secret_custody.py) and installed 0600 for root there. The
target accepts that key only for its receiving account, only from a root-owned keys file, and
only to run ``rrsync -wo <uploads_root>``: no shell, no forwarding, no reading. The source pins
the target's SSH host key read from the target itself (a cross-host fact), never trust on first
use. ``uploads_sync.source_site`` sets the direction; runbooks reverse it.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from roles.managed_files import config_file
from roles.packages import ensure_installed
from roles.templating import render
from roles import secret_custody
from roles.site_hosts import inventory_host
from roles.workstation_secrets import secret_file

from . import operations as sync_ops
from .facts import SshHostKey
from .layout import ROLE_DIR, HEADER, CONF_DIR, PRIVATE_KEY, KNOWN_HOSTS, LSYNCD_CONF, RESYNC_SCRIPT, STATE_DIR_NAME, STATE_DIR, SYNC_UNIT, RESYNC_UNIT, RESYNC_TIMER
from .topology import KEYS_DIR, forced_command, is_source, is_target, receiving_account, sends, source_hosts, target_hosts

if TYPE_CHECKING:  # drc.site imports this package's defaults
    from drc.site import Site
    from drc.site.data_tier import DataTier



@dataclass(frozen=True)
class Target:
    name: str
    address: str
    rsync_host: str  # address as rsync wants it in `user@host:` (IPv6 in brackets)


# --- rendering -----------------------------------------------------------------------------------

def lua(text: str) -> str:
    """A Lua string literal (JSON's escaping is valid Lua for these characters)."""
    return json.dumps(text)


def rsh(site: Site) -> str:
    """The ssh command rsync runs: the sync key only, the pinned host key only, no agent, no prompt."""
    return " ".join([
        "/usr/bin/ssh", "-F", "/dev/null", "-i", PRIVATE_KEY, "-p", str(site.ssh_hardening.port),
        "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={KNOWN_HOSTS}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "HostKeyAlgorithms=ssh-ed25519", "-o", "ConnectTimeout=10",
        "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4",
        "-o", "LogLevel=ERROR",  # no login banner in lsyncd's journal at every transfer
    ])


def targets(site: Site) -> list[Target]:
    out = []
    for name in target_hosts(site):
        address = str(site.hosts[name].address)
        rsync_host = f"[{address}]" if ":" in address else address
        out.append(Target(name, address, rsync_host))
    return out


def _context(site: Site) -> dict:
    return dict(header=HEADER, u=site.uploads_sync, source=site.spse_app.uploads_root.rstrip("/"),
                account=receiving_account(site), targets=targets(site), rsh=rsh(site), state_dir=STATE_DIR,
                state_dir_name=STATE_DIR_NAME, config=LSYNCD_CONF, script=RESYNC_SCRIPT, lua=lua, sh=shlex.quote)


def render_file(site: Site, template: str) -> str:
    """One of the role's templates rendered for the site (lsyncd config, units, re-sync script)."""
    return render(ROLE_DIR, template, **_context(site))


def known_hosts_line(site: Site, address: str, host_key: str) -> str:
    port = site.ssh_hardening.port
    pattern = address if port == 22 else f"[{address}]:{port}"
    return f"{pattern} {host_key}\n"


def authorized_keys(site: Site, public_key: str) -> str:
    """The target's keys file for the receiving account: the sync key, restricted, from the
    source site's addresses only."""
    key = " ".join(public_key.split()[:2])
    sources = ",".join(str(site.hosts[h].address) for h in source_hosts(site))
    options = f'restrict,command="{forced_command(site)}",from="{sources}"'
    return f"# {HEADER}\n# uploads sync from site '{site.uploads_sync.source_site}' (roles/uploads_sync, SOP EM-3)\n{options} {key} siaga-uploads-sync@{site.site}\n"


def sync_key(tier: DataTier) -> tuple[str, str]:
    """(private key, public key) from the admin workstation (0600), after secret custody; never printed."""
    return secret_custody.ssh_key(tier, "uploads_sync")


def pinned_host_key(name: str) -> str:
    """The target's ed25519 host key, read on the target itself (cross-host fact)."""
    h = inventory_host(name)
    key = h.get_fact(SshHostKey, key_type="ed25519") if h else None
    if not key:
        raise DeployError(
            f"uploads_sync: cannot read the ed25519 host key of '{name}' to pin it"
            f"{'' if h else ' (it is not in this inventory)'}. Nothing was changed for the sync. "
            f"Fix: deploy with '{name}' reachable in the inventory (ssh_hardening creates the key)")
    return key


# --- the deploy ----------------------------------------------------------------------------------

@deploy("siaga uploads_sync")
def uploads_sync(tier: DataTier, host_name: str) -> None:
    """Apply after roles/spse_app (the uploads directories and the application account exist)."""
    site, u = tier.site, tier.uploads_sync
    account = receiving_account(site)
    source, target = is_source(site, host_name), is_target(site, host_name)
    private_key, public_key = sync_key(tier) if u.enabled else ("", "")
    ensure_installed(["lsyncd", "rsync", "openssh-client"], "the uploads sync")

    # Every host can receive once the direction is reversed: the account is in the sync group
    # (sshd AllowGroups), and sshd reads its keys only from the root-owned KEYS_DIR.
    server.group(name=f"Group {u.group} (uploads sync logins)", group=u.group, system=True)
    sync_ops.group_member(name=f"{account} in {u.group}", user=account, group=u.group)
    keys_file = f"{KEYS_DIR}/{account}"
    if target:
        config_file(name=f"{keys_file}: sync key, rrsync -wo only", dest=keys_file, content=authorized_keys(site, public_key))
    else:
        files.file(name=f"{keys_file} absent (not a target of the uploads sync)", path=keys_file, present=False)

    # The sending side: key, pinned host keys, lsyncd config, re-sync script; absent elsewhere.
    if source:
        files.directory(name=CONF_DIR, path=CONF_DIR, user="root", group="root", mode="700")
        key_op = secret_file(name=f"{PRIVATE_KEY} (sync key, 0600)", dest=PRIVATE_KEY, content=private_key)
        pins = "".join(known_hosts_line(site, t.address, pinned_host_key(t.name)) for t in targets(site))
        known = config_file(name=f"{KNOWN_HOSTS}: the targets' host keys, read from the targets", dest=KNOWN_HOSTS, content=pins)
        conf = config_file(name=LSYNCD_CONF, dest=LSYNCD_CONF, content=render_file(site, "lsyncd.conf.lua.j2"))
        config_file(name=RESYNC_SCRIPT, dest=RESYNC_SCRIPT, content=render_file(site, "resync.sh.j2"), mode=0o755)
    else:
        for path in (PRIVATE_KEY, KNOWN_HOSTS, LSYNCD_CONF, RESYNC_SCRIPT):
            files.file(name=f"{path} absent (not the uploads source)", path=path, present=False)

    units = [config_file(name=f"Unit {unit}", dest=f"/etc/systemd/system/{unit}", content=render_file(site, f"{unit}.j2"))
             for unit in (SYNC_UNIT, RESYNC_UNIT, RESYNC_TIMER)]
    systemd.daemon_reload(name="systemd reloaded after a unit change", _if=any_changed(*units))
    sending = sends(site, host_name)
    systemd.service(name=f"{SYNC_UNIT} (lsyncd) running on the uploads source only (with a target in the site)",
                    service=SYNC_UNIT, running=sending, enabled=sending)
    systemd.service(name=f"{RESYNC_TIMER} active on the uploads source only (with a target in the site)",
                    service=RESYNC_TIMER, running=sending, enabled=sending)
    if sending:
        systemd.service(name=f"{SYNC_UNIT} restarted after a change", service=SYNC_UNIT, restarted=True,
                        _if=any_changed(key_op, known, conf, units[0]))
