"""`make demo`: raise the lab, deploy everything, prove it, and print what was verified.

Steps: lab up → site deploy → the same deploy again (must change nothing) → the lab checks of
what the deploy built (DEMO_CHECKS: the lab, remote access, the data tier, `siaga status`, run
against this lab, which stays up) → the backups (`siaga backup run`) → a switch-over round trip
primary → DRC → primary with its figures → a summary table. The whole suite, with the failover's and Debian 12's labs, is `make test`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from rich.console import Console
from rich.table import Table

from drc.lab import lab as labmod
from drc.hosts.deploy import REPO, idempotence_check, run_deploy
from drc.runbooks.figures import switchover_figures
from drc.runbooks.journal import Journal

console = Console()
# The lab checks the demo runs: what the site deploy built, on this lab alone (minutes, not the
# whole suite's half hour).
DEMO_CHECKS = ("tests/lab/test_lab.py", "tests/lab/test_remote_access.py", "tests/lab/test_data_tier.py",
               "tests/lab/test_status.py")


def _verified(junit: Path) -> list[tuple[str, str]]:
    rows = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name", "").removeprefix("test_").replace("_", " ")
        area = case.get("classname", "").rsplit(".", 1)[-1].removeprefix("test_").replace("_", " ")
        failed = case.find("failure") is not None or case.find("error") is not None
        skipped = case.find("skipped") is not None
        rows.append((f"{area}: {name}", "[red]FAILED[/red]" if failed else "skipped" if skipped else "[green]ok[/green]"))
    return rows


def main() -> int:
    the_lab = labmod.Lab(labmod.default_name())
    console.rule(f"1. lab '{the_lab.name}' up")
    the_lab.up(log=console.print)
    labmod.print_status(the_lab, console)

    console.rule("2. site deploy (remote access, data tier, backups)")
    first = run_deploy(the_lab.site_file)
    if not first.ok:
        console.print(first.output[-6000:])
        console.print("[red]deploy failed[/red]")
        return 1
    per_host = ", ".join(f"{h} {sum(1 for r in first.changes if r.host == h)}" for h in first.hosts)
    console.print(f"{len(first.changed)} operations changed something (per host: {per_host}; {first.seconds:.1f} s)")

    console.rule("3. the same deploy again: must change nothing")
    second, problem = idempotence_check(the_lab.site_file)
    idempotent = problem is None
    console.print(f"{len(second.operations)} operations on {len(second.hosts)} hosts, {len(second.changes)} changed "
                  f"({second.seconds:.1f} s): " + ("[green]idempotent[/green]" if idempotent else "[red]NOT idempotent[/red]"))
    if problem:
        console.print(problem, markup=False, highlight=False)

    console.rule(f"4. lab checks ({', '.join(DEMO_CHECKS)} against this lab)")
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        env = {"SIAGA_TEST_LAB": the_lab.name, "SIAGA_TEST_KEEP_LAB": "1"}
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *DEMO_CHECKS],
            cwd=REPO, env={**os.environ, **env},
        )
        rows = _verified(junit) if junit.exists() else []

    console.rule("5. backups: siaga backup run (the switch-over's preflight wants a good one within its period, BK-1)")
    backup = subprocess.run([sys.executable, "-m", "drc.cli", "backup", "run", "--json", str(the_lab.site_file)],
                            capture_output=True, text=True, cwd=REPO)
    backed_up = backup.returncode == 0
    console.print(backup.stdout[-2000:] if not backed_up else "every set backed up", markup=False, highlight=False)

    console.rule("6. switch-over round trip: primary → DRC → primary (EM-2 step 6)")
    trips = [switch(the_lab, to) for to in ("drc", "primary")]

    table = Table(title=f"verified on lab '{the_lab.name}' (hosts stay up; `make lab-down` removes them)")
    table.add_column("check")
    table.add_column("result")
    table.add_row("deploy converges the hosts", f"[green]ok[/green] ({len(first.changed)} changes)")
    table.add_row("second deploy changes nothing", "[green]ok[/green]" if idempotent else "[red]FAILED[/red]")
    for row in rows:
        table.add_row(*row)
    table.add_row("siaga backup run", "[green]ok[/green]" if backed_up else "[red]FAILED[/red]")
    for to, fig in trips:
        ok = fig.get("outcome") == "finished"
        table.add_row(f"switch-over to {to}", ("[green]ok[/green]" if ok else "[red]FAILED[/red]") +
                      f" service gap (server side) {fig.get('service_gap_s')} s, old primary streaming "
                      f"{fig.get('promotion_to_streaming_s')} s after the promotion (goal ≤ 30), runbook {fig.get('runbook_s')} s")
    console.print(table)
    console.print(f"site file: {the_lab.site_file}\nplan per host: .venv/bin/siaga check {the_lab.site_file}")
    switched = all(fig.get("outcome") == "finished" for _, fig in trips)
    return 0 if idempotent and proc.returncode == 0 and backed_up and switched else 1


def switch(the_lab, to: str) -> tuple[str, dict]:
    """`siaga switchover --to <to>` on the lab, as an admin runs it; its figures from the journal."""
    proc = subprocess.run([sys.executable, "-m", "drc.cli", "switchover", "--to", to, "--json", str(the_lab.site_file)],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, "COLUMNS": "160"})
    console.print(proc.stdout[-2500:], markup=False, highlight=False)
    last = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("{")), None)
    if not last or not json.loads(last).get("journal"):
        return to, {"outcome": "failed"}
    return to, switchover_figures(Journal.load(Path(json.loads(last)["journal"])))


if __name__ == "__main__":
    sys.exit(main())
