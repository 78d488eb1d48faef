"""`siaga status [SITE]`: is the DRC up to date, and who is primary? Read from the hosts themselves.

Per host: role (primary / standby / unknown, from PostgreSQL's pg_is_in_recovery, never from the
site file), application health, database replication lag (bytes and seconds), WAL receiver state,
uploads lag (seconds and files missing on the DRC) and the service components of SOP EM-5 with
their criticality. Exit 0 when there is exactly one primary, every other host is its standby and
each standby is within `status.max_lag_bytes` / `status.max_lag_seconds` of it; 1 otherwise (so
cron and CI can use it); 2 for a bad site file. SOP EM-3 ("make sure DRC data is up to date"),
EM-5, IN-4.

Also per host, as information that never changes the exit code (EM-3's verdict is about the DRC's
data, and a pending update is unattended-upgrades' daily work, not an outage): security updates
pending (as apt's last list refresh knows them; the probe asks no mirror) and whether a reboot is
needed (/var/run/reboot-required), with the site's reboot window. They are listed as `notices`.

Hosts are queried in parallel over SSH (Fabric) with the site's connection data and strict host
key checking; each host has a deadline, so an unreachable one is "unknown", never a hang.
The probe that runs on each host is drc/hostside/status_probe.py (read-only, installed by
roles/base as /usr/local/lib/siaga/status-probe); `evaluate()` below decides,
on what the probes returned, without touching any host (unit-tested on recorded data).
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from drc.hosts import remote
from drc.hosts.remote import CONNECT_TIMEOUT_S
from drc.site import SITE_ROLES, Site, load_site

# Listing a large uploads tree (find) is the slowest part of a probe.
PROBE_TIMEOUT_S = 60.0
# rsync keeps mtimes; a copy within this of the source's mtime (and the same size) is current.
MTIME_SLACK_S = 1.0
# apt-daily.timer refreshes the lists daily; older than this, the count of pending updates is stale.
LISTS_STALE_S = 2 * 24 * 3600

Probe = dict[str, Any]


def host_order(site: Site) -> list[str]:
    """Hosts of the primary site first, then the DRC's (as operators read the sites)."""
    return [h for role in SITE_ROLES for h in site.hosts_in(role)]


# --- probing the hosts (Fabric) --------------------------------------------------------------

def _probe_args(site: Site, host: str, timeout: float) -> dict:
    app = site.spse_app
    return {
        "timeout": timeout,
        "listing_timeout": PROBE_TIMEOUT_S,
        "pg_port": site.firewall.postgresql_port,
        "health_url": f"http://127.0.0.1:{app.listen_port}{app.context_path}/health",
        "uploads_dir": app.uploads_dir,
        "components": [{"name": c.name, "kind": c.kind, "target": c.target}
                       for c in site.components if host in site.hosts_for(c.run_on)],
        "security_files": {name: f"{state_dir}/status.json" for name, state_dir in security_services(site).items()},
    }


def security_services(site: Site) -> dict[str, str]:
    """The security services the site runs, by name → their state directory (their status.json)."""
    out = {}
    if site.clamav.enabled:
        out["clamav"] = site.clamav.state_dir
    if site.file_integrity.enabled:
        out["integrity"] = site.file_integrity.state_dir
    return out


def probe_host(site: Site, host: str, timeout: float = CONNECT_TIMEOUT_S) -> Probe:
    """What one host says about itself, or {"reachable": False, "error": ...}."""
    # As the admin, not root: the probe asks sudo itself for psql as postgres and the uploads listing.
    result = remote.run_program(site, host, "status_probe", _probe_args(site, host, timeout),
                                timeout=PROBE_TIMEOUT_S + 4 * timeout, connect_timeout=timeout, sudo=False)
    if not result.reachable:
        return {"reachable": False, "error": result.error}
    if result.error:
        return {"reachable": True, "error": result.error}
    if result.exited != 0:
        return {"reachable": True, "error": f"probe failed ({result.exited}): {result.stderr.strip()[-300:]}"}
    try:
        return {"reachable": True, "error": None, **json.loads(result.stdout)}
    except ValueError:
        return {"reachable": True, "error": f"probe said: {result.stdout.strip()[:300]!r}"}


def probe_all(site: Site, timeout: float = CONNECT_TIMEOUT_S) -> dict[str, Probe]:
    """Every host in parallel; a host that has not answered by the deadline is unreachable.
    Daemon threads: one stuck in the network never keeps the command from exiting."""
    deadline_s = PROBE_TIMEOUT_S + 6 * timeout
    return remote.parallel(host_order(site), lambda name: probe_host(site, name, timeout), deadline_s,
                           lambda name: {"reachable": False, "error": f"no answer within {deadline_s:.0f} s"})


# --- evaluation (no host touched) ------------------------------------------------------------

def parse_lsn(lsn: str | None) -> int | None:
    """'16/B374D848' -> byte position in the WAL."""
    if not lsn:
        return None
    hi, _, lo = lsn.partition("/")
    try:
        return (int(hi, 16) << 32) + int(lo, 16)
    except ValueError:
        return None


def role_of(probe: Probe) -> str:
    """primary / standby from PostgreSQL itself; unknown when it could not be asked."""
    pg = probe.get("pg") or {}
    if not probe.get("reachable") or "error" in pg:
        return "unknown"
    return {False: "primary", True: "standby"}.get(pg.get("in_recovery"), "unknown")


def replay_delay_s(lag_bytes: int | None, pg: dict) -> float | None:
    """How many seconds the standby's data is behind, robustly.

    No WAL left to replay means no delay: pg_last_xact_replay_timestamp() only moves when a
    transaction is replayed, so on a quiet database it grows forever and says nothing. With WAL
    left, the delay is at most the age of the last replayed transaction, and, when the receiver
    has replayed all it received, at most the time since it last heard from the primary (what
    was written before that was received, so the oldest unreplayed change is newer). The
    smaller of the two bounds is reported; None when neither is known.
    """
    if lag_bytes is None:
        return None
    if lag_bytes <= 0:
        return 0.0
    bounds = [pg["replay_age_s"]] if pg.get("replay_age_s") is not None else []
    contact = pg.get("receiver_contact_age_s")
    if contact is not None and pg.get("receive_lsn") and pg.get("receive_lsn") == pg.get("replay_lsn"):
        bounds.append(contact)
    return max(0.0, min(bounds)) if bounds else None


def _excluded(path: str, patterns: list[str]) -> bool:
    """rsync-like: a pattern without '/' matches any path component, one with '/' the whole path."""
    parts = path.split("/")
    return any(fnmatch.fnmatch(path, p) if "/" in p else any(fnmatch.fnmatch(part, p) for part in parts)
               for p in patterns)


def uploads_lag(source: dict, target: dict, source_now: float, exclude: list[str]) -> dict:
    """Compare two listings ({"files": [[path, size, mtime]]}): files on the source missing on the
    target or older/different there, and how long the oldest of them has been waiting (seconds, on
    the source's clock). The oldest, not the newest: a fresh upload must not hide an old gap."""
    have = {p: (size, mtime) for p, size, mtime in target["files"] if not _excluded(p, exclude)}
    missing = outdated = 0
    oldest: float | None = None
    source_paths = set()
    for path, size, mtime in source["files"]:
        if _excluded(path, exclude):
            continue
        source_paths.add(path)
        copy = have.get(path)
        if copy is None:
            missing += 1
        elif copy[0] != size or copy[1] + MTIME_SLACK_S < mtime:
            outdated += 1
        else:
            continue
        oldest = mtime if oldest is None else min(oldest, mtime)
    return {
        "files": len(source_paths),
        "missing": missing,
        "outdated": outdated,
        "extra": len(set(have) - source_paths),
        "lag_seconds": 0.0 if oldest is None else round(max(0.0, source_now - oldest), 3),
    }


def _fmt_bytes(n: int | float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _updates_and_reboot(site: Site, name: str, p: Probe) -> dict:
    """The host's pending security updates and reboot flag (information only), with its window."""
    answered = bool(p.get("reachable")) and not p.get("error")
    up = p.get("updates") if answered and "updates" in p else {"error": "not reported (run the site deploy)" if answered else "host not probed"}
    rb = p.get("reboot") if answered and "reboot" in p else {}
    u = site.base.security_updates
    window = None
    if u.enabled and u.reboot.enabled:
        window = f"{u.reboot.windows[site.site_of[name]]} ({u.reboot.window_minutes} min)"
    return {
        "updates": {"security": up.get("security"), "other": up.get("other"), "packages": up.get("packages", []),
                    "lists_age_s": up.get("lists_age_s"), "error": up.get("error")},
        "reboot": {"required": rb.get("required"), "packages": rb.get("packages", []), "window": window},
    }


def notices(hosts: dict[str, dict]) -> list[str]:
    """Security updates and reboots, per host: to know, not an EM-3 problem (no exit code)."""
    out = []
    for name, h in hosts.items():
        up, rb = h["updates"], h["reboot"]
        if up["error"] and h["reachable"]:
            out.append(f"{name}: pending security updates unknown ({up['error']})")
        elif up["security"]:
            listed = ", ".join(up["packages"][:5]) + (", ..." if len(up["packages"]) > 5 else "")
            out.append(f"{name}: {up['security']} security update(s) pending ({listed}); unattended-upgrades installs them "
                       "at apt-daily-upgrade.timer")
        if up["lists_age_s"] is not None and up["lists_age_s"] > LISTS_STALE_S:
            out.append(f"{name}: apt's package lists are {up['lists_age_s'] / 86400:.1f} days old: the count is stale "
                       "(is apt-daily.timer running? can the host reach the mirror?)")
        if rb["required"]:
            why = f" for {', '.join(rb['packages'])}" if rb["packages"] else ""
            if rb["window"]:
                out.append(f"{name}: reboot required{why}; siaga reboots it in its window {rb['window']}")
            else:
                out.append(f"{name}: reboot required{why}; reboot it by hand (base.security_updates.reboot is off)")
    return out


def security_problems(site: Site, name: str, p: Probe, now_ts: float) -> tuple[list[str], list[str]]:
    """(problems, notices) of a host's security services (SOP IN-2): AIDE's last daily check with
    changes nobody explained or none for two days; ClamAV's scans of the uploads where the app runs
    (failing, or none for ten intervals); its quarantine, to know."""
    if not p.get("reachable") or p.get("error") or "security" not in p:
        return [], []
    problems, notes = [], []
    sec = p["security"]
    now_ts = p.get("now", now_ts)  # the host's clock, as its services wrote their times
    if "integrity" in security_services(site):
        st = sec.get("integrity")
        last = (st or {}).get("last_check")
        baseline = (st or {}).get("baseline") or {}
        if not last and not baseline:
            problems.append(f"{name}: file integrity has no baseline (run the site deploy: roles/file_integrity)")
        elif not last:  # a new baseline: its first check is the next daily run, unless that is overdue
            try:
                since = datetime.datetime.fromisoformat(baseline["at"]).timestamp()
            except (KeyError, TypeError, ValueError):
                since = 0
            if now_ts - since > 2 * 86400:
                problems.append(f"{name}: file integrity not checked since its baseline of {baseline.get('at')}: over two days")
        else:
            if not last.get("aide_ok"):
                problems.append(f"{name}: file integrity check failed at {last.get('finished')}: {last.get('error', 'AIDE')}")
            unexplained = [u["path"] for u in last.get("unexplained", [])]
            if unexplained:
                problems.append(f"{name}: file integrity: {len(unexplained)} change(s) nobody explained since the baseline "
                                f"({', '.join(unexplained[:3])}{', ...' if len(unexplained) > 3 else ''}): review, then repair "
                                f"or accept ({site.file_integrity.state_dir}/status.json)")
            if now_ts - last.get("finished_ts", 0) > 2 * 86400:
                problems.append(f"{name}: file integrity last checked {last.get('finished')}: over two days ago")
    scanning = site.site_of[name] == site.active_site
    if "clamav" in security_services(site) and scanning:
        st = sec.get("clamav") or {}
        last = st.get("last_scan")
        if not last:  # the timer's first run comes within a minute of the deploy
            notes.append(f"{name}: ClamAV has not scanned the uploads yet (siaga-upload-scan.timer)")
        else:
            if not last.get("ok"):
                problems.append(f"{name}: ClamAV's last scan of the uploads failed: {last.get('error')}")
            if now_ts - last.get("finished_ts", 0) > 10 * site.clamav.scan_interval_seconds + 600:
                problems.append(f"{name}: ClamAV last scanned the uploads at {last.get('finished')}")
    if (sec.get("clamav") or {}).get("quarantined_total"):
        det = sec["clamav"].get("last_detection") or {}
        notes.append(f"{name}: ClamAV quarantined {sec['clamav']['quarantined_total']} upload(s); the last: {det.get('path')} "
                     f"({det.get('signature')}) at {det.get('at')}")
    return problems, notes


def evaluate(site: Site, probes: dict[str, Probe], now: datetime.datetime | None = None) -> dict:
    """The report (JSON-ready) and its verdict, from what each host said. Touches no host."""
    th = site.status
    now = now or datetime.datetime.now(datetime.timezone.utc)
    hosts: dict[str, dict] = {}
    for name in host_order(site):
        site_role = site.site_of[name]
        p = probes.get(name) or {"reachable": False, "error": "not probed"}
        pg = p.get("pg") or {}
        health = p.get("health") or {}
        role = role_of(p)
        comps = []
        for c in site.components:
            if name in site.hosts_for(c.run_on):
                seen = (p.get("components") or {}).get(c.name) or {}
                comps.append({"name": c.name, "criticality": c.criticality, "kind": c.kind, "target": c.target,
                              "state": seen.get("state", "unknown"), "detail": seen.get("detail", "")})
        receiver = None
        if pg.get("receiver_status") or role == "standby":
            receiver = {"status": pg.get("receiver_status") or "none", "sender_host": pg.get("sender_host"),
                        "last_contact_s": pg.get("receiver_contact_age_s")}
        hosts[name] = {
            "site": site_role,
            "address": str(site.hosts[name].address),
            "reachable": bool(p.get("reachable")),
            "error": p.get("error") or pg.get("error"),
            "role": role,
            "app": health.get("status", "unknown") if p.get("reachable") and not p.get("error") else "unknown",
            "database": {
                "current_lsn": pg.get("current_lsn"),
                "receive_lsn": pg.get("receive_lsn"),
                "replay_lsn": pg.get("replay_lsn"),
                "lag_bytes": None,
                "lag_seconds": None,
                "receiver": receiver,
            },
            "uploads": {"files": len(p["uploads"]["files"]) if "files" in (p.get("uploads") or {}) else None,
                        "error": (p.get("uploads") or {}).get("error"),
                        "missing": None, "outdated": None, "extra": None, "lag_seconds": None},
            "components": comps,
            "fence": p.get("fence") or {},
            **_updates_and_reboot(site, name, p),
        }

    primaries = [h for h, d in hosts.items() if d["role"] == "primary"]
    standbys = [h for h, d in hosts.items() if d["role"] == "standby"]
    unknown = [h for h, d in hosts.items() if d["role"] == "unknown"]
    problems: list[str] = []
    for h in unknown:
        problems.append(f"{h}: role unknown ({hosts[h]['error'] or 'PostgreSQL did not say'})")
    if len(primaries) != 1:
        problems.append(f"{len(primaries)} primaries ({', '.join(primaries) or 'none'}): there must be exactly one")
    # The fence (roles/fencing): a superseded host, one held down, a primary serving alone by a failover.
    for h, d in hosts.items():
        fence = d["fence"]
        if fence.get("fenced"):
            problems.append(f"{h}: FENCED since {fence['fenced'].get('since')} ({fence['fenced'].get('why')}): it accepts no "
                            "writes; it rejoins as a standby by siaga failback")
        elif fence.get("held"):
            problems.append(f"{h}: PostgreSQL held down by the fence guard ({fence['held'].get('why')})")
        if fence.get("authority") and d["role"] == "primary" and not standbys:
            problems.append(f"{h}: serving alone since a failover ({fence['authority'].get('why')}): DEGRADED, no standby")
    security_notes: list[str] = []
    for h in hosts:
        more, notes_h = security_problems(site, h, probes.get(h) or {}, now.timestamp())
        problems += more
        security_notes += notes_h
    if site.lost_site:
        problems.append(f"site {site.lost_site} lost (lost_site in the site file): backups go into the repository at "
                        f"{site.backup.repository_site}, the serving site: DEGRADED (SOP BK-9: keep the offline media away "
                        "from it); siaga failback when the site is back")

    if len(primaries) == 1:
        src = primaries[0]
        src_probe = probes[src]
        src_lsn = parse_lsn(src_probe["pg"].get("current_lsn"))
        for h in standbys:
            pg, db = probes[h]["pg"], hosts[h]["database"]
            replay = parse_lsn(pg.get("replay_lsn"))
            # Read at slightly different moments: a standby ahead of the primary's reading is current.
            lag = max(0, src_lsn - replay) if src_lsn is not None and replay is not None else None
            db["lag_bytes"] = lag
            secs = replay_delay_s(lag, pg)
            db["lag_seconds"] = None if secs is None else round(secs, 3)
            if lag is None:
                problems.append(f"{h}: database lag unknown (no LSN from {src} or {h})")
            elif lag > th.max_lag_bytes:
                problems.append(f"{h}: database {_fmt_bytes(lag)} behind {src} (> {_fmt_bytes(th.max_lag_bytes)}, status.max_lag_bytes)")
            if secs is None and lag:
                problems.append(f"{h}: database lag in seconds unknown")
            elif secs is not None and secs > th.max_lag_seconds:
                problems.append(f"{h}: database {secs:.0f} s behind {src} (> {th.max_lag_seconds:g} s, status.max_lag_seconds)")
            rstatus = db["receiver"]["status"]
            if rstatus != "streaming":
                problems.append(f"{h}: WAL receiver {rstatus}, not streaming from {src}")

            up = hosts[h]["uploads"]
            src_up, dst_up = src_probe.get("uploads") or {}, probes[h].get("uploads") or {}
            if "files" in src_up and "files" in dst_up:
                up.update(uploads_lag(src_up, dst_up, src_probe["now"], site.uploads_sync.exclude))
                if up["lag_seconds"] > th.max_lag_seconds:
                    problems.append(f"{h}: uploads {up['lag_seconds']:.0f} s behind {src} (missing {up['missing']}, out of date "
                                    f"{up['outdated']}; > {th.max_lag_seconds:g} s, status.max_lag_seconds)")
            else:
                up["error"] = up["error"] or src_up.get("error") or "no listing"
                problems.append(f"{h}: uploads lag unknown ({up['error']})")

    return {
        "site": site.site,
        "checked_at": now.isoformat(timespec="seconds"),
        "ok": not problems,
        "thresholds": {"max_lag_bytes": th.max_lag_bytes, "max_lag_seconds": th.max_lag_seconds},
        "roles": {"primary": primaries, "standby": standbys, "unknown": unknown},
        "hosts": hosts,
        "problems": problems,
        "notices": notices(hosts) + security_notes,
    }


def exit_code(report: dict) -> int:
    return 0 if report["ok"] else 1


# --- output ----------------------------------------------------------------------------------

ROLE_STYLE = {"primary": "bold green", "standby": "cyan", "unknown": "bold red"}
STATE_STYLE = {"ok": "green", "up": "green", "read-only": "yellow", "down": "red", "unknown": "red"}


def _styled(value: str, styles: dict[str, str]) -> str:
    style = styles.get(value)
    return f"[{style}]{value}[/{style}]" if style else value


def _secs(v: float | None) -> str:
    return "?" if v is None else f"{v:.1f} s"


def _updates_cells(h: dict) -> tuple[str, str]:
    up, rb = h["updates"], h["reboot"]
    if up["security"] is None:
        updates = "?"
    else:
        updates = "[yellow]" + str(up["security"]) + " pending[/yellow]" if up["security"] else "[green]none[/green]"
    if rb["required"] is None:
        reboot = "?"
    elif rb["required"]:
        reboot = "[yellow]needed[/yellow]" + (f"\nwindow {rb['window']}" if rb["window"] else "\nby hand")
    else:
        reboot = "no"
    return updates, reboot


def render(report: dict, console: Console) -> None:
    th = report["thresholds"]
    t = Table(title=f"siaga status: site '{report['site']}' at {report['checked_at']} "
                    f"(max lag {_fmt_bytes(th['max_lag_bytes'])} / {th['max_lag_seconds']:g} s); roles as PostgreSQL says",
              title_justify="left")
    for col in ("host", "site", "role", "app", "database lag", "WAL receiver", "uploads lag", "security updates", "reboot"):
        t.add_column(col)
    for name, h in report["hosts"].items():
        db, up = h["database"], h["uploads"]
        if h["role"] == "standby":
            lag = "?" if db["lag_bytes"] is None else f"{_fmt_bytes(db['lag_bytes'])}, {_secs(db['lag_seconds'])}"
            r = db["receiver"]
            recv = r["status"] + (f" from {r['sender_host']}" if r.get("sender_host") else "")
            uploads = (f"{_secs(up['lag_seconds'])}, {up['missing']} missing" + (f", {up['outdated']} older" if up["outdated"] else "")
                       if up["lag_seconds"] is not None else f"? ({up['error'] or 'no primary'})")
        elif h["role"] == "primary":
            lag, recv, uploads = f"source ({db['current_lsn']})", "-", f"source ({up['files']} files)" if up["files"] is not None else "?"
        else:
            lag = recv = uploads = "?"
        fence = h.get("fence") or {}
        role = (_styled(h["role"], ROLE_STYLE) + ("" if h["reachable"] else "\n[red]unreachable[/red]")
                + ("\n[bold red]FENCED[/bold red]" if fence.get("fenced") else "\n[yellow]held[/yellow]" if fence.get("held") else ""))
        t.add_row(name, h["site"], role, _styled(h["app"], STATE_STYLE), lag, recv, uploads, *_updates_cells(h))
    console.print(t)

    ct = Table(title="Service components (SOP EM-5)", title_justify="left")
    for col in ("component", "criticality", "check", *report["hosts"]):
        ct.add_column(col)
    rows: dict[str, dict] = {}
    for name, h in report["hosts"].items():
        for c in h["components"]:
            rows.setdefault(c["name"], {"c": c, "on": {}})["on"][name] = c["state"]
    for row in rows.values():
        c = row["c"]
        crit = "[bold]Tinggi[/bold]" if c["criticality"] == "Tinggi" else "Sedang"
        ct.add_row(c["name"], crit, f"{c['kind']} {c['target']}",
                   *(_styled(row["on"][h], STATE_STYLE) if h in row["on"] else "-" for h in report["hosts"]))
    if rows:
        console.print(ct)
    for name, h in report["hosts"].items():
        if h["error"]:
            console.print(f"[yellow]{name}[/yellow]: {h['error']}", highlight=False)
    for n in report.get("notices", []):
        console.print(f"[yellow]note[/yellow] {n}", highlight=False)
    if report["ok"]:
        console.print("[green]OK[/green]: one primary, the DRC streams from it and is up to date (SOP EM-3).")
    else:
        console.print("[red]NOT OK[/red] (SOP EM-3: make sure DRC data is up to date):")
        for p in report["problems"]:
            console.print(f"  - {p}", highlight=False)


def run_status(site_path: str, console: Console, as_json: bool = False, timeout: float = CONNECT_TIMEOUT_S) -> int:
    site = load_site(site_path)
    report = evaluate(site, probe_all(site, timeout))
    if as_json:
        console.file.write(json.dumps(report, indent=2) + "\n")
        console.file.flush()
    else:
        render(report, console)
    return exit_code(report)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "status",
        help="per host: role read from PostgreSQL, app health, replication and uploads lag, components (EM-3, EM-5)",
        description="Exit 0: one primary, the others its streaming standbys within status.max_lag_bytes and "
                    "status.max_lag_seconds. Exit 1: not so (or a host is unknown). Exit 2: bad site file.",
    )
    p.add_argument("site", nargs="?", help="site YAML file (default: the lab's)")
    p.add_argument("--json", action="store_true", help="print the report as JSON (for cron, CI, monitoring)")
    p.add_argument("--timeout", type=float, default=CONNECT_TIMEOUT_S, help="SSH connect timeout per host, seconds (default %(default)s)")
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace, console: Console) -> int:
    return run_status(args.site, console, as_json=args.json, timeout=args.timeout)
