"""Lockout drill: apply a ruleset whose SSH allowlist excludes the admin workstation.

    pyinfra -y inventory/lab.py tests/deploys/block_admin_firewall.py

Expected: the new ruleset loads, a new admin SSH session is refused, the host's rollback timer
restores the previous table and /etc/nftables.conf within firewall.rollback_seconds, and pyinfra
fails with "new firewall rules blocked admin SSH; the previous ruleset was restored".
The site file itself would refuse such an allowlist (siaga check), so this drill builds it in
code, bypassing validation on purpose. SOP RA-2, IN-2.
"""

from ipaddress import ip_network

from pyinfra import host

from drc.site import load_site
from roles.firewall.deploy import render_ruleset
from roles.firewall.operations import nftables_ruleset

NOBODY = [ip_network("192.0.2.0/24")]  # TEST-NET-1: no admin workstation is there

site = load_site(host.data.siaga_site_file)
locked_out = site.model_copy(update={"ssh_allowlist": NOBODY})
content, version = render_ruleset(locked_out, host.data.siaga_host)
nftables_ruleset(
    name="Ruleset that blocks the admin (must roll back)",
    content=content,
    version=version,
    rollback_seconds=site.firewall.rollback_seconds,
)
