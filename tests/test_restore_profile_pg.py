"""restore-test's checks on a schema that is not the stand-in's, on a real PostgreSQL: a throwaway
cluster on this machine (Debian's postgresql, installed by `make setup`) is "production"; a
pg_basebackup of it, started on its own, is the "restored copy" (the same transaction history as a
pgBackRest restore). The queries are the ones restore-test sends, run by the host program's own
psql code; the verdicts are restore-test's. A table by its `timestamp without time zone` column, a
small table without one (whole), writes after the backup (not a failure), a transaction open across
the backup, and a silent corruption of the restored copy's data file (a failure). SOP BK-4."""

from __future__ import annotations

import glob
import os
import pwd
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from drc.backup import compare
from drc.hostside import restore_probe
from roles.spse_app.defaults import RestoreTestProfile, TableProfile

ZONE = "Asia/Jakarta"
PROFILE = RestoreTestProfile(tables=[TableProfile(table="spse_other.paket", timestamp_column="dibuat"),
                                     TableProfile(table="spse_other.kategori", whole_table=True)])
SCHEMA = """
CREATE SCHEMA spse_other;
-- SPSE-like: local time without a zone, no sha256 anywhere.
CREATE TABLE spse_other.paket (id bigserial PRIMARY KEY, nama text NOT NULL, pagu numeric NOT NULL,
                               dibuat timestamp without time zone NOT NULL);
CREATE TABLE spse_other.kategori (kode text, nama text);   -- small, no timestamp, no key
INSERT INTO spse_other.paket (nama, pagu, dibuat)
  SELECT 'Paket ' || i, i * 1000, (now() AT TIME ZONE 'Asia/Jakarta') - interval '1 day' + i * interval '1 minute'
  FROM generate_series(1, 200) i;
INSERT INTO spse_other.kategori VALUES ('K1', 'Konstruksi'), ('K2', 'Barang'), ('K3', 'Jasa Lainnya'),
  ('K4', 'Jasa Konsultansi'), ('K4', 'Jasa Konsultansi');   -- a duplicate row, as tables without a key have
"""


def pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    assert found, "no PostgreSQL server here: run `make setup` (installs Debian's postgresql)"
    return Path(found[-1]).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A PostgreSQL cluster in a scratch directory, socket only, as the postgres account (as root)
    or this user."""

    user = "postgres" if os.geteuid() == 0 else None

    def __init__(self, root: Path, name: str):
        self.dir, self.sock, self.port = root / name, root, free_port()

    def run(self, *cmd: str, **kw) -> subprocess.CompletedProcess:
        cmd = ("runuser", "-u", self.user, "--", *cmd) if self.user else cmd
        return subprocess.run(cmd, capture_output=True, text=True, check=True, cwd="/", **kw)

    def start(self) -> None:
        self.run(str(pg_bin() / "pg_ctl"), "-D", str(self.dir), "-l", f"{self.dir}.log", "-w", "-o",
                 f"-c port={self.port} -c listen_addresses= -c unix_socket_directories={self.sock} -c fsync=off", "start")

    def stop(self) -> None:
        subprocess.run((("runuser", "-u", self.user, "--") if self.user else ()) +
                       (str(pg_bin() / "pg_ctl"), "-D", str(self.dir), "-m", "fast", "-w", "stop"), capture_output=True, cwd="/")

    def sql(self, sql: str, db: str = "prod") -> str:
        return self.run("psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-h", str(self.sock), "-p", str(self.port), "-U", "postgres",
                        "-d", db, "-c", sql).stdout.strip()

    def queries(self, qs: list[dict]) -> dict:
        """restore-test's queries, answered by the host program's own psql code."""
        return restore_probe.queries({"queries": qs}, str(self.sock), self.port, self.user)


@pytest.fixture(scope="module")
def clusters():
    root = Path(tempfile.mkdtemp(prefix="siaga-rt-unit-", dir="/var/tmp"))
    if Cluster.user:
        pw = pwd.getpwnam(Cluster.user)
        os.chown(root, pw.pw_uid, pw.pw_gid)
    prod, restored, held = Cluster(root, "prod"), Cluster(root, "restored"), None
    try:
        prod.run(str(pg_bin() / "initdb"), "-D", str(prod.dir), "-U", "postgres", "-A", "trust", "--no-sync")
        prod.start()
        prod.sql("CREATE DATABASE prod", db="postgres")
        prod.sql(SCHEMA)
        # A transaction open across the backup: it commits after it (its row is not in the copy).
        held = subprocess.Popen((("runuser", "-u", prod.user, "--") if prod.user else ()) +
                                ("psql", "-XAtq", "-h", str(prod.sock), "-p", str(prod.port), "-U", "postgres", "-d", "prod"),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
        held.stdin.write("BEGIN; INSERT INTO spse_other.kategori VALUES ('K9', 'Dibuka sebelum backup'); SELECT 'open';\n")
        held.stdin.flush()
        assert held.stdout.readline().strip() == "open"
        time.sleep(1.1)
        backup_start = time.time()
        time.sleep(1.1)
        # The backup: a physical copy with the same transaction history, as pgBackRest's.
        prod.run(str(pg_bin() / "pg_basebackup"), "-h", str(prod.sock), "-p", str(prod.port), "-U", "postgres",
                 "-D", str(restored.dir), "-X", "stream", "-c", "fast", "--no-sync")
        held.stdin.write("COMMIT;\n")
        held.stdin.close()
        held.wait(30)
        # Normal work after the backup: a new paket (now), a kategori added, one renamed, one removed.
        prod.sql("INSERT INTO spse_other.paket (nama, pagu, dibuat) VALUES ('Paket baru', 1, now() AT TIME ZONE 'Asia/Jakarta');"
                 "INSERT INTO spse_other.kategori VALUES ('K5', 'Pekerjaan Konstruksi Terintegrasi');"
                 "UPDATE spse_other.kategori SET nama = 'Barang/Jasa' WHERE kode = 'K2';"
                 "DELETE FROM spse_other.kategori WHERE kode = 'K3';")
        restored.start()
        yield prod, restored, backup_start
    finally:
        if held and held.poll() is None:
            held.kill()
        restored.stop()
        prod.stop()
        shutil.rmtree(root, ignore_errors=True)


def compare_now(prod: Cluster, restored: Cluster, cutoff: float) -> dict[str, dict]:
    """What restore-test does with its answers: plan, production's queries, the copy's, verdicts."""
    listed = prod.queries([{"key": "t", "db": "prod", "sql": compare.TABLES_SQL}])["t"]["rows"]
    checks, problems = compare.plan_tables(PROFILE, listed, 2, random.Random(1))
    assert problems == [] and [c.key for c in checks] == ["spse_other.paket", "spse_other.kategori"]
    p = prod.queries(compare.production_queries(checks, "prod", cutoff, PROFILE.whole_table_max_rows, ZONE))
    r = restored.queries(compare.restored_queries(checks, "prod", cutoff, p, ZONE, PROFILE.whole_table_max_rows))
    return {c.key: compare.table_verdict(c, p, r, PROFILE.whole_table_max_rows) for c in checks}


def test_writes_after_the_backup_are_changes_not_corruption(clusters):
    prod, restored, backup_start = clusters
    v = compare_now(prod, restored, backup_start)
    paket, kategori = v["spse_other.paket"], v["spse_other.kategori"]
    # The 200 paket older than the backup match; the one written after is in neither count.
    assert (paket["state"], paket["production"][0], paket["restored"][0], paket["production"][2]) == ("match", "200", "200", "201"), paket
    # kategori changed since the backup: 4 rows never touched are all in the copy; the renamed one,
    # the one added and the one committed after the backup (opened before it) are new; the old
    # name and the removed one are gone. Not a failure.
    assert kategori["state"] == "changed" and kategori["match"] is None, kategori
    assert (kategori["unchanged"], kategori["missing"], kategori["new_in_production"], kategori["gone_from_production"]) == (3, 0, 3, 2)
    assert compare.table_problem("spse_other.kategori", kategori, "c") is None
    # An empty whole table asks about no transaction at all.
    assert restored.queries([{"key": "x", "db": "prod", "sql": compare.xact_status_sql([])}])["x"] == {"ok": True, "rows": [], "error": None}


def test_a_timestamp_without_zone_is_read_in_the_applications_zone(clusters):
    prod, _, backup_start = clusters
    # 'Paket 200' was written a day ago + 200 min in Jakarta time; a cutoff 1 min after it.
    at = float(prod.sql("SELECT extract(epoch FROM (dibuat AT TIME ZONE 'Asia/Jakarta')) FROM spse_other.paket WHERE nama = 'Paket 200'"))
    check = compare.TableCheck("spse_other", "paket", "dibuat", "profile")
    count = {tz: prod.queries([{"key": "k", "db": "prod", "tz": tz, "sql": compare.timestamp_sql(check, at + 60)}])["k"]["rows"][0][0]
             for tz in (ZONE, "UTC")}
    # Read as UTC, each row would look 7 hours younger than it is: none older than the cutoff.
    assert count == {ZONE: "200", "UTC": "0"}


def test_a_corrupted_restore_is_a_mismatch_in_both_kinds_of_table(clusters):
    prod, restored, backup_start = clusters
    # Silent corruption: bytes of a row changed in the restored copy's data files (no checksums),
    # as a bad disk or a damaged backup file would. 'Konstruksi' (K1, never changed in production)
    # and 'Paket 17' (older than the backup; 0x13: the 1-byte length header of an 8-byte text).
    files = {t: restored.sql(f"SELECT pg_relation_filepath('spse_other.{t}')") for t in ("kategori", "paket")}
    restored.sql("CHECKPOINT")
    restored.stop()
    for table, (old, new) in {"kategori": (b"Konstruksi", b"Konstruksa"), "paket": (b"\x13Paket 17", b"\x13Paket 71")}.items():
        path = restored.dir / files[table]
        data = path.read_bytes()
        assert data.count(old) == 1, (table, data.count(old))
        path.write_bytes(data.replace(old, new))
    restored.start()
    v = compare_now(prod, restored, backup_start)
    kategori, paket = v["spse_other.kategori"], v["spse_other.paket"]
    assert (kategori["state"], kategori["match"], kategori["missing"]) == ("mismatch", False, 1), kategori
    assert "missing or different in the restored copy" in compare.table_problem("spse_other.kategori", kategori, "c")
    assert (paket["state"], paket["match"]) == ("mismatch", False) and paket["production"][0] == paket["restored"][0] == "200"
    assert "rows older than c differ" in compare.table_problem("spse_other.paket", paket, "c")
