"""Remote access: `pyinfra inventory/<site>.py deploys/remote_access.py [--dry --diff]`.

base -> os_hardening -> ssh_hardening -> firewall -> logbook -> fail2ban on every host of the groups
primary and drc (SOP RA-1..RA-4, IN-2). Order matters: admins and their group exist before sshd only
lets that group in, and sshd is settled before the firewall confirms a new ruleset with a fresh SSH
session; the logbook's ulogd2 takes the firewall's log of refused SSH connections (SOP RA-5);
fail2ban's bans go in its own nftables table once siaga's firewall is in place.
"""

from drc.hosts.inventory import this_host_in_site
from roles.base.deploy import base
from roles.fail2ban.deploy import fail2ban
from roles.firewall.deploy import firewall
from roles.logbook.deploy import logbook
from roles.os_hardening.deploy import os_hardening
from roles.ssh_hardening.deploy import ssh_hardening

site, host_name = this_host_in_site()
base(site, host_name)
os_hardening(site)
ssh_hardening(site)
firewall(site, host_name)
logbook(site)
fail2ban(site)
