"""Security services around the application: `pyinfra inventory/<site>.py deploys/security.py`.

After the data tier (Apache, the application and its uploads exist): ModSecurity with the OWASP
Core Rule Set in front of the application (roles/modsecurity), ClamAV scanning the uploads
(roles/clamav), and last the file integrity check (roles/file_integrity: AIDE), so that its
baseline follows what this site deploy changed. Idempotent: a second run changes
nothing. SOP IN-2.
"""

from drc.hosts.inventory import this_host_in_site
from roles.clamav.deploy import clamav
from roles.file_integrity.deploy import file_integrity
from roles.modsecurity.deploy import modsecurity

site, host_name = this_host_in_site()

modsecurity(site)
clamav(site, host_name)
file_integrity(site, host_name)
