"""`siaga backup ...`: take backups now and keep the backup log (SOP BK-1, BK-3, BK-5).

- `run [--set NAME]`: runs `/usr/local/sbin/siaga-backup run` (roles/backup) over SSH on the host
  that owns each set, as each host's /etc/siaga/backup.json `runs` says (the database set
  and the offline copy on the repository host, the DRC; the restic sets on the database source host).
  Every run writes its own record on that host; the records are printed and kept on the
  workstation too.
- `log [--json]`: collects every host's log (/var/log/siaga/backup.jsonl) into the workstation's
  records (`<records_dir>/backup-log.jsonl`, append-only, deduplicated by record id) and shows the
  *Log Pelaksanaan Backup*. A set with no successful backup within its schedule period plus
  `backup.missing_grace_s` is itself a failure (kind `missing`), recorded once per missed period:
  silence is not success (BK-3, BK-5). Exit 1 while a set is in that state or a host could not be read.

Hosts are reached with drc.hosts.remote (the site's connection data, strict host keys, deadlines).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import re
import shlex
import shutil
import subprocess
from functools import lru_cache

from rich.console import Console
from rich.table import Table

from drc.hosts import remote
from drc.records import store as records
from drc.site import Site, load_site

RUNNER = "/usr/local/sbin/siaga-backup"
CONFIG_JSON = "/etc/siaga/backup.json"
LOG_RECORDS = "backup-log.jsonl"
READ_TIMEOUT_S = 60.0
# Runs on one host go one after the other; each is bounded by backup.timeout_s on the host.
RUN_MARGIN_S = 120.0


def operator(site: Site) -> str:
    """Who runs the command (recorded as `by`): the admin account siaga connects as (RA-3)."""
    return site.connection.user


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo else t.astimezone()


# --- reading the hosts ---------------------------------------------------------------------------

def backup_hosts(site: Site) -> list[str]:
    """The hosts with a backup runner: the database source and the repository host."""
    src = site.hosts_in(site.replication.source_site)[:1]
    repo = site.hosts_in(site.backup.repository_site)[:1]
    return list(dict.fromkeys(src + repo))


def read_hosts(site: Site, timeout: float = remote.CONNECT_TIMEOUT_S) -> dict[str, dict]:
    """Each backup host's runs, log records and init time, in parallel; {"error": ...} if not.
    Read on the host, as root, by drc/hostside/backup_read.py (installed by roles/backup)."""

    def work(host: str) -> dict:
        r = remote.run_program(site, host, "backup_read", {"config": CONFIG_JSON}, timeout=READ_TIMEOUT_S,
                               connect_timeout=timeout)
        if not r.ok:
            return {"error": r.error or f"exited {r.exited}: {r.stderr.strip()[-300:]}"}
        try:
            return json.loads(r.stdout)
        except ValueError:
            return {"error": f"unreadable answer: {r.stdout.strip()[:200]!r}"}

    return remote.parallel(backup_hosts(site), work, READ_TIMEOUT_S + 4 * timeout,
                           lambda h: {"error": f"no answer within {READ_TIMEOUT_S + 4 * timeout:.0f} s"})


def all_sets(site: Site) -> list[str]:
    return ["db", *(s.name for s in site.backup.sets)]


def plan_run(site: Site, hosts: dict[str, dict], set_name: str | None) -> tuple[dict[str, list[str]], list[str]]:
    """host -> the sets to run there, and the problems (unknown set, unreadable host)."""
    wanted = all_sets(site) if set_name in (None, "all") else [set_name]
    problems, plan = [], {}
    for name in wanted:
        owners = [h for h, d in hosts.items() if name in (d.get("runs") or [])]
        if not owners:
            unread = [f"{h} ({d['error']})" for h, d in hosts.items() if d.get("error")]
            problems.append(f"set '{name}': no host runs it" + (f"; not readable: {', '.join(unread)}" if unread else
                            f" (sets: {', '.join(all_sets(site))}, prune, offline)"))
        for h in owners[:1]:
            plan.setdefault(h, []).append(name)
    return plan, problems


def run_sets(site: Site, plan: dict[str, list[str]], by: str, timeout: float = remote.CONNECT_TIMEOUT_S,
             trigger: str = "manual") -> dict[str, dict]:
    """Run the planned sets, hosts in parallel, sets on one host one after the other.
    host -> {"records": [...], "output": str, "error": str|None}."""
    b = site.backup

    def work(host: str) -> dict:
        # `;` not `&&`: every set runs even if one before it failed (each gets its record).
        cmd = "; ".join(f"sudo -n {RUNNER} run {shlex.quote(s)} --trigger {shlex.quote(trigger)} --by {shlex.quote(by)} || rc=1"
                        for s in plan[host])
        r = remote.run(site, host, f"rc=0; {cmd}; exit $rc", timeout=len(plan[host]) * (b.timeout_s + RUN_MARGIN_S),
                       connect_timeout=timeout)
        recs = [json.loads(ln[7:]) for ln in r.stdout.splitlines() if ln.startswith("RECORD ")]
        error = None
        if not r.reachable:
            error = r.error
        elif r.exited != 0 and not recs:
            error = f"runner exited {r.exited}: {(r.stderr or r.stdout).strip()[-300:]}"
        return {"records": recs, "output": r.stdout, "error": error, "exited": r.exited}

    deadline = max(len(v) for v in plan.values()) * (b.timeout_s + RUN_MARGIN_S) + 60 if plan else 0
    return remote.parallel(list(plan), work, deadline, lambda h: {"records": [], "error": "no answer before the deadline"})


def unreachable_record(site: Site, host: str, sets: list[str], by: str, error: str, at: dt.datetime) -> dict:
    """A run that could not even start (host not reached) is a failed run too (BK-3)."""
    iso = at.isoformat(timespec="seconds")
    return {"v": 1, "id": hashlib.sha1(f"{site.site}|{host}|{iso}|{','.join(sets)}|unreachable".encode()).hexdigest(),
            "host": host, "site": site.site, "set": ",".join(sets), "repository": "-", "kind": "unreachable",
            "trigger": "manual", "by": by, "start": iso, "end": iso, "duration_s": 0.0, "size_bytes": None,
            "result": "failure", "error": f"siaga could not run the backup on {host}: {error}", "details": {}}


# --- missing expected successes --------------------------------------------------------------------

class ScheduleError(RuntimeError):
    """The backup schedule cannot be read on this workstation; a guessed period would hide missed backups."""


@lru_cache(maxsize=64)
def calendar_period_s(*calendars: str) -> float:
    """The longest gap between two consecutive elapses of these systemd calendars together
    (e.g. weekly full + Mon..Sat incr = 1 day), asked of systemd-analyze. Without it no period is
    guessed: ScheduleError says what to install or fix (SOP BK-3: a missed backup must show)."""
    tool = shutil.which("systemd-analyze")
    if not tool:
        raise ScheduleError("systemd-analyze is not installed on this workstation, so the backup periods cannot be "
                            "computed from the site's calendars. Fix: apt-get install systemd")
    times: list[dt.datetime] = []
    horizons: list[dt.datetime] = []
    for cal in calendars:
        proc = subprocess.run([tool, "calendar", "--iterations=15", cal], capture_output=True, text=True,
                              env={"TZ": "UTC", "PATH": "/usr/bin:/bin"}, timeout=10)
        found = [dt.datetime.fromisoformat(m) for m in re.findall(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", proc.stdout)]
        if proc.returncode != 0 or not found:
            raise ScheduleError(f"systemd-analyze cannot read the calendar {cal!r} (exit {proc.returncode}: "
                                f"{(proc.stderr or proc.stdout).strip()[-200:]}). Fix: correct that OnCalendar value in the site file")
        horizons.append(max(found))
        times += found
    # Only as far as every calendar was listed (a weekly one reaches further than a daily one).
    times = sorted(t for t in set(times) if t <= min(horizons))
    if len(times) < 2:
        raise ScheduleError(f"the calendars {', '.join(map(repr, calendars))} elapse fewer than twice: no period. "
                            "Fix: give a recurring OnCalendar value")
    return max((b - a).total_seconds() for a, b in zip(times, times[1:]))


def expected_sets(site: Site) -> dict[str, float]:
    """Set -> seconds between scheduled runs (the period a success must come within)."""
    b = site.backup
    out = {"db": calendar_period_s(b.full_on_calendar, b.incr_on_calendar)}
    for s in b.sets:
        out[s.name] = calendar_period_s(s.on_calendar)
    if b.offline.enabled and b.offline.on_calendar:
        # A week without a verified offline copy is a failure too (BK-9), e.g. the media was never attached.
        out["offline"] = calendar_period_s(b.offline.on_calendar)
    return out


def repository_of(set_name: str) -> str:
    """The repository whose successes count for a set (an offline copy never counts for repo1)."""
    return "offline" if set_name == "offline" else "repo1"


def is_success_of(r: dict, set_name: str) -> bool:
    return r.get("set") == set_name and r.get("result") == "success" and r.get("repository") == repository_of(set_name)


def missing_records(site: Site, log: list[dict], hosts: dict[str, dict], now: dt.datetime) -> list[dict]:
    """One failure record per set and per missed period: no success within period + grace since
    the last success (or since the repositories were initialised). Deterministic ids, so
    collecting again records each missed period once."""
    grace = site.backup.missing_grace_s
    out = []
    for set_name, period in expected_sets(site).items():
        owner = next((h for h, d in hosts.items() if set_name in (d.get("runs") or [])), None)
        successes = [t for r in log if is_success_of(r, set_name) and (t := parse_time(r.get("end")))]
        if successes:
            ref, since = max(successes), "the last successful backup"
        else:
            init = parse_time((hosts.get(owner) or {}).get("initialised")) if owner else None
            if init is None:
                continue  # never set up (or the host unread): nothing is due yet
            ref, since = init, "the repositories were initialised"
        missed = int((now - ref).total_seconds() - grace) // int(period) if (now - ref).total_seconds() > period + grace else 0
        for k in range(max(1, missed - 399), missed + 1) if missed else ():
            due = ref + dt.timedelta(seconds=k * period + grace)
            iso = due.isoformat(timespec="seconds")
            out.append({
                "v": 1, "id": hashlib.sha1(f"{site.site}|{set_name}|missing|{ref.isoformat()}|{k}".encode()).hexdigest(),
                "host": owner or "-", "site": site.site, "set": set_name, "repository": repository_of(set_name), "kind": "missing",
                "trigger": "check", "by": "siaga backup log", "start": iso, "end": iso, "duration_s": None,
                "size_bytes": None, "result": "failure",
                "error": (f"no successful backup of set '{set_name}' within {_dur(period)} + {_dur(grace)} grace since "
                          f"{since} ({ref.isoformat(timespec='seconds')}); missed period {k}"),
                "details": {"last_success": ref.isoformat(timespec="seconds") if successes else None,
                            "period_s": period, "grace_s": grace, "due": iso},
            })
    return out


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


# --- collecting the log ------------------------------------------------------------------------------

def collect(site: Site, now: dt.datetime | None = None, timeout: float = remote.CONNECT_TIMEOUT_S) -> dict:
    """Hosts' logs -> workstation records (append-only), then missing successes recorded too."""
    now = now or dt.datetime.now().astimezone()
    hosts = read_hosts(site, timeout)
    path = records.records_dir(site) / LOG_RECORDS
    from_hosts = [r for d in hosts.values() for r in d.get("records") or []]
    new = records.append_new(path, sorted(from_hosts, key=lambda r: r.get("start") or ""))
    log = records.read(path)
    # Only when every host was read: an unread host may hold the success.
    missing_new: list[dict] = []
    if not any(d.get("error") for d in hosts.values()):
        missing_new = records.append_new(path, missing_records(site, log, hosts, now))
        log = records.read(path)
    state = set_states(site, log, hosts, now)
    return {"site": site.site, "collected_at": now.isoformat(timespec="seconds"), "records_file": str(path),
            "hosts": {h: {"error": d.get("error"), "records": len(d.get("records") or []), "bad_lines": d.get("bad_lines", 0),
                          "runs": d.get("runs")} for h, d in hosts.items()},
            "new_records": len(new), "new_missing": len(missing_new), "sets": state,
            "records": sorted(log, key=lambda r: r.get("start") or "")}


def set_states(site: Site, log: list[dict], hosts: dict[str, dict], now: dt.datetime) -> dict[str, dict]:
    """Per expected set: last run, last success, when the next success is due, and whether it is late."""
    out = {}
    grace = site.backup.missing_grace_s
    for set_name, period in expected_sets(site).items():
        runs = [r for r in log if r.get("set") == set_name and r.get("repository") == "repo1" and r.get("kind") != "missing"]
        last = max(runs, key=lambda r: r.get("start") or "", default=None)
        ok = [r for r in runs if r.get("result") == "success"]
        last_ok = max(ok, key=lambda r: r.get("end") or "", default=None)
        owner = next((h for h, d in hosts.items() if set_name in (d.get("runs") or [])), None)
        ref = parse_time(last_ok["end"]) if last_ok else parse_time((hosts.get(owner) or {}).get("initialised"))
        due = ref + dt.timedelta(seconds=period + grace) if ref else None
        out[set_name] = {"host": owner, "period_s": period, "last_run": last and last.get("start"),
                         "last_result": last and last.get("result"), "last_success": last_ok and last_ok.get("end"),
                         "due": due and due.isoformat(timespec="seconds"), "late": bool(due and now > due)}
    return out


# --- output ------------------------------------------------------------------------------------------

RESULT_STYLE = {"success": "green", "failure": "bold red", "skipped": "yellow"}


def record_table(recs: list[dict], title: str) -> Table:
    t = Table(title=title, title_justify="left")
    for col in ("Mulai", "Selesai", "Durasi", "Host", "Set", "Repositori", "Jenis", "Pemicu", "Oleh", "Ukuran", "Hasil", "Keterangan"):
        t.add_column(col, overflow="fold")
    for r in recs:
        res = r.get("result") or "?"
        style = RESULT_STYLE.get(res)
        start, end = parse_time(r.get("start")), parse_time(r.get("end"))
        detail = r.get("error") or ""
        d = r.get("details") or {}
        if not detail:
            detail = d.get("label") or d.get("snapshot") or d.get("reason") or ""
        t.add_row(start.strftime("%Y-%m-%d %H:%M:%S") if start else "-", end.strftime("%H:%M:%S") if end else "-",
                  _dur(r.get("duration_s")), r.get("host") or "-", r.get("set") or "-", r.get("repository") or "-",
                  r.get("kind") or "-", r.get("trigger") or "-", r.get("by") or "-", _size(r.get("size_bytes")),
                  f"[{style}]{res}[/{style}]" if style else res, detail[:300])
    return t


def render_log(report: dict, console: Console, limit: int) -> None:
    recs = report["records"][-limit:] if limit else report["records"]
    console.print(record_table(recs, f"Log Pelaksanaan Backup — site '{report['site']}' "
                                     f"({len(recs)} of {len(report['records'])} records; SOP BK-3)"))
    t = Table(title="Status per set (a success is due within its period + grace: SOP BK-1, BK-5)", title_justify="left")
    for col in ("Set", "Host", "Periode", "Terakhir", "Hasil terakhir", "Sukses terakhir", "Batas berikutnya", "Status"):
        t.add_column(col)
    for name, s in report["sets"].items():
        status = "[bold red]TERLAMBAT (failure)[/bold red]" if s["late"] else "[green]OK[/green]"
        t.add_row(name, s["host"] or "?", _dur(s["period_s"]), s["last_run"] or "-", s["last_result"] or "-",
                  s["last_success"] or "-", s["due"] or "-", status)
    console.print(t)
    for h, d in report["hosts"].items():
        if d["error"]:
            console.print(f"[red]{h}[/red]: log not collected: {d['error']}", highlight=False)
        elif d["bad_lines"]:
            console.print(f"[yellow]{h}[/yellow]: {d['bad_lines']} unreadable line(s) in the host's log", highlight=False)
    console.print(f"records: {report['records_file']} (+{report['new_records']} collected, +{report['new_missing']} missing-success failures)",
                  highlight=False)


def log_exit_code(report: dict) -> int:
    late = any(s["late"] for s in report["sets"].values())
    return 1 if late or any(d["error"] for d in report["hosts"].values()) else 0


# --- commands ------------------------------------------------------------------------------------------

def cmd_run(args: argparse.Namespace, console: Console) -> int:
    site = load_site(args.site)
    by = operator(site)
    hosts = read_hosts(site, args.timeout)
    plan, problems = plan_run(site, hosts, args.set)
    for p in problems:
        console.print(f"[red]error:[/red] {p}", highlight=False)
    if not plan:
        return 1 if problems else 0
    started = dt.datetime.now().astimezone()
    results = run_sets(site, plan, by, args.timeout)
    recs: list[dict] = []
    for host, res in results.items():
        recs += res["records"]
        if res.get("error") and not res["records"]:
            recs.append(unreachable_record(site, host, plan[host], by, res["error"], started))
    records.append_new(records.records_dir(site) / LOG_RECORDS, recs)
    ok = not problems and recs and all(r.get("result") == "success" for r in recs)
    if args.json:
        console.file.write(json.dumps({"ok": bool(ok), "problems": problems, "records": recs}, indent=2) + "\n")
        console.file.flush()
    else:
        console.print(record_table(recs, f"siaga backup run — site '{site.site}' (SOP BK-1, BK-3)"))
        console.print("[green]OK[/green]: every set backed up." if ok else "[red]FAILED[/red]: see Keterangan (recorded in the backup log).")
    return 0 if ok else 1


def cmd_log(args: argparse.Namespace, console: Console) -> int:
    site = load_site(args.site)
    try:
        report = collect(site, timeout=args.timeout)
    except ScheduleError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    if args.json:
        console.file.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        console.file.flush()
    else:
        render_log(report, console, args.limit)
    return log_exit_code(report)
