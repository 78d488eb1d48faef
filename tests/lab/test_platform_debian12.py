"""Debian 12 stays supported: a second lab of platform debian12 (its own hosts, its own fixture),
the site deploy converges it, a second deploy changes nothing (read from pyinfra's results), and the
data tier works on Debian 12's own packages: PostgreSQL 15 streaming to the DRC, an upload synced,
one database backup with pgBackRest 2.45 (file-level incrementals: no repo1-block). Also the
platform check on real hosts: a site file that says debian13 stops the deploy before any change.

The lab is SIAGA_TEST_LAB_DEBIAN12 (default "test12"), removed at the end unless SIAGA_TEST_KEEP_LAB=1.
The whole suite runs on the default platform (Debian 13) in the session's lab."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from drc.site import load_site
from drc.site.platform import PLATFORMS
from tests.helpers import REPO, assert_no_change_rerun, lab_host, pg_version, run_deploy
from tests.lab.test_data_tier import poll, psql, sha256_on, upload

PLATFORM = "debian12"


@pytest.fixture(scope="module")
def lab12():
    from drc.lab.lab import Lab

    the_lab = Lab(os.environ.get("SIAGA_TEST_LAB_DEBIAN12", "test12"))
    start = time.monotonic()
    the_lab.up(log=lambda _m: None, platform=PLATFORM)
    try:
        yield the_lab
    finally:
        print(f"debian12 smoke: {time.monotonic() - start:.0f} s from lab up to the end of its tests")
        if os.environ.get("SIAGA_TEST_KEEP_LAB") != "1":
            the_lab.down(log=lambda _m: None)


@pytest.fixture(scope="module")
def deployed12(lab12):
    result = run_deploy(lab12)
    assert result.ok, result.output[-6000:]
    print(f"debian12 site deploy: {result.seconds:.0f} s, {len(result.changed)} operations changed")
    return result


def test_the_lab_and_its_site_file_say_debian12_and_the_hosts_run_it(lab12):
    site = load_site(lab12.site_file)
    assert (lab12.state()["platform"], site.platform) == (PLATFORM, PLATFORM)
    assert site.postgresql.version == PLATFORMS[PLATFORM].postgresql
    for name in ("primary", "drc"):
        assert lab_host(lab12, name).check_output(". /etc/os-release && echo $VERSION_ID") == PLATFORMS[PLATFORM].version_id


def test_a_site_file_of_another_platform_stops_the_deploy_before_any_change(lab12, tmp_path):
    """Run before the site deploy: fresh hosts stay fresh (no /usr/local/lib/siaga)."""
    before = {name: lab_host(lab12, name).file("/usr/local/lib/siaga").exists for name in ("primary", "drc")}
    site = yaml.safe_load(Path(lab12.site_file).read_text())
    site["platform"] = "debian13"
    wrong = tmp_path / "site-debian13.yaml"
    wrong.write_text(yaml.safe_dump(site, sort_keys=False))
    res = run_deploy(lab12, site_file=wrong)
    assert not res.ok
    # the first host pyinfra plans stops it (primary or drc, as the run goes)
    assert re.search(r"platform: (primary|drc) runs Debian GNU/Linux 12 \(bookworm\), but", res.output), res.output[-3000:]
    assert "Fix: set 'platform: debian12'" in res.output
    assert not res.changed, res.changed
    assert {name: lab_host(lab12, name).file("/usr/local/lib/siaga").exists for name in ("primary", "drc")} == before


def test_the_site_deploy_converges_and_a_second_run_changes_nothing(lab12, deployed12):
    assert deployed12.changed
    assert_no_change_rerun(lab12, preview=False)


def test_postgresql_15_streams_to_the_drc(lab12, deployed12):
    primary, drc = lab_host(lab12, "primary"), lab_host(lab12, "drc")
    v = pg_version(lab12)
    assert psql(primary, "SHOW server_version").split(".")[0] == v == PLATFORMS[PLATFORM].postgresql
    assert psql(primary, "SHOW config_file") == f"/etc/postgresql/{v}/main/postgresql.conf"
    assert psql(drc, "SELECT pg_is_in_recovery()") == "t"
    poll("drc streaming from primary", lambda: psql(primary, "SELECT application_name, state FROM pg_stat_replication")
         == "drc|streaming", 30)


def test_an_upload_reaches_the_drc(lab12, deployed12):
    doc = upload(lab12, os.urandom(64 * 1024), "dokumen-debian12.pdf")
    _, lag = poll("the upload on the DRC", lambda: sha256_on(lab_host(lab12, "drc"), doc["path"]) == doc["sha256"], 30)
    print(f"debian12: upload reached the DRC in {lag:.2f} s")


def test_a_database_backup_with_debian12s_pgbackrest_245(lab12, deployed12):
    drc = lab_host(lab12, "drc")
    assert drc.check_output("pgbackrest version").split()[-1].startswith(PLATFORMS[PLATFORM].pgbackrest)
    conf = drc.file("/etc/siaga/pgbackrest-repo/pgbackrest.conf").content_string
    assert "repo1-block" not in conf and "repo1-bundle" not in conf  # file-level incrementals
    proc = subprocess.run([sys.executable, "-m", "drc.cli", "backup", "run", "--set", "db", str(lab12.site_file), "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stderr[-3000:], proc.stdout[-3000:])
    (db,) = json.loads(proc.stdout)["records"]
    assert (db["set"], db["host"], db["result"]) == ("db", "drc", "success"), db
    info = json.loads(drc.check_output("runuser -u siagabak -- pgbackrest --config-path=/etc/siaga/pgbackrest-repo "
                                       "--stanza=spse --output=json info"))[0]
    assert info["status"]["code"] == 0 and db["details"]["label"] in [b["label"] for b in info["backup"]]
    writer = drc.check_output("cat /var/lib/siaga/backup/pgbackrest-writer-*")
    assert writer.startswith(PLATFORMS[PLATFORM].pgbackrest), writer


def test_a_repository_written_by_a_newer_pgbackrest_stops_the_deploy_with_the_fixes(lab12, deployed12):
    """As on a Debian 12 site whose repository the earlier siaga's backported 2.55.1 wrote: the
    repository host's record says so, and Debian 12's 2.45 is not installed over it."""
    drc = lab_host(lab12, "drc")
    record = drc.check_output("ls /var/lib/siaga/backup/pgbackrest-writer-*")
    kept = drc.check_output(f"cat {record}")
    assert drc.run(f"printf '2.55.1-1~deb12siaga1\\n' > {record}").rc == 0
    try:
        res = run_deploy(lab12, "deploys/data_tier.py")
        assert not res.ok and not res.changed, res.changed
        assert "was written by pgBackRest 2.55.1-1~deb12siaga1, but platform 'debian12' provides pgBackRest 2.45" in res.output
        assert "Fix: keep the newer pgBackRest with backup.pgbackrest_apt" in res.output
    finally:
        assert drc.run(f"printf '%s\\n' {kept} > {record}").rc == 0
    assert_no_change_rerun(lab12, "deploys/data_tier.py", preview=False)
