"""The escrow and rotation on the real lab (issue 9, secret custody), SOP BK-8, BK-9, EM-3.7.

- With the repository on the DRC moved aside, the database and the uploads come back from the
  offline medium with only the escrow, from a clean workstation directory (no secrets directory, no
  records): restored tables counted as production's, restored uploads byte-equal to production's
  files, no secret in the output, nothing left in the clean directory or under the host's /run.
  A wrong passphrase and a non-empty target are refused before a host is touched.
- `siaga secrets rotate restic` and `rotate replication`: backups run after, the standby streams
  with the new password, a deploy afterwards changes no secret file (the workstation and the hosts
  agree), and a copy made before the rotation still opens with the retired password the new
  escrow lists.
(Deleting the workstation's secrets directory and deploying again: tests/lab/test_secret_custody.py.)
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import run_deploy

REPO = Path(__file__).resolve().parents[2]
REPOSITORY = "/srv/siaga-backup"
ASIDE = "/srv/siaga-backup.moved-aside-by-test"
UPLOADS = "/home/file/file_prod/siaga-escrow-test"
PSQL = "runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d epns_prod -c {}"


def cli(*args: str, cwd=REPO, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drc.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def backup(lab, *args: str) -> dict:
    p = cli("backup", *args, str(lab.site_file), "--json")
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    return json.loads(p.stdout)




@pytest.fixture(scope="module")
def offline_copy(lab, hosts):
    """Uploads and a marker row on the primary, a backup, a verified copy on medium OFFLINE-A."""
    p = hosts["primary"]
    token = secrets.token_hex(8)
    p.check_output(f"install -d -o appserv -g appserv {UPLOADS}")
    for i in range(20):
        p.check_output(f"head -c {1000 + 137 * i} /dev/urandom > {UPLOADS}/dok-{token}-{i}.pdf")
    p.check_output(PSQL.format(shlex.quote("CREATE TABLE IF NOT EXISTS siaga_escrow_marker (token text)")))
    p.check_output(PSQL.format(shlex.quote(f"INSERT INTO siaga_escrow_marker VALUES ('{token}')")))
    out = backup(lab, "run")
    assert {r["result"] for r in out["records"]} == {"success"}, out
    lab.media_attach("drc", label="OFFLINE-A")
    backup(lab, "offline", "--init-medium", "OFFLINE-A")
    out = backup(lab, "offline")
    assert out["ok"] and out["copy"]["verified"], out
    return {"token": token, "copy": out["copy"]["name"]}


def escrow(lab, out: Path, passphrase: Path, *extra: str) -> Path:
    p = cli("secrets", "escrow", "--out", str(out), "--passphrase-file", str(passphrase), *extra, str(lab.site_file), "--json")
    assert p.returncode == 0, (p.stdout, p.stderr)
    res = json.loads(p.stdout)
    return Path(res["encrypted"])


def clean_workstation(lab, tmp_path: Path) -> tuple[Path, Path]:
    """A workstation directory with only a site file whose secrets and records point at empty dirs."""
    ws = tmp_path / "clean-ws"
    ws.mkdir()
    site = ws / "site.yaml"
    text = lab.site_file.read_text()
    lines = []
    for ln in text.splitlines():
        if ln.strip().startswith("secrets_dir:"):
            ln = ln.split("secrets_dir:")[0] + f"secrets_dir: {ws}/secrets"
        elif ln.startswith("records_dir:"):
            ln = f"records_dir: {ws}/records"
        lines.append(ln)
    site.write_text("\n".join(lines) + "\n")
    assert f"{ws}/secrets" in site.read_text() and f"{ws}/records" in site.read_text()
    return ws, site


def restore_offline(ws: Path, site: Path, escrow_file: Path, passphrase: Path, *extra: str) -> subprocess.CompletedProcess:
    return cli("secrets", "restore-offline", "--escrow", str(escrow_file), "--host", "drc", *extra, str(site), "--json",
               cwd=ws, env={"SIAGA_ESCROW_PASSPHRASE_FILE": str(passphrase)}, timeout=1800)


def test_an_escrow_of_a_stale_workstation_copy_is_refused(lab, hosts, passphrase, tmp_path):
    f = lab.site_file.parent / "secrets" / "restic-repo1.password"
    real = f.read_text()
    f.write_text("Stale" * 12 + "\n")
    try:
        p = cli("secrets", "escrow", "--out", str(tmp_path / "e"), "--passphrase-file", str(passphrase), str(lab.site_file))
    finally:
        f.write_text(real)
    assert p.returncode == 2 and "holds another restic repository password" in " ".join(p.stdout.split()), p.stdout
    assert not (tmp_path / "e").exists() or not list((tmp_path / "e").iterdir())


def test_restore_from_the_offline_medium_with_only_the_escrow(lab, hosts, offline_copy, passphrase, tmp_path):
    d = hosts["drc"]
    escrow_file = escrow(lab, tmp_path / "escrow", passphrase, "--copy-to-medium")
    assert d.file(f"/media/siaga-offline/siaga-offline/escrow/{escrow_file.name}").mode == 0o600
    secret_values = [Path(lab.site_file.parent / "secrets" / n).read_text().strip()
                     for n in ("pgbackrest-repo1.passphrase", "restic-repo1.password")]
    # The recovery host needs restic to read the file copies (the sheet says so): roles/backup
    # installs it on the repository host too.
    assert d.package("restic").is_installed
    ws, site = clean_workstation(lab, tmp_path)
    target = "/var/tmp/siaga-escrow-test"
    d.run(f"rm -rf {target}")
    d.check_output(f"mv {REPOSITORY} {ASIDE}")
    try:
        wrong = tmp_path / "wrong"
        wrong.write_text("not-the-passphrase-at-all\n")
        wrong.chmod(0o600)
        p = restore_offline(ws, site, escrow_file, wrong, "--target", target)
        assert p.returncode == 2 and "wrong passphrase" in p.stdout, p.stdout
        d.check_output(f"install -d {target} && touch {target}/x")
        p = restore_offline(ws, site, escrow_file, passphrase, "--target", target)
        assert p.returncode == 1 and "not empty" in json.loads(p.stdout)["error"], p.stdout
        d.check_output(f"rm -rf {target}")

        p = restore_offline(ws, site, escrow_file, passphrase, "--target", target, "--sets", "uploads", "--seed", "9")
        res = json.loads(p.stdout)
        assert p.returncode == 0 and res["ok"], p.stdout[-4000:]
        assert res["copy"]["name"] == offline_copy["copy"] and res["medium"]["label"] == "OFFLINE-A"
        assert not any(v in p.stdout + p.stderr for v in secret_values), "a secret in the output"
        db = res["db"]
        assert db["ok"] and db["path"] == f"{target}/pg"
        assert db["tables"]["epns_prod"]["public.siaga_escrow_marker"] >= 1
        proof = res["proof"]["tables"]["epns_prod"]
        assert not proof["missing"] and "public.siaga_escrow_marker" in proof["equal"], proof
        up = res["files"]["sets"]["uploads"]
        assert up["ok"] and up["files"] >= 20 and up["path"] == f"{target}/files/uploads"
        fp = res["proof"]["files"]["uploads"]
        assert fp["ok"] and fp["compared"] >= 20 and not fp["differ"], fp
        # The restored files are there, the production ones byte-equal (sha256 read on each host).
        name = f"dok-{offline_copy['token']}-7.pdf"
        assert d.check_output(f"sha256sum {target}/files/uploads{UPLOADS}/{name}").split()[0] == \
            hosts["primary"].check_output(f"sha256sum {UPLOADS}/{name}").split()[0]
        # The restored cluster holds the marker (started once more by hand, as the summary says).
        out = d.check_output(
            f"runuser -u {db['run_as']} -- {db['pg_ctl']} -D {target}/pg -o '-c port=54398 -c listen_addresses= "
            f"-c unix_socket_directories=/tmp' -w start >/dev/null && runuser -u {db['run_as']} -- psql -XAtq -h /tmp -p 54398 "
            f"-U postgres -d epns_prod -c 'select token from siaga_escrow_marker'; "
            f"runuser -u {db['run_as']} -- {db['pg_ctl']} -D {target}/pg -m fast -w stop >/dev/null")
        assert offline_copy["token"] in out.split()
        # Nothing secret left: not in the clean workstation directory, not under the host's /run.
        assert sorted(x.name for x in ws.iterdir()) == ["site.yaml"]
        assert not d.run("ls -d /run/siaga-secrets-* 2>/dev/null").stdout.strip()
        # The live cluster was not touched.
        assert hosts["drc"].check_output("runuser -u postgres -- psql -XAtc 'select pg_is_in_recovery()'") == "t"
    finally:
        d.run(f"rm -rf {target}")
        d.run(f"test -d {ASIDE} && rm -rf {REPOSITORY} && mv {ASIDE} {REPOSITORY}")
    in_use = next(ln.split("=", 1)[1] for ln in d.file("/etc/siaga/pgbackrest-repo/pgbackrest.conf").content_string.splitlines()
                  if ln.startswith("repo1-path="))  # <repository>/pgbackrest, or pgbackrest-genN after a rotation of repo1
    assert in_use.startswith(f"{REPOSITORY}/pgbackrest") and d.file(in_use).is_directory


def streaming(primary) -> list[str]:
    return primary.check_output("runuser -u postgres -- psql -XAtc \"select state from pg_stat_replication\"").split()


def test_rotating_restic_and_replication_keeps_backups_and_streaming(lab, hosts, offline_copy, passphrase, tmp_path):
    from drc.site import load_site
    from drc.site.data_tier import data_tier_of
    from roles.secret_custody import secret_specs

    site = load_site(lab.site_file)
    paths = sorted({loc.path for s in secret_specs(data_tier_of(site)) for loc in s.locations})
    sdir = Path(site.replication.secrets_dir)
    before = {n: (sdir / n).read_text() for n in ("restic-repo1.password", "replication.password")}
    p = cli("secrets", "rotate", "restic", str(lab.site_file), "--dry-run")
    assert p.returncode == 0 and "restic key add" in p.stdout
    assert (sdir / "restic-repo1.password").read_text() == before["restic-repo1.password"]
    p = cli("secrets", "rotate", "restic", str(lab.site_file), "--json")  # no terminal, no --yes: refused
    assert p.returncode == 1 and "not confirmed" in p.stdout
    for name in ("restic", "replication"):
        p = cli("secrets", "rotate", name, str(lab.site_file), "--yes", "--json")
        res = json.loads(p.stdout)
        assert p.returncode == 0 and res["ok"], p.stdout[-3000:]
        assert "new escrow" in res["reminder"]
    after = {n: (sdir / n).read_text() for n in before}
    assert all(after[n] != before[n] for n in before)
    recs = [json.loads(x) for x in (Path(site.records_dir) / "secret-rotations.jsonl").read_text().splitlines()]
    assert [r["name"] for r in recs if r["result"] == "success"][-2:] == ["restic", "replication"]
    assert streaming(hosts["primary"]) == ["streaming"]
    out = backup(lab, "run")
    assert {r["result"] for r in out["records"]} == {"success"}, out
    # The hosts and the workstation agree: a deploy keeps every secret file as the rotation left it.
    sums = {h: hosts[h].run("sha256sum " + " ".join(paths)).stdout for h in hosts}
    result = run_deploy(lab, "deploys/data_tier.py")
    assert result.ok, result.output[-4000:]
    assert {h: hosts[h].run("sha256sum " + " ".join(paths)).stdout for h in hosts} == sums
    assert streaming(hosts["primary"]) == ["streaming"]
    # The copy made before the rotation opens with the retired password the new escrow lists.
    new_escrow = escrow(lab, tmp_path / "escrow2", passphrase)
    ws, site_file = clean_workstation(lab, tmp_path)
    target = "/var/tmp/siaga-escrow-test-rotated"
    try:
        p = restore_offline(ws, site_file, new_escrow, passphrase, "--target", target, "--copy", offline_copy["copy"],
                            "--sets", "uploads")
        res = json.loads(p.stdout)
        assert p.returncode == 0 and res["ok"], p.stdout[-3000:]
        retired = [r for r in json.loads((sdir / "retired.json").read_text()) if r["key"] == "restic"]  # not repo1's
        assert retired[-1]["value"] == before["restic-repo1.password"].strip()
        assert res["files"]["password"] == f"retired #{len(retired)}"  # the one this rotation retired
    finally:
        hosts["drc"].run(f"rm -rf {target}")
