"""ClamAV on the uploads in the lab (issue 12, IN-2): the EICAR test file, uploaded from the outsider
through the public name, is found by the real clamd (the lab loads siaga's own signature database,
no mirror is reachable), moved to the root-only quarantine, recorded and alerted, and its DRC copy
goes with the uploads sync; a clean upload stays; the daily full scan reads every upload. SOP IN-2."""

from __future__ import annotations

import hashlib
import json

import pytest

from drc.site import load_site
from roles.clamav.signatures import DATABASE, EICAR, SIGNATURE
from tests.helpers import lab_host
from tests.lab.test_data_tier import poll
from tests.lab.test_modsecurity import from_outsider


@pytest.fixture(scope="module")
def site(lab):
    return load_site(lab.site_file)


@pytest.fixture(scope="module")
def other(lab, site, deployed):
    return lab_host(lab, next(h for h in site.hosts if h not in site.hosts_in(site.active_site)))


@pytest.fixture(scope="module")
def active(lab, site, deployed):
    """The host users reach now (the public name points at the active site)."""
    return lab_host(lab, site.hosts_in(site.active_site)[0])


def upload(lab, site, name: str, body: bytes) -> dict:
    base = f"https://{site.traffic.public_name}{site.spse_app.context_path}"
    up, = from_outsider(lab, {"method": "POST", "url": f"{base}/dokumen?name={name}", "body": body.decode("latin-1"),
                              "headers": {"Content-Type": "application/octet-stream"}})
    assert up["status"] == 201, up
    return json.loads(up["body"])


def quarantine_records(host, site) -> list[dict]:
    out = host.run(f"cat {site.clamav.state_dir}/quarantine.jsonl")
    return [json.loads(line) for line in out.stdout.splitlines()] if out.rc == 0 else []


def test_the_lab_scans_with_the_real_engine_and_its_own_database_only(site, active):
    assert site.clamav.signatures == "local"
    assert active.service("clamav-daemon").is_running
    # Only siaga's database, no official one; freshclam never runs (no mirror is reachable).
    dbs = active.check_output("ls /var/lib/clamav").split()
    assert DATABASE.rsplit("/", 1)[1] in dbs and not [d for d in dbs if d.startswith(("main.", "daily."))], dbs
    assert active.run("systemctl is-enabled clamav-freshclam.service").stdout.strip() == "masked"
    hdb = active.file(DATABASE).content_string
    assert hdb == f"{hashlib.md5(EICAR).hexdigest()}:{len(EICAR)}:{SIGNATURE}\n"


def test_an_uploaded_eicar_file_is_quarantined_recorded_and_alerted_and_leaves_the_other_site(lab, site, active, other):
    clean = upload(lab, site, "dokumen-bersih.pdf", b"%PDF-1.4\nsurat penawaran\n")
    doc = upload(lab, site, "eicar-test.pdf", EICAR)
    # The DRC gets both through the uploads sync first.
    poll("both uploads on the other site", lambda: other.file(doc["path"]).exists and other.file(clean["path"]).exists, 30)
    # The next run of siaga-upload-scan.timer (every scan_interval_seconds) finds it.
    deadline = site.clamav.scan_interval_seconds + 60
    (record,), took = poll("the EICAR upload quarantined",
                           lambda: [r for r in quarantine_records(active, site) if r["path"] == doc["path"]], deadline)
    assert record["signature"].startswith(SIGNATURE) and record["scan"] == "new", record
    assert record["sha256"] == hashlib.sha256(EICAR).hexdigest() == doc["sha256"]
    assert not active.file(doc["path"]).exists
    q = active.file(record["quarantined_as"])
    assert q.exists and (q.user, q.group, q.mode) == ("root", "root", 0o600)
    d = active.file(site.clamav.quarantine_dir)
    assert (d.user, d.mode) == ("root", 0o700)
    # The real engine says what it is: clamd finds its signature in the quarantined file.
    scanned = active.run(f"clamdscan --fdpass --no-summary {record['quarantined_as']}")
    assert scanned.rc == 1 and f"{SIGNATURE}.UNOFFICIAL FOUND" in scanned.stdout, scanned.stdout + scanned.stderr
    # The alert: a crit line in the journal under siaga-clamav, and the status monitoring reads.
    alerts = active.check_output("journalctl -t siaga-clamav -p crit --no-pager -o cat")
    assert f"ALERT virus {record['signature']} found in upload {doc['path']}" in alerts, alerts
    status = json.loads(active.file(f"{site.clamav.state_dir}/status.json").content_string)
    assert status["quarantined_total"] >= 1 and status["last_scan"]["ok"], status
    prom = active.file(f"{site.clamav.state_dir}/siaga_clamav.prom").content_string
    assert f"siaga_clamav_quarantined_total {status['quarantined_total']}" in prom
    # The clean upload stays, on both sites; the other site's EICAR copy goes with the sync (delete).
    assert active.file(clean["path"]).exists
    poll("the other site's copy of the EICAR upload gone", lambda: not other.file(doc["path"]).exists, 30)
    assert other.file(clean["path"]).exists
    print(f"EICAR quarantined {took:.1f} s after the upload")


def test_the_daily_full_scan_reads_every_upload(site, active):
    active.run_expect([0], "systemctl start siaga-upload-fullscan.service")
    status = json.loads(active.file(f"{site.clamav.state_dir}/status.json").content_string)
    full = status["last_full_scan"]
    uploads = int(active.check_output(f"find {site.spse_app.uploads_dir} -type f ! -name '.tmp-*' | wc -l"))
    assert full["ok"] and full["files"] == uploads > 0 and full["found"] == 0, full
    assert active.service("siaga-upload-fullscan.timer").is_enabled
