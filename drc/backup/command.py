"""`siaga backup ...`: the subcommands and where each lives (run and log: runs.py; restore-test and
restore: restore.py; report and analyse: report.py; offline: offline.py). SOP BK-1..BK-9."""

from __future__ import annotations

import argparse

from drc.backup import offline as backup_offline, report as backup_report, restore as backup_restore, runs
from drc.hosts.remote import CONNECT_TIMEOUT_S


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("backup", help="backups: run now, the backup log (BK-1..BK-9)")
    sub = p.add_subparsers(dest="backup_cmd", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("site", nargs="?", help="site YAML file (default: the lab's)")
        sp.add_argument("--json", action="store_true", help="print JSON instead of tables")
        sp.add_argument("--timeout", type=float, default=CONNECT_TIMEOUT_S, help="SSH connect timeout per host, seconds")

    run = sub.add_parser("run", help="take a backup now on the host(s) owning the set (db: repository host; files: data host)")
    run.add_argument("--set", help="db, a restic set (e.g. uploads, system), prune or offline; default: db and every set")
    common(run)
    run.set_defaults(func=runs.cmd_run)

    log = sub.add_parser("log", help="collect the hosts' backup logs and show the Log Pelaksanaan Backup (BK-3, BK-5)",
                         description="Exit 1 when a set has no success within its period + backup.missing_grace_s, "
                                     "or a host's log could not be read.")
    log.add_argument("--limit", type=int, default=50, help="rows shown (0: all; --json always gives all)")
    common(log)
    log.set_defaults(func=runs.cmd_log)

    backup_restore.register(sub, common)
    backup_report.register(sub, common)
    backup_offline.register(sub, common)
