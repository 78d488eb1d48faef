"""`siaga backup report --month YYYY-MM` and `siaga backup analyse`: the monthly analysis of backup
effectiveness (SOP BK-6) and one failure report per failed run (SOP BK-5).

Input: the workstation's backup log (`<records_dir>/backup-log.jsonl`, collected from the hosts
first unless `--no-collect`; missing expected successes are failures there too) and the restore
tests (`restore-tests.jsonl`). Output, next to them:

- `laporan-backup-YYYY-MM.html`: *Analisa Efektivitas Backup* — jumlah pelaksanaan, jumlah
  kegagalan, jenis kegagalan, tren kegagalan over the last `--months` months with a plot (PNG,
  embedded as base64: one standalone file), tindak lanjut;
- `laporan-backup-YYYY-MM/analisa-kegagalan-<date>-<id>.html`: *Laporan Analisa Kegagalan Backup*
  for each failure of the month: error text, set, host, time, and the analysis / follow-up
  (recorded with `siaga backup analyse RECORD_ID --analisa ... --tindak-lanjut ...`, else left
  blank to be filled in by hand and signed).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import io
import json
import re
import uuid
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from drc.records import store as records
from drc.records.render import month_label, month_of, parse_month, render_report
from drc.site import Site, load_site

ANALYSIS_RECORDS = "backup-analysis.jsonl"
RESTORE_RECORDS = "restore-tests.jsonl"

# Failure types (jenis kegagalan), first match wins: (key, label, pattern over kind + error text).
FAILURE_TYPES: list[tuple[str, str, str]] = [
    ("terlewat", "Backup tidak berjalan sesuai jadwal (terlewat)", r"^missing\b"),
    ("disk-penuh", "Ruang penyimpanan repositori penuh", r"no space left|disk full|enospc|quota exceeded|file too large"),
    ("rusak", "Repositori/backup rusak (checksum, verifikasi gagal)", r"checksum|corrupt|invalid|verify failed|pack .* damaged"),
    ("tidak-terjangkau", "Host/repositori tidak terjangkau (jaringan, SSH)",
     r"^unreachable\b|could not run the backup|unable to connect|connection (refused|reset|timed out|closed)|no route|"
     r"network is unreachable|timed out|ssh|host key|raised from remote|sftp"),
    ("media-offline", "Media offline tidak terpasang", r"not attached|not a mount point|mount"),
    ("waktu-habis", "Melebihi batas waktu backup", r"longer than|timeout|time limit"),
    ("konfigurasi", "Konfigurasi/izin salah", r"permission denied|not configured|no such file|stanza"),
]
OTHER = ("lainnya", "Lainnya")


def failure_type(rec: dict) -> tuple[str, str]:
    text = f"{rec.get('kind') or ''} {rec.get('error') or ''}".lower()
    for key, label, pattern in FAILURE_TYPES:
        if re.search(pattern, text):
            return key, label
    return OTHER


def previous_months(year: int, month: int, n: int) -> list[tuple[int, int]]:
    """The n months ending with (year, month), oldest first."""
    out = []
    for _ in range(n):
        out.append((year, month))
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return out[::-1]


def is_run(rec: dict) -> bool:
    """A backup run (or a run that was due and did not happen); skipped pre-change backups count
    as runs but not as failures."""
    return rec.get("kind") != "attach" or rec.get("result") == "failure"


def analyse(log: list[dict], restore_tests: list[dict], notes: list[dict], year: int, month: int, tz: dt.tzinfo,
            months: int = 6) -> dict:
    """The BK-6 figures of one month and the trend over the `months` months ending with it."""
    window = previous_months(year, month, months)
    by_month: dict[tuple[int, int], list[dict]] = {ym: [] for ym in window}
    for r in log:
        ym = month_of(r, tz)
        if ym in by_month and is_run(r):
            by_month[ym].append(r)
    trend = []
    for ym in window:
        recs = by_month[ym]
        fails = [r for r in recs if r.get("result") == "failure"]
        trend.append({"month": f"{ym[0]:04d}-{ym[1]:02d}", "label": month_label(ym), "runs": len(recs), "failures": len(fails),
                      "skipped": sum(1 for r in recs if r.get("result") == "skipped"),
                      "rate": round(100.0 * len(fails) / len(recs), 1) if recs else None})
    this = by_month[(year, month)]
    failures = sorted((r for r in this if r.get("result") == "failure"), key=lambda r: r.get("start") or "")
    latest_note = {}
    for n in sorted(notes, key=lambda n: n.get("at") or ""):
        latest_note[n.get("record_id")] = n
    types: Counter = Counter()
    fail_out = []
    for r in failures:
        key, label = failure_type(r)
        types[label] += 1
        note = latest_note.get(r.get("id")) or {}
        fail_out.append({**r, "type": key, "type_label": label, "analysis": note.get("analysis"), "follow_up": note.get("follow_up"),
                         "analysed_by": note.get("by"), "analysed_at": note.get("at")})
    by_set = Counter(r.get("set") or "-" for r in this)
    fail_by_set = Counter(r.get("set") or "-" for r in failures)
    prev = trend[-2] if len(trend) >= 2 else None
    cur = trend[-1]
    if prev is None or (prev["runs"] == 0 and cur["runs"] == 0):
        direction = "tidak ada data bulan sebelumnya"
    elif cur["failures"] > prev["failures"]:
        direction = f"naik (dari {prev['failures']} menjadi {cur['failures']})"
    elif cur["failures"] < prev["failures"]:
        direction = f"turun (dari {prev['failures']} menjadi {cur['failures']})"
    else:
        direction = f"tetap ({cur['failures']})"
    rts = [t for t in restore_tests if month_of(t, tz) == (year, month)]
    durations = [float(r["duration_s"]) for r in this if r.get("result") == "success" and r.get("duration_s") is not None]
    return {
        "month": f"{year:04d}-{month:02d}", "label": month_label((year, month)),
        "runs": len(this), "successes": sum(1 for r in this if r.get("result") == "success"),
        "failures": len(failures), "skipped": cur["skipped"], "rate": cur["rate"],
        "failure_types": dict(types.most_common()), "failures_list": fail_out,
        "sets": {s: {"runs": n, "failures": fail_by_set.get(s, 0)} for s, n in sorted(by_set.items())},
        "trend": trend, "trend_direction": direction,
        "longest_s": max(durations) if durations else None,
        "restore_tests": [{"id": t.get("id"), "start": t.get("start"), "result": t.get("result"), "report": t.get("report"),
                           "label": (t.get("db") or {}).get("label")} for t in rts],
        "unanalysed": sum(1 for f in fail_out if not f["follow_up"]),
    }


def plot_png(a: dict) -> str:
    """Runs and failures per month, and the month's failures by type: a base64 PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    labels = [t["month"] for t in a["trend"]]
    x = range(len(labels))
    ax1.bar([i - 0.2 for i in x], [t["runs"] for t in a["trend"]], width=0.4, label="pelaksanaan", color="#4a7ebb")
    ax1.bar([i + 0.2 for i in x], [t["failures"] for t in a["trend"]], width=0.4, label="kegagalan", color="#c0392b")
    ax1.set_xticks(list(x), labels, rotation=30, fontsize=8)
    ax1.set_title("Pelaksanaan dan kegagalan backup per bulan", fontsize=10)
    ax1.legend(fontsize=8)
    ax1.yaxis.get_major_locator().set_params(integer=True)
    types = a["failure_types"]
    if types:
        names = list(types)[::-1]
        ax2.barh(range(len(names)), [types[n] for n in names], color="#c0392b")
        ax2.set_yticks(range(len(names)), [n if len(n) <= 38 else n[:36] + "…" for n in names], fontsize=7)
        ax2.xaxis.get_major_locator().set_params(integer=True)
    else:
        ax2.text(0.5, 0.5, "tidak ada kegagalan", ha="center", va="center")
        ax2.set_xticks([])
        ax2.set_yticks([])
    ax2.set_title(f"Jenis kegagalan — {a['label']}", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def render_monthly(a: dict, site: Site, png_b64: str, failure_files: dict[str, str], generated: str, by: str) -> str:
    return render_report("laporan_backup_bulanan.html.j2", a=a, site=site, png=png_b64, files=failure_files,
                                                                        generated=generated, by=by)


def render_failure(f: dict, site: Site, generated: str, head: str) -> str:
    return render_report("laporan_analisa_kegagalan.html.j2", f=f, site=site, generated=generated, head=head,
                                                                           pretty=json.dumps(f, indent=2, ensure_ascii=False))


def write_reports(site: Site, a: dict, out_dir: Path, by: str, head: str, tz: dt.tzinfo) -> dict:
    generated = dt.datetime.now(tz).isoformat(timespec="seconds")
    sub = out_dir / f"laporan-backup-{a['month']}"
    files: dict[str, str] = {}
    if a["failures_list"]:
        sub.mkdir(parents=True, exist_ok=True)
    for f in a["failures_list"]:
        name = f"analisa-kegagalan-{(f.get('start') or '')[:10]}-{(f.get('id') or 'x')[:8]}.html"
        (sub / name).write_text(render_failure(f, site, generated, head))
        files[f.get("id")] = f"{sub.name}/{name}"
    monthly = out_dir / f"laporan-backup-{a['month']}.html"
    monthly.write_text(render_monthly(a, site, plot_png(a), files, generated, by))
    return {"report": str(monthly), "failure_reports": [str(out_dir / p) for p in files.values()]}


# --- commands ------------------------------------------------------------------------------------

def _tz(site: Site) -> dt.tzinfo:
    from zoneinfo import ZoneInfo

    return ZoneInfo(site.base.timezone)


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from drc.backup import runs as backup

    site = load_site(args.site)
    tz = _tz(site)
    year, month = parse_month(args.month) if args.month else (dt.datetime.now(tz).year, dt.datetime.now(tz).month)
    out_dir = records.records_dir(site)
    note = None
    if not args.no_collect:
        rep = backup.collect(site, timeout=args.timeout)
        unread = [f"{h}: {d['error']}" for h, d in rep["hosts"].items() if d["error"]]
        if unread:
            note = "log not collected from " + "; ".join(unread) + " (report from the workstation's records)"
    a = analyse(records.read(out_dir / backup.LOG_RECORDS), records.read(out_dir / RESTORE_RECORDS),
                records.read(out_dir / ANALYSIS_RECORDS), year, month, tz, args.months)
    a["collect_note"] = note
    a.update(write_reports(site, a, out_dir, site.connection.user, args.head, tz))
    if args.json:
        console.file.write(json.dumps(a, indent=2, ensure_ascii=False) + "\n")
        console.file.flush()
        return 0
    t = Table(title=f"Analisa efektivitas backup (SOP BK-6) — {a['label']}, site '{site.site}'", title_justify="left")
    for col in ("Bulan", "Jumlah pelaksanaan", "Jumlah kegagalan", "Persen gagal"):
        t.add_column(col)
    for row in a["trend"]:
        t.add_row(row["month"], str(row["runs"]), str(row["failures"]), "-" if row["rate"] is None else f"{row['rate']:.1f} %")
    console.print(t)
    console.print(f"Tren kegagalan: {a['trend_direction']}", highlight=False)
    for label, n in a["failure_types"].items():
        console.print(f"  {n} × {label}", highlight=False)
    if note:
        console.print(f"[yellow]{note}[/yellow]", highlight=False)
    if a["unanalysed"]:
        console.print(f"[yellow]{a['unanalysed']} failure(s) without a recorded follow-up[/yellow] "
                      "(siaga backup analyse RECORD_ID --analisa ... --tindak-lanjut ...)", highlight=False)
    console.print(f"report: {a['report']}" + (f" (+{len(a['failure_reports'])} Laporan Analisa Kegagalan Backup)" if a["failure_reports"] else ""),
                  highlight=False)
    return 0


def cmd_analyse(args: argparse.Namespace, console: Console) -> int:
    from drc.backup import runs as backup

    site = load_site(args.site)
    out_dir = records.records_dir(site)
    matches = [r for r in records.read(out_dir / backup.LOG_RECORDS) if (r.get("id") or "").startswith(args.record_id)]
    failures = [r for r in matches if r.get("result") == "failure"]
    if len(failures) != 1:
        console.print(f"[red]error:[/red] {len(failures)} failed run(s) with an id starting {args.record_id!r} "
                      "in the workstation's backup log (run `siaga backup log` first; give more of the id)", highlight=False)
        return 1
    note = {"id": uuid.uuid4().hex, "record_id": failures[0]["id"], "analysis": args.analisa, "follow_up": args.tindak_lanjut,
            "by": site.connection.user, "at": dt.datetime.now(_tz(site)).isoformat(timespec="seconds")}
    records.append_new(out_dir / ANALYSIS_RECORDS, [note])
    if args.json:
        console.file.write(json.dumps(note, indent=2, ensure_ascii=False) + "\n")
        console.file.flush()
    else:
        console.print(f"recorded for failure {failures[0]['id'][:12]} ({failures[0].get('set')}, {failures[0].get('start')})", highlight=False)
    return 0


def register(sub, common) -> None:
    rp = sub.add_parser("report", help="monthly analysis of backup effectiveness with a plot (BK-6) and a failure report per failure (BK-5)")
    rp.add_argument("--month", help="YYYY-MM (default: this month)")
    rp.add_argument("--months", type=int, default=6, help="months in the trend (default %(default)s)")
    rp.add_argument("--head", default="Kepala LPSE", help="who the failure reports go to")
    rp.add_argument("--no-collect", action="store_true", help="do not read the hosts' logs first")
    common(rp)
    rp.set_defaults(func=cmd_report)
    an = sub.add_parser("analyse", help="record the analysis and follow-up of one failed backup run (BK-5)")
    an.add_argument("record_id", help="id (or its start) of the failed run, from `siaga backup log --json`")
    an.add_argument("--analisa", required=True, help="analysis: why it failed")
    an.add_argument("--tindak-lanjut", required=True, help="follow-up taken so it does not happen again")
    common(an)
    an.set_defaults(func=cmd_analyse)
