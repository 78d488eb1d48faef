"""`siaga backup` on the real lab, as an operator runs it (the CLI, `--json`, exit codes): timers in
place, a backup run now gives success records for the database (pgBackRest on the DRC) and the file
sets (restic from primary), both repositories list what the records say, the log is collected to
the workstation once per record, and with the WAN cut a run fails cleanly, is logged as a failure,
and the next run after the heal succeeds; restore-test restores, verifies and reports (also to a
point in time between two writes); a restore into production is refused unless the target is
named twice and a pre-restore backup succeeded. SOP BK-1..BK-5, BK-7, BK-8."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path


from tests.helpers import pg_version

REPO = Path(__file__).resolve().parents[2]
RUN_DEADLINE_S = 600.0
LOG = "/var/log/siaga/backup.jsonl"
PGBR = "runuser -u siagabak -- pgbackrest --config-path=/etc/siaga/pgbackrest-repo --stanza=spse --output=json"
RESTIC = ("env RESTIC_PASSWORD_FILE=/etc/siaga/backup/restic-repo1.password RESTIC_CACHE_DIR=/var/cache/siaga-restic "
          "restic -r sftp:siagabak@{drc}:/srv/siaga-backup/restic "
          "-o sftp.command='ssh -F /etc/siaga/backup/ssh_config {drc} -s sftp'")


def siaga(lab, *args: str, deadline: float = RUN_DEADLINE_S) -> tuple[int, dict, float]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "drc.cli", "backup", *args, str(lab.site_file), "--json"], cwd=REPO,
                          capture_output=True, text=True, timeout=deadline)
    took = time.monotonic() - start
    assert proc.returncode in (0, 1), (proc.returncode, proc.stderr[-3000:], proc.stdout[-3000:])
    return proc.returncode, json.loads(proc.stdout), took


def by_set(recs: list[dict]) -> dict[str, dict]:
    return {r["set"]: r for r in recs}


def test_timers_are_active_on_the_host_owning_each_set(hosts):
    for unit in ("siaga-backup-db-full.timer", "siaga-backup-db-incr.timer", "siaga-backup-offline.timer"):
        assert hosts["drc"].service(unit).is_running, unit
        assert not hosts["primary"].file(f"/etc/systemd/system/{unit}").exists
    for job in ("uploads", "system", "prune"):
        assert hosts["primary"].service(f"siaga-backup-{job}.timer").is_running, job


def test_run_backs_up_db_and_uploads_and_the_repositories_agree(lab, hosts):
    code, out, took = siaga(lab, "run")
    recs = by_set(out["records"])
    assert code == 0 and out["ok"], out
    assert set(recs) == {"db", "uploads", "system"}
    db, up = recs["db"], recs["uploads"]
    assert (db["host"], db["repository"], db["result"], db["kind"] in ("full", "incr")) == ("drc", "repo1", "success", True)
    assert (up["host"], up["result"]) == ("primary", "success") and up["details"]["snapshot"]
    # pgBackRest itself lists that backup, status ok.
    info = json.loads(hosts["drc"].check_output(f"{PGBR} info"))[0]
    assert info["status"]["code"] == 0, info["status"]
    assert db["details"]["label"] in [b["label"] for b in info["backup"]]
    # restic itself lists that snapshot.
    snaps = json.loads(hosts["primary"].check_output(RESTIC.format(drc=lab.address("drc")) + " snapshots --json --tag uploads"))
    assert any(s["id"].startswith(up["details"]["snapshot"]) for s in snaps)  # restic's summary gives the short id
    print(f"siaga backup run: {took:.1f} s; db {db['kind']} {db['details']['label']} {db['duration_s']} s, "
          f"uploads {up['details']['snapshot'][:8]} {up['duration_s']} s, system {recs['system']['duration_s']} s")


def test_log_is_collected_once_per_record(lab, hosts):
    code, report, _ = siaga(lab, "log")
    assert code == 0, (report["hosts"], report["sets"])
    ids = [r["id"] for r in report["records"]]
    assert len(ids) == len(set(ids))
    host_lines = len(hosts["drc"].file("/var/log/siaga/backup.jsonl").content_string.splitlines()) + \
        len(hosts["primary"].file("/var/log/siaga/backup.jsonl").content_string.splitlines())
    assert sum(h["records"] for h in report["hosts"].values()) == host_lines
    assert {r["set"] for r in report["records"] if r["result"] == "success"} >= {"db", "uploads", "system"}
    assert all(not s["late"] for s in report["sets"].values())
    _, again, _ = siaga(lab, "log")
    assert again["new_records"] == 0 and len(again["records"]) == len(report["records"])
    assert Path(report["records_file"]).is_file()


def test_wan_cut_run_fails_cleanly_is_logged_and_the_next_run_succeeds(lab, hosts):
    try:
        lab.set_wan(cut=True)
        code, out, took = siaga(lab, "run")
        assert code == 1 and not out["ok"]
        recs = by_set(out["records"])
        assert {r["result"] for r in recs.values()} == {"failure"}, out
        assert set(recs) == {"db", "uploads", "system"}
        assert all(r["error"] for r in recs.values())
        assert took < 180, f"a cut WAN made the run take {took:.0f} s"
        print(f"WAN cut: run failed in {took:.1f} s: db: {recs['db']['error'][:160]} | uploads: {recs['uploads']['error'][:160]}")
    finally:
        lab.set_wan(cut=False)
    _, log, _ = siaga(lab, "log")
    failed = {r["id"] for r in log["records"] if r["result"] == "failure"}
    assert {r["id"] for r in recs.values()} <= failed
    code, out, took = siaga(lab, "run")
    assert code == 0, out
    assert {r["result"] for r in out["records"]} == {"success"}
    print(f"healed: next run OK in {took:.1f} s")


UPLOAD = """
import os, ssl, urllib.request
ctx = ssl._create_unverified_context()
for i in range(3):
    req = urllib.request.Request('https://127.0.0.1/eproc4/dokumen?name=rt%d.pdf' % i, data=os.urandom(4096 + i), method='POST')
    print(urllib.request.urlopen(req, context=ctx).status)
"""
REPO_DIR = "/srv/siaga-backup/pgbackrest/backup/spse"


def restore_test(lab, *args: str) -> tuple[int, dict, float]:
    return siaga(lab, "restore-test", "--slack", "0", *args, deadline=900)


def test_restore_test_restores_verifies_and_writes_the_berita_acara(lab, hosts):
    hosts["primary"].check_output("python3 -c %s", UPLOAD)
    code, out, _ = siaga(lab, "run")
    assert code == 0, out
    code, rt, took = restore_test(lab, "--label", "latest", "--snapshot", "latest")
    assert code == 0 and rt["result"] == "success", rt["problems"]
    db, files = rt["db"], rt["files"]
    assert db["verify"]["ok"] and db["restore"]["ok"] and db["start"]["in_recovery"] == "f"
    app = db["tables"]["public.tender_document"]
    assert app["match"] and int(app["restored"][0]) >= 3
    assert db["cleanup"]["removed"] and not hosts["drc"].file(db["cleanup"]["path"]).exists
    assert files["check"]["ok"] and len(files["files"]) >= 3 and all(f["match"] for f in files["files"].values())
    html = Path(rt["report"]).read_text()
    for field in ("BERITA ACARA PELAKSANAAN RESTORE", "Pemohon", "Pelaksana", "Pimpinan", "Yang direstore", "BERHASIL", db["label"]):
        assert field in html, field
    # The production cluster was never touched: still the primary, the DRC still its standby.
    assert hosts["primary"].check_output("runuser -u postgres -- psql -XAtc 'select pg_is_in_recovery()'") == "f"
    print(f"restore-test: {took:.1f} s; db {db['label']} restored+recovered in {db['restore_seconds']:.1f} s, "
          f"{app['restored'][0]} documents matched; {len(files['files'])} files matched; report {rt['report']}")


def test_random_sampling_picks_among_the_backups(lab, hosts):
    from drc.backup.sampling import pick_backup, sampler

    code, rt, _ = restore_test(lab, "--skip-files", "--seed", "7")
    candidates = [{"label": label} for label in rt["db"]["candidates"]]
    assert len(candidates) >= 2 and rt["db"]["chosen_from"] == len(candidates)
    # The backup restored is the seeded random pick among every backup in the repository (the
    # distribution of that pick: tests/test_backup_sampling.py).
    assert rt["db"]["label"] == pick_backup(candidates, None, sampler(7))["label"]
    assert code == 0, rt["problems"]


ONE_UPLOAD = """
import os, ssl, sys, urllib.request
req = urllib.request.Request('https://127.0.0.1/eproc4/dokumen?name=%s.pdf' % sys.argv[1], data=os.urandom(2048), method='POST')
print(urllib.request.urlopen(req, context=ssl._create_unverified_context()).status)
"""
PSQL = "runuser -u postgres -- psql -XAt -d epns_prod -c {sql}"


def test_point_in_time_restore_gets_exactly_the_rows_before_the_target(lab, hosts):
    import datetime as dt
    import shlex

    p = hosts["primary"]
    p.check_output("python3 -c %s pitr-before", ONE_UPLOAD)
    # The target: the database's own clock after the first write committed, before the second.
    target = float(p.check_output(PSQL.format(sql=shlex.quote("SELECT extract(epoch FROM clock_timestamp())"))))
    p.check_output("python3 -c %s pitr-after", ONE_UPLOAD)
    count = "SELECT count(*) FROM tender_document WHERE uploaded_at < to_timestamp(%f)"
    before = int(p.check_output(PSQL.format(sql=shlex.quote(count % target))))
    total = int(p.check_output(PSQL.format(sql=shlex.quote("SELECT count(*) FROM tender_document"))))
    assert total > before >= 1
    at = dt.datetime.fromtimestamp(target, dt.timezone.utc).isoformat()
    code, rt, took = restore_test(lab, "--target-time", at, "--label", "latest", "--skip-files", "--tables", "1")
    assert code == 0 and rt["result"] == "success", rt["problems"]
    db = rt["db"]
    app = db["tables"]["public.tender_document"]
    # Every row of the restored copy is exactly production's rows older than the target.
    assert app["match"] and int(app["restored"][0]) == int(app["restored"][2]) == before, app
    assert db["archive"]["ok"] and db["target_time"]
    assert "Pemulihan ke titik waktu" in Path(rt["report"]).read_text()
    print(f"PITR to {at} from {db['label']}: {before} of {total} documents restored (the later one absent); "
          f"{took:.1f} s end to end, restore+recovery {db['restore_seconds']:.1f} s")


OTHER_SCHEMA = """
DROP SCHEMA IF EXISTS spse_other CASCADE;
CREATE SCHEMA spse_other;
CREATE TABLE spse_other.paket (id bigserial PRIMARY KEY, nama text NOT NULL, dibuat timestamp without time zone NOT NULL);
CREATE TABLE spse_other.kategori (kode text, nama text);
INSERT INTO spse_other.paket (nama, dibuat)
  SELECT 'Paket ' || i, (now() AT TIME ZONE '{zone}') - i * interval '1 minute' FROM generate_series(1, 50) i;
INSERT INTO spse_other.kategori VALUES ('K1', 'Konstruksi'), ('K2', 'Barang'), ('K3', 'Jasa Lainnya');
"""
PROFILE = {"tables": [{"table": "spse_other.paket", "timestamp_column": "dibuat"},
                      {"table": "spse_other.kategori", "whole_table": True}], "files": "production"}


def test_restore_test_compares_what_the_application_profile_names(lab, hosts, tmp_path):
    """Another application's schema (SPSE-like: local time without a zone, a small table without
    one, no sha256 of the files anywhere) named by a site-file profile: compared as it says; files
    against production's own files; writes after the backup are changes, an old row that differs
    is a failure."""
    import shlex

    import yaml

    from drc.site import load_site

    p = hosts["primary"]
    zone = load_site(lab.site_file).base.timezone
    site = yaml.safe_load(Path(lab.site_file).read_text())
    site["spse_app"] = {**(site.get("spse_app") or {}), "restore_test": PROFILE}
    other = tmp_path / "site-other-app.yaml"
    other.write_text(yaml.safe_dump(site, sort_keys=False))

    def run(*args: str) -> tuple[int, dict]:
        proc = subprocess.run([sys.executable, "-m", "drc.cli", "backup", "restore-test", "--slack", "0", *args, str(other), "--json"],
                              cwd=REPO, capture_output=True, text=True, timeout=900)
        assert proc.returncode in (0, 1), (proc.returncode, proc.stderr[-3000:])
        return proc.returncode, json.loads(proc.stdout)

    psql = "runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d epns_prod -c {}"
    try:
        p.check_output(psql.format(shlex.quote(OTHER_SCHEMA.format(zone=zone))))
        p.check_output("python3 -c %s other-app", ONE_UPLOAD)
        code, out, _ = siaga(lab, "run")
        assert code == 0, out
        # Work after the backup: a new paket, a kategori renamed, one added.
        p.check_output(psql.format(shlex.quote(
            f"INSERT INTO spse_other.paket (nama, dibuat) VALUES ('Paket baru', now() AT TIME ZONE '{zone}'); "
            "UPDATE spse_other.kategori SET nama = 'Barang/Jasa' WHERE kode = 'K2'; "
            "INSERT INTO spse_other.kategori VALUES ('K4', 'Jasa Konsultansi')")))
        code, rt = run("--label", "latest", "--snapshot", "latest", "--tables", "2")
        assert code == 0 and rt["result"] == "success", rt["problems"]
        tables = rt["db"]["tables"]
        assert list(tables) == ["spse_other.paket", "spse_other.kategori"], tables  # the profile's, not tender_document
        paket, kategori = tables["spse_other.paket"], tables["spse_other.kategori"]
        assert (paket["state"], paket["method"], paket["production"][0], paket["restored"][0], paket["production"][2]) == (
            "match", "timestamp", "50", "50", "51"), paket
        assert (kategori["state"], kategori["unchanged"], kategori["missing"], kategori["new_in_production"],
                kategori["gone_from_production"]) == ("changed", 2, 0, 2, 1), kategori
        files = rt["files"]
        assert files["compared_with"] == "production" and files["files"], files
        assert all(f["match"] and f["expected"] == f["restored"] for f in files["files"].values()), files["files"]
        html = Path(rt["report"]).read_text()
        for text in ("spse_other.kategori", "seluruh tabel", "berubah sejak backup", "menurut kolom waktu <code>dibuat</code>",
                     "file produksi yang lebih lama dari snapshot", "BERHASIL"):
            assert text in html, text
        # An old row that differs from the backup is a failure (here: changed in production
        # without its timestamp, as a restore that lost the change would look).
        p.check_output(psql.format(shlex.quote("UPDATE spse_other.paket SET nama = 'Paket diubah' WHERE nama = 'Paket 7'")))
        code, bad = run("--label", "latest", "--skip-files", "--tables", "2")
        assert code == 1 and bad["db"]["tables"]["spse_other.paket"]["state"] == "mismatch", bad["db"]["tables"]
        assert any("spse_other.paket" in x and "differ" in x for x in bad["problems"]), bad["problems"]
        print(f"profile of another schema: paket {paket['restored'][0]} rows matched, kategori changed since the backup "
              f"({kategori['unchanged']} unchanged rows matched); {len(files['files'])} production files matched; "
              f"an old row changed: GAGAL ({bad['problems'][0][:120]})")
    finally:
        # Later random restore tests must not sample a table their backup never had.
        p.check_output(psql.format(shlex.quote("DROP SCHEMA IF EXISTS spse_other CASCADE")))


def restore_cmd(lab, *args: str) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, "-m", "drc.cli", "backup", "restore", *args, "--requester", "lab test",
                           str(lab.site_file), "--json"], cwd=REPO, capture_output=True, text=True, timeout=RUN_DEADLINE_S)
    assert proc.returncode in (0, 1, 2), (proc.returncode, proc.stderr[-3000:])
    return proc.returncode, json.loads(proc.stdout)


def test_restore_into_production_is_refused_unless_named_twice_and_backed_up_first(lab, hosts):
    p, d = hosts["primary"], hosts["drc"]
    started = "runuser -u postgres -- psql -XAtc 'select pg_postmaster_start_time()'"
    before = p.check_output(started)
    drc_log = len(d.file("/var/log/siaga/backup.jsonl").content_string.splitlines())
    for args in (("--target", "primary"), ("--target", "primary", "--confirm-target", "primray"),
                 ("--target", "drc", "--confirm-target", "drc")):
        code, rec = restore_cmd(lab, *args)
        assert (code, rec["result"], rec["pre_restore_backup"]) == (2, "refused", None), rec
    assert len(d.file("/var/log/siaga/backup.jsonl").content_string.splitlines()) == drc_log  # not even a backup
    # Named twice, but the pre-restore backup cannot be taken (WAN cut): nothing is restored.
    try:
        lab.set_wan(cut=True)
        code, rec = restore_cmd(lab, "--target", "primary", "--confirm-target", "primary")
    finally:
        lab.set_wan(cut=False)
    assert (code, rec["result"], rec["restore"]) == (2, "refused", None), rec
    assert "pre-restore backup failed" in rec["error"]
    last = json.loads(d.file("/var/log/siaga/backup.jsonl").content_string.splitlines()[-1])
    assert (last["set"], last["trigger"], last["result"]) == ("db", "pre-restore", "failure")
    assert p.check_output(started) == before and p.check_output("runuser -u postgres -- psql -XAtc 'select pg_is_in_recovery()'") == "f"
    print(f"restore refused 4 times; pre-restore backup recorded as failed: {last['error'][:160]}")


def test_a_corrupted_repository_file_is_reported_failed_never_good(lab, hosts):
    drc = hosts["drc"]
    # The biggest file of the full backup every later incremental builds on.
    victim = drc.check_output(f"find {REPO_DIR} -path '*F/pg_data/*' -type f -printf '%s %p\\n' | sort -n | tail -1 | cut -d' ' -f2")
    drc.check_output(f"cp -a {victim} /root/siaga-test-victim")
    try:
        drc.check_output(f"printf 'siaga-corruption' | dd of={victim} bs=1 seek=100 conv=notrunc status=none")
        code, rt, _ = restore_test(lab, "--label", "latest", "--skip-files")
        assert code == 1 and rt["result"] == "failure"
        assert not rt["db"]["verify"]["ok"]
        assert any("verify failed" in p for p in rt["problems"]), rt["problems"]
        assert "GAGAL" in Path(rt["report"]).read_text()
        print(f"corrupted {victim}: restore-test GAGAL; verify said: {rt['db']['verify']['output'][-300:]}")
    finally:
        drc.check_output(f"cp -a /root/siaga-test-victim {victim} && rm -f /root/siaga-test-victim")


def test_repository_disk_full_is_a_clear_failure_and_earlier_backups_stay_restorable(lab, hosts):
    """The repository on a small filesystem that is full: the run fails with a clear message, is
    logged and classified in the monthly report, and an earlier backup still restores."""
    d, repo, small = hosts["drc"], "/srv/siaga-backup/pgbackrest", "/mnt/siaga-small"
    size_mib = int(d.check_output(f"du -sm {repo} | cut -f1")) + 24
    lab.disk_detach("small")
    lab.disk_image("small").unlink(missing_ok=True)  # a new disk each time
    lab.disk_attach("small", "drc", small, size_mib)
    bound = False
    try:
        d.check_output(f"cp -a {repo}/. {small}/ && (dd if=/dev/zero of={small}/filler bs=1M status=none; "
                       f"dd if=/dev/zero of={small}/filler2 bs=4k status=none; true) && "
                       f"mount --bind {small} {repo}")
        bound = True
        assert int(d.check_output(f"df --output=avail -B1 {repo} | tail -1")) < 64 * 1024
        code, out, took = siaga(lab, "run", "--set", "db")
        rec = out["records"][0]
        assert code == 1 and rec["result"] == "failure" and rec["error"].startswith("repository disk full"), rec
        code, rt, _ = restore_test(lab, "--label", "latest", "--skip-files", "--tables", "1")
        assert code == 0 and rt["result"] == "success", rt["problems"]
        month = rec["start"][:7]
        code, rep, _ = siaga(lab, "report", "--month", month, "--no-collect")
        assert code == 0 and rep["failure_types"].get("Ruang penyimpanan repositori penuh", 0) >= 1
        assert any(rec["id"] == f["id"] for f in rep["failures_list"]) and Path(rep["report"]).is_file()
        print(f"disk full: run failed in {took:.1f} s: {rec['error'][:200]}; {rt['db']['label']} still restored; "
              f"report {rep['report']}")
    finally:
        if bound:  # WAL that reached the small disk goes back to the real repository
            d.check_output(f"umount {repo} && cp -an {small}/archive/. {repo}/archive/")
        lab.disk_detach("small")
        lab.disk_image("small").unlink(missing_ok=True)
    code, out, _ = siaga(lab, "run", "--set", "db")
    assert code == 0, out


def test_restore_into_production_overwrites_it_and_the_standby_follows_again(lab, hosts):
    import shlex

    p, d = hosts["primary"], hosts["drc"]
    code, out, _ = siaga(lab, "run", "--set", "db")
    assert code == 0, out
    label = out["records"][0]["details"]["label"]
    p.check_output("python3 -c %s after-the-backup", ONE_UPLOAD)
    after = PSQL.format(sql=shlex.quote("SELECT count(*) FROM tender_document WHERE name = 'after-the-backup.pdf'"))
    assert p.check_output(after) == "1"
    code, rec = restore_cmd(lab, "--target", "primary", "--confirm-target", "primary", "--label", label)
    assert (code, rec["result"]) == (0, "success"), rec
    assert [b["result"] for b in rec["pre_restore_backup"]] == ["success"]
    # Production is the backup again: the later row is gone, and it is a primary.
    assert p.check_output(after) == "0"
    assert p.check_output("runuser -u postgres -- psql -XAtc 'select pg_is_in_recovery()'") == "f"
    # pgBackRest's recovery settings are gone (a standby copied from here would promote itself).
    assert "recovery_target" not in p.file(f"/var/lib/postgresql/{pg_version(lab)}/main/postgresql.auto.conf").content_string
    # The standby was re-seeded from the restored primary and follows it: a new write reaches it.
    assert [s["ok"] for s in rec["standby"]] == [True, True], rec["standby"]
    p.check_output("python3 -c %s after-the-restore", ONE_UPLOAD)
    seen = PSQL.format(sql=shlex.quote("SELECT count(*) FROM tender_document WHERE name = 'after-the-restore.pdf'"))
    deadline = time.monotonic() + 60
    while d.check_output(seen) != "1":
        assert time.monotonic() < deadline, "the standby did not receive a write made after the restore within 60 s"
        time.sleep(0.5)
    assert d.check_output("runuser -u postgres -- psql -XAtc 'select pg_is_in_recovery()'") == "t"
    print(f"restored {label} into production in {rec['restore']['seconds']:.1f} s; standby re-seeded "
          f"({rec['standby'][-1]['seconds']} s deploy) and streaming again")


def test_after_a_restore_a_deploy_that_changes_the_postgresql_config_goes_through(lab, hosts, tmp_path):
    """Issue 8 point 8: the restore leaves nothing pending a restart, and the next deploy that
    changes conf.d/siaga.conf is not refused for the old recovery_target* settings."""
    from tests.helpers import run_deploy
    from tests.lab.test_prechange import site_with

    p = hosts["primary"]
    pending = "runuser -u postgres -- psql -XAtc 'SELECT count(*) FROM pg_settings WHERE pending_restart'"
    assert p.check_output(pending) == "0"
    try:
        res = run_deploy(lab, "deploys/data_tier.py", site_file=site_with(lab, tmp_path, log_min_duration_statement="4s"))
        assert res.ok, res.output[-4000:]
        assert "rejects" not in res.output
        assert p.check_output("runuser -u postgres -- psql -XAtc 'SHOW log_min_duration_statement'") == "4s"
    finally:
        back = run_deploy(lab, "deploys/data_tier.py")
        assert back.ok, back.output[-4000:]
