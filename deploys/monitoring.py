"""Monitoring: `pyinfra inventory/<site>.py deploys/monitoring.py [--dry --diff]`.

Prometheus, Alertmanager and the exporters on every host of the groups primary and drc, each
site watching both (roles/monitoring; SOP IN-3, IN-4). After the data tier: the postgres
exporter's database role is made on the primary. Idempotent: a second run changes nothing.
"""

from drc.hosts.inventory import this_host_in_site
from drc.site.data_tier import data_tier_of
from roles.monitoring.deploy import monitoring

site, host_name = this_host_in_site()
monitoring(site, host_name, is_db_source=host_name in data_tier_of(site).db_source_hosts)
