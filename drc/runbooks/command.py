"""`siaga switchover`, `siaga failover` and `siaga runbook`: run a runbook with live progress, list the journals,
release a lock left by a run that will not be resumed. Each finished, refused, rolled-back or
stopped run leaves its journal and an HTML record in Indonesian (EM-2 step 6)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from drc.records import store
from drc.records.render import render_report
from drc.runbooks import journal as journals
from drc.runbooks.engine import Engine, Outcome, RunbookError
from drc.runbooks.lock import HostLock
from drc.site import load_site

# The record's title per runbook (the record is in Indonesian; the CLI in English).
JUDUL = {"switchover": "Switch-over ke {target}", "failover": "Failover ke {target}", "failback": "Fail-back ke {target}"}
STATE_STYLE = {"done": "green", "already done": "green", "done before": "dim", "running": "yellow", "failed": "bold red"}


def progress_printer(console: Console):
    def show(kind: str, data: dict) -> None:
        at = dt.datetime.now().strftime("%H:%M:%S.%f")[:-3]
        if kind == "preflight":
            mark = "[green]ok[/green]" if data["ok"] else f"[bold red]NO[/bold red] {data['why']}"
            console.print(f"{at}  preflight  {data['check']} ({data['sop']}): {mark}", highlight=False)
        else:
            state = data["state"]
            extra = f" {data.get('does')}" if state == "running" else (f" {data['seconds']:.1f} s" if "seconds" in data else "")
            extra += f" — {data['why']}" if data.get("why") else ""
            style = STATE_STYLE.get(state, "")
            word = f"[{style}]{state}[/{style}]" if style else state
            console.print(f"{at}  {'undo ' if kind == 'undo' else ''}{data['step']}: {word}{extra}", highlight=False)
    return show


def _secs(a: str | None, b: str | None) -> str | None:
    if not a or not b:
        return None
    return f"{(dt.datetime.fromisoformat(b) - dt.datetime.fromisoformat(a)).total_seconds():.1f} detik"


def record_of(j: journals.Journal, site_name: str, source: str, target: str) -> dict:
    """The journal as the record's fields (Indonesian report, drc/records/templates/catatan_runbook)."""
    b = j.begin
    steps = []
    for p in b.get("plan") or []:
        ev = [e for e in j.events if e.get("step") == p["step"]]
        start = next((e["at"] for e in ev if e["event"] == "step-start"), None)
        end_ev = next((e for e in reversed(ev) if e["event"] == "step-end"), None)
        steps.append({**p, "mulai": start, "selesai": end_ev and end_ev["at"], "durasi": _secs(start, end_ev and end_ev["at"]),
                      "hasil": end_ev and end_ev["result"], "why": end_ev and end_ev.get("why"),
                      "dibatalkan": any(e["event"] == "undo-end" and e.get("result") == "done" for e in ev)})
    end = next((e for e in reversed(j.events) if e["event"] in ("end", "stopped")), None)
    app_down = next((s["mulai"] for s in steps if s["step"] == "stop-app"), None)
    app_up = next((s["selesai"] for s in steps if s["step"] == "app" and s["hasil"] in ("done", "already done")), None)
    pre = next((e.get("results") for e in j.events if e["event"] == "preflight"), []) or []
    return {"run_id": j.run_id, "site": site_name, "judul": JUDUL.get(b.get("runbook"), "{runbook}").format(target=(b.get("target") or "").upper(), runbook=b.get("runbook")), "dari": source, "ke": target,
            "oleh": b.get("by"), "workstation": b.get("workstation"), "mulai": b.get("at"), "selesai": end and end["at"],
            "durasi": _secs(b.get("at"), end and end["at"]) or "-", "hasil": j.outcome or "stopped", "pesan": end and end.get("message"),
            "jeda": _secs(app_down, app_up), "pemeriksaan": pre, "langkah": steps}


def write_record(site, j: journals.Journal, source: str, target: str) -> Path:
    out = store.records_dir(site) / journals.SUBDIR / f"{j.run_id}.html"
    out.write_text(render_report("catatan_runbook.html.j2", r=record_of(j, site.site, source, target)))
    return out


def report(console: Console, out: Outcome) -> int:
    style = "green" if out.ok else "bold red"
    console.print(f"[{style}]{out.outcome}[/{style}]: {out.message}", highlight=False)
    if out.journal:
        console.print(f"journal: {out.journal}", highlight=False)
    return 0 if out.ok else 1


def cmd_switchover(args: argparse.Namespace, console: Console) -> int:
    from drc.runbooks.switchover import switchover

    book, ctx = switchover(Path(args.site), args.to, echo=lambda line: console.print(line, highlight=False))
    show_plan(console, book, ctx)
    lock = HostLock(ctx.site, [ctx.source, ctx.target])
    engine = Engine(book, ctx, store.records_dir(ctx.site), lock, progress_printer(console))
    return finish(args, console, ctx, engine)


def show_plan(console: Console, book, ctx) -> None:
    console.print(f"[bold]{book.title}[/bold] (site {ctx.site.site}); steps:", highlight=False)
    for i, s in enumerate(book.steps, 1):
        flags = " [no way back]" if s.no_return else (" [undo]" if s.undo else "")
        console.print(f"  {i:2}. {s.name}: {s.does} ({s.sop}){flags}", highlight=False, markup=False)


def runbook_options(parser, dry_run: str = "print the plan and the live preflight results; change nothing") -> None:
    """The options every runbook command has; the site file last."""
    parser.add_argument("--dry-run", action="store_true", help=dry_run)
    parser.add_argument("--json", action="store_true", help="also print the outcome as JSON (last line)")
    parser.add_argument("site", nargs="?", help="site file (default: the lab's)")


def confirm_decision(args: argparse.Namespace, console: Console, ctx):
    """The operator's decision, after the preflight showed what is at risk (EM-2): --yes, or typed."""
    def ask(results) -> bool:
        risk = ctx.readings.get("at_risk") or {}
        console.print(f"[bold]Data at risk[/bold]: {next((r.why for c, r in results if c.name == 'the data at risk'), '')}",
                      highlight=False)
        console.print(f"decided by {args.decided_by}: {args.reason}", highlight=False, markup=False)
        if args.yes:
            return True
        import sys

        if not sys.stdin.isatty():
            console.print("[red]not confirmed[/red]: pass --yes, or run it on a terminal and type FAILOVER", highlight=False)
            return False
        return input(f"{risk.get('bytes', 'unknown')} bytes at risk. Type FAILOVER to promote {ctx.target}: ").strip() == "FAILOVER"
    return ask


def cmd_failover(args: argparse.Namespace, console: Console) -> int:
    from drc.runbooks.failover import failover

    book, ctx = failover(Path(args.site), args.to, args.reason, args.decided_by, force=bool(args.force),
                         echo=lambda line: console.print(line, highlight=False))
    if args.force and args.force != ctx.source:
        console.print(f"[red]error:[/red] --force {args.force}: type the old primary's name ({ctx.source}) to fence it and "
                      "fail over while it still answers", highlight=False)
        return 2
    show_plan(console, book, ctx)
    lock = HostLock(ctx.site, [ctx.target])  # the old primary is gone; every runbook locks the target too
    engine = Engine(book, ctx, store.records_dir(ctx.site), lock, progress_printer(console), confirm_decision(args, console, ctx))
    return finish(args, console, ctx, engine)


def cmd_failback(args: argparse.Namespace, console: Console) -> int:
    from drc.runbooks.failback import failback

    book, ctx = failback(Path(args.site), echo=lambda line: console.print(line, highlight=False))
    show_plan(console, book, ctx)
    lock = HostLock(ctx.site, [ctx.source, ctx.target])
    code = finish(args, console, ctx, Engine(book, ctx, store.records_dir(ctx.site), lock, progress_printer(console)))
    lost = ctx.reported().get("lost_writes")
    if lost is not None:
        console.print(f"writes lost on {ctx.source} (committed there after the fork, never on {ctx.target}): "
                      f"{lost['transactions']} transactions {lost['per_table']}; listed in {ctx.lost_writes_file}", highlight=False)
    return code


def finish(args: argparse.Namespace, console: Console, ctx, engine: Engine) -> int:
    from drc.hosts import remote

    try:
        with remote.reused_connections():  # the outage is made of short commands: no handshake each
            out = engine.run(dry_run=args.dry_run, rollback=getattr(args, "rollback", False))
    except RunbookError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        return 2
    if out.journal:
        path = write_record(ctx.site, journals.Journal.load(out.journal), ctx.source, ctx.target)
        console.print(f"record: {path}", highlight=False)
    if args.json:
        console.file.write(json.dumps({"outcome": out.outcome, "run_id": out.run_id, "message": out.message,
                                       "journal": str(out.journal) if out.journal else None,
                                       "readings": {k: v for k, v in ctx.reported().items()
                                                    if k in ("at_risk", "source_answers", "lost_writes", "uploads", "rejoin")}},
                                      default=str) + "\n")
    return report(console, out)


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    site = load_site(args.site)
    t = Table(title=f"Runbook runs — site '{site.site}'", title_justify="left")
    for col in ("run", "by", "started", "outcome", "last event"):
        t.add_column(col)
    for j in journals.runs(store.records_dir(site)):
        last = j.events[-1] if j.events else {}
        t.add_row(j.run_id, f"{j.begin.get('by')}@{j.begin.get('workstation')}", j.begin.get("at", "-"),
                  j.outcome or "[yellow]open[/yellow]", f"{last.get('event')} {last.get('step') or ''}")
    console.print(t)
    return 0


def cmd_unlock(args: argparse.Namespace, console: Console) -> int:
    """Release the hosts' lock of a run that will not be resumed (recorded in its journal)."""
    site = load_site(args.site)
    lock = HostLock(site, list(site.hosts))
    held = {h: lock.call(h, {"mode": "show"}).get("held") for h in lock.hosts}
    mine = {h: v for h, v in held.items() if v and v.get("run_id") == args.run_id}
    if not mine:
        console.print(f"no host holds a lock of run {args.run_id}: {held}", highlight=False)
        return 1
    for h in mine:
        lock.call(h, {"mode": "break", "run_id": args.run_id})
    path = store.records_dir(site) / journals.SUBDIR / f"{args.run_id}.jsonl"
    if path.exists():
        j = journals.Journal.load(path)
        j.write("unlocked", by=journals.holder()["by"], hosts=sorted(mine))
    console.print(f"released the lock of {args.run_id} on {', '.join(sorted(mine))}", highlight=False)
    return 0


def register(sub) -> None:
    sw = sub.add_parser("switchover", help="planned switch-over of the service to the other site, RPO 0 (EM-2 step 6, EM-3)",
                        description="Prints the plan, runs the preflight, then each step with its check. Re-run after an "
                                    "interruption to resume. Exit 0 when the service runs on the target site.")
    sw.add_argument("--to", required=True, choices=["drc", "primary"], help="the site that will serve")
    sw.add_argument("--rollback", action="store_true", help="roll an interrupted run back (before its promotion only)")
    runbook_options(sw)
    sw.set_defaults(func=cmd_switchover)

    fo = sub.add_parser("failover", help="unplanned failover: the old primary's site is lost (EM-2, EM-3.2-3.5)",
                        description="Proves the old primary answers neither this workstation nor the target, shows the data "
                                    "at risk, asks for the decision and records it, fences the old primary if it answers "
                                    "(--force), promotes the target and moves the service. Re-run after an interruption to "
                                    "resume.")
    fo.add_argument("--to", required=True, choices=["drc", "primary"], help="the site that will serve")
    fo.add_argument("--reason", required=True, help="why (recorded: flood, fire, outage...)")
    fo.add_argument("--decided-by", required=True, help="who decided (recorded), e.g. the head of the LPSE")
    fo.add_argument("--force", metavar="OLD_PRIMARY", help="the old primary still answers: type its name to fence it and fail over")
    fo.add_argument("--yes", action="store_true", help="confirm the decision without typing FAILOVER")
    runbook_options(fo, "print the plan, the preflight and the data at risk; change nothing")
    fo.set_defaults(func=cmd_failover)

    fb = sub.add_parser("failback", help="after a failover: the fenced old primary rejoins as a standby by pg_rewind (EM-3.8)",
                        description="Lists what the old primary wrote after the fork (never silently discarded), rewinds it, "
                                    "releases its fence and makes it stream from the serving site; then the site deploy. "
                                    "The service comes home with siaga switchover afterwards.")
    runbook_options(fb)
    fb.set_defaults(func=cmd_failback)

    rb = sub.add_parser("runbook", help="runbook journals and locks")
    rsub = rb.add_subparsers(dest="runbook_cmd", required=True)
    ls = rsub.add_parser("list", help="every run, its outcome and last event")
    ls.add_argument("site", nargs="?", help="site file (default: the lab's)")
    ls.set_defaults(func=cmd_list)
    un = rsub.add_parser("unlock", help="release the hosts' lock of a run that will not be resumed")
    un.add_argument("run_id")
    un.add_argument("site", nargs="?", help="site file (default: the lab's)")
    un.set_defaults(func=cmd_unlock)
