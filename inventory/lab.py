"""pyinfra inventory of the local lab: `pyinfra inventory/lab.py deploys/site.py`.

The site file is $SIAGA_SITE if set, else the one `siaga lab up` generated for lab $SIAGA_LAB
(default "lab").
"""

import os

from drc.hosts.inventory import pyinfra_groups


def _site_file() -> str:
    if os.environ.get("SIAGA_SITE"):
        return os.environ["SIAGA_SITE"]
    from drc.lab.lab import Lab, default_name

    return str(Lab(default_name()).site_file)


_groups = pyinfra_groups(_site_file())
primary = _groups["primary"]
drc = _groups["drc"]
