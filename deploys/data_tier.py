"""The data tier: `pyinfra inventory/<site>.py deploys/data_tier.py [--dry --diff]`.

PostgreSQL on every host, the SPSE application (running on the active site only), streaming
replication from the database primary to the standbys, and uploads copied the same way. Which
host is primary comes from the site file (replication.source_site); the replication preflight
reads PostgreSQL itself on every host and stops the deploy before any change if the two disagree.
Idempotent: a second run changes nothing. SOP EM-3 (DRC data up to date), EM-5, IN-4.
"""

from pyinfra import host
from pyinfra.api.exceptions import DeployError

from roles.data_settings import load_data_tier
from roles.postgresql import postgresql
from roles.replication import preflight_problems, read_nodes, replication
from roles.spse_app import spse_app

if not host.data.get("siaga_site_file"):
    raise DeployError(f"{host.name}: no siaga_site_file in the host data; use an inventory from inventory/ (drc.inventory)")
tier = load_data_tier(host.data.siaga_site_file)
site = tier.site
host_name = host.data.get("siaga_host") or host.name
if host_name not in site.hosts:
    raise DeployError(f"{host.name}: host '{host_name}' is not in {host.data.siaga_site_file}")
is_source = host_name in tier.db_source_hosts

# Preflight: PostgreSQL itself, on every host, must agree with the site file (never trust labels).
nodes = read_nodes(tier)
problems = preflight_problems(tier, nodes)
if problems:
    raise DeployError("data tier preflight failed:\n  - " + "\n  - ".join(problems))

postgresql(site, host_name, tier.postgresql, is_source=is_source, replication_user=tier.replication.user,
           app_os_users=[tier.spse_app.user])
spse_app(site, host_name, tier.spse_app, tier.postgresql, is_db_source=is_source)
replication(tier, host_name, nodes)
