"""Run the pyinfra site deploy as an admin would, and read what it changed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYINFRA = Path(sys.executable).parent / "pyinfra"


@dataclass
class DeployResult:
    returncode: int
    output: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def changed(self) -> list[str]:
        """Operations that changed something on at least one host (pyinfra's 'Success' column)."""
        out = []
        in_results = False
        for line in self.output.splitlines():
            if line.startswith("--> Results"):
                in_results = True
            elif in_results and line.startswith("-->"):
                break
            elif in_results:
                m = re.match(r"^\s+(.+?)\s{2,}(\d+)\s+(\d+|-)\s+(\d+|-)\s+(\d+|-)\s*$", line)
                if m and m.group(3) != "-" and not m.group(1).startswith("Grand total"):
                    out.append(m.group(1))
        return out


def run_deploy(site_file: str | Path, deploy: str = "deploys/site.py", *extra: str,
               inventory: str = "inventory/lab.py", env: dict | None = None, timeout: float = 1200) -> DeployResult:
    """`pyinfra -y INVENTORY DEPLOY` for the given site file; output captured, not printed."""
    start = time.monotonic()
    proc = subprocess.run(
        [str(PYINFRA), "-y", *extra, inventory, deploy],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "SIAGA_SITE": str(site_file), **(env or {})},
    )
    return DeployResult(proc.returncode, proc.stdout + proc.stderr, time.monotonic() - start)
