"""`siaga probe run|watch|check`: the probe, the watcher and the check of what they logged."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from drc.site import load_site


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="a client outside writing through the public name; a watcher of primaries; the check (RTO, RPO)",
                       description="run: from outside both sites (in the lab: ip netns exec <outsider netns> python -m drc.probe "
                                   "run SITE ...), every 100 ms a row and a small file over HTTPS through the public name, "
                                   "resolved at the site's DNS servers and re-resolved when the TTL ends. watch: beside it, "
                                   "PostgreSQL's role on every data-tier host every 0.25 s. check: every acknowledged write "
                                   "on the current primary (row and file sha256); RPO = missing, RTO = largest gap.")
    ps = p.add_subparsers(dest="probe_cmd", required=True)
    run = ps.add_parser("run", help="write every 100 ms and log each acknowledged write (JSON lines)")
    run.add_argument("site", nargs="?", help="site YAML file (default: the lab's)")
    run.add_argument("--log", type=Path, required=True, help="JSON-lines log to write")
    run.add_argument("--duration", type=float, default=None, help="seconds (default: until SIGTERM or Ctrl-C)")
    run.add_argument("--interval", type=float, default=0.1, help="seconds between writes (default %(default)s)")
    run.add_argument("--dns-server", action="append", help="ask this DNS server instead of traffic.dns_update.servers (repeatable)")
    watch = ps.add_parser("watch", help="count moments with more than one writable primary (JSON lines)")
    watch.add_argument("site", nargs="?", help="site YAML file (default: the lab's)")
    watch.add_argument("--log", type=Path, required=True, help="JSON-lines log to write")
    watch.add_argument("--duration", type=float, default=None, help="seconds (default: until SIGTERM or Ctrl-C)")
    check = ps.add_parser("check", help="verify the acknowledged writes of a probe log on the current primary")
    check.add_argument("probe_log", type=Path)
    check.add_argument("site", nargs="?", help="site YAML file (default: the lab's)")
    check.add_argument("--watch-log", type=Path, help="the watcher's log, summarised beside")
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace, console: Console) -> int:
    from drc.probe.writer import ProbeError

    if not args.site:
        console.print("error: name the site file")
        return 2
    site = load_site(args.site)
    try:
        if args.probe_cmd == "run":
            from drc.probe.writer import run

            summary = run(site, args.log, args.duration, args.interval, args.dns_server)
            print(json.dumps(summary), flush=True)
            return 0 if summary["acked"] else 1
        if args.probe_cmd == "watch":
            from drc.probe.watcher import watch

            summary = watch(site, args.log, args.duration)
            print(json.dumps(summary), flush=True)
            return 0 if summary["split_brain_rounds"] == 0 else 1
        from drc.probe.check import check
        from drc.probe.watcher import summarise
        from drc.probe.writer import read_log

        report = check(site, args.probe_log)
        if args.watch_log:
            report["watcher"] = summarise(read_log(args.watch_log))
    except ProbeError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        return 1
    shown = {k: v for k, v in report.items() if k not in ("missing", "row_differs", "file_differs")}
    console.print(f"probe run {report['run']}: {report['acked']} acknowledged writes, {report['verified']} found on "
                  f"{report['primary']}; RPO {report['rpo_writes']} writes lost; RTO {report['rto_s']} s (largest gap)",
                  highlight=False)
    if report["rpo_writes"]:
        console.print(f"[red]lost:[/red] missing {report['missing'][:20]}, row differs {report['row_differs'][:20]}, "
                      f"file differs {report['file_differs'][:20]}", highlight=False)
    print(json.dumps({**shown, "missing": report["missing"], "row_differs": report["row_differs"],
                      "file_differs": report["file_differs"]}), flush=True)
    split = report.get("watcher", {}).get("split_brain_rounds", 0)
    return 0 if report["rpo_writes"] == 0 and not split else 1
