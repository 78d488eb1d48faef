"""`siaga secrets rotate <ssh key>` on the real lab (issue 9), SOP BK-8: each of siaga's four SSH keys
rotated on the deployed lab, then

- its path works: the database backup (pgBackRest both ways: archive-push with pgbackrest_key, the
  backup from the repository host with repo_key), the restic set (restic_key), an upload reaching
  the DRC through lsyncd (uploads_sync);
- the old private key, tried with `ssh -i` from the host that used it, is refused, and the new one
  is accepted (the same command: the refusal is the key's, not the network's);
- the hosts hold the workstation's new key, the keys files hold only it, the rotation is recorded;
- a failed proof (a real fault: the restic password file moved away) puts everything back;
- a second site deploy changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import assert_no_change_rerun
from tests.lab.test_data_tier import poll, sha256_on, upload

REPO = Path(__file__).resolve().parents[2]
KEYS = ("pgbackrest_key", "restic_key", "repo_key", "uploads_sync")


@pytest.fixture(scope="module")
def site(lab, deployed):
    from drc.site import load_site

    return load_site(lab.site_file)


def cli(lab, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drc.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def rotate(lab, name: str, *extra: str) -> subprocess.CompletedProcess:
    return cli(lab, "secrets", "rotate", name, str(lab.site_file), *extra)


def key_path(site, name: str):
    from drc.secrets.rotate_keys import key_path as kp

    return kp(site, name)


def blob(public: str) -> str:
    return public.split()[1]


def ssh_from(lab, host: str, private: str, user: str, address: str, known_hosts: str, port: int | None) -> tuple[int, str]:
    """ssh -i <private> from a lab host as root (the key on stdin into a 0600 file under /run, removed
    after): the exit code and stderr."""
    script = (f"set -u; d=$(mktemp -d /run/siaga-test-key.XXXXXX); trap 'rm -rf \"$d\"' EXIT; umask 077; cat > \"$d/k\"; "
              f"ssh -F /dev/null -i \"$d/k\" -o IdentitiesOnly=yes -o BatchMode=yes -o PreferredAuthentications=publickey "
              f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={known_hosts} -o GlobalKnownHostsFile=/dev/null "
              f"-o ConnectTimeout=10 -n {f'-p {port} ' if port else ''}{user}@{address} true")
    from drc.lab.lab import ADMINS

    p = subprocess.run(["ssh", "-F", "/dev/null", "-i", str(lab.key_file), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                        "-o", f"UserKnownHostsFile={lab.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                        f"{ADMINS[0]}@{lab.address(host)}", "sudo -n sh -c " + shlex.quote(script)],
                       input=private, capture_output=True, text=True, timeout=90)
    return p.returncode, p.stderr


def backup(lab, *args: str) -> dict:
    p = cli(lab, "backup", "run", *args, str(lab.site_file), "--json")
    assert p.returncode in (0, 1), p.stderr[-3000:]
    return json.loads(p.stdout)


ROTATED: dict[str, dict] = {}


def test_the_dry_run_shows_the_plan_and_changes_nothing_and_no_terminal_means_no_rotation(lab, site):
    from drc.site.data_tier import data_tier_of
    from roles.secret_custody import spec_for

    spec = spec_for(data_tier_of(site), "uploads_sync")
    before = spec.path.read_bytes()
    p = rotate(lab, "uploads_sync", "--dry-run")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "beside the old one" in p.stdout and "rsync --dry-run" in p.stdout and "put back" in p.stdout
    p = rotate(lab, "uploads_sync", "--json")  # no terminal, no --yes
    assert p.returncode == 1 and "not confirmed" in p.stdout
    assert spec.path.read_bytes() == before and not list(spec.directory.glob("*.rotating*"))


@pytest.mark.parametrize("name", KEYS)
def test_a_key_is_rotated_and_the_old_one_is_refused_from_the_host_that_used_it(lab, site, hosts, name):
    from drc.site.data_tier import data_tier_of
    from roles.secret_custody import spec_for

    spec = spec_for(data_tier_of(site), name)
    pub = spec.path.with_name(spec.name + ".pub")
    old_private, old_public = spec.path.read_text(), pub.read_text().strip()
    p = rotate(lab, name, "--yes", "--json")
    res = json.loads(p.stdout)
    assert p.returncode == 0 and res["ok"], p.stdout[-3000:] + p.stderr[-2000:]
    assert res["old"] != res["new"] and res["new"].startswith("SHA256:") and "No new escrow needed" in res["reminder"]
    assert old_private.splitlines()[1] not in p.stdout + p.stderr  # no key in the output
    new_private, new_public = spec.path.read_text(), pub.read_text().strip()
    assert new_private != old_private and stat.S_IMODE(spec.path.stat().st_mode) == 0o600
    assert not list(spec.directory.glob("*.rotating*"))
    kp = key_path(site, name)
    for host, path in kp.using:  # the hosts hold the workstation's new key, mode and owner kept
        f = hosts[host].file(path)
        assert f.mode == 0o600 and f.user == ("postgres" if name == "pgbackrest_key" else "siagabak" if name == "repo_key" else "root")
        assert sha256_on(hosts[host], path) == hashlib.sha256(new_private.encode()).hexdigest()
    for host, keys_file in kp.authorizing:  # only the new public key, with the role's options
        text = hosts[host].file(keys_file).content_string
        assert blob(new_public) in text and blob(old_public) not in text
        assert hosts[host].file(keys_file).user == "root"
    for lg in kp.logins:
        rc, err = ssh_from(lab, lg.host, old_private, lg.user, lg.address, lg.known_hosts, lg.port)
        assert rc == 255 and "Permission denied" in err, (name, rc, err)
        rc, err = ssh_from(lab, lg.host, new_private, lg.user, lg.address, lg.known_hosts, lg.port)
        assert rc != 255 and "Permission denied" not in err, (name, rc, err)  # its forced command ran
    recs = [json.loads(x) for x in (Path(site.records_dir) / "secret-rotations.jsonl").read_text().splitlines()]
    assert (recs[-1]["name"], recs[-1]["result"], recs[-1]["new"]) == (name, "success", res["new"])
    ROTATED[name] = res


def test_after_the_rotations_the_backups_and_the_uploads_sync_work(lab, site, hosts):
    assert set(ROTATED) == set(KEYS), "the rotations above did not all run"
    out = backup(lab, "--set", "db")  # repo_key (backup from the DRC), pgbackrest_key (WAL archived from primary)
    assert [(r["set"], r["result"]) for r in out["records"]] == [("db", "success")], out
    out = backup(lab, "--set", "uploads")  # restic_key (SFTP)
    assert [(r["set"], r["result"]) for r in out["records"]] == [("uploads", "success")], out
    check = hosts["primary"].run("runuser -u postgres -- pgbackrest --stanza=%s check", site.backup.stanza)
    assert check.rc == 0, check.stderr  # archive-push to the repository with the new pgbackrest_key
    content = os.urandom(32 * 1024)
    doc = upload(lab, content, "after-key-rotation.pdf")
    _, lag = poll("the upload on the DRC after the rotation", lambda: sha256_on(hosts["drc"], doc["path"]) == doc["sha256"], 30)
    print(f"upload reached the DRC in {lag:.2f} s with the rotated uploads_sync key")


def test_a_failed_proof_puts_everything_back_and_the_old_key_keeps_working(lab, site, hosts):
    from drc.site.data_tier import data_tier_of
    from roles.secret_custody import spec_for

    spec = spec_for(data_tier_of(site), "restic_key")
    kp = key_path(site, "restic_key")
    [(use_host, private_path)] = kp.using
    [(auth_host, keys_file)] = kp.authorizing
    before = (spec.path.read_bytes(), sha256_on(hosts[use_host], private_path), sha256_on(hosts[auth_host], keys_file))
    password = "/etc/siaga/backup/restic-repo1.password"
    hosts[use_host].run_expect([0], "mv %s %s.moved-by-test", password, password)  # a real fault on the host
    try:
        p = rotate(lab, "restic_key", "--yes", "--json")
    finally:
        hosts[use_host].run_expect([0], "mv %s.moved-by-test %s", password, password)
    res = json.loads(p.stdout)
    assert p.returncode == 1 and not res["ok"], p.stdout[-3000:]
    assert "the new key does not work" in res["error"] and "Everything was put back" in res["error"], res["error"]
    assert (spec.path.read_bytes(), sha256_on(hosts[use_host], private_path), sha256_on(hosts[auth_host], keys_file)) == before
    assert not list(spec.directory.glob("*.rotating*"))
    recs = [json.loads(x) for x in (Path(site.records_dir) / "secret-rotations.jsonl").read_text().splitlines()]
    assert (recs[-1]["name"], recs[-1]["result"]) == ("restic_key", "failure")
    out = backup(lab, "--set", "uploads")
    assert [(r["set"], r["result"]) for r in out["records"]] == [("uploads", "success")], out


def test_a_second_deploy_changes_nothing(lab):
    assert_no_change_rerun(lab)
