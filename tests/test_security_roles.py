"""The security roles' files as rendered from the site file (no host): ModSecurity's engine and CRS
settings, the site's exclusions, and the errors for settings that cannot work. SOP IN-2."""

from __future__ import annotations

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
