"""What a deploy did, per host and operation, read from pyinfra's API (drc.hosts.run_deploy), on the
real lab hosts: a first deploy reports its changes, a change made behind the deploy's back is the
one change the next run reports, a non-idempotent operation fails the idempotence check, and
`siaga deploy` drives the same runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from drc import cli
from drc.hosts.deploy import no_change_problem
from tests.helpers import REPO, lab_host, run_deploy

HOSTS = ("primary", "drc")


def test_a_first_deploy_on_fresh_hosts_reports_its_changes(fresh_hosts, deployed):
    if not fresh_hosts:
        pytest.skip("the lab's hosts were deployed before this session (a kept lab): no first deploy to read")
    assert set(deployed.hosts) == set(HOSTS) and all(s == "ok" for s in deployed.hosts.values())
    for host in HOSTS:
        changed = [r.op for r in deployed.changes if r.host == host]
        # Remote access alone: packages, admins, sudoers, sshd_config, the firewall ruleset.
        assert len(changed) >= 10, changed
        assert any("sshd_config" in op for op in changed), changed
        assert any("nftables" in op for op in changed), changed
    assert deployed.errors == []
    assert no_change_problem(deployed) is not None  # a first deploy is no no-change run


def test_a_change_behind_the_deploys_back_is_the_one_change_reported(lab, deployed):
    drc = lab_host(lab, "drc")
    assert drc.run("rm -f /etc/issue.net").rc == 0
    preview = run_deploy(lab, "deploys/remote_access.py", "--dry", "--limit", "drc")
    assert preview.ok, preview.output[-4000:]
    assert [(r.host, r.op, r.state) for r in preview.changes] == [("drc", "siaga ssh_hardening | Login banner /etc/issue.net", "will change")]
    assert drc.file("/etc/issue.net").exists is False  # --dry changed nothing
    result = run_deploy(lab, "deploys/remote_access.py", "--limit", "drc")
    assert result.ok, result.output[-4000:]
    assert set(result.hosts) == {"drc"}
    assert [(r.host, r.op, r.state) for r in result.changes] == [("drc", "siaga ssh_hardening | Login banner /etc/issue.net", "changed")]
    assert {r.state for r in result.operations} == {"changed", "no change"}
    assert drc.file("/etc/issue.net").exists


def test_a_non_idempotent_operation_fails_the_idempotence_check(lab, deployed):
    first = run_deploy(lab, "tests/deploys/not_idempotent.py", "--limit", "primary")
    assert first.ok, first.output[-4000:]
    again = run_deploy(lab, "tests/deploys/not_idempotent.py", "--limit", "primary")
    assert again.ok, again.output[-4000:]
    states = {r.op: r.state for r in again.operations}
    assert states == {"Timestamp written on every run (not idempotent on purpose)": "changed",
                      "Same content on every run (idempotent)": "no change"}
    problem = no_change_problem(again)
    assert problem is not None and "primary: Timestamp written on every run" in problem
    assert "Same content" not in problem
    preview = run_deploy(lab, "tests/deploys/not_idempotent.py", "--limit", "primary", "--dry")
    assert preview.changed == ["Timestamp written on every run (not idempotent on purpose)"]
    assert "would change primary: Timestamp" in no_change_problem(preview)
    lab_host(lab, "primary").run("rm -f /var/tmp/siaga-not-idempotent /var/tmp/siaga-idempotent")


def test_siaga_deploy_previews_and_applies_a_part_of_the_site(lab, deployed, capsys):
    assert cli.main(["deploy", str(lab.site_file), "--only", "remote-access", "--dry"]) == 0
    out = capsys.readouterr().out
    assert "operations per host (preview: nothing was changed)" in out
    assert "ok: 0 operation(s) would change on 2 host(s)" in out
    assert cli.main(["deploy", str(lab.site_file), "--only", "remote-access", "--limit", "primary"]) == 0
    out = capsys.readouterr().out
    assert "--> Starting operation" in out  # pyinfra's progress, per operation and host
    assert "ok: 0 operation(s) changed on 1 host(s)" in out


def test_plain_pyinfra_still_runs_the_site_deploy(lab, deployed):
    """`pyinfra inventory/<site>.py deploys/site.py` keeps working beside `siaga deploy`."""
    proc = subprocess.run([str(Path(sys.executable).parent / "pyinfra"), "--dry", "inventory/lab.py", "deploys/site.py"],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "SIAGA_SITE": str(lab.site_file)})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert (proc.stderr + proc.stdout).count("Ready: deploys/site.py") == len(HOSTS)


def test_plain_pyinfra_uploads_although_sudo_has_a_private_tmpdir(lab, deployed):
    """With libpam-tmpdir (os_hardening.private_tmpdir) sudo's $TMPDIR is root's private
    /tmp/user/0, where the admin's SFTP cannot write: siaga's deploy files stage their uploads in
    /tmp (roles/upload_staging.py), under plain `pyinfra` too. Two files put back by a real run:
    one by pyinfra's files.put (the audit rules), one by siaga's config_file (the login banner)."""
    from roles.os_hardening.deploy import AUDIT_RULES

    primary = lab_host(lab, "primary")
    assert primary.check_output("echo $TMPDIR") == "/tmp/user/0"
    assert primary.run(f"rm -f {AUDIT_RULES} /etc/issue.net").rc == 0
    proc = subprocess.run([str(Path(sys.executable).parent / "pyinfra"), "-y", "--limit", "primary", "inventory/lab.py",
                           "deploys/remote_access.py"], cwd=REPO, capture_output=True, text=True, timeout=900, check=False,
                          env={**os.environ, "SIAGA_SITE": str(lab.site_file)})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert primary.file(AUDIT_RULES).exists and primary.file("/etc/issue.net").exists
    assert primary.run("ls /tmp/pyinfra-* 2>/dev/null").stdout == ""  # pyinfra removed what it staged
