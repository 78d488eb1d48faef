"""Drill: a ModSecurity config that Apache rejects (a rule without an id) goes through the role's
own operation. Expected: `apache2ctl configtest` fails, every file is as it was (the new one
removed), Apache is not reloaded and keeps serving, and the deploy fails with "configtest rejected
the new security2 config". Built in code on purpose: the site file cannot express it. SOP IN-2.
"""

from pyinfra import host

from drc.site import load_site
from roles.modsecurity.deploy import config_files
from roles.modsecurity.operations import apache_module_config

site = load_site(host.data.siaga_site_file)
files = config_files(site)
files["/etc/modsecurity/siaga-broken.conf"] = 'SecRule ARGS "@rx x" "phase:1,deny"\n'  # no id: refused
apache_module_config(name="A ModSecurity rule without an id (must roll back)", module="security2", enabled=True, files=files)
