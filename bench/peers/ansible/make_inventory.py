"""Generate an Ansible inventory (hosts, connection, every variable site.yml needs) from a siaga site file.

Usage: .venv/bin/python bench/peers/ansible/make_inventory.py SITE_FILE OUT.yml

The site file is loaded by siaga's own model, so the playbook gets exactly the settings the siaga
roles get (defaults included) and a bad file is refused the same way. The variables of each
template (tpl_*) are the ones the role passes to it: the playbook renders the roles' own templates
(templates/*.j2 include them), so both tools write the same bytes. Which ports open from where comes
from roles/firewall (ruleset_context -> rules.inbound_rules), the one place siaga decides it.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import yaml
from pydantic import BaseModel

import roles.ssh_hardening.deploy as ssh_role
from drc.site import SITE_ROLES, Site, load_site
from roles.base.deploy import HEADER as BASE_HEADER
from roles.firewall.deploy import ruleset_context

# Debian's python3 (the lab image, Debian 12 or 13); naming it skips Ansible's interpreter discovery.
PYTHON = "/usr/bin/python3"


def plain(value):
    """Template variables as YAML data: models dumped, dataclasses with their properties, no callables."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value):
        props = {n: getattr(value, n) for n, a in vars(type(value)).items() if isinstance(a, property)}
        return plain({**{f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, **props})
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if not callable(v)}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def host_vars(site: Site, name: str) -> dict:
    context = ruleset_context(site, name)
    return {"ansible_host": str(site.hosts[name].address), "tpl_nftables": plain(context)}

def inventory(site: Site) -> dict:
    c = site.connection
    ssh_args = ["-o IdentitiesOnly=yes", "-o StrictHostKeyChecking=yes"]
    if c.known_hosts_file:
        ssh_args.append(f"-o UserKnownHostsFile={Path(c.known_hosts_file).expanduser()}")
    common = {
        # connection: the same account, key and known_hosts siaga uses; escalate with sudo
        "ansible_user": c.user,
        "ansible_port": c.port,
        "ansible_ssh_private_key_file": str(Path(c.key_file).expanduser()),
        "ansible_ssh_common_args": " ".join(ssh_args),
        "ansible_become": True,
        "ansible_python_interpreter": PYTHON,
        # settings the tasks use, as validated by siaga (defaults filled in)
        "base": site.base.model_dump(mode="json"),
        "admins": [{"name": a.name, "full_name": a.full_name, "ssh_keys": [k.strip() for k in a.ssh_keys]}
                   for a in site.admins],
        "sshd": site.ssh_hardening.model_dump(mode="json"),
        "sshd_banner_file": ssh_role.BANNER_FILE,
        # the roles' template variables
        "tpl_sudoers": plain({"header": BASE_HEADER, "b": site.base}),
        "tpl_timesyncd": plain({"header": BASE_HEADER, "b": site.base}),
        "tpl_sshd_config": plain(ssh_role.sshd_config_context(site)),
    }
    # Groups site_primary / site_drc (pyinfra's groups are primary / drc; Ansible warns when a
    # group and a host share a name, as they do in the lab).
    children = {f"site_{role}": {"hosts": {name: host_vars(site, name) for name in site.hosts_in(role)}} for role in SITE_ROLES}
    return {"all": {"vars": common, "children": children}}


def write_inventory(site_file: str | Path, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(inventory(load_site(Path(site_file))), sort_keys=False, width=1000)
    out.write_text(f"# Generated from {site_file} by bench/peers/ansible/make_inventory.py; do not edit.\n{text}")
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(write_inventory(sys.argv[1], sys.argv[2]))
