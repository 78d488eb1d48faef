"""fencing role: never two writable primaries, with two sites and the operator as the witness.

`siaga failover` decides which site serves; this role makes that decision stick on every database
host, also on one that cannot be reached when it is taken (SOP EM-3: one copy accepts writes):

- drc/hostside/fence.py installed as /usr/local/lib/siaga/fence, with its settings (/etc/siaga/fence.json:
  the cluster, the peer's address, the units it holds, the ports it closes);
- systemd drop-ins: PostgreSQL starts only after `fence guard` (a would-be primary asks its peer
  whether it was superseded, and stays down when fenced, superseded, or unable to ask without
  authority); the app and the uploads sync start only after `fence allow` (not while fenced);
- siaga-fence-watch.timer: a running primary whose peer answers on a newer timeline fences itself.

Applied after the replication role (the guard asks the peer over the replication login). The
fence itself (the marker, masks, stopped PostgreSQL and pgBackRest, closed ports) is set by the
runbooks and the guard at run time, never by a deploy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from pyinfra.api import deploy
from pyinfra.operations import files, systemd
from pyinfra.operations.util import any_changed

from drc.hostside import program
from roles import host_programs
from roles.managed_files import MANAGED_HEADER, config_file
from roles.templating import render

if TYPE_CHECKING:
    from drc.site.data_tier import DataTier

ROLE_DIR = Path(__file__).parent
HEADER = "# " + MANAGED_HEADER.format(role="roles/fencing")
CONFIG = "/etc/siaga/fence.json"
STATE_DIR = "/var/lib/siaga/fence"
WATCH_SERVICE = "siaga-fence-watch.service"
WATCH_TIMER = "siaga-fence-watch.timer"
DROP_IN = "siaga-fence.conf"


def pg_unit(tier: DataTier) -> str:
    return f"postgresql@{tier.postgresql.version}-{tier.postgresql.cluster}.service"


def held_units(tier: DataTier) -> list[str]:
    """What must not run on a fenced host: the app and the uploads sync (its full re-sync too)."""
    from roles.uploads_sync.layout import RESYNC_UNIT, SYNC_UNIT

    return [tier.spse_app.unit, SYNC_UNIT, RESYNC_UNIT]


def fence_config(tier: DataTier, host_name: str) -> dict:
    site = tier.site
    return {
        "version": str(tier.postgresql.version), "cluster": tier.postgresql.cluster, "port": site.firewall.postgresql_port,
        "replication_user": tier.replication.user,
        "peers": [str(site.hosts[h].address) for h in site.hosts if h != host_name],
        "stanza": site.backup.stanza if site.backup.enabled else None,
        "hold_units": held_units(tier),
        "closed_ports": sorted({*site.firewall.web_ports, site.firewall.postgresql_port}),
        "guard_wait_s": site.fencing.guard_wait_s,
    }


def drop_in(unit: str, command: str, after: str = "") -> str:
    return render(ROLE_DIR, "fence-guard.conf.j2", header=HEADER, unit=unit, command=command, program=program("fence").path,
                  after=after)


@deploy("siaga fencing")
def fencing(tier: DataTier, host_name: str) -> None:
    host_programs.ship("fencing")
    files.directory(name=f"{STATE_DIR} (the fence's marker and authority)", path=STATE_DIR, user="root", group="root",
                    mode="755")
    config_file(name=f"{CONFIG} (the fence's settings)", dest=CONFIG,
                content=json.dumps(fence_config(tier, host_name), indent=1, sort_keys=True) + "\n")
    guarded = [(pg_unit(tier), "guard", ""), *((u, "allow", pg_unit(tier)) for u in held_units(tier))]
    changed = [config_file(name=f"{unit}: starts only after fence {cmd}", dest=f"/etc/systemd/system/{unit}.d/{DROP_IN}",
                           content=drop_in(unit, cmd, after)) for unit, cmd, after in guarded]
    interval = tier.site.fencing.watch_interval_s
    changed += [config_file(name=f"Unit {WATCH_SERVICE}", dest=f"/etc/systemd/system/{WATCH_SERVICE}",
                            content=render(ROLE_DIR, f"{WATCH_SERVICE}.j2", header=HEADER, program=program("fence").path)),
                config_file(name=f"Unit {WATCH_TIMER}", dest=f"/etc/systemd/system/{WATCH_TIMER}",
                            content=render(ROLE_DIR, f"{WATCH_TIMER}.j2", header=HEADER, interval=interval))]
    systemd.daemon_reload(name="systemd reloaded after a fence unit change", _if=any_changed(*changed))
    systemd.service(name=f"{WATCH_TIMER} active", service=WATCH_TIMER, running=True, enabled=True)
