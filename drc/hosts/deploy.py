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
        """Operations that changed (or, with --dry, would change) something on at least one host."""
        out = []
        section = None
        for line in self.output.splitlines():
            if line.startswith("--> Results") or line.startswith("--> Detected changes"):
                section = line
            elif section and line.startswith("-->"):
                break
            elif section and "Results" in section:
                # Operation | Hosts | Success (= changed) | Error | No Change
                m = re.match(r"^\s+(.+?)\s{2,}(\d+)\s+(\d+|-)\s+(\d+|-)\s+(\d+|-)\s*$", line)
                if m and m.group(3) != "-" and not m.group(1).startswith("Grand total"):
                    out.append(m.group(1))
            elif section:
                # Operation | Change | Conditional Change. A conditional change only fires after
                # another change (e.g. reload after a new file), so the Change column decides.
                m = re.match(r"^\s+(.+?)\s{2,}(\d+ \(.*?\)|-)\s{2,}(\d+ \(.*?\)|-)\s*$", line)
                if m and m.group(2) != "-":
                    out.append(m.group(1))
        return out


def run_deploy(site_file: str | Path, deploy: str = "deploys/site.py", *extra: str,
               inventory: str = "inventory/lab.py", env: dict | None = None, timeout: float = 1200) -> DeployResult:
    """`pyinfra -y INVENTORY DEPLOY` for the given site file; output captured, not printed.

    With --dry, -y is left out so that pyinfra prints the changes it detects.
    """
    start = time.monotonic()
    yes = [] if "--dry" in extra else ["-y"]
    proc = subprocess.run(
        [str(PYINFRA), *yes, *extra, inventory, deploy],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "SIAGA_SITE": str(site_file), **(env or {})},
    )
    return DeployResult(proc.returncode, proc.stdout + proc.stderr, time.monotonic() - start)


def converged_lab(lab, name: str) -> DeployResult:
    """The benchmarks' starting point: lab `name` raised and converged by the site deploy. Prints
    the load first (the machine is shared) and, when the deploy fails, the tail of its output."""
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
    lab.up(log=lambda _m: None)
    dep = run_deploy(lab.site_file)
    if dep.ok:
        print(f"lab '{name}' up and deployed ({dep.seconds:.0f} s for the deploy, {len(dep.changed)} operations changed)")
    else:
        print(dep.output[-6000:], file=sys.stderr)
        print(f"converging deploy failed (exit {dep.returncode})", file=sys.stderr)
    return dep


def release_lab(lab, keep: bool) -> None:
    """The benchmarks' end: the lab removed, or left up (with the command that removes it)."""
    if keep:
        print(f"lab '{lab.name}' left up: .venv/bin/siaga --lab {lab.name} lab down")
    else:
        lab.down(log=lambda _m: None)
