"""How long `siaga check` of the example site file takes, as a whole process (goal: <= 0.5 s).

Usage: .venv/bin/python bench/site_check.py [--runs N] [SITE]
Touches no host. Prints each run, the median beside the goal, and the machine's load.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

GOAL_S = 0.5
REPO = Path(__file__).resolve().parent.parent
SIAGA = Path(sys.executable).parent / "siaga"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("site", nargs="?", default=str(REPO / "inventory/production.example.yaml"))
    args = ap.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
    times, cpu = [], []
    for _ in range(args.runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.monotonic()
        proc = subprocess.run([str(SIAGA), "check", args.site], capture_output=True, text=True)
        times.append(time.monotonic() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
            return 2
    median = statistics.median(times)
    print("runs: " + ", ".join(f"{t:.3f}" for t in times) + " s (CPU: " + ", ".join(f"{c:.3f}" for c in cpu) + " s;"
          " under load the wall time grows, the CPU time does not)")
    print(f"siaga check {Path(args.site).name}: median {median:.3f} s, max {max(times):.3f} s over {len(times)} runs "
          f"(goal <= {GOAL_S} s: {'met' if median <= GOAL_S else 'NOT met'}); "
          f"load average after: {os.getloadavg()[0]:.2f}")
    return 0 if median <= GOAL_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
