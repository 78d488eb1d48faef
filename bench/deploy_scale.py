"""Remote access on 16 lab hosts against 2: how a no-change re-run grows with the hosts (goal: the
16-host run takes <= 1.5x the 2-host run, issue 8).

Usage: .venv/bin/python bench/deploy_scale.py [--servers N] [--runs N] [--lab NAME] [--keep]
Raises its own lab ("bench-scale") with N servers (default 16: primary, drc, primary2..primary8,
drc2..drc8; `siaga lab up --servers N`). Each round: deploys/remote_access.py converged, then timed
once more as a no-change re-run, first with the lab's site.yaml (primary and drc: 2 hosts), then
with its site-servers.yaml (all N servers; the firewall rules of primary and drc name the extra
peers, so the untimed converge changes them back and forth). pyinfra's --limit is no 2-host run: it
still connects to and prepares every host of the inventory. Every timed run must change nothing
(exit 2 otherwise). Prints the medians, their ratio beside the goal and the load. The lab is
removed at the end (also on failure) unless --keep.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from drc.hosts.deploy import machine_load, no_change_problem, release_lab, run_deploy
from drc.lab.lab import Lab

GOAL_RATIO = 1.5
LAB = "bench-scale"
DEPLOY = "deploys/remote_access.py"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", type=int, default=16, help="servers in the lab (default %(default)s)")
    ap.add_argument("--runs", type=int, default=3, help="timed re-runs of each size (default %(default)s)")
    ap.add_argument("--lab", default=LAB, help="lab to use, raised with --servers if not up (default %(default)s)")
    ap.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    args = ap.parse_args()
    lab = Lab(args.lab)
    print(f"before: {machine_load()}")
    times: dict[int, list[float]] = {2: [], args.servers: []}
    try:
        lab.up(log=lambda _m: None, servers=args.servers)
        sites = {2: lab.site_file, args.servers: lab.servers_site_file}
        for i in range(args.runs):
            for count, site in sites.items():
                converge = run_deploy(site, DEPLOY)
                if not converge.ok:
                    print(converge.output[-6000:], file=sys.stderr)
                    print(f"converging {DEPLOY} on {count} hosts failed (exit {converge.returncode})", file=sys.stderr)
                    return 2
                result = run_deploy(site, DEPLOY)
                problem = no_change_problem(result)
                if problem:
                    print(result.output[-6000:], file=sys.stderr)
                    print(f"run {i + 1} on {count} hosts: not a no-change run: {problem}", file=sys.stderr)
                    return 2
                times[count].append(result.seconds)
                print(f"run {i + 1}: no-change re-run of {DEPLOY} on {len(result.hosts)} hosts {result.seconds:.1f} s "
                      f"(converge before it {converge.seconds:.0f} s); {machine_load()}")
    finally:
        release_lab(lab, args.keep)
    two, many = statistics.median(times[2]), statistics.median(times[args.servers])
    ratio = many / two
    print(f"remote access no-change re-run: 2 hosts median {two:.1f} s, {args.servers} hosts median {many:.1f} s; "
          f"ratio {ratio:.2f} (goal <= {GOAL_RATIO}x: {'met' if ratio <= GOAL_RATIO else 'NOT met'}); after: {machine_load()}")
    return 0 if ratio <= GOAL_RATIO else 1


if __name__ == "__main__":
    raise SystemExit(main())
