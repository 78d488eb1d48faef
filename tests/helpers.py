"""Helpers for lab tests: run the real deploy, reach hosts over SSH, probe ports from a netns."""

from __future__ import annotations

import sys

from drc.hosts.deploy import DeployResult
from drc.hosts.deploy import run_deploy as deploy_site


def run_deploy(lab, deploy: str = "deploys/site.py", *extra: str, env: dict | None = None) -> DeployResult:
    """Run pyinfra for real against the lab hosts, as an admin would."""
    return deploy_site(lab.site_file, deploy, *extra, env=env)


def lab_host(lab, name: str, user: str | None = None, key=None, sudo: bool = True):
    import testinfra

    from drc.lab.lab import ADMINS

    user = user or ADMINS[0]
    ssh_args = f"-F /dev/null -o IdentitiesOnly=yes -o UserKnownHostsFile={lab.known_hosts} -o StrictHostKeyChecking=yes -o ConnectTimeout=5"
    return testinfra.get_host(
        f"ssh://{user}@{lab.address(name)}",
        ssh_identity_file=str(key or lab.key_file), ssh_extra_args=ssh_args, sudo=sudo,
    )



def tcp_from(lab, host: str, address: str, port: int, timeout: float = 2.0) -> str:
    """Connect from inside a lab host's network namespace: 'open', 'refused' or 'timeout'."""
    code = (
        "import socket\n"
        f"s=socket.socket(); s.settimeout({timeout})\n"
        f"try: s.connect(('{address}', {port})); print('open')\n"
        "except ConnectionRefusedError: print('refused')\n"
        "except OSError: print('timeout')\n"
    )
    return lab.netns_exec(host, [sys.executable, "-c", code]).stdout.strip()
