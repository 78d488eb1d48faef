"""spse_app's check that Apache serves after a deploy that touched it: it checks, never kills."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from roles.spse_app.deploy import APACHE_SERVING

ROLES = Path(__file__).resolve().parents[1] / "roles"


def _run(tmp_path: Path, active: bool, listening: bool) -> subprocess.CompletedProcess:
    """APACHE_SERVING with stub systemctl/ss/sleep on PATH; every command it runs is logged."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    stubs = {
        "systemctl": f'echo "systemctl $*" >> {log}; [ "$1" = is-active ] && exit {0 if active else 3}; exit 0',
        "ss": f'echo "ss $*" >> {log}; {"echo LISTEN 0 511 *:443 *:*" if listening else "true"}',
        "sleep": f'echo "sleep $*" >> {log}',
    }
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    proc = subprocess.run(["sh", "-c", APACHE_SERVING], capture_output=True, text=True, timeout=30, check=False,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    proc.calls = log.read_text().splitlines() if log.exists() else []  # type: ignore[attr-defined]
    return proc


def test_serving_apache_passes_at_once(tmp_path):
    proc = _run(tmp_path, active=True, listening=True)
    assert proc.returncode == 0
    assert not any(c.startswith("sleep") for c in proc.calls)


def test_apache_not_serving_fails_the_deploy_without_touching_it(tmp_path):
    proc = _run(tmp_path, active=False, listening=False)
    assert proc.returncode == 1
    assert "not serving on 443" in proc.stderr
    verbs = {c.split()[1] for c in proc.calls if c.startswith("systemctl")}
    assert verbs <= {"is-active", "status"}, verbs  # no start, restart, stop, kill


def test_no_role_kills_processes():
    """Roles run in production: nothing kills services by name behind systemd's back (the pkill that
    restarted Apache worked around the lab's shared cgroups, fixed in drc/lab/lab.py)."""
    pattern = re.compile(r"\b(pkill|killall)\b")
    hits = [f"{p.relative_to(ROLES)}:{n}" for p in ROLES.rglob("*") if p.is_file() and p.suffix in (".py", ".j2", ".sh")
            for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if pattern.search(line)]
    assert hits == []
