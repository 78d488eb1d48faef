"""`siaga logbook`: the remote-repair logbook (SOP RA-5, RA-6).

- `siaga logbook [list] [--month YYYY-MM] [--open]`: the logbook from the workstation's records
  (no host contacted): manual sessions one per line with their state (open, overdue, closed),
  siaga's automated sessions grouped per day, host and admin, and the failed attempts.
- `siaga logbook collect`: reads every host's journal (drc/hostside/logbook_read.py, installed by
  roles/logbook) and appends the sessions that ended and the failed attempts to the records;
  collecting again adds nothing twice. A host that cannot be reached is named (exit 1); what the
  others gave is kept.
- `siaga logbook note ID --fault ... --analysis ... --repair ...`: the fault, its analysis and the
  repair of one session (SOP RA-5); an analysis closes the entry. Missing texts are asked for in
  $EDITOR, or read from stdin when it is not a terminal. Text that looks like a secret is refused.
- `siaga logbook report --month YYYY-MM [--out DIR]`: the month's logbook as standalone HTML in
  Indonesian, with the SOP's fields (lokasi, jaringan, tanggal, jam mulai, jam selesai, analisa
  kerusakan, analisa perbaikan).

The records are mirrored to the DRC after each command that wrote them (drc/workstation/mirror.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table

from drc.hosts import remote
from drc.hosts.remote import CONNECT_TIMEOUT_S
from drc.hostside.logbook_read import PREFIX
from drc.logbook import book
from drc.records import store
from drc.records.render import month_label, parse_month, render_report
from drc.site import SITE_ROLES, Site, load_site

READ_TIMEOUT_S = 120.0
STATE_LABELS = {"open": "open", "overdue": "OVERDUE", "closed": "closed", "automated": "automated"}


def _tz(site: Site) -> dt.tzinfo:
    return ZoneInfo(site.base.timezone)


def logbook_hosts(site: Site) -> list[str]:
    return [h for role in SITE_ROLES for h in site.hosts_in(role)]


def read_state(rdir: Path) -> dict:
    try:
        return json.loads((rdir / book.COLLECT_STATE).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def write_state(rdir: Path, state: dict) -> None:
    """Replaced through a new file: a crash leaves the old state or the new one."""
    tmp = rdir / (book.COLLECT_STATE + ".new")
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, rdir / book.COLLECT_STATE)


def collect(site: Site, timeout: float = CONNECT_TIMEOUT_S) -> dict:
    """Read every host's journal; append new session and failure records. Per host: how many new
    records, the sessions still open, or the error. Each host is read from where its last collect
    left off (book.read_window), at most logbook.lookback_days back."""
    tz = _tz(site)
    rdir = store.records_dir(site)
    state = read_state(rdir)
    oldest = time.time() - site.logbook.lookback_days * 86400

    def work(host: str) -> dict:
        since, report_from = book.read_window(state.get(host, {}).get("resume_from"), oldest)
        r = remote.run_program(site, host, "logbook_read", {"since": since, "report_from": report_from, "prefix": PREFIX},
                               timeout=READ_TIMEOUT_S, connect_timeout=timeout)
        if r.error or not r.reachable:
            return {"error": r.error or "not reachable"}
        try:
            answer = json.loads(r.stdout)
        except ValueError:
            return {"error": f"unreadable answer (exit {r.exited}): {(r.stdout or r.stderr).strip()[:200]!r}"}
        return {"error": f"logbook-read: {answer['error']}"} if answer.get("error") else answer

    answers = remote.parallel(logbook_hosts(site), work, READ_TIMEOUT_S + 4 * timeout,
                              lambda h: {"error": f"no answer within {READ_TIMEOUT_S + 4 * timeout:.0f} s"})
    out: dict[str, dict] = {}
    for host, a in answers.items():
        if a.get("error"):
            out[host] = {"error": a["error"]}
            continue
        done, ongoing = book.session_records(site, host, a, tz)
        new_s = store.append_new(rdir / book.SESSIONS, done)
        new_f = store.append_new(rdir / book.FAILURES, book.failure_records(site, host, a, tz))
        state[host] = {"resume_from": book.resume_from(site, a)}
        out[host] = {"error": None, "new_sessions": len(new_s), "new_failures": len(new_f), "ongoing": ongoing}
    write_state(rdir, state)
    return out


def read_book(site: Site) -> tuple[list[dict], list[dict], list[dict]]:
    rdir = store.records_dir(site)
    return store.read(rdir / book.SESSIONS), store.read(rdir / book.FAILURES), store.read(rdir / book.NOTES)


def _as_of(value: str | None, tz: dt.tzinfo) -> dt.datetime:
    """The moment the overdue flag is judged at: now, or a given date/time (site's timezone)."""
    if not value:
        return dt.datetime.now(tz)
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"--as-of {value!r}: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM") from None
    return t if t.tzinfo else t.replace(tzinfo=tz)


def _hm(value: str | None, tz: dt.tzinfo) -> str:
    t = book.parse_time(value)
    return t.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def _print_json(console: Console, data) -> None:
    console.file.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    console.file.flush()


# --- list ------------------------------------------------------------------------------------------

def cmd_list(args: argparse.Namespace, console: Console) -> int:
    site = load_site(args.site)
    tz = _tz(site)
    try:
        month = parse_month(args.month) if args.month else None
        as_of = _as_of(args.as_of, tz)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        return 2
    sessions, failures, notes = read_book(site)
    rows = book.entries(site, sessions, notes, as_of)
    if month:
        rows = [e for e in rows if book.in_month(e, *month, tz)]
        failures = [f for f in failures if book.in_month(f, *month, tz)]
    manual = [e for e in rows if e["state"] != "automated" and (not args.open or e["state"] in ("open", "overdue"))]
    groups = [] if args.open else book.automated_groups(rows, tz)
    if args.json:
        _print_json(console, {"sessions": manual, "automated": groups, "failures": [] if args.open else failures})
        return 0
    t = Table(title=f"Logbook perbaikan remote (SOP RA-5), site '{site.site}'" + (f", {args.month}" if month else ""),
              title_justify="left")
    for col in ("id", "host", "admin", "network", "start", "end", "state", "analysis"):
        t.add_column(col)
    for e in manual:
        state = STATE_LABELS[e["state"]]
        style = {"overdue": "red", "open": "yellow"}.get(e["state"], "")
        t.add_row(e["id"][:book.SHORT_ID], e["host"], e.get("admin") or f"{e['user']} (unknown key)", e["network"],
                  _hm(e["start"], tz), _hm(e["end"], tz) if e.get("end") else f"({e.get('ended')})",
                  f"[{style}]{state}[/{style}]" if style else state, ((e.get("note") or {}).get("analysis") or "")[:60])
    console.print(t)
    if groups:
        g = Table(title="Automated sessions (commands without a terminal: siaga, scripts), per day", title_justify="left")
        for col in ("date", "host", "admin", "sessions", "first", "last", "network"):
            g.add_column(col)
        for r in groups:
            g.add_row(r["date"], r["host"], r["admin"], str(r["sessions"]), _hm(r["first"], tz)[11:], _hm(r["last"], tz)[11:],
                      ", ".join(r["networks"]))
        console.print(g)
    if failures and not args.open:
        f = Table(title="Failed attempts", title_justify="left")
        for col in ("time", "host", "from", "network", "user", "kind"):
            f.add_column(col)
        for r in sorted(failures, key=lambda r: r.get("start") or ""):
            f.add_row(_hm(r["start"], tz), r["host"], r["address"] or "?", r["network"], r.get("user") or "-", r["kind"])
        console.print(f)
    overdue = sum(e["state"] == "overdue" for e in manual)
    if overdue:
        console.print(f"[red]{overdue} session(s) without an analysis more than {site.logbook.analysis_due_days} day(s) after "
                      "they ended[/red]: siaga logbook note ID --fault ... --analysis ... --repair ...", highlight=False)
    return 0


# --- collect ---------------------------------------------------------------------------------------

def cmd_collect(args: argparse.Namespace, console: Console) -> int:
    site = load_site(args.site)
    res = collect(site, args.timeout)
    if args.json:
        _print_json(console, res)
        return 1 if any(r["error"] for r in res.values()) else 0
    tz = _tz(site)
    for host, r in res.items():
        if r["error"]:
            console.print(f"[red]{host}: not collected[/red]: {r['error']} (its sessions are collected next time)", highlight=False)
            continue
        console.print(f"{host}: {r['new_sessions']} new session(s), {r['new_failures']} new failed attempt(s)", highlight=False)
        # Only people at work: the automated ones still open include this collect's own connection.
        for s in r["ongoing"]:
            if s["kind"] == "manual":
                console.print(f"  session still open: {s.get('admin') or s['user']} from {s['address']} ({s['network']}) "
                              f"since {_hm(s['start'], tz)} (recorded once it has ended)", highlight=False)
    return 1 if any(r["error"] for r in res.values()) else 0


# --- note ------------------------------------------------------------------------------------------

FIELDS = (("fault", "Gangguan yang dilaporkan (the fault reported)"),
          ("analysis", "Analisa kerusakan (what caused it)"),
          ("repair", "Analisa perbaikan (what was done: first fix, root-cause fix)"))


def parse_note_text(text: str) -> dict[str, str]:
    """The three texts from an editor or stdin: sections headed `[fault]`, `[analysis]`, `[repair]`;
    lines starting with '#' are comments."""
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("#"):
            continue
        if s.startswith("[") and s.endswith("]") and s[1:-1] in dict(FIELDS):
            current = s[1:-1]
            out.setdefault(current, [])
        elif current:
            out[current].append(line)
    return {k: "\n".join(v).strip() for k, v in out.items()}


def _ask(given: dict[str, str]) -> dict[str, str]:
    """The three texts from $EDITOR (prefilled with what the options gave), or from stdin when it is
    not a terminal."""
    template = "".join(f"# {label}\n[{name}]\n{given.get(name) or ''}\n\n" for name, label in FIELDS)
    if not sys.stdin.isatty():
        return parse_note_text(sys.stdin.read())
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "editor"
    with tempfile.NamedTemporaryFile("w+", suffix=".txt", prefix="siaga-logbook-") as fh:
        fh.write("# siaga logbook note: write under each heading; lines starting with # are ignored. Never a password.\n"
                 + template)
        fh.flush()
        subprocess.run([*shlex.split(editor), fh.name], check=False)
        return parse_note_text(Path(fh.name).read_text())


def cmd_note(args: argparse.Namespace, console: Console) -> int:
    site = load_site(args.site)
    tz = _tz(site)
    rdir = store.records_dir(site)
    sessions = store.read(rdir / book.SESSIONS)
    match = book.find_session(sessions, args.id)
    if len(match) != 1:
        console.print(f"[red]error:[/red] {len(match)} sessions with an id starting {args.id!r} in the logbook "
                      "(run `siaga logbook collect`, then `siaga logbook list`; give more of the id)", highlight=False)
        return 1
    texts = {name: (getattr(args, name) or "").strip() for name, _ in FIELDS}
    if not all(texts.values()):
        texts.update({k: v for k, v in _ask(texts).items() if v})
    still = [name for name, _ in FIELDS if not texts.get(name)]
    if still:
        console.print(f"[red]error:[/red] no {', '.join(still)} given: give --{' --'.join(still)} (or write them in the editor)",
                      highlight=False)
        return 1
    for name, text in texts.items():
        if why := book.secret_in(text):
            console.print(f"[red]error:[/red] the {name} text looks like it holds a secret ({why}): nothing recorded. "
                          "Describe the fault and the repair without passwords or keys (the logbook is mirrored and reported)",
                          highlight=False)
            return 1
    s = match[0]
    note = {"v": 1, "id": uuid.uuid4().hex, "session": s["id"], "host": s["host"], **texts, "by": site.connection.user,
            "at": dt.datetime.now(tz).isoformat(timespec="seconds")}
    store.append_new(rdir / book.NOTES, [note])
    if args.json:
        _print_json(console, note)
    else:
        console.print(f"logbook entry {s['id'][:book.SHORT_ID]} ({s['host']}, {s.get('admin') or s['user']}, "
                      f"{_hm(s['start'], tz)}) closed", highlight=False)
    return 0


# --- report ----------------------------------------------------------------------------------------

def report_context(site: Site, sessions: list[dict], failures: list[dict], notes: list[dict], year: int, month: int,
                   now: dt.datetime) -> dict:
    tz = _tz(site)
    rows = [e for e in book.entries(site, sessions, notes, now) if book.in_month(e, year, month, tz)]

    def when(value):
        t = book.parse_time(value)
        return t.astimezone(tz) if t else None

    manual = []
    for e in rows:
        if e["state"] == "automated":
            continue
        start, end = when(e["start"]), when(e.get("end"))
        manual.append(dict(e, lokasi=f"{e['host']} — {site.sites[e['site_role']].label or e['site_role']}" if e.get("site_role") in site.sites else e["host"],
                           jaringan=f"{e['network']} ({e['address']})", tanggal=start.strftime("%d-%m-%Y"),
                           jam_mulai=start.strftime("%H:%M:%S"), jam_selesai=end.strftime("%H:%M:%S") if end else "-",
                           selesai_lain_hari=bool(end and end.date() != start.date())))
    failed = []
    for f in sorted((f for f in failures if book.in_month(f, year, month, tz)), key=lambda f: f.get("start") or ""):
        t = when(f["start"])
        failed.append(dict(f, tanggal=t.strftime("%d-%m-%Y"), jam=t.strftime("%H:%M:%S"),
                           jenis=book.FAILURE_LABELS.get(f["kind"], f["kind"])))
    return {"site": site, "label": month_label((year, month)), "month": f"{year:04d}-{month:02d}", "manual": manual,
            "automated": book.automated_groups(rows, tz), "failures": failed, "due_days": site.logbook.analysis_due_days,
            "overdue": sum(e["state"] == "overdue" for e in manual), "open": sum(e["state"] == "open" for e in manual),
            "generated": now.isoformat(timespec="seconds"), "by": site.connection.user}


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    site = load_site(args.site)
    tz = _tz(site)
    now = dt.datetime.now(tz)
    try:
        year, month = parse_month(args.month) if args.month else (now.year, now.month)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        return 2
    sessions, failures, notes = read_book(site)
    ctx = report_context(site, sessions, failures, notes, year, month, now)
    out_dir = Path(args.out).expanduser() if args.out else store.records_dir(site)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"logbook-perbaikan-remote-{ctx['month']}.html"
    path.write_text(render_report("logbook_perbaikan_remote.html.j2", **ctx))
    if args.json:
        _print_json(console, {"report": str(path), "sessions": len(ctx["manual"]), "open": ctx["open"], "overdue": ctx["overdue"],
                              "automated_groups": len(ctx["automated"]), "failures": len(ctx["failures"])})
    else:
        console.print(f"report: {path} ({len(ctx['manual'])} session(s), {ctx['open'] + ctx['overdue']} without analysis, "
                      f"{len(ctx['failures'])} failed attempt(s))", highlight=False)
    return 0


# --- the command line ------------------------------------------------------------------------------

def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("logbook", help="the remote-repair logbook: SSH sessions, notes, monthly report (RA-5, RA-6)",
                              description="Without a subcommand: list (with the lab's site file).")

    def common(sp: argparse.ArgumentParser, site: bool = True) -> None:
        if site:
            sp.add_argument("site", nargs="?", help="site YAML file (default: the lab's)")
        sp.add_argument("--json", action="store_true", help="print JSON instead of tables")

    def list_options(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--month", help="only sessions that started in this month, YYYY-MM")
        sp.add_argument("--open", action="store_true", help="only manual sessions without an analysis")
        sp.add_argument("--as-of", help="judge 'overdue' at this date/time (YYYY-MM-DD[THH:MM]) instead of now")

    common(p, site=False)
    list_options(p)
    p.set_defaults(func=cmd_list, site=None)
    sub = p.add_subparsers(dest="logbook_cmd")
    ls = sub.add_parser("list", help="the logbook from the workstation's records (no host contacted)")
    list_options(ls)
    common(ls)
    ls.set_defaults(func=cmd_list)
    co = sub.add_parser("collect", help="read every host's SSH sessions and failed attempts into the records")
    co.add_argument("--timeout", type=float, default=CONNECT_TIMEOUT_S, help="SSH connect timeout per host, seconds")
    common(co)
    co.set_defaults(func=cmd_collect)
    no = sub.add_parser("note", help="record the fault, its analysis and the repair of a session; closes the entry (RA-5)")
    no.add_argument("id", help="the session's id (or its start), from `siaga logbook list`")
    for name, label in FIELDS:
        no.add_argument(f"--{name}", help=f"{label}; missing ones are asked for in $EDITOR (or read from stdin)")
    common(no)
    no.set_defaults(func=cmd_note)
    rp = sub.add_parser("report", help="the month's logbook as HTML in Indonesian (SOP RA-5 fields)")
    rp.add_argument("--month", help="YYYY-MM (default: this month)")
    rp.add_argument("--out", help="directory for the report (default: the records directory)")
    common(rp)
    rp.set_defaults(func=cmd_report)
