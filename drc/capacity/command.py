"""`siaga report capacity [SITE] [--days N] [--out DIR]`: the daily capacity report (SOP IN-3).

Reads the sites' Prometheus (roles/monitoring) over its read-only HTTP API from the admin
workstation, which the firewall lets in (port 9090): the active site's server first, the other
site's when it does not answer (both hold the same data). For each server: disk used, its growth
per day and the days until full at that trend; memory used; the database's size and growth; the
uploads' size and growth. Written as one standalone HTML file in Indonesian with the plots
embedded (matplotlib PNG, base64): `laporan-kapasitas-<date>.html` in DIR (default: the records
directory). Run it daily from the workstation's cron.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from drc.capacity.figures import DAY_S, Row, Series, disk_rows, human_bytes, series_rows
from drc.records import store as records
from drc.records.render import render_report
from drc.site import Site, load_site
from roles.monitoring.defaults import FS_FILTER, PORTS

QUERIES = {
    "disk_used": f"max by (host, mountpoint) (node_filesystem_size_bytes{{{FS_FILTER}}} - node_filesystem_avail_bytes{{{FS_FILTER}}})",
    "disk_size": f"max by (host, mountpoint) (node_filesystem_size_bytes{{{FS_FILTER}}})",
    "memory": "max by (host) (node_memory_MemTotal_bytes - node_memory_MemAvailable_bytes)",
    "memory_total": "max by (host) (node_memory_MemTotal_bytes)",
    "database": 'max by (host, datname) (pg_database_size_bytes{datname!~"template0|template1|postgres"})',
    "uploads": "max by (host) (siaga_uploads_bytes)",
}


class CapacityError(Exception):
    pass


def prometheus_urls(site: Site) -> list[str]:
    """The active site's servers first, then the other site's."""
    hosts = site.hosts_in(site.active_site) + [h for h in site.site_of if h not in site.hosts_in(site.active_site)]
    out = []
    for h in hosts:
        a = str(site.hosts[h].address)
        out.append(f"http://{'[' + a + ']' if ':' in a else a}:{PORTS['prometheus']}")
    return out


def query_range(base: str, expr: str, start: float, end: float, step: float, timeout: float = 20) -> dict[tuple[str, ...], Series]:
    """Prometheus's /api/v1/query_range: (label values in sorted label order) -> [(t, value)]."""
    q = urllib.parse.urlencode({"query": expr, "start": f"{start:.0f}", "end": f"{end:.0f}", "step": f"{step:.0f}"})
    with urllib.request.urlopen(f"{base}/api/v1/query_range?{q}", timeout=timeout) as r:
        data = json.load(r)
    if data.get("status") != "success":
        raise CapacityError(f"{base}: {data.get('error', 'query failed')}")
    out = {}
    for s in data["data"]["result"]:
        m = s["metric"]
        key = (m.get("host", ""), m.get("mountpoint") or m.get("datname") or "")
        out[key] = [(float(t), float(v)) for t, v in s["values"]]
    return out


def read(site: Site, days: float, now: float | None = None) -> tuple[str, dict[str, dict]]:
    """Every query's series over the last `days` from the first Prometheus that answers."""
    end = now or time.time()
    start, step = end - days * DAY_S, max(60.0, days * DAY_S / 400)
    problems = []
    for base in prometheus_urls(site):
        try:
            return base, {name: query_range(base, expr, start, end, step) for name, expr in QUERIES.items()}
        except (OSError, urllib.error.URLError, ValueError, CapacityError) as exc:
            problems.append(f"{base}: {exc}")
    raise CapacityError("no Prometheus answered (roles/monitoring, port 9090 open to the admin workstations): "
                        + "; ".join(problems))


def analyse(series: dict[str, dict]) -> dict[str, list[Row]]:
    memory = series_rows(series["memory"])
    for row in memory:
        total = series["memory_total"].get((row.host, ""))
        row.total = total[-1][1] if total else None
    return {"disk": disk_rows(series["disk_used"], series["disk_size"]), "memory": memory,
            "database": series_rows(series["database"]), "uploads": series_rows(series["uploads"])}


def plot(title: str, series: dict[tuple[str, str], Series]) -> str:
    """One line per series over time, in the unit that suits its largest value: a base64 PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    top = max((v for points in series.values() for _, v in points), default=0)
    ylabel, scale = next(((u, f) for u, f in (("TiB", 1024 ** 4), ("GiB", 1024 ** 3), ("MiB", 1024 ** 2)) if top >= f), ("KiB", 1024))
    fig, ax = plt.subplots(figsize=(9, 3))
    for (host, what), points in sorted(series.items()):
        ax.plot([datetime.fromtimestamp(t) for t, _ in points], [v / scale for _, v in points],
                label=f"{host} {what}".strip())
    if not series:
        ax.text(0.5, 0.5, "belum ada data", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(mdates.AutoDateLocator()))
    if series:
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def render(site: Site, source: str, days: float, series: dict[str, dict], rows: dict[str, list[Row]], generated: str) -> str:
    plots = {
        "disk": plot("Disk terpakai", series["disk_used"]),
        "memory": plot("Memori terpakai", series["memory"]),
        "database": plot("Ukuran basis data", series["database"]),
        "uploads": plot("Ukuran berkas unggahan", series["uploads"]),
    }
    return render_report("laporan_kapasitas.html.j2", site=site, source=source, days=days, rows=rows, plots=plots,
                         generated=generated, hb=human_bytes)


def cmd_capacity(args: argparse.Namespace, console: Console) -> int:
    site = load_site(args.site)
    try:
        source, series = read(site, args.days)
    except CapacityError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        return 1
    rows = analyse(series)
    generated = datetime.now().astimezone()
    out_dir = Path(args.out) if args.out else records.records_dir(site) / "capacity"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"laporan-kapasitas-{generated:%Y-%m-%d}.html"
    path.write_text(render(site, source, args.days, series, rows, generated.strftime("%Y-%m-%d %H:%M %Z")))
    t = Table(title=f"Capacity (SOP IN-3), site '{site.site}', last {args.days:g} days, from {source}", title_justify="left")
    for col in ("host", "what", "now", "growth/day", "days until full"):
        t.add_column(col)
    for kind, rs in rows.items():
        for r in rs:
            t.add_row(r.host, f"{kind} {r.what}".strip(), human_bytes(r.now), human_bytes(r.growth_per_day),
                      "-" if r.days_left is None else f"{r.days_left:.0f}")
    console.print(t)
    console.print(f"report: {path}", highlight=False)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="reports read from the sites' monitoring (capacity: SOP IN-3)")
    sub = p.add_subparsers(dest="report", required=True)
    cap = sub.add_parser("capacity", help="disk, memory, database and uploads: size, growth, days until full (HTML, Indonesian)")
    cap.add_argument("site", nargs="?", help="site file (default: the lab's)")
    cap.add_argument("--days", type=float, default=30, help="the trend's window in days (default %(default)s)")
    cap.add_argument("--out", help="directory for the HTML (default: <records_dir>/capacity)")
    cap.set_defaults(func=cmd_capacity)
