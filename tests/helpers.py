"""Helpers for lab tests: run the real deploy, reach hosts over SSH, probe ports from a netns."""

from __future__ import annotations

import sys
from pathlib import Path

from drc.hosts.deploy import DeployResult, idempotence_check
from drc.hosts.deploy import run_deploy as deploy_site

REPO = Path(__file__).resolve().parent.parent


def run_deploy(lab, deploy: str = "deploys/site.py", *extra: str, site_file=None, env: dict | None = None) -> DeployResult:
    """Run a deploy for real against the lab hosts (pyinfra's API, in a child process), as an admin
    would. `deploy`: siaga's `deploys/<file>.py` or a path relative to the repository (tests/deploys/)."""
    path = deploy if str(deploy).startswith("deploys/") else REPO / deploy
    return deploy_site(site_file or lab.site_file, path, *extra, env=env)


def assert_no_change_rerun(lab, deploy: str = "deploys/site.py", *extra: str, preview: bool = True) -> DeployResult:
    """The idempotence check (drc.hosts.deploy.idempotence_check) on converged lab hosts."""
    again, problem = idempotence_check(lab.site_file, deploy, *extra, preview=preview)
    assert problem is None, f"{problem}\n{again.output[-4000:]}"
    return again


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


def pg_version(lab) -> str:
    """The lab's PostgreSQL major: its site file's, which follows the lab's platform."""
    from drc.site import load_site

    return load_site(lab.site_file).postgresql.version


def lost_writes(report: dict) -> str:
    """A probe check's losses in a line: how many of each kind, the first sequence numbers, where."""
    kinds = {k: report.get(k, []) for k in ("missing", "row_differs", "file_differs")}
    return (f"{report.get('rpo_writes')} of {report.get('acked')} acknowledged writes lost on {report.get('primary')}: "
            + ", ".join(f"{k} {len(v)} (first {v[:8]}, last {v[-3:]})" for k, v in kinds.items() if v)
            + f"; probe log {report.get('log')}")
