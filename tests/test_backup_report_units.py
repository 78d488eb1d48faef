"""`siaga backup report` without a lab: BK-6 monthly figures, failure types, trend, the plot and
the BK-5 failure reports, from generated backup-log records (SOP BK-5, BK-6)."""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import io

import pytest
from rich.console import Console

from drc.backup import runs as backup, report as backup_report
from drc.records import store as records
from tests.test_backup_cli_units import site  # noqa: F401  (fixture)

TZ = dt.timezone(dt.timedelta(hours=7))


def rec(i, start, set_name="db", result="success", kind="incr", error=None):
    return {"v": 1, "id": f"r{i:04d}" + "0" * 28, "host": "drc", "site": "t", "set": set_name, "repository": "repo1",
            "kind": kind, "trigger": "timer", "by": "root", "start": start, "end": start, "duration_s": 12.5,
            "size_bytes": 100, "result": result, "error": error, "details": {}}


def generated_log() -> list[dict]:
    log, i = [], 0
    # October: 30 runs, 1 failure; November: 30 runs, 3 failures of three types + 1 missing success.
    for day in range(1, 31):
        i += 1
        log.append(rec(i, f"2026-10-{day:02d}T01:00:00+07:00", result="failure" if day == 5 else "success",
                       error="ERROR: [056]: unable to connect to siagabak@drc: Connection timed out" if day == 5 else None))
    for day in range(1, 31):
        i += 1
        err = {3: "ERROR: [039]: No space left on device writing backup.manifest",
               9: "siaga could not run the backup on primary: timed out", 17: "Fatal: pack 1f2e damaged: checksum invalid"}.get(day)
        log.append(rec(i, f"2026-11-{day:02d}T01:30:00+07:00", set_name="uploads", result="failure" if err else "success",
                       kind="unreachable" if day == 9 else "incr", error=err))
    log.append(rec(999, "2026-11-20T07:05:00+07:00", kind="missing", result="failure",
                   error="no successful backup of set 'db' within 24 h + 6 h grace"))
    # UTC time that is already December in WIB: counted in December, not November.
    log.append(rec(1000, "2026-11-30T18:00:00+00:00", result="failure", error="x"))
    return log


def test_failure_types_are_classified():
    assert backup_report.failure_type({"kind": "missing"})[0] == "terlewat"
    assert backup_report.failure_type({"error": "write failed: No space left on device"})[0] == "disk-penuh"
    assert backup_report.failure_type({"kind": "unreachable", "error": "x"})[0] == "tidak-terjangkau"
    assert backup_report.failure_type({"error": "restic: checksum invalid"})[0] == "rusak"
    assert backup_report.failure_type({"error": "the offline media is not attached at /media/x"})[0] == "media-offline"
    assert backup_report.failure_type({"error": "something odd"})[0] == "lainnya"


def test_monthly_figures_and_trend():
    notes = [{"record_id": "r0033" + "0" * 28, "analysis": "repo disk too small", "follow_up": "disk grown to 2 TB",
              "by": "budi", "at": "2026-11-04T09:00:00+07:00"}]
    a = backup_report.analyse(generated_log(), [], notes, 2026, 11, TZ, months=3)
    assert (a["runs"], a["failures"], a["successes"]) == (31, 4, 27)
    assert a["failure_types"] == {label: 1 for label in (
        "Ruang penyimpanan repositori penuh", "Host/repositori tidak terjangkau (jaringan, SSH)",
        "Repositori/backup rusak (checksum, verifikasi gagal)", "Backup tidak berjalan sesuai jadwal (terlewat)")}
    assert [t["month"] for t in a["trend"]] == ["2026-09", "2026-10", "2026-11"]
    assert [(t["runs"], t["failures"]) for t in a["trend"]] == [(0, 0), (30, 1), (31, 4)]
    assert a["trend_direction"].startswith("naik (dari 1 menjadi 4")
    disk = next(f for f in a["failures_list"] if f["type"] == "disk-penuh")
    assert (disk["analysis"], disk["follow_up"]) == ("repo disk too small", "disk grown to 2 TB")
    assert a["unanalysed"] == 3
    dec = backup_report.analyse(generated_log(), [], [], 2026, 12, TZ, months=2)
    assert (dec["runs"], dec["failures"]) == (1, 1) and dec["trend_direction"].startswith("turun")


def test_reports_are_standalone_html_with_the_sop_fields(site, tmp_path):  # noqa: F811
    a = backup_report.analyse(generated_log(), [{"id": "t1", "start": "2026-11-22T10:00:00+07:00", "result": "success",
                                                  "db": {"label": "20261122-100000F"}}], [], 2026, 11, TZ)
    out = backup_report.write_reports(site, a, tmp_path, "budi", "Kepala LPSE", TZ)
    html = open(out["report"]).read()
    for field in ("ANALISA EFEKTIVITAS BACKUP", "Jumlah pelaksanaan", "Jumlah kegagalan", "Jenis kegagalan", "Tren kegagalan",
                  "Tindak lanjut", "November 2026", "Ruang penyimpanan repositori penuh", "20261122-100000F"):
        assert field in html, field
    png = base64.b64decode(html.split('src="data:image/png;base64,')[1].split('"')[0])
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    assert len(out["failure_reports"]) == 4
    one = next(open(p).read() for p in out["failure_reports"] if "r0033" in open(p).read())
    for field in ("LAPORAN ANALISA KEGAGALAN BACKUP", "Pesan kesalahan", "No space left on device", "uploads",
                  "Analisa penyebab", "Tindak lanjut agar tidak terulang", "(diisi oleh pelaksana)"):
        assert field in one, field


def test_report_and_analyse_commands_on_the_workstation_records(site, monkeypatch):  # noqa: F811
    path = records.records_dir(site) / backup.LOG_RECORDS
    records.append_new(path, generated_log())
    console = Console(file=io.StringIO(), width=200)
    args = argparse.Namespace(site=None, record_id="r0033", analisa="repo disk too small", tindak_lanjut="disk grown",
                              json=True, timeout=1.0)
    import drc.backup.report as br

    monkeypatch.setattr(br, "load_site", lambda _: site)
    assert br.cmd_analyse(args, console) == 0
    assert br.cmd_analyse(argparse.Namespace(**{**vars(args), "record_id": "r00"}), console) == 1  # ambiguous
    args = argparse.Namespace(site=None, month="2026-11", months=6, head="Kepala LPSE", no_collect=True, json=True, timeout=1.0)
    assert br.cmd_report(args, Console(file=(buf := io.StringIO()), width=200)) == 0
    import json

    a = json.loads(buf.getvalue())
    assert a["failures"] == 4 and a["unanalysed"] == 3 and a["report"].endswith("laporan-backup-2026-11.html")
    with pytest.raises(ValueError):
        backup_report.parse_month("2026-13")
