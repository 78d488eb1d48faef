"""The data tier on the real lab: primary is primary, the DRC streams, data written through the
app over HTTPS reaches the DRC within the lag threshold, the DRC refuses writes, re-run is a no-op.
SOP EM-3 (make sure DRC data is up to date)."""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import lab_host, run_deploy

REPO = Path(__file__).resolve().parents[2]
LAG_DEADLINE_S = 60.0  # the default `siaga status` threshold (issue 3)


@pytest.fixture(scope="session")
def data_tier(lab, request):
    """The base site deploy (if it exists yet), then the data tier, once per session."""
    if (REPO / "deploys/site.py").exists():
        request.getfixturevalue("deployed")
    result = run_deploy(lab, "deploys/data_tier.py")
    assert result.ok, result.output[-6000:]
    return result


@pytest.fixture(scope="session")
def db_primary(lab, data_tier):
    return lab_host(lab, "primary")


@pytest.fixture(scope="session")
def db_drc(lab, data_tier):
    return lab_host(lab, "drc")


def psql(host, sql: str, db: str = "postgres") -> str:
    cmd = host.run("runuser -u postgres -- psql -XAtq -d %s -c %s", db, sql)
    assert cmd.rc == 0, cmd.stderr
    return cmd.stdout.strip()


def poll(what: str, check, deadline_s: float, interval_s: float = 0.2):
    """Poll until `check()` returns a truthy value (returned with the seconds it took)."""
    start = time.monotonic()
    while True:
        value = check()
        if value:
            return value, time.monotonic() - start
        if time.monotonic() - start > deadline_s:
            raise AssertionError(f"{what}: not within {deadline_s:.0f} s")
        time.sleep(interval_s)


def upload(lab, content: bytes, name: str) -> dict:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # the lab's self-signed certificate
    req = urllib.request.Request(f"https://{lab.address('primary')}/eproc4/dokumen?name={name}", data=content, method="POST")
    with urllib.request.urlopen(req, context=ctx, timeout=15) as resp:
        assert resp.status == 201
        return json.loads(resp.read())


def test_primary_is_primary_and_drc_streams_from_it(lab, db_primary, db_drc):
    assert psql(db_primary, "SELECT pg_is_in_recovery()") == "f"
    assert psql(db_drc, "SELECT pg_is_in_recovery()") == "t"
    status, sender = psql(db_drc, "SELECT status, sender_host FROM pg_stat_wal_receiver").split("|")
    assert (status, sender) == ("streaming", lab.address("primary"))
    assert psql(db_primary, "SELECT application_name, state FROM pg_stat_replication") == "drc|streaming"
    assert psql(db_primary, "SELECT active FROM pg_replication_slots WHERE slot_name = 'siaga_drc'") == "t"


def test_config_is_debian_layout_scram_and_wal_log_hints(db_primary, db_drc):
    for host in (db_primary, db_drc):
        assert psql(host, "SHOW config_file") == "/etc/postgresql/15/main/postgresql.conf"
        assert psql(host, "SHOW wal_log_hints") == "on"
        assert psql(host, "SHOW password_encryption") == "scram-sha-256"
        assert not host.file("/var/lib/postgresql/15/main/postgresql.conf").exists
        pgpass = host.file("/var/lib/postgresql/.pgpass")
        assert (pgpass.user, pgpass.mode) == ("postgres", 0o600)
    assert psql(db_primary, "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'replicator'") == "t"


def test_a_row_written_over_https_reaches_the_drc(lab, db_drc):
    content = os.urandom(64 * 1024)
    doc = upload(lab, content, "rks-lab.pdf")
    assert doc["sha256"] == hashlib.sha256(content).hexdigest()
    query = f"SELECT sha256 FROM tender_document WHERE id = {doc['id']}"
    _, lag = poll("the row on the DRC", lambda: psql(db_drc, query, "epns_prod") == doc["sha256"], LAG_DEADLINE_S)
    print(f"row reached the DRC in {lag:.2f} s")


def test_drc_refuses_writes_and_its_app_says_read_only(db_drc):
    cmd = db_drc.run("runuser -u postgres -- psql -XAtq -d epns_prod -c %s",
                     "INSERT INTO tender_document (name, size, sha256, path) VALUES ('x', 0, repeat('0', 64), '/x')")
    assert cmd.rc != 0 and "read-only transaction" in cmd.stderr
    assert not db_drc.service("spse.service").is_running  # installed, stopped while standby
    assert db_drc.file("/home/appserv/spse4/spse").exists
    # Started for a moment, the app itself reports read-only (and is stopped again).
    assert db_drc.run("systemctl start spse.service").rc == 0
    try:
        out = db_drc.run("python3 -c %s", "import urllib.request,urllib.error\n"
                         "try: urllib.request.urlopen('http://127.0.0.1:9000/eproc4/health')\n"
                         "except urllib.error.HTTPError as e: print(e.code, e.read().decode())").stdout
    finally:
        db_drc.run("systemctl stop spse.service")
    code, body = out.split(" ", 1)
    health = json.loads(body)
    assert code == "503" and health["status"] == "read-only"
    assert health["database"] == {**health["database"], "read": True, "write": False, "in_recovery": True}


def test_second_run_changes_nothing(lab, data_tier):
    again = run_deploy(lab, "deploys/data_tier.py")
    assert again.ok, again.output[-4000:]
    assert again.changed == [], again.changed
