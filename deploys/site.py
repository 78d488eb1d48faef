"""The site deploy: `pyinfra inventory/<site>.py deploys/site.py [--dry --diff]`.

Everything a host of the groups primary and drc needs, from the validated site file named in the
host data (siaga_site_file): remote access first (deploys/remote_access.py), then the data tier
(deploys/data_tier.py), then the security services around the application (deploys/security.py), then
monitoring (deploys/monitoring.py). Idempotent: a second run changes nothing.
"""

from pyinfra import local

# "./": next to this file, so the site deploy runs from a source checkout or an installed siaga.
local.include("./remote_access.py")
local.include("./data_tier.py")
local.include("./security.py")
local.include("./monitoring.py")
