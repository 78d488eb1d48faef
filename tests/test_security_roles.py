"""The security roles' files as rendered from the site file (no host): ModSecurity's engine and CRS
settings, the site's exclusions, and the errors for settings that cannot work. SOP IN-2."""

from __future__ import annotations

import hashlib
import json

import pytest

from drc.site import SiteError, load_site
from roles.modsecurity.deploy import CRS_CONF, ENGINE_CONF, config_files, upload_paths
from tests.test_site_validation import LAB, write


def site_with(tmp_path, extra: str):
    return load_site(write(tmp_path, LAB + extra))


def test_defaults_block_at_paranoia_1_and_leave_the_standins_uploads_body_alone(tmp_path):
    site = site_with(tmp_path, "")
    files = config_files(site)
    assert "SecRuleEngine On\n" in files[ENGINE_CONF]
    # Apache's own upload limit is ModSecurity's too, or large tender documents would get 413.
    assert f"SecRequestBodyLimit {site.spse_app.max_upload_bytes}\n" in files[ENGINE_CONF]
    assert "SecAuditLogParts ABFHZ\n" in files[ENGINE_CONF]  # no request or response bodies
    crs = files[CRS_CONF]
    assert "setvar:tx.paranoia_level=1" in crs and "setvar:tx.inbound_anomaly_score_threshold=5" in crs
    assert upload_paths(site) == ["/eproc4/dokumen"]
    assert 'SecRule REQUEST_FILENAME "@beginsWith /eproc4/dokumen" "id:10101,phase:1,pass,nolog,t:none,ctl:requestBodyAccess=Off,ctl:ruleRemoveById=920420"' in crs


def test_site_settings_reach_the_files(tmp_path):
    site = site_with(tmp_path, """modsecurity:
  engine: DetectionOnly
  paranoia_level: 2
  inbound_anomaly_threshold: 10
  removed_rules: [920350]
  upload_paths: [/eproc4/upload]
  exclusions:
    - path: /eproc4/admin/laporan
      rule_ids: [942100, 942200]
""")
    files = config_files(site)
    assert "SecRuleEngine DetectionOnly\n" in files[ENGINE_CONF]
    crs = files[CRS_CONF]
    assert "tx.paranoia_level=2" in crs and "tx.inbound_anomaly_score_threshold=10" in crs
    assert '"id:10101,phase:1,pass,nolog,t:none,ctl:ruleRemoveById=920350"' in crs
    assert '"@beginsWith /eproc4/upload" "id:10102,' in crs and "/eproc4/dokumen" not in crs
    assert ('"@beginsWith /eproc4/admin/laporan" "id:10103,phase:1,pass,nolog,t:none,'
            'ctl:ruleRemoveById=942100,ctl:ruleRemoveById=942200"') in crs


def test_an_unquoted_yaml_on_is_the_engine_on(tmp_path):
    assert site_with(tmp_path, "modsecurity:\n  engine: On\n").modsecurity.engine == "On"


def test_an_external_spse_has_no_upload_path_by_default(tmp_path):
    site = site_with(tmp_path, "spse_app:\n  install: external\n")
    assert upload_paths(site) == [] and "@beginsWith" not in config_files(site)[CRS_CONF]
    # The host's own status checks by address are still let through without a warning.
    assert '"@ipMatch 127.0.0.1,::1" "id:10100,' in config_files(site)[CRS_CONF]


@pytest.mark.parametrize("extra, key, says", [
    ("modsecurity:\n  engine: Off\n", "modsecurity.engine", "modsecurity.enabled: false"),
    ("modsecurity:\n  engine: Block\n", "modsecurity.engine", "'On' or 'DetectionOnly'"),
    ("modsecurity:\n  paranoia_level: 5\n", "modsecurity.paranoia_level", "4"),
    ("modsecurity:\n  exclusions:\n    - path: /eproc4/x\n", "modsecurity.exclusions[0]", "excludes nothing"),
    ('modsecurity:\n  exclusions:\n    - path: \'/a" "id:1,deny\'\n      rule_ids: [1]\n', "modsecurity.exclusions[0].path", "pattern"),
])
def test_settings_that_cannot_work_are_refused_with_the_key(tmp_path, extra, key, says):
    with pytest.raises(SiteError) as err:
        site_with(tmp_path, extra)
    assert key in str(err.value) and says in str(err.value), str(err.value)


# --- clamav ---------------------------------------------------------------------------------------------

def test_clamav_files_follow_the_settings(tmp_path):
    from roles.clamav.deploy import clamd_conf, freshclam_conf, scan_config, timer_lines

    site = site_with(tmp_path, """clamav:
  private_mirrors: [http://clamav.lpse.example.go.id]
  full_scan_time: "03:15"
  scan_interval_seconds: 30
""")
    assert f"MaxFileSize {site.spse_app.max_upload_bytes}\n" in clamd_conf(site)
    fresh = freshclam_conf(site)
    assert "PrivateMirror http://clamav.lpse.example.go.id\n" in fresh and "DatabaseMirror database.clamav.net\n" in fresh
    assert timer_lines(site, "new")[1] == "OnUnitInactiveSec=30s" and timer_lines(site, "full")[0] == "OnCalendar=*-*-* 03:15:00"
    conf = json.loads(scan_config(site, "lpse-primary"))
    assert conf["uploads_dir"] == site.spse_app.uploads_dir and conf["quarantine_dir"] == "/var/lib/siaga/quarantine"


def test_the_selftest_signature_is_computed_from_the_eicar_file():
    from roles.clamav.signatures import EICAR, SIGNATURE, hdb

    assert len(EICAR) == 68 and EICAR.startswith(b"X5O!") and EICAR.endswith(b"H+H*")
    assert hdb() == f"{hashlib.md5(EICAR).hexdigest()}:68:{SIGNATURE}\n"


@pytest.mark.parametrize("extra, key, says", [
    ("clamav:\n  signatures: offline\n", "clamav.signatures", "'freshclam' or 'local'"),
    ("clamav:\n  private_mirrors: ['http://x y']\n", "clamav.private_mirrors", "not a mirror"),
    ("clamav:\n  full_scan_time: '25:00'\n", "clamav.full_scan_time", "pattern"),
])
def test_clamav_settings_that_cannot_work_are_refused(tmp_path, extra, key, says):
    with pytest.raises(SiteError) as err:
        site_with(tmp_path, extra)
    assert key in str(err.value) and says in str(err.value), str(err.value)


def test_upload_scan_reads_clamdscans_lines():
    from drc.hostside.upload_scan import parse

    found, errors = parse("/home/file/a b: c.pdf: Siaga.Selftest.EICAR.UNOFFICIAL FOUND\n"
                          "/home/file/x.pdf: Can't open file or directory ERROR\n/home/file/ok.pdf: OK\n")
    assert found == {"/home/file/a b: c.pdf": "Siaga.Selftest.EICAR.UNOFFICIAL"}
    assert errors == {"/home/file/x.pdf": "Can't open file or directory"}


def test_upload_scan_takes_new_files_by_ctime_and_never_half_written_ones(tmp_path):
    import time

    from drc.hostside.upload_scan import candidates

    (tmp_path / "2026/11").mkdir(parents=True)
    old = tmp_path / "2026/11/old.pdf"
    old.write_bytes(b"x")
    since = time.time() + 5  # as if the last scan began after `old` was written
    (tmp_path / "2026/11/.tmp-new.pdf").write_bytes(b"x")
    conf = {"uploads_dir": str(tmp_path), "skip_prefixes": [".tmp-"]}
    assert candidates(conf, since) == []
    assert candidates(conf, None) == [str(old)]
    assert candidates(conf, since - 10) == [str(old)]


def test_upload_scan_metrics_for_monitoring():
    from drc.hostside.upload_scan import metrics

    text = metrics({"quarantined_total": 2, "last_detection_ts": 1700000000,
                    "last_scan": {"kind": "new", "finished_ts": 1700000100, "ok": True}})
    assert "siaga_clamav_quarantined_total 2\n" in text and "siaga_clamav_last_scan_ok 1\n" in text
    assert 'siaga_clamav_last_scan_timestamp_seconds{kind="full"} 0\n' in text


# --- file_integrity -------------------------------------------------------------------------------------

def test_the_manifest_holds_siagas_files_in_the_watched_paths_only(tmp_path):
    from drc.hostside import program
    from roles.file_integrity.deploy import aide_conf, manifest

    site = site_with(tmp_path, "")
    m = manifest(site)
    src = program("integrity_check").source
    assert m[program("integrity_check").path] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert "/home/appserv/spse4/standin.py" in m and "/etc/systemd/system/spse.service" not in m  # /etc is not watched
    conf = aide_conf(site)
    assert "/usr/bin Siaga\n" in conf and "!/home/appserv/spse4/logs(/|$)\n" in conf
    assert "/usr/local/lib/siaga/integrity-check" not in manifest(site_with(tmp_path, "file_integrity:\n  paths: [/usr/bin]\n"))


def dpkg_info(tmp_path, files: dict[str, bytes]):
    """A dpkg info directory of one package, coreutils, shipping `files`."""
    from drc.hostside.integrity_check import Dpkg

    info = tmp_path / "info"
    info.mkdir()
    (info / "coreutils.md5sums").write_text("".join(f"{hashlib.md5(c).hexdigest()}  {p.lstrip('/')}\n" for p, c in files.items()))
    (info / "coreutils.list").write_text("".join(f"{p}\n" for p in files))
    return Dpkg(str(info))


def test_integrity_differences_are_explained_by_packages_and_the_manifest_only(tmp_path):
    from drc.hostside.integrity_check import explain

    shipped = tmp_path / "tac"
    shipped.write_bytes(b"\x7fELF tac")
    ours = tmp_path / "standin.py"
    ours.write_bytes(b"print('spse')\n")
    dpkg = dpkg_info(tmp_path, {str(shipped): b"\x7fELF tac"})
    manifest = {str(ours): hashlib.sha256(b"print('spse')\n").hexdigest()}
    content = {"sha256", "size", "modify_time", "inode"}
    assert explain(str(shipped), "changed", content, manifest, dpkg) == "package coreutils"
    assert explain(str(ours), "changed", content, manifest, dpkg) == "siaga's deploy"
    assert explain(str(shipped), "changed", {"perm"}, manifest, dpkg) is None  # a setuid bit is no update
    shipped.write_bytes(b"\x7fELF tac\0")
    ours.write_bytes(b"print('spse')\n# tampered\n")
    assert explain(str(shipped), "changed", content, manifest, dpkg) is None
    assert explain(str(ours), "changed", content, manifest, dpkg) is None
    stranger = tmp_path / "backdoor"
    stranger.write_bytes(b"#!/bin/sh\n")
    assert explain(str(stranger), "added", set(), manifest, dpkg) is None
    assert explain(str(tmp_path), "changed", {"modify_time"}, manifest, dpkg) == "directory entries changed"
    assert explain("/usr/bin/gone", "removed", set(), manifest, dpkg) is not None  # no package owns it any more
    assert explain(str(ours), "removed", set(), manifest, dpkg) is None  # siaga's file must be there


def test_integrity_reads_aides_json_report():
    from drc.hostside.integrity_check import differences

    report = {"added": {"/usr/bin/x": "f++++"}, "changed": {"/usr/sbin/nologin": "f = p.."},
              "details": {"/usr/sbin/nologin": {"perm": {"old": "-rwxr-xr-x", "new": "-rwsr-xr-x"}}}}
    assert differences(report) == [("/usr/bin/x", "added", set()), ("/usr/sbin/nologin", "changed", {"perm"})]


def test_restore_test_leaves_out_uploads_clamav_quarantined(tmp_path):
    """A quarantined upload is still in the app's records but rightly missing from later snapshots."""
    from drc.hostside.restore_probe import quarantined_paths

    records = tmp_path / "quarantine.jsonl"
    assert quarantined_paths(str(records)) == set()  # no scan found anything yet
    records.write_text(json.dumps({"path": "/home/file/file_prod/2026/11/26/x-eicar.pdf", "signature": "Eicar"}) + "\n")
    assert quarantined_paths(str(records)) == {"/home/file/file_prod/2026/11/26/x-eicar.pdf"}
