"""The remote-access part of the site deploy: base -> ssh_hardening -> firewall, as in deploys/site.py
but without the data tier. These are the controls the Ansible peer (bench/peers/ansible/site.yml)
implements, so bench/ansible_ratio.py times the same work with both tools.

    pyinfra -y inventory/lab.py bench/deploys/remote_access.py

Keep it equal to the role calls at the top of deploys/site.py.
"""

from pyinfra import host
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
