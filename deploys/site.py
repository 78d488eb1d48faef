"""The site deploy: `pyinfra inventory/<site>.py deploys/site.py [--dry --diff]`.

Everything a host of the groups primary and drc needs, from the validated site file named in the
host data (siaga_site_file): remote access first (deploys/remote_access.py), then the data tier
(deploys/data_tier.py). Idempotent: a second run changes nothing.
"""

from pyinfra import local

local.include("deploys/remote_access.py")
local.include("deploys/data_tier.py")
