"""ModSecurity with the OWASP CRS on the lab (issue 12, IN-2): from the outsider, through the public
name, a SQL-injection probe is refused (403) and logged with its CRS rule, while the application's
normal use (health, an upload whose body holds SQL words, reading it back) passes untouched; a
config Apache rejects is rolled back and the app keeps serving. SOP IN-2."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import uuid

import pytest

from drc.site import load_site
from roles.modsecurity.deploy import ENGINE_CONF
from tests.helpers import lab_host, run_deploy
from tests.lab.test_data_tier import poll

# Runs on the outsider (the public side): each request's status and body, as JSON lines. The lab CA
# is in the outsider's trust store, and the public name resolves through the lab's DNS.
CLIENT = r"""
import json, sys, urllib.request, urllib.error
for line in sys.stdin:
    r = json.loads(line)
    req = urllib.request.Request(r["url"], data=r["body"].encode("latin-1") if r.get("body") is not None else None,
                                 method=r["method"], headers=r.get("headers", {}))
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            out = {"status": resp.status, "body": resp.read().decode("latin-1")}
    except urllib.error.HTTPError as e:
        out = {"status": e.code, "body": e.read().decode("latin-1")[:500]}
    print(json.dumps(out), flush=True)
"""


@pytest.fixture(scope="module")
def site(lab):
    return load_site(lab.site_file)


@pytest.fixture(scope="module")
def active(lab, site, deployed):
    """The host users reach now (the public name points at the active site)."""
    return lab_host(lab, site.hosts_in(site.active_site)[0])


def from_outsider(lab, *requests: dict) -> list[dict]:
    feed = "".join(json.dumps(r) + "\n" for r in requests)
    got = subprocess.run(lab.ssh_cmd("outsider") + ["python3", "-c", shlex.quote(CLIENT)], input=feed,
                         capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, got.stderr
    return [json.loads(line) for line in got.stdout.splitlines()]


def test_a_sql_injection_from_the_outsider_is_refused_and_logged(lab, site, active):
    marker = uuid.uuid4().hex[:12]
    base = f"https://{site.traffic.public_name}{site.spse_app.context_path}"
    probe, = from_outsider(lab, {"method": "GET", "url": f"{base}/dokumen/1?m={marker}&id=1%27%20OR%20%271%27%3D%271%27--"})
    assert probe["status"] == 403, probe
    # The audit log holds the request (line, headers) and the CRS SQL-injection rule that matched;
    # the vhost's error log the refusal. Apache writes them as it answers; read until both are there.
    audit = site.modsecurity.audit_log

    def logged():
        entry = audit_entry_with(active.check_output(f"cat {audit}"), marker)
        if not entry:
            return None
        # Part A: "[time] UNIQUE_ID client port server port"; the error log's lines carry the same id.
        unique_id = entry["A"].split("] ", 1)[1].split()[0]
        e = active.run(f"grep -F {unique_id} /var/log/apache2/spse-error.log")
        return (entry, e.stdout) if e.rc == 0 else None

    (entry, error_lines), _ = poll("the refused probe in ModSecurity's logs", logged, 15)
    assert 'id "942100"' in entry["H"] and "attack-sqli" in entry["H"], entry["H"]  # the CRS SQLi rule
    assert "Access denied with code 403" in error_lines, error_lines
    # Logged without bodies (a login's password would be in one): the audit entry has no part C/I.
    assert set(entry) == {"A", "B", "F", "H"}, sorted(entry)


def audit_entry_with(log: str, marker: str) -> dict[str, str] | None:
    """The serial audit log's entry (part letter -> text) whose request holds `marker`."""
    entry: dict[str, str] = {}
    part = ""
    for line in log.splitlines():
        m = re.fullmatch(r"--[0-9a-f]+-([A-Z])--", line)
        if not m:
            if part:
                entry[part] += line + "\n"
            continue
        part = m[1]
        if part == "A":
            entry = {}
        if part == "Z":
            if marker in entry.get("B", ""):
                return entry
            part = ""
        else:
            entry[part] = ""
    return None


def test_the_apps_normal_use_passes_uploads_included(lab, site, active):
    base = f"https://{site.traffic.public_name}{site.spse_app.context_path}"
    # A tender document whose bytes look like SQL and script (a scanned PDF may hold anything): the
    # upload path's body is not read by ModSecurity (ClamAV scans the stored file instead).
    audit = site.modsecurity.audit_log
    audit_size = int(active.check_output(f"stat -c %s {audit}"))
    body = "%PDF-1.4\n SELECT * FROM users WHERE id='1' OR '1'='1'; <script>alert(1)</script> ../../etc/passwd\n"
    health, up = from_outsider(
        lab,
        {"method": "GET", "url": f"{base}/health"},
        {"method": "POST", "url": f"{base}/dokumen?name=rks-pengadaan.pdf", "body": body,
         "headers": {"Content-Type": "application/octet-stream"}},
    )
    assert health["status"] == 200 and json.loads(health["body"])["status"] == "ok", health
    assert up["status"] == 201, up
    doc = json.loads(up["body"])
    row, file = from_outsider(lab, {"method": "GET", "url": f"{base}/dokumen/{doc['id']}"},
                              {"method": "GET", "url": f"{base}/dokumen/{doc['id']}/file"})
    assert row["status"] == 200 and json.loads(row["body"])["sha256"] == doc["sha256"], row
    assert file["status"] == 200 and file["body"] == body, file
    # Nothing of this was refused or warned about: the audit log (every request that was) did not grow.
    assert int(active.check_output(f"stat -c %s {audit}")) == audit_size, active.check_output(f"tail -c +{audit_size + 1} {audit}")
    # ModSecurity is in force (not only installed): Apache loaded the module with siaga's config.
    assert "security2_module" in active.check_output("apache2ctl -M 2>/dev/null")
    assert f"SecRuleEngine {site.modsecurity.engine}" in active.file(ENGINE_CONF).content_string


def test_a_config_apache_rejects_is_rolled_back_and_the_app_keeps_serving(lab, site, active):
    before = active.file(ENGINE_CONF).content_string
    res = run_deploy(lab, "tests/deploys/broken_modsecurity.py", "--limit", site.hosts_in(site.active_site)[0])
    assert not res.ok and "configtest rejected the new security2 config" in res.output, res.output[-3000:]
    assert active.file(ENGINE_CONF).content_string == before
    assert not active.file("/etc/modsecurity/siaga-broken.conf").exists
    assert not active.run("ls /etc/modsecurity/*.siaga-old").stdout
    base = f"https://{site.traffic.public_name}{site.spse_app.context_path}"
    health, = from_outsider(lab, {"method": "GET", "url": f"{base}/health"})
    assert health["status"] == 200, health
    assert active.run("apache2ctl configtest").rc == 0
