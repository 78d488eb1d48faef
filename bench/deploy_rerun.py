"""How long a no-change re-run of a deploy takes on the 2 lab hosts.

Usage: .venv/bin/python bench/deploy_rerun.py [--deploy FILE] [--runs N] [--lab NAME] [--no-fact-cache] [--keep]
Raises its own lab ("bench-deploy"), converges it once with the whole site deploy, then times N runs
of FILE on primary and drc (drc.hosts.deploy: pyinfra's API), each of which must change nothing.
Goals: deploys/remote_access.py (the default: the remote-access controls) <= 15 s (issue 2);
`--deploy deploys/site.py`, the whole site with the data tier, <= 8 s (issue 8), on the median.
`--no-fact-cache` times the same runs with every fact read on its own (SIAGA_FACT_CACHE=0,
roles/factcache.py off): the figure before the fact batching, in the same conditions.
The lab is removed at the end (also on failure) unless --keep or --lab names a lab that was up.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from drc.hosts.deploy import converged_lab, machine_load, no_change_problem, release_lab, run_deploy
from drc.lab.lab import Lab

GOALS_S = {"deploys/remote_access.py": 15.0, "deploys/site.py": 8.0}
LAB = "bench-deploy"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="timed no-change re-runs (default 3)")
    ap.add_argument("--deploy", default="deploys/remote_access.py", help="deploy file to time (default: %(default)s)")
    ap.add_argument("--lab", default=LAB, help="lab to use (default %(default)s; a lab already up is left up)")
    ap.add_argument("--no-fact-cache", action="store_true", help="every fact read on its own (SIAGA_FACT_CACHE=0)")
    ap.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    args = ap.parse_args()
    goal = GOALS_S.get(args.deploy)
    env = {"SIAGA_FACT_CACHE": "0"} if args.no_fact_cache else None
    lab = Lab(args.lab)
    was_up = lab.state() is not None
    try:
        if not converged_lab(lab, lab.name).ok:
            return 2
        if not args.no_fact_cache:
            # The converge ran with the site deploy; a run of the timed file itself first, so its
            # fact plan (roles/factcache.py) is the one of this file, as on any re-run.
            run_deploy(lab.site_file, args.deploy)
        print(f"before the timed runs: {machine_load()}")
        times = []
        for i in range(args.runs):
            result = run_deploy(lab.site_file, args.deploy, env=env)
            problem = no_change_problem(result)
            if problem:
                print(result.output[-6000:], file=sys.stderr)
                print(f"run {i + 1}: not a no-change run: {problem}", file=sys.stderr)
                return 2
            times.append(result.seconds)
            print(f"run {i + 1}: no-change re-run ({len(result.hosts)} hosts, {len(result.operations)} operations, "
                  f"0 changes) {result.seconds:.1f} s")
    finally:
        release_lab(lab, args.keep or was_up)
    median = statistics.median(times)
    how = "every fact read on its own" if args.no_fact_cache else "facts batched"
    verdict = f"goal <= {goal:.0f} s: {'met' if median <= goal else 'NOT met'}" if goal else "no goal for this file"
    print(f"no-change re-run of {args.deploy} ({how}): median {median:.1f} s, max {max(times):.1f} s over "
          f"{len(times)} runs ({verdict}); after: {machine_load()}")
    return 0 if goal is None or median <= goal else 1

if __name__ == "__main__":
    raise SystemExit(main())
