"""The site model: one validated description of an LPSE site (no pyinfra, no fabric).

`model` is the site file's shape and rules; `data_tier` the data tier's view of it; `check` the
`siaga check` command. The names below are the model's public face.
"""

from drc.site.model import SITE_ROLES, Site, SiteError, load_site, parse_site

__all__ = ["SITE_ROLES", "Site", "SiteError", "load_site", "parse_site"]
