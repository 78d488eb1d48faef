"""Secret custody and the backup accounts' keys on the real lab (issue 9 points 1 and 8), SOP BK-8.

- A workstation that lost its secrets directory (a second admin's laptop, a reinstall) deploys the
  site again: every secret comes back from the hosts (0600, the same bytes), no secret file on any
  host changes (sha256 before and after), no value appears in the deploy's log, and backups work.
- A workstation whose copy differs from the hosts' stops the deploy before any operation, with the
  secret's file, where the hosts hold it and the fix; nothing on any host changes.
- The postgres OS user (what a database superuser's `COPY ... TO` writes as) cannot add an SSH key
  that logs in, nor can the repository account by replacing its ~/.ssh; the database backup still
  runs.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import run_deploy

REPO = Path(__file__).resolve().parents[2]
PG_HOME, BAK_HOME = "/var/lib/postgresql", "/var/lib/siagabak"
KEYS_FILES = ("/etc/ssh/siaga-backup-keys/postgres", "/etc/ssh/siaga-backup-keys/siagabak", "/etc/ssh/siaga-sync-keys/appserv")


@pytest.fixture(scope="module")
def site(lab):
    from drc.site import load_site

    return load_site(lab.site_file)


def secret_paths(site) -> list[str]:
    from drc.site.data_tier import data_tier_of
    from roles.secret_custody import secret_specs

    return sorted({loc.path for s in secret_specs(data_tier_of(site)) for loc in s.locations})


def secrets_dir(site) -> Path:
    return Path(site.replication.secrets_dir)


def host_files(hosts, paths) -> dict[str, str | None]:
    """host:path -> sha256 (None: absent), read with sudo."""
    out = {}
    for name, h in hosts.items():
        for path in paths:
            cmd = h.run("sha256sum %s", path)
            out[f"{name}:{path}"] = cmd.stdout.split()[0] if cmd.rc == 0 else None
    return out


def siaga_backup(lab, *args: str) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, "-m", "drc.cli", "backup", *args, str(lab.site_file), "--json"], cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode in (0, 1), (proc.returncode, proc.stderr[-3000:])
    return proc.returncode, json.loads(proc.stdout)


def test_the_hosts_hold_every_secret_and_their_keys_files_are_roots(site, hosts):
    held = host_files(hosts, secret_paths(site))
    for path in secret_paths(site):
        assert held[f"primary:{path}"] or held[f"drc:{path}"], f"no host holds {path}"
    for path in KEYS_FILES:
        f = hosts["drc" if "siagabak" in path or "sync" in path else "primary"].file(path)
        assert (f.user, f.group, f.mode) == ("root", "root", 0o644), path


def test_a_workstation_without_its_secrets_fetches_them_and_no_host_secret_changes(lab, site, hosts, tmp_path):
    paths = secret_paths(site) + list(KEYS_FILES)
    before = host_files(hosts, paths)
    directory = secrets_dir(site)
    originals = {p.name: p.read_bytes() for p in directory.iterdir()}
    assert {"pgbackrest-repo1.passphrase", "restic-repo1.password", "replication.password",
            "backup-repo-to-db_ed25519", "uploads-sync.id_ed25519"} <= set(originals)
    moved = directory.with_name(directory.name + ".moved-by-test")
    directory.rename(moved)
    try:
        result = run_deploy(lab)
        assert result.ok, (result.error, result.output[-6000:])
        assert host_files(hosts, paths) == before, "a secret (or keys) file on a host changed"
        assert not result.changes, [f"{r.host}: {r.op}" for r in result.changes]
        assert "fetched from" in result.output
        # Secrets a rotation retired (siaga secrets rotate) come back with the next escrow, from the hosts.
        retired = originals.pop("retired.json", None)
        if retired is not None:
            pp = tmp_path / "pp"
            pp.write_text("escrow-passphrase-for-the-test\n")
            pp.chmod(0o600)
            proc = subprocess.run([sys.executable, "-m", "drc.cli", "secrets", "escrow", "--out", str(tmp_path / "escrow"),
                                   "--passphrase-file", str(pp), str(lab.site_file)], cwd=REPO, capture_output=True, text=True)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert (directory / "retired.json").read_bytes() == retired
        for name, content in originals.items():
            path = directory / name
            assert path.read_bytes() == content, name
            if not name.endswith(".pub"):
                assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, name
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        # No value in the deploy's log (passwords whole; keys by their body lines).
        for name, content in originals.items():
            text = content.decode()
            pieces = [text.strip()] if "PRIVATE KEY" not in text else text.splitlines()[1:-1]
            if not name.endswith(".pub"):
                assert not any(p and p in result.output for p in pieces), f"{name} appears in the deploy log"
    finally:
        if moved.exists():
            shutil.rmtree(directory, ignore_errors=True)
            moved.rename(directory)
    code, out = siaga_backup(lab, "run")
    assert code == 0 and {r["result"] for r in out["records"]} == {"success"}, out
    assert {r["set"] for r in out["records"]} >= {"db", "uploads", "system"}


def test_a_workstation_secret_that_differs_from_the_hosts_stops_the_deploy_and_changes_nothing(lab, site, hosts):
    paths = secret_paths(site) + list(KEYS_FILES)
    before = host_files(hosts, paths)
    path = secrets_dir(site) / "restic-repo1.password"
    original = path.read_bytes()
    path.write_text("Z" * 64 + "\n")
    try:
        result = run_deploy(lab)
        assert not result.ok
        message = result.error or ""
        assert "secret custody" in message and "restic-repo1.password" in message, message
        assert "differs from the one the hosts hold" in message and "primary:/etc/siaga/backup/restic-repo1.password" in message
        assert "Fix: if this workstation's copy is stale" in message and f"mv {path} {path}.stale" in message
        assert "Z" * 64 not in result.output and original.decode().strip() not in result.output
        assert not result.changes and not any(r.state == "changed" for r in result.operations)
        assert host_files(hosts, paths) == before
        assert path.read_text() == "Z" * 64 + "\n"  # the workstation's file is not touched either
    finally:
        path.write_bytes(original)


def ssh_as(lab, user: str, host: str, key: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ssh", "-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={lab.known_hosts}", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10",
         f"{user}@{lab.address(host)}", "id"], capture_output=True, text=True, timeout=60)


def test_the_backup_accounts_cannot_add_a_key_that_logs_in_and_the_backup_still_runs(lab, hosts, tmp_path):
    from drc.lab.lab import ADMINS

    key = tmp_path / "planted"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "planted@test", "-f", str(key)], check=True)
    pub = key.with_suffix(".pub").read_text().strip()
    primary, drc = hosts["primary"], hosts["drc"]
    # The path itself works: an admin logs in from here with the same options.
    control = ssh_as(lab, ADMINS[0], "primary", lab.key_file)
    assert control.returncode == 0 and "uid=" in control.stdout, control.stderr
    try:
        # postgres writes an unrestricted key into its own ~/.ssh/authorized_keys, as `COPY ... TO` could.
        primary.run_expect([0], "runuser -u postgres -- sh -c %s",
                           f"umask 077; mkdir -p {PG_HOME}/.ssh; printf '%s\\n' '{pub}' >> {PG_HOME}/.ssh/authorized_keys")
        refused = ssh_as(lab, "postgres", "primary", key)
        assert refused.returncode == 255 and "uid=" not in refused.stdout, (refused.stdout, refused.stderr)
        assert "Permission denied" in refused.stderr, refused.stderr
        # The repository account owns its home: it replaces ~/.ssh with one of its own.
        drc.run_expect([0], "runuser -u siagabak -- sh -c %s",
                       f"cd {BAK_HOME} && mv .ssh .ssh.moved-by-test && mkdir -m 700 .ssh && "
                       f"printf '%s\\n' '{pub}' > .ssh/authorized_keys && chmod 600 .ssh/authorized_keys")
        refused = ssh_as(lab, "siagabak", "drc", key)
        assert refused.returncode == 255 and "uid=" not in refused.stdout, (refused.stdout, refused.stderr)
        # sshd reads these accounts' keys only from root's files; postgres' key runs pgBackRest only.
        forced = primary.run("sshd -T -C user=postgres,host=drc,addr=%s", lab.address("drc")).stdout
        assert "authorizedkeysfile /etc/ssh/siaga-backup-keys/%u" in forced
        assert "forcecommand /usr/local/sbin/siaga-backup-remote" in forced
        assert "authorizedkeysfile /etc/ssh/siaga-backup-keys/%u" in drc.run(
            "sshd -T -C user=siagabak,host=primary,addr=%s", lab.address("primary")).stdout
    finally:
        primary.run(f"rm -f {PG_HOME}/.ssh/authorized_keys")
        drc.run(f"if [ -d {BAK_HOME}/.ssh.moved-by-test ]; then rm -rf {BAK_HOME}/.ssh && "
                f"mv {BAK_HOME}/.ssh.moved-by-test {BAK_HOME}/.ssh; fi")
    code, out = siaga_backup(lab, "run", "--set", "db")
    assert code == 0, out
    [rec] = out["records"]
    assert (rec["set"], rec["host"], rec["result"]) == ("db", "drc", "success"), rec
