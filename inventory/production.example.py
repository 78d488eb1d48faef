"""pyinfra inventory for a real two-site LPSE, from inventory/production.example.yaml.

Copy both files (e.g. to inventory/lpse-kota.py and inventory/lpse-kota.yaml), fill in the YAML,
check it with `siaga check inventory/lpse-kota.yaml`, then run
`pyinfra inventory/lpse-kota.py deploys/site.py --dry --diff`.
$SIAGA_SITE, if set, overrides the YAML file next to this one.
"""

import os
from pathlib import Path

from drc.hosts.inventory import pyinfra_groups

_groups = pyinfra_groups(os.environ.get("SIAGA_SITE") or Path(__file__).with_suffix(".yaml"))
primary = _groups["primary"]
drc = _groups["drc"]
