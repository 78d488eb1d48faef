"""The site deploy: `pyinfra inventory/<site>.py deploys/site.py [--dry --diff]`.

Applies base -> ssh_hardening -> firewall, then the data tier (deploys/data_tier.py), to every host of the groups primary and drc, from the
validated site file named in the host data (siaga_site_file). Idempotent: a second run changes nothing.
Order matters: admins and their group exist before sshd only lets that group in, and sshd is
settled before the firewall confirms a new ruleset with a fresh SSH session.
"""

from pyinfra import host, local
from pyinfra.api.exceptions import DeployError

from drc.site import load_site
from roles.base import base
from roles.firewall import firewall
from roles.ssh_hardening import ssh_hardening

if not host.data.get("siaga_site_file"):
    raise DeployError(f"{host.name}: no siaga_site_file in the host data; use an inventory from inventory/ (drc.inventory)")
site = load_site(host.data.siaga_site_file)
host_name = host.data.get("siaga_host") or host.name
if host_name not in site.hosts:
    raise DeployError(f"{host.name}: host '{host_name}' is not in {host.data.siaga_site_file}")

base(site, host_name)
ssh_hardening(site)
firewall(site, host_name)

# The data tier (PostgreSQL, the SPSE application, replication to the DRC).
local.include("deploys/data_tier.py")
