"""A planned switch-over round trip under probe load, with the figures issue 10 names.

Usage: .venv/bin/python bench/switchover.py [--lab bench-sw] [--ttl 60] [--keep]

Raises its own lab ("bench-sw"), converges it, sets the public name's TTL to --ttl (60 s: the
issue's goal is stated for it; the lab's own default is shorter), takes a database backup (the
preflight asks for one), then for each direction (primary → DRC, DRC → primary):
- the probe (drc.probe, in the outsider's network namespace: a client outside both sites that
  resolves the public name through the lab's DNS, honouring the TTL, and writes a row and a file
  every 100 ms over HTTPS with the certificate verified) and the watcher (every host's PostgreSQL
  polled at least every 0.5 s) run while `siaga switchover --to <site>` runs;
- afterwards the probe's check: every acknowledged write looked up on the new primary.

Printed per direction, each beside its goal and the machine's load:
- the probe's largest gap between acknowledged writes (goal ≤ 5 s with a 60 s TTL);
- acknowledged writes lost (goal 0) and moments with two writable primaries (goal 0);
- the server-side service gap (the old app's stop → the new app healthy behind open ports);
- the old primary streaming from the new one after the promotion (goal ≤ 30 s; CloudNativePG's
  e2e budget to re-attach is 60 s);
- the whole runbook (CloudNativePG's e2e budget for a switch-over is 20 s; siaga's runbook also
  waits the TTL out before the deploy that closes the old site, and takes a backup after).

Exit 0 when measured (goals printed as met / NOT met), 2 when the measurement itself failed.
The lab is removed at the end unless --keep.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from drc.hosts.deploy import REPO, converged_lab, machine_load, release_lab
from drc.lab.lab import Lab
from drc.lab.probing import ProbeRun
from drc.runbooks.figures import switchover_figures
from drc.runbooks.journal import Journal

LAB = "bench-sw"
GOAL_GAP_S = 5.0
GOAL_REJOIN_S = 30.0
CNPG_SWITCHOVER_S, CNPG_REATTACH_S = 20.0, 60.0


def set_ttl(site_file: Path, ttl: int) -> None:
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    data = yaml.load(site_file.read_text())
    data["traffic"]["ttl"] = ttl
    with open(site_file, "w") as fh:
        yaml.dump(data, fh)


def siaga(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drc.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=1800)


def goal(value: float | None, limit: float, at_most: bool = True) -> str:
    if value is None:
        return "NOT measured"
    return "met" if (value <= limit if at_most else value >= limit) else "NOT met"


def one_way(lab: Lab, to: str, work: Path) -> dict:
    with ProbeRun(lab, work / to) as run:
        proc = siaga("switchover", "--to", to, "--json", str(lab.site_file))
    report = run.check()
    last = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("{")), None)
    if proc.returncode != 0 or not last:
        print(proc.stdout[-4000:], proc.stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"switch-over to {to} failed (exit {proc.returncode})")
    fig = switchover_figures(Journal.load(Path(json.loads(last)["journal"])))
    return {"to": to, **fig, "probe_gap_s": report["rto_s"], "acked": report["acked"], "lost": report["rpo_writes"],
            "split_brain_rounds": report["watcher"]["split_brain_rounds"], "watch_rounds": report["watcher"]["rounds"],
            "addresses": report["addresses"], "load": machine_load()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lab", default=LAB)
    ap.add_argument("--ttl", type=int, default=60)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    lab = Lab(a.lab)
    try:
        if not converged_lab(lab, a.lab).ok:
            return 2
        set_ttl(lab.site_file, a.ttl)
        b = siaga("backup", "run", "--set", "db", str(lab.site_file))
        if b.returncode != 0:
            print(b.stdout[-3000:], file=sys.stderr)
            return 2
        with tempfile.TemporaryDirectory(prefix="siaga-bench-sw-") as tmp:
            results = [one_way(lab, to, Path(tmp)) for to in ("drc", "primary")]
    finally:
        release_lab(lab, a.keep)
    print(f"\nswitch-over round trip, DNS TTL {a.ttl} s (lab '{a.lab}')")
    for r in results:
        print(f"to {r['to']:7}  probe's largest write gap {r['probe_gap_s']} s (goal ≤ {GOAL_GAP_S:g} s: "
              f"{goal(r['probe_gap_s'], GOAL_GAP_S)}); acknowledged writes {r['acked']}, lost {r['lost']} (goal 0: "
              f"{goal(r['lost'], 0)}); two writable primaries in {r['split_brain_rounds']} of {r['watch_rounds']} rounds "
              f"(goal 0: {goal(r['split_brain_rounds'], 0)}); answered from {', '.join(r['addresses'])}")
        print(f"           server-side service gap {r['service_gap_s']} s; old primary streaming {r['promotion_to_streaming_s']} s "
              f"after the promotion (goal ≤ {GOAL_REJOIN_S:g} s: {goal(r['promotion_to_streaming_s'], GOAL_REJOIN_S)}; "
              f"CloudNativePG's budget {CNPG_REATTACH_S:g} s); whole runbook {r['runbook_s']} s (CloudNativePG's switch-over "
              f"budget {CNPG_SWITCHOVER_S:g} s; this one also waits the TTL out and backs up); {r['load']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
