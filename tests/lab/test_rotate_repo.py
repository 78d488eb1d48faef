"""`siaga secrets rotate repo1` on the real lab (issue 9, SOP BK-8, BK-9): a new pgBackRest repository
cipher means a new repository.

On a deployed lab with a database backup holding a marker row: `--dry-run` changes nothing; the
rotation makes the next generation's repository, switches the hosts to it and records itself; then
`siaga backup run --set db` backs up into the new repository, `siaga backup restore-test` restores
from it, the OLD repository's backup still restores (with its retired passphrase, through the
config the rotation left on the repository host) and shows the marker, an escrow written after lists
the old passphrase and path, the retired repository is kept by `--remove-expired` (its backups have
not expired), and a second site deploy changes nothing. A rotation that fails before the switch
changes nothing; once the repository in use holds backup.retention_full full backups and verifies,
`--remove-expired` removes the retired repositories from disk, never their passphrases.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from pathlib import Path


from drc.hostside import LIB
from tests.helpers import assert_no_change_rerun

REPO = Path(__file__).resolve().parents[2]
ROOT = "/srv/siaga-backup"
GENERATION_FILE = "/var/lib/siaga/backup/pgbackrest-repo1-generation"
PSQL = "runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1 -d epns_prod -c {}"


def cli(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drc.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          check=False)


def cli_json(*args: str, ok: bool = True, timeout: float = 1800) -> dict:
    p = cli(*args, "--json", timeout=timeout)
    assert (p.returncode == 0) == ok, (p.returncode, p.stdout[-3000:], p.stderr[-3000:])
    return json.loads(p.stdout)


def generation(host) -> int:
    f = host.file(GENERATION_FILE)
    return int(f.content_string.strip()) if f.exists else 1


def repo_path(g: int) -> str:
    return f"{ROOT}/pgbackrest" if g == 1 else f"{ROOT}/pgbackrest-gen{g}"


def conf_value(host, path: str, key: str) -> str:
    return next(ln.split("=", 1)[1] for ln in host.file(path).content_string.splitlines() if ln.startswith(key + "="))


def test_rotating_the_repository_cipher_makes_a_new_repository_and_keeps_the_old_one_readable(lab, hosts, tmp_path):
    from drc.secrets.escrow import escrow_document, read_retired
    from drc.secrets.rotate_repo import generation_in_use
    from drc.site import load_site

    site = load_site(lab.site_file)
    p, d = hosts["primary"], hosts["drc"]
    sdir = lab.site_file.parent / "secrets"
    old_pass = (sdir / "pgbackrest-repo1.passphrase").read_text().strip()
    g = generation(d)
    assert generation(p) == g
    # A row only the backup in the current (soon old) repository holds, and that backup.
    token_old = f"before-rotation-{secrets.token_hex(4)}"
    p.check_output(PSQL.format("'CREATE TABLE IF NOT EXISTS siaga_rotate_marker (token text)'"))
    p.check_output(PSQL.format(f"\"INSERT INTO siaga_rotate_marker VALUES ('{token_old}')\""))
    run = cli_json("backup", "run", "--set", "db", str(lab.site_file), timeout=900)
    old_label = next(r for r in run["records"] if r["set"] == "db")["details"]["label"]

    # --dry-run: the plan, nothing changed.
    confs = {h: host.file(path).sha256sum for h, host, path in (("drc", d, "/etc/siaga/pgbackrest-repo/pgbackrest.conf"),
                                                                  ("primary", p, "/etc/pgbackrest/pgbackrest.conf"))}
    plan = cli_json("secrets", "rotate", "repo1", str(lab.site_file), "--dry-run")
    assert plan["dry_run"] and any(repo_path(g + 1) in s for s in plan["plan"]), plan
    assert {"drc": d.file("/etc/siaga/pgbackrest-repo/pgbackrest.conf").sha256sum,
            "primary": p.file("/etc/pgbackrest/pgbackrest.conf").sha256sum} == confs
    assert not d.file(repo_path(g + 1)).exists and generation(d) == g
    assert (sdir / "pgbackrest-repo1.passphrase").read_text().strip() == old_pass

    t0 = time.monotonic()
    res = cli_json("secrets", "rotate", "repo1", str(lab.site_file), "--yes", timeout=1800)
    took = time.monotonic() - t0
    print(f"rotate repo1: generation {g} -> {g + 1} in {took:.1f} s")
    assert res["ok"] and res["generation"] == g + 1 and res["path"] == repo_path(g + 1), res
    new_pass = (sdir / "pgbackrest-repo1.passphrase").read_text().strip()
    assert new_pass != old_pass and oct((sdir / "pgbackrest-repo1.passphrase").stat().st_mode & 0o777) == "0o600"
    assert not (sdir / "pgbackrest-repo1.passphrase.next").exists()
    rec = [json.loads(ln) for ln in (Path(site.records_dir) / "secret-rotations.jsonl").read_text().splitlines()][-1]
    assert rec["name"] == "repo1" and rec["result"] == "success" and rec["id"] == res["record"]["id"]
    # No secret in the record, the output, or a file the rotation left under /run.
    out = json.dumps(res)
    assert old_pass not in out and new_pass not in out
    assert not d.run("ls -d /run/siaga-secrets-* 2>/dev/null").stdout.strip()

    # The hosts: every one at the new generation; the configs in use name the new repository.
    assert generation(d) == generation(p) == g + 1
    assert conf_value(d, "/etc/siaga/pgbackrest-repo/pgbackrest.conf", "repo1-path") == repo_path(g + 1)
    assert conf_value(p, "/etc/pgbackrest/pgbackrest.conf", "repo1-path") == repo_path(g + 1)
    assert "repo2" not in p.file("/etc/pgbackrest/pgbackrest.conf").content_string
    assert not d.file("/etc/siaga/pgbackrest-next").exists and not d.file("/etc/siaga/pgbackrest-next-remote").exists
    # The old repository: on disk, its config kept (0640 root:siagabak, its own passphrase).
    retired_conf = f"/etc/siaga/pgbackrest-retired/gen{g}/pgbackrest.conf"
    f = d.file(retired_conf)
    assert f.mode == 0o640 and f.user == "root" and f.group == "siagabak"
    assert conf_value(d, retired_conf, "repo1-path") == repo_path(g) and conf_value(d, retired_conf, "repo1-cipher-pass") == old_pass
    assert d.file(f"{repo_path(g)}/backup/spse/{old_label}").is_directory
    # The retired secrets (workstation and hosts) and an escrow written now: passphrase AND repository.
    entry = [e for e in read_retired(site) if e["key"] == "repo1"][-1]
    assert entry["value"] == old_pass and entry["repository_path"] == repo_path(g) and entry["repository_host"] == "drc"
    assert entry["generation"] == g
    on_host = json.loads(p.file("/etc/siaga/backup/retired-secrets.json").content_string)
    assert any(e["key"] == "repo1" and e["value"] == old_pass and e["repository_path"] == repo_path(g) for e in on_host)
    doc = escrow_document(site, generation=generation_in_use(site))
    assert doc["pgbackrest"]["cipher_pass"] == new_pass and doc["pgbackrest"]["repository_path"] == repo_path(g + 1)
    assert any(r["value"] == old_pass and r["repository_path"] == repo_path(g) for r in doc["pgbackrest"]["retired"])

    # siaga backup run --set db: into the new repository.
    token_new = f"after-rotation-{secrets.token_hex(4)}"
    p.check_output(PSQL.format(f"\"INSERT INTO siaga_rotate_marker VALUES ('{token_new}')\""))
    run = cli_json("backup", "run", "--set", "db", str(lab.site_file), timeout=900)
    db = next(r for r in run["records"] if r["set"] == "db")
    assert db["result"] == "success" and db["details"]["location"] == f"drc:{repo_path(g + 1)}", db
    assert d.file(f"{repo_path(g + 1)}/backup/spse/{db['details']['label']}").exists

    # restore-test: from the new repository (the config in use).
    t0 = time.monotonic()
    rt = cli_json("backup", "restore-test", "--slack", "0", "--skip-files", str(lab.site_file), timeout=1800)
    print(f"restore-test from the new repository: {time.monotonic() - t0:.1f} s, backup {rt['db']['label']}")
    assert rt["result"] == "success", rt.get("problems")
    assert rt["db"]["label"] in [x["label"] for x in json.loads(d.check_output(
        "runuser -u siagabak -- pgbackrest --config-path=/etc/siaga/pgbackrest-repo --stanza=spse --output=json info"))[0]["backup"]]

    # The OLD repository's backup restores, with the retired passphrase, through the kept config
    # (restore-probe, what restore-test runs on the repository host), and holds the marker row.
    from drc.hosts import remote

    probe = {"mode": "db", "config_path": f"/etc/siaga/pgbackrest-retired/gen{g}", "stanza": "spse", "user": "siagabak",
             "label": old_label, "port": 54329, "production_port": site.firewall.postgresql_port,
             "pg_bin": f"/usr/lib/postgresql/{site.postgresql.version}/bin", "scratch_root": "/var/tmp/siaga-restore-test",
             "production_paths": ["/var/lib/postgresql", "/etc/postgresql", ROOT], "timeout_s": 900, "start_timeout_s": 300,
             "queries": [{"key": "marker", "db": "epns_prod", "sql": "SELECT token FROM siaga_rotate_marker ORDER BY 1"}]}
    t0 = time.monotonic()
    r = remote.run_program(site, "drc", "restore_probe", probe, timeout=1200)
    old = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"restore from the old repository {repo_path(g)}: {time.monotonic() - t0:.1f} s")
    assert old["verify"]["ok"] and old["restore"]["ok"] and old["start"]["ok"], old
    tokens = [row[0] for row in old["queries"]["marker"]["rows"]]
    assert token_old in tokens and token_new not in tokens
    assert old["cleanup"]["removed"]
    assert d.file(f"{LIB}/secrets-host").exists

    # Not removed yet: its backups have not expired (backup.retention_full fulls in the new one).
    kept = cli_json("secrets", "rotate", "repo1", str(lab.site_file), "--remove-expired", "--dry-run", timeout=900)
    assert kept["removed"] == [] and any("have not expired" in s for s in kept["steps"]), kept
    assert d.file(repo_path(g)).is_directory

    # The site deploy: converged already (the generation comes from the hosts, not the site file).
    t0 = time.monotonic()
    assert_no_change_rerun(lab)
    print(f"second deploy: no change, {time.monotonic() - t0:.1f} s")
    assert (sdir / "pgbackrest-repo1.passphrase").read_text().strip() == new_pass
    p.check_output(PSQL.format("'DROP TABLE siaga_rotate_marker'"))


def test_a_rotation_that_fails_before_the_switch_changes_nothing(lab, hosts):
    """The new repository's directory is taken (left by someone): prepare refuses, everything is put
    back, the repository in use and the passphrase stay, the failure is recorded."""
    p, d = hosts["primary"], hosts["drc"]
    sdir = lab.site_file.parent / "secrets"
    before = (sdir / "pgbackrest-repo1.passphrase").read_text()
    g = generation(d)
    confs = (d.file("/etc/siaga/pgbackrest-repo/pgbackrest.conf").sha256sum, p.file("/etc/pgbackrest/pgbackrest.conf").sha256sum)
    blocker = repo_path(g + 1)
    d.check_output(f"install -d -o siagabak -g siagabak {blocker} && touch {blocker}/left-by-someone")
    try:
        res = cli_json("secrets", "rotate", "repo1", str(lab.site_file), "--yes", ok=False, timeout=900)
        assert "exists and is not empty" in res["error"] and "nothing changed" in res["error"], res
        assert res["record"]["result"] == "failure"
        assert (sdir / "pgbackrest-repo1.passphrase").read_text() == before
        assert not (sdir / "pgbackrest-repo1.passphrase.next").exists()
        assert (d.file("/etc/siaga/pgbackrest-repo/pgbackrest.conf").sha256sum,
                p.file("/etc/pgbackrest/pgbackrest.conf").sha256sum) == confs
        assert generation(d) == generation(p) == g
        assert not d.file("/etc/siaga/pgbackrest-next").exists
        assert d.file(f"{blocker}/left-by-someone").exists  # not its to remove
    finally:
        d.run(f"rm -rf {blocker}")
    run = cli_json("backup", "run", "--set", "db", str(lab.site_file), timeout=900)
    assert next(r for r in run["records"] if r["set"] == "db")["details"]["location"] == f"drc:{repo_path(g)}"


def test_a_retired_repository_is_removed_once_its_backups_expired_its_passphrase_kept(lab, hosts):
    """--remove-expired: kept while the repository in use holds fewer than backup.retention_full full
    backups; removed (directory and config) once it holds them and verifies; the passphrase stays in
    the retired secrets (offline copies made before still need it), marked removed; recorded."""
    from drc.secrets.escrow import read_retired
    from drc.site import load_site

    site = load_site(lab.site_file)
    p, d = hosts["primary"], hosts["drc"]

    def on_disk() -> list[dict]:
        return [e for e in read_retired(site) if e["key"] == "repo1" and e.get("repository_path") and not e.get("repository_removed_at")]

    if not on_disk():
        cli_json("secrets", "rotate", "repo1", str(lab.site_file), "--yes", timeout=1800)
    retired = on_disk()
    g = generation(d)
    info = "runuser -u siagabak -- pgbackrest --config-path=/etc/siaga/pgbackrest-repo --stanza=spse --output=json info"

    def fulls() -> list[dict]:
        return [b for b in json.loads(d.check_output(info))[0]["backup"] if b["type"] == "full"]

    keep = site.backup.retention_full
    if len(fulls()) < keep:
        res = cli_json("secrets", "rotate", "repo1", str(lab.site_file), "--remove-expired", "--yes", timeout=900)
        assert res["removed"] == [] and all(d.file(e["repository_path"]).is_directory for e in retired), res
    deadline = time.monotonic() + 900
    while len(fulls()) < keep:  # the weekly fulls of backup.retention_full weeks, taken now
        assert time.monotonic() < deadline, "full backups not taken in time"
        d.check_output("/usr/local/sbin/siaga-backup run db --type full --trigger manual --why 'test: expire a retired repository'")
    t0 = time.monotonic()
    res = cli_json("secrets", "rotate", "repo1", str(lab.site_file), "--remove-expired", "--yes", timeout=1800)
    print(f"remove-expired: {len(res['removed'])} retired repositories removed in {time.monotonic() - t0:.1f} s")
    assert sorted(res["removed"]) == sorted(f"drc:{e['repository_path']} (generation {e['generation']})" for e in retired), res
    for e in retired:
        assert not d.file(e["repository_path"]).exists and not d.file(e["config_path"]).exists
    after = {e["generation"]: e for e in read_retired(site) if e["key"] == "repo1" and e.get("generation")}
    for e in retired:
        assert after[e["generation"]]["value"] == e["value"] and after[e["generation"]]["repository_removed_at"]
    on_host = json.loads(p.file("/etc/siaga/backup/retired-secrets.json").content_string)
    assert all(any(h.get("value") == e["value"] and h.get("repository_removed_at") for h in on_host) for e in retired)
    rec = [json.loads(ln) for ln in (Path(site.records_dir) / "secret-rotations.jsonl").read_text().splitlines()][-1]
    assert rec["action"] == "remove-expired" and rec["result"] == "success" and len(rec["removed"]) == len(retired)
    # The repository in use is untouched and still takes backups.
    assert generation(d) == g and d.file(repo_path(g)).is_directory and len(fulls()) >= keep
    run = cli_json("backup", "run", "--set", "db", str(lab.site_file), timeout=900)
    assert next(r for r in run["records"] if r["set"] == "db")["result"] == "success"
