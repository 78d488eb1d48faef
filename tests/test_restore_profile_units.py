"""The application profile of restore-test (spse_app.restore_test) without a lab: a wrong profile is
refused with file, line, key and fix; the default is the stand-in's (today's checks); the plan of
tables; the whole-table verdict on recorded rows; production's files sampled by mtime and ctime
before the snapshot. The same checks on a real PostgreSQL: tests/test_restore_profile_pg.py. SOP BK-4."""

from __future__ import annotations

import os
import random
import time

import pytest

from drc.backup import compare
from drc.hostside import restore_probe
from drc.site import SiteError, load_site
from roles.spse_app.defaults import RestoreTestProfile, SpseAppSettings, TableProfile
from tests.test_site_validation import LAB, line_of, write

PROFILE = """spse_app:
  install: external
  restore_test:
    tables:
      - {table: spse_other.paket, timestamp_column: dibuat}
      - {table: spse_other.kategori, whole_table: true}
    files: production
"""


def test_the_default_profile_is_the_stand_ins_and_an_external_app_compares_production_files(tmp_path):
    standin = load_site(write(tmp_path, LAB)).spse_app.restore_test
    assert [(t.table, t.timestamp_column) for t in standin.tables] == [("public.tender_document", "uploaded_at")]
    assert standin.files == "records" and (standin.file_records.table, standin.file_records.sha256_column) == (
        "public.tender_document", "sha256")
    external = SpseAppSettings(install="external").restore_test
    assert (external.tables, external.files) == ([], "production")
    named = load_site(write(tmp_path, LAB + PROFILE)).spse_app.restore_test
    assert [(t.schema_name, t.table_name, t.timestamp_column, t.whole_table) for t in named.tables] == [
        ("spse_other", "paket", "dibuat", False), ("spse_other", "kategori", None, True)]


# (id, replace in PROFILE, key, words of the fix, snippet on the line pointed at)
BAD = [
    ("neither", ("{table: spse_other.kategori, whole_table: true}", "{table: spse_other.kategori}"),
     "spse_app.restore_test.tables[1]", "or set whole_table: true", "spse_other.kategori"),
    ("both", ("whole_table: true}", "whole_table: true, timestamp_column: x}"),
     "spse_app.restore_test.tables[1]", "keep timestamp_column", "spse_other.kategori"),
    ("no-schema", ("table: spse_other.paket,", "table: paket,"),
     "spse_app.restore_test.tables[0].table", "e.g. public.tender_document", "table: paket"),
    ("quoted-column", ("timestamp_column: dibuat", "timestamp_column: 'Dibuat Pada'"),
     "spse_app.restore_test.tables[0].timestamp_column", "lowercase, unquoted", "Dibuat Pada"),
    ("twice", ("{table: spse_other.kategori, whole_table: true}", "{table: spse_other.paket, whole_table: true}"),
     "spse_app.restore_test", "one entry per table", "restore_test:"),
    ("records-without-table", ("files: production", "files: records"),
     "spse_app.restore_test", "or use files: production", "restore_test:"),
    ("zone", ("files: production", "files: production\n    time_zone: WIB"),
     "spse_app.restore_test.time_zone", "Asia/Jakarta", "time_zone: WIB"),
    ("typo", ("files: production", "file: production"),
     "spse_app.restore_test.file", "check its spelling", "file: production"),
]


@pytest.mark.parametrize("old_new, key, fix, snippet", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_a_wrong_profile_is_refused_with_file_line_key_and_fix(tmp_path, old_new, key, fix, snippet):
    text = LAB + PROFILE.replace(*old_new)
    assert text != LAB + PROFILE
    path = write(tmp_path, text)
    with pytest.raises(SiteError) as err:
        load_site(path)
    msg = str(err.value)
    assert f"{path}:{line_of(text, snippet)}: key '{key}':" in msg and fix in msg.split("Fix:")[1], msg


def test_plan_names_the_profile_tables_first_then_samples_others():
    profile = RestoreTestProfile(tables=[TableProfile(table="spse_other.paket", timestamp_column="dibuat"),
                                         TableProfile(table="public.gone", whole_table=True)])
    listed = [["public", "a", "created"], ["public", "b", ""], ["public", "c", ""], ["spse_other", "paket", ""]]
    checks, problems = compare.plan_tables(profile, listed, 3, random.Random(3))
    assert [(c.key, c.method, c.source) for c in checks][0] == ("spse_other.paket", "timestamp", "profile")
    assert len(checks) == 3 and {c.source for c in checks[1:]} == {"sampled"}
    assert all(c.method == ("timestamp" if c.table == "a" else "whole") for c in checks[1:])
    assert len(problems) == 1 and "public.gone" in problems[0] and "not in production's database" in problems[0]


def ok(rows):
    return {"ok": True, "rows": rows, "error": None}


# Recorded answers: production rows (md5, xmin), the copy's md5s, the copy's status of each xmin.
P = [["h1", "500"], ["h2", "501"], ["h3", "900"], ["h4", "901"]]
STATUS = ok([["500", "committed"], ["501", "committed"], ["900", "after"], ["901", "aborted"]])


@pytest.mark.parametrize("restored, state, missing", [
    (["h1", "h2", "h3", "h4"], "match", 0),
    (["h1", "h2", "old-h3"], "changed", 0),          # h3, h4 written after the backup; old-h3 updated since
    (["h1", "hX"], "mismatch", 1),                    # h2 was there at the backup and never changed: lost
    (["h1", "h1", "h2"], "changed", 0),               # a duplicate deleted since
])
def test_whole_table_verdict_on_recorded_rows(restored, state, missing):
    v = compare.whole_verdict(ok(P), ok([[h] for h in restored]), STATUS, 100)
    assert (v["state"], v["missing"]) == (state, missing), v
    assert (compare.table_problem("s.t", {**v, "source": "profile"}, "c") is None) == (state != "mismatch")


def test_whole_table_duplicates_frozen_and_forgotten_transactions_count_as_before():
    p = [["d", "2"], ["d", "7"], ["e", "8"]]  # 2: frozen; 7: status forgotten (old); 8: committed
    status = ok([["2", "frozen"], ["7", "old"], ["8", "committed"]])
    assert compare.whole_verdict(ok(p), ok([["d"], ["e"]]), status, 10)["missing"] == 1  # one of the two 'd' lost
    assert compare.whole_verdict(ok(p), ok([["d"], ["d"], ["e"]]), status, 10)["state"] == "match"


def test_whole_table_too_big_or_unanswered_is_never_a_pass():
    big = compare.whole_verdict(ok(P), None, None, 3)
    assert big["state"] == "too big" and big["match"] is None
    assert "give it a timestamp_column" in compare.table_problem("s.t", {**big, "source": "profile"}, "c")
    assert compare.table_problem("s.t", {**big, "source": "sampled"}, "c") is None  # shown, not failed
    failed = compare.whole_verdict(ok(P), {"ok": False, "rows": None, "error": "relation does not exist"}, None, 10)
    assert failed["match"] is False and "not compared" in compare.table_problem(
        "s.t", {**failed, "source": "profile", "error": "relation does not exist"}, "c")
    # The copy is not asked to read a table production found too big.
    c = compare.TableCheck("s", "t", None, "sampled")
    assert compare.restored_queries([c], "db", 1.0, {"s.t": ok(P)}, "UTC", 3) == []
    assert [q["key"] for q in compare.restored_queries([c], "db", 1.0, {"s.t": ok(P)}, "UTC", 4)] == ["s.t", "s.t#xacts"]


def test_production_files_are_sampled_only_when_settled_before_the_snapshot(tmp_path):
    root = tmp_path / "file_prod"
    (root / "2026" / "11").mkdir(parents=True)
    old = time.time() - 3600
    for i in range(6):
        f = root / "2026" / "11" / f"doc{i}.pdf"
        f.write_bytes(b"x" * i)
        os.utime(f, (old, old))
    cutoff = time.time() - 1  # the snapshot; every ctime here is after it (files just made)
    assert restore_probe.sample_files(str(root), cutoff, 3, 1) == ([], 0)  # an old mtime is not enough
    picked, seen = restore_probe.sample_files(str(root), time.time() + 5, 3, 1)
    assert seen == 6 and len(picked) == 3 and picked == restore_probe.sample_files(str(root), time.time() + 5, 3, 1)[0]
    (root / "link.pdf").symlink_to(root / "2026" / "11" / "doc1.pdf")
    assert restore_probe.sample_files(str(root), time.time() + 5, 10, 1)[1] == 6  # regular files only
    hashes = restore_probe.production_hashes(picked + [str(root / "gone.pdf")], time.time() + 5)
    assert hashes[str(root / "gone.pdf")] is None and all(len(hashes[p]) == 64 for p in picked)
    assert restore_probe.production_hashes(picked[:1], cutoff) == {picked[0]: None}  # changed after the cutoff
    v = compare.file_verdict({"a": "1" * 64, "b": "2" * 64}, {"a": "1" * 64, "b": None})
    assert (v["a"]["match"], v["b"]["match"]) == (True, False)


# --- restore_test() on recorded host answers (the probe's JSON, as the lab's hosts give it) --------------

class Hosts:
    """Recorded answers of restore-probe per mode; every request kept."""

    def __init__(self, prod_rows, restored_rows, statuses, files):
        self.prod_rows, self.restored_rows, self.statuses, self.files, self.calls = prod_rows, restored_rows, statuses, files, []

    def __call__(self, site, host, args, timeout):
        self.calls.append((host, args))
        mode = args["mode"]
        if mode == "db-list":
            return {"ok": True, "info": [{"backup": [{"label": "L1", "type": "full", "timestamp": {"start": 1000.0, "stop": 1010.0}}]}]}
        if mode == "sql" and args["queries"][0]["key"] == "tables":
            return {"queries": {"tables": ok([["spse_other", "paket", ""], ["spse_other", "kategori", ""]])}}
        if mode == "sql":
            return {"queries": {"spse_other.paket": ok([["50", "abc", "51"]]), "spse_other.kategori": ok(self.prod_rows)}}
        if mode == "db":
            return {"verify": {"ok": True}, "restore": {"ok": True, "seconds": 1.0}, "start": {"ok": True, "in_recovery": "f", "seconds": 1.0},
                    "cleanup": {"removed": True, "path": "/var/tmp/siaga-restore-test/rt-x"},
                    "queries": {"spse_other.paket": ok([["50", "abc", "50"]]), "spse_other.kategori": ok(self.restored_rows),
                                "spse_other.kategori#xacts": self.statuses}}
        if mode == "files-list":
            return {"ok": True, "snapshots": [{"id": "feedbeef" * 8, "time": "2026-11-26T01:00:00.123456789+07:00"}]}
        if mode == "files":
            return {"check": {"ok": True}, "restore": {"ok": True, "seconds": 0.5}, "cleanup": {"removed": True},
                    "production": {p: h for p, (h, _) in self.files.items()}, "files": {p: r for p, (_, r) in self.files.items()}}
        raise AssertionError(f"unexpected request {args}")


@pytest.fixture
def other_site(tmp_path):
    import yaml

    data = yaml.safe_load(LAB + PROFILE)
    data["records_dir"] = str(tmp_path / "records")
    return load_site(write(tmp_path, yaml.safe_dump(data)))


def run_restore_test(site, hosts, monkeypatch, **kw):
    import argparse

    from rich.console import Console

    from drc.backup import restore

    monkeypatch.setattr(restore, "probe", hosts)
    args = argparse.Namespace(seed=1, label="latest", snapshot="latest", requester="Andi", head="Kepala LPSE", tables=2, files=2,
                              slack=0.0, read_data="10%", skip_files=False, timeout_run=60.0, target_time=None, **kw)
    return restore.restore_test(site, args, Console(file=None))


def test_a_profile_is_compared_end_to_end_and_the_report_says_how(other_site, monkeypatch):
    from drc.backup.restore import render_berita_acara

    files = {"/home/file/file_prod/a.pdf": ("1" * 64, "1" * 64), "/home/file/file_prod/b.pdf": ("2" * 64, "2" * 64)}
    hosts = Hosts(P, [["h1"], ["h2"], ["old-h3"]], STATUS, files)
    rt = run_restore_test(other_site, hosts, monkeypatch)
    assert rt["result"] == "success", rt["problems"]
    assert {k: v["state"] for k, v in rt["db"]["tables"].items()} == {"spse_other.paket": "match", "spse_other.kategori": "changed"}
    # The copy was asked, in the application's zone, about exactly the transactions of production's rows.
    db_args = next(a for h, a in hosts.calls if a["mode"] == "db")
    xacts = next(q for q in db_args["queries"] if q["key"] == "spse_other.kategori#xacts")
    assert "ARRAY[500,501,900,901]" in xacts["sql"] and xacts["tz"] == "Asia/Jakarta"
    # Files: production's own, sampled on the data host before the snapshot, no database record read.
    f_args = next(a for h, a in hosts.calls if a["mode"] == "files")
    assert f_args["sample"]["root"] == "/home/file/file_prod" and f_args["paths"] == []
    assert rt["files"]["compared_with"] == "production" and all(f["match"] for f in rt["files"]["files"].values())
    html = render_berita_acara(rt, other_site)
    for text in ("seluruh tabel", "berubah sejak backup", "menurut kolom waktu <code>dibuat</code>", "file produksi", "BERHASIL"):
        assert text in html, text
    # A lost row and a restored file that differs from production's: GAGAL, both named.
    files["/home/file/file_prod/b.pdf"] = ("2" * 64, "3" * 64)
    rt = run_restore_test(other_site, Hosts(P, [["h1"], ["hX"]], STATUS, files), monkeypatch)
    assert rt["result"] == "failure" and rt["db"]["tables"]["spse_other.kategori"]["state"] == "mismatch"
    assert any("spse_other.kategori" in p and "missing or different" in p for p in rt["problems"]), rt["problems"]
    assert any("b.pdf" in p and "production's file" in p for p in rt["problems"]), rt["problems"]
    assert "GAGAL" in render_berita_acara(rt, other_site)


def test_questions_too_long_for_one_command_line_fail_with_the_fix(other_site, monkeypatch):
    other_site.spse_app.restore_test.whole_table_max_rows = 50_000
    many = [[f"h{i}", str(10_000 + i)] for i in range(20_000)]
    hosts = Hosts(many, [], ok([]), {})
    rt = run_restore_test(other_site, hosts, monkeypatch)
    assert rt["result"] == "failure" and not any(a["mode"] == "db" for _, a in hosts.calls)  # nothing restored
    assert any("do not fit one command line" in p and "give spse_other.kategori a timestamp_column" in p for p in rt["problems"])
