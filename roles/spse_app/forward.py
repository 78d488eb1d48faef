"""The old site's Apache forward to the new site during a switch-over (pure: the runbook writes
it, the role only removes it). The certificate the new site shows for the public name is verified
with the site's chain file (`tls_chain_file`, e.g. the LPSE's CA) or the system's trust store."""

from __future__ import annotations

from pathlib import Path

from roles.templating import MANAGED_HEADER, render

from .defaults import SpseAppSettings

ROLE_DIR = Path(__file__).parent
SYSTEM_CAS = "/etc/ssl/certs/ca-certificates.crt"


def render_forward(s: SpseAppSettings, to_address: str, run_id: str) -> str:
    return render(ROLE_DIR, "forward.conf.j2", header=MANAGED_HEADER.format(role="drc/runbooks (switch-over)"), s=s,
                  to_address=to_address, run_id=run_id, ca_file=s.tls_chain_file or SYSTEM_CAS)
