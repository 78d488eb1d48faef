"""How long `siaga lab up` takes from the cached image for the 3 lab hosts (goal: <= 30 s).

Usage: .venv/bin/python bench/lab_up.py [--runs N]
Raises and removes its own lab ("bench-up"), so it never touches a lab you are using.
"""

from __future__ import annotations

import argparse
import statistics
import time

from drc.lab.lab import HOSTS, Lab, ensure_image

GOAL_S = 30.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    ensure_image()  # the figure is for a cached image; building it is a one-off
    lab = Lab("bench-up")
    lab.down(log=lambda _m: None)
    times = []
    for i in range(args.runs):
        start = time.monotonic()
        lab.up(log=lambda _m: None)
        times.append(time.monotonic() - start)
        assert sorted(lab.running_hosts()) == sorted(h.name for h in HOSTS)
        lab.down(log=lambda _m: None)
        print(f"run {i + 1}: lab up ({len(HOSTS)} hosts, booted and answering SSH) {times[-1]:.1f} s")
    median = statistics.median(times)
    print(f"lab up from cached image: median {median:.1f} s, max {max(times):.1f} s over {len(times)} runs "
          f"(goal <= {GOAL_S:.0f} s: {'met' if max(times) <= GOAL_S else 'NOT met'})")
    return 0 if max(times) <= GOAL_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
