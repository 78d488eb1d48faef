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

from tests.helpers import assert_no_change_rerun, pg_version

LAG_DEADLINE_S = 60.0  # the default `siaga status` threshold (issue 3)


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


def upload(lab, content: bytes, name: str, host: str = "primary") -> dict:
    """A document written through the app on `host` over HTTPS (the stand-in's POST /dokumen)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # the lab's self-signed certificate
    req = urllib.request.Request(f"https://{lab.address(host)}/eproc4/dokumen?name={name}", data=content, method="POST")
    with urllib.request.urlopen(req, context=ctx, timeout=15) as resp:
        assert resp.status == 201
        return json.loads(resp.read())


def test_primary_is_primary_and_drc_streams_from_it(lab, primary, drc):
    assert psql(primary, "SELECT pg_is_in_recovery()") == "f"
    assert psql(drc, "SELECT pg_is_in_recovery()") == "t"
    status, sender = psql(drc, "SELECT status, sender_host FROM pg_stat_wal_receiver").split("|")
    assert (status, sender) == ("streaming", lab.address("primary"))
    assert psql(primary, "SELECT application_name, state FROM pg_stat_replication") == "drc|streaming"
    assert psql(primary, "SELECT active FROM pg_replication_slots WHERE slot_name = 'siaga_drc'") == "t"


def test_config_is_debian_layout_scram_and_wal_log_hints(lab, primary, drc):
    v = pg_version(lab)
    for host in (primary, drc):
        assert psql(host, "SHOW config_file") == f"/etc/postgresql/{v}/main/postgresql.conf"
        assert psql(host, "SHOW wal_log_hints") == "on"
        assert psql(host, "SHOW password_encryption") == "scram-sha-256"
        assert not host.file(f"/var/lib/postgresql/{v}/main/postgresql.conf").exists
        pgpass = host.file("/var/lib/postgresql/.pgpass")
        assert (pgpass.user, pgpass.mode) == ("postgres", 0o600)
    assert psql(primary, "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'replicator'") == "t"


def test_a_row_written_over_https_reaches_the_drc(lab, drc):
    content = os.urandom(64 * 1024)
    doc = upload(lab, content, "rks-lab.pdf")
    assert doc["sha256"] == hashlib.sha256(content).hexdigest()
    query = f"SELECT sha256 FROM tender_document WHERE id = {doc['id']}"
    _, lag = poll("the row on the DRC", lambda: psql(drc, query, "epns_prod") == doc["sha256"], LAG_DEADLINE_S)
    print(f"row reached the DRC in {lag:.2f} s")


def test_drc_refuses_writes_and_its_app_says_read_only(drc):
    cmd = drc.run("runuser -u postgres -- psql -XAtq -d epns_prod -c %s",
                     "INSERT INTO tender_document (name, size, sha256, path) VALUES ('x', 0, repeat('0', 64), '/x')")
    assert cmd.rc != 0 and "read-only transaction" in cmd.stderr
    assert not drc.service("spse.service").is_running  # installed, stopped while standby
    assert drc.file("/home/appserv/spse4/spse").exists
    # Started for a moment, the app itself reports read-only (and is stopped again).
    assert drc.run("systemctl start spse.service").rc == 0
    try:
        out = drc.run("python3 -c %s", "import urllib.request,urllib.error\n"
                         "try: urllib.request.urlopen('http://127.0.0.1:9000/eproc4/health')\n"
                         "except urllib.error.HTTPError as e: print(e.code, e.read().decode())").stdout
    finally:
        drc.run("systemctl stop spse.service")
    code, body = out.split(" ", 1)
    health = json.loads(body)
    assert code == "503" and health["status"] == "read-only"
    assert health["database"] == {**health["database"], "read": True, "write": False, "in_recovery": True}


# --- uploads (roles/uploads_sync): lsyncd over SSH, key forced to rrsync -----------------------

UPLOADS_DEADLINE_S = 20.0  # issue 3 benchmark goal for uploads lag
SYNC_SSH = ("ssh -F /dev/null -i /etc/siaga/uploads-sync/id_ed25519 -o IdentitiesOnly=yes -o BatchMode=yes "
            "-o UserKnownHostsFile=/etc/siaga/uploads-sync/known_hosts -o StrictHostKeyChecking=yes "
            "-o LogLevel=ERROR -o ConnectTimeout=10")


def sha256_on(host, path: str) -> str | None:
    cmd = host.run("sha256sum %s", path)
    return cmd.stdout.split()[0] if cmd.rc == 0 else None


def test_a_file_uploaded_over_https_reaches_the_drc_with_the_same_sha256(lab, drc):
    content = os.urandom(256 * 1024)
    doc = upload(lab, content, "dokumen-penawaran.pdf")
    assert doc["path"].startswith("/home/file/file_prod/")
    _, lag = poll("the file on the DRC", lambda: sha256_on(drc, doc["path"]) == doc["sha256"], UPLOADS_DEADLINE_S)
    print(f"upload reached the DRC in {lag:.2f} s")
    copy = drc.file(doc["path"])
    assert (copy.user, copy.group) == ("appserv", "appserv")  # the DRC's app can take it over


def test_the_sync_key_cannot_open_a_shell_on_the_drc(lab, primary, drc):
    drc_address = lab.address("drc")
    for command in ("id", "sh -c id", "rsync --server --sender -logDtpre.iLsfxCIvu . /etc/"):
        cmd = primary.run(f"{SYNC_SSH} appserv@{drc_address} %s", command)
        assert cmd.rc != 0 and "uid=" not in cmd.stdout, (command, cmd.stdout, cmd.stderr)
        assert "rrsync error" in cmd.stderr, cmd.stderr
    # No command, asking for a terminal (an interactive login): no PTY, and rrsync refuses.
    tty = primary.run(f"{SYNC_SSH} -tt appserv@{drc_address} </dev/null; echo exit=$?")
    assert "PTY allocation request failed" in tty.stderr and "exit=0" not in tty.stdout
    # sshd itself forces rrsync for the group and reads its keys only from a root-owned file.
    forced = drc.run("sshd -T -C user=appserv,host=primary,addr=%s", lab.address("primary")).stdout
    assert "forcecommand /usr/bin/rrsync -wo /home/file" in forced
    assert "authorizedkeysfile /etc/ssh/siaga-sync-keys/%u" in forced
    keys = drc.file("/etc/ssh/siaga-sync-keys/appserv")
    assert (keys.user, keys.mode) == ("root", 0o644)
    assert keys.content_string.strip().splitlines()[-1].startswith('restrict,command="/usr/bin/rrsync -wo /home/file",')
    # No sudo for the sync account.
    assert "not allowed" in drc.run("sudo -l -U appserv").stdout
    # The private key is root's, 0600, on the source only.
    key = primary.file("/etc/siaga/uploads-sync/id_ed25519")
    assert (key.user, key.mode) == ("root", 0o600)
    assert not drc.file("/etc/siaga/uploads-sync/id_ed25519").exists


def test_lsyncd_and_the_full_resync_timer_run_on_the_source_only(primary, drc):
    assert primary.service("siaga-uploads-sync.service").is_running
    timer = primary.service("siaga-uploads-resync.timer")
    assert timer.is_running and timer.is_enabled
    assert primary.run("systemctl show -P NextElapseUSecRealtime siaga-uploads-resync.timer").stdout.strip()
    assert not drc.service("siaga-uploads-sync.service").is_running
    assert not drc.service("siaga-uploads-resync.timer").is_running


def test_a_file_removed_on_the_drc_behind_lsyncds_back_is_restored_by_the_resync(lab, primary, drc):
    content = os.urandom(32 * 1024)
    doc = upload(lab, content, "berita-acara.pdf")
    poll("the file on the DRC", lambda: sha256_on(drc, doc["path"]) == doc["sha256"], UPLOADS_DEADLINE_S)
    assert drc.run("rm -f %s", doc["path"]).rc == 0  # lsyncd on primary sees no event for this
    run = primary.run("systemctl start siaga-uploads-resync.service")  # oneshot: returns when done
    assert run.rc == 0, run.stderr
    assert sha256_on(drc, doc["path"]) == doc["sha256"]
    assert primary.file("/var/lib/siaga-uploads-sync/last-full-resync").exists


def test_second_run_changes_nothing(lab, deployed):
    assert_no_change_rerun(lab, "deploys/data_tier.py", preview=False)
