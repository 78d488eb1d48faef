"""modsecurity role: ModSecurity 2 with the OWASP Core Rule Set on the Apache of roles/spse_app.

Debian's libapache2-mod-security2 and modsecurity-crs (CRS 3.3 on Debian 12 and 13). siaga writes
two files, /etc/modsecurity/modsecurity.conf (the engine) and /etc/modsecurity/siaga-crs.conf (the
CRS settings and the site's exclusions); Debian's security2.conf loads them before its CRS rules.
The module and both files change together and stay only if `apache2ctl configtest` accepts them.
Every host with Apache gets it (the DRC serves users after a switch-over). SOP IN-2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pyinfra.api import deploy
from pyinfra.operations import server

from roles.managed_files import MANAGED_HEADER
from roles.packages import ensure_installed
from roles.spse_app.deploy import APACHE_SERVING
from roles.templating import render

from . import operations as ops
from .defaults import LOCAL_RULE_ID_BASE, ModsecuritySettings

if TYPE_CHECKING:
    from drc.site import Site

ROLE_DIR = Path(__file__).parent
ENGINE_CONF = "/etc/modsecurity/modsecurity.conf"
CRS_CONF = "/etc/modsecurity/siaga-crs.conf"
PACKAGES = ["libapache2-mod-security2", "modsecurity-crs"]


@dataclass(frozen=True)
class LocalRule:
    why: str
    text: str


def upload_paths(site: Site) -> list[str]:
    s = site.modsecurity
    if s.upload_paths is not None:
        return list(s.upload_paths)
    return [f"{site.spse_app.context_path}/dokumen"] if site.spse_app.install == "standin" else []


def local_rules(site: Site) -> list[LocalRule]:
    """The site's exclusions as ModSecurity rules, numbered from LOCAL_RULE_ID_BASE in this order:
    the host's own status checks, removed rules, upload paths, per-path exclusions."""
    s, out = site.modsecurity, []
    next_id = iter(range(LOCAL_RULE_ID_BASE, LOCAL_RULE_ID_BASE + 10_000))
    # siaga status checks the app from the host itself by address (https://127.0.0.1/...): a numeric
    # Host header (920350) is expected there, and would log a warning on every check.
    out.append(LocalRule("siaga status: the host's own checks by address",
                         f'SecRule REMOTE_ADDR "@ipMatch 127.0.0.1,::1" "id:{next(next_id)},phase:1,pass,nolog,t:none,'
                         'ctl:ruleRemoveById=920350"'))
    for rid in s.removed_rules:
        out.append(LocalRule(f"modsecurity.removed_rules: {rid} off everywhere",
                             f'SecAction "id:{next(next_id)},phase:1,pass,nolog,t:none,ctl:ruleRemoveById={rid}"'))
    for path in upload_paths(site):
        # 920420 refuses content types CRS does not parse (application/octet-stream: a raw file).
        out.append(LocalRule(f"Uploads at {path}: the body is a file, not read here (ClamAV scans the stored file), "
                             "whatever its content type",
                             f'SecRule REQUEST_FILENAME "@beginsWith {path}" '
                             f'"id:{next(next_id)},phase:1,pass,nolog,t:none,ctl:requestBodyAccess=Off,ctl:ruleRemoveById=920420"'))
    for ex in s.exclusions:
        ctl = [f"ctl:ruleRemoveById={rid}" for rid in ex.rule_ids] + ([] if ex.inspect_body else ["ctl:requestBodyAccess=Off"])
        out.append(LocalRule(f"modsecurity.exclusions: {ex.path}",
                             f'SecRule REQUEST_FILENAME "@beginsWith {ex.path}" '
                             f'"id:{next(next_id)},phase:1,pass,nolog,t:none,{",".join(ctl)}"'))
    return out


def config_files(site: Site) -> dict[str, str]:
    """The files this role writes (path -> content)."""
    s: ModsecuritySettings = site.modsecurity
    header = MANAGED_HEADER.format(role="roles/modsecurity")
    return {
        ENGINE_CONF: render(ROLE_DIR, "modsecurity.conf.j2", header=header, s=s, body_limit=site.spse_app.max_upload_bytes),
        CRS_CONF: render(ROLE_DIR, "siaga-crs.conf.j2", header=header, s=s, rules=local_rules(site)),
    }


@deploy("siaga modsecurity")
def modsecurity(site: Site) -> None:
    s = site.modsecurity
    if s.enabled:
        ensure_installed(PACKAGES, "ModSecurity and the OWASP CRS")
    changed = ops.apache_module_config(
        name=f"ModSecurity {'(' + s.engine + ', paranoia level ' + str(s.paranoia_level) + ')' if s.enabled else 'disabled'}: "
             "configtest before Apache reloads",
        module="security2", enabled=s.enabled, files=config_files(site) if s.enabled else {})
    # configtest passes some configs Apache still fails to serve with: fail the deploy loudly then.
    server.shell(name="apache2 serving on 443 after ModSecurity changed", commands=[APACHE_SERVING], _if=changed.did_change)
