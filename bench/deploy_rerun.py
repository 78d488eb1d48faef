"""How long a no-change re-run of a deploy takes on the 2 lab hosts.

Usage: .venv/bin/python bench/deploy_rerun.py [--deploy FILE] [--runs N] [--keep]
Raises its own lab ("bench-deploy"), converges it once with the whole site deploy, then times N runs
of `pyinfra -y inventory/lab.py FILE` on primary and drc, each of which must change nothing.
The goal (<= 15 s, issue 2) is for deploys/remote_access.py, the default: the remote-access
controls. `--deploy deploys/site.py` times the whole site (with the data tier) for the record.
The lab is removed at the end (also on failure) unless --keep.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

from drc.hosts.deploy import converged_lab, run_deploy
from drc.lab.lab import Lab

GOAL_S = 15.0
LAB = "bench-deploy"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="timed no-change re-runs (default 3)")
    ap.add_argument("--deploy", default="deploys/remote_access.py", help="deploy file to time (default: %(default)s)")
    ap.add_argument("--keep", action="store_true", help=f"leave the lab '{LAB}' up at the end")
    args = ap.parse_args()
    lab = Lab(LAB)
    try:
        if not converged_lab(lab, LAB).ok:
            return 2
        times = []
        for i in range(args.runs):
            result = run_deploy(lab.site_file, args.deploy)
            if not result.ok or result.changed:
                print(result.output[-6000:], file=sys.stderr)
                print(f"run {i + 1}: not a no-change run (exit {result.returncode}, changed: {result.changed})",
                      file=sys.stderr)
                return 2
            times.append(result.seconds)
            print(f"run {i + 1}: no-change re-run (2 hosts, 0 changes) {result.seconds:.1f} s")
    finally:
        if not args.keep:
            lab.down(log=lambda _m: None)
    median = statistics.median(times)
    met = max(times) <= GOAL_S
    print(f"no-change re-run of {args.deploy}: median {median:.1f} s, max {max(times):.1f} s over "
          f"{len(times)} runs; load average {os.getloadavg()[0]:.2f} (goal <= {GOAL_S:.0f} s: "
          f"{'met' if met else 'NOT met'})")
    if args.keep:
        print(f"lab '{LAB}' left up: .venv/bin/siaga --lab {LAB} lab down")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
