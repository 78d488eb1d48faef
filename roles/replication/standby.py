"""What makes a host a standby of the database source: its slot's name and its
conf.d/siaga-standby.conf. Pure (no pyinfra): the role's deploy writes this file and the
switch-over runbook writes the very same text when it rejoins the old primary, so the deploy that
follows a switch-over finds nothing to change (issue 10)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from roles.templating import render

if TYPE_CHECKING:
    from drc.site.data_tier import DataTier

ROLE_DIR = Path(__file__).parent
HEADER = "Managed by siaga (roles/replication); local changes are overwritten by the next deploy."
PASSFILE = "/var/lib/postgresql/.pgpass"
PASSWORD_FILE = "replication.password"  # on the admin workstation, in the secrets dir
CONF_NAME = "siaga-standby.conf"


def slot_name(tier: DataTier, standby: str) -> str:
    return tier.replication.slot_prefix + re.sub(r"[^a-z0-9_]", "_", standby.lower())


def standby_context(tier: DataTier, host_name: str, source: str) -> dict:
    site = tier.site
    return dict(header=HEADER, r=tier.replication, pg=tier.postgresql, port=site.firewall.postgresql_port, passfile=PASSFILE,
                host_name=host_name, source_host=source, source_address=str(site.hosts[source].address),
                slot=slot_name(tier, host_name))


def standby_conf(tier: DataTier, host_name: str, source: str) -> str:
    """conf.d/siaga-standby.conf of `host_name` following `source`."""
    return render(ROLE_DIR, "standby.conf.j2", **standby_context(tier, host_name, source))


def restore_line(stanza: str) -> str:
    """The restore_command a rewound former primary recovers with during the fail-back (its own
    pgBackRest configuration, roles/backup): the WAL the serving host trimmed before pg_rewind
    (drc/runbooks/failback.py). Not in the deploy's standby settings: the converge drops it."""
    return ("# Fail-back only (siaga failback): WAL the serving host no longer holds, from the pgBackRest archive.\n"
            f"restore_command = 'pgbackrest --stanza={stanza} archive-get %f \"%p\"'\n")
