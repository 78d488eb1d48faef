"""Losing the workstation with the main site (issue 11 point 4) on the real lab, SOP BK-8, EM-3.

- A command that writes records (`siaga backup run --set db`) leaves them in the DRC's copy of the
  workstation (root, 0700, no secret in it) by itself, and `siaga workstation mirror --check` says
  the copy is current.
- With an escrow and a clean workstation directory (nothing but what the restore writes, as
  tests/lab/test_secrets_escrow.py's clean workstation: the site file's records and secrets
  directories point into it), `siaga workstation restore` takes over from the DRC's copy: the
  restored records list the backup run, the secrets match the hosts', a dry deploy plans nothing;
  then a real site deploy from the restored workstation changes nothing on any host and no secret
  file on any host changes. The restored workstation carries the copy on; the old one's next push
  is refused (two workstations never overwrite each other's copy) until it takes over again.
"""

from __future__ import annotations

import base64
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import time
from pathlib import Path



REPO = Path(__file__).resolve().parents[2]
MIRROR = "/var/lib/siaga/workstation-mirror"


def cli(*args: str, cwd=REPO, env: dict | None = None, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drc.cli", *args], check=False, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})




def drc_copy(drc, site_name: str) -> tuple[dict, dict[str, bytes]]:
    """The DRC's copy as root reads it there: MIRROR.json and every file."""
    data = base64.b64decode(drc.check_output(f"tar -C {MIRROR}/{site_name} -czf - . | base64 -w0"))
    files = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for m in tar.getmembers():
            if m.isfile():
                files[m.name.removeprefix("./")] = tar.extractfile(m).read()
    return json.loads(files.pop("MIRROR.json")), files


def secret_sums(hosts: dict, lab) -> dict:
    from drc.site import load_site
    from drc.site.data_tier import data_tier_of
    from roles.secret_custody import secret_specs

    site = load_site(lab.site_file)
    paths = sorted({loc.path for s in secret_specs(data_tier_of(site)) for loc in s.locations} | {site.spse_app.tls_key_file})
    return {h: hosts[h].run("sha256sum " + " ".join(paths) + " 2>&1").stdout for h in hosts}


def test_a_new_workstation_takes_over_from_the_drc_copy_and_the_escrow(lab, hosts, passphrase, tmp_path):
    from drc.hosts.deploy import no_change_problem, run_deploy
    from drc.site import load_site

    site = load_site(lab.site_file)
    d = hosts["drc"]
    secret_values = [p.read_text().strip() for p in Path(site.replication.secrets_dir).iterdir()
                     if p.is_file() and not p.name.endswith(".pub")]
    assert len(secret_values) >= 5
    # The lab's workstation owns the DRC's copy (another test may have left another one there).
    p = cli("workstation", "mirror", "--take-over", str(lab.site_file), "--json")
    assert p.returncode == 0, p.stdout + p.stderr

    # 1. A command that writes records pushes them to the DRC by itself.
    t0 = time.monotonic()
    p = cli("backup", "run", "--set", "db", str(lab.site_file), "--json")
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    ran = json.loads(p.stdout)["records"]
    assert ran and {r["result"] for r in ran} == {"success"}, ran
    assert "workstation copy on drc updated" in p.stderr, p.stderr[-2000:]
    print(f"backup run --set db with its push: {time.monotonic() - t0:.1f} s")
    assert d.file(MIRROR).user == "root" and d.file(MIRROR).mode == 0o700
    assert d.file(f"{MIRROR}/{site.site}").mode == 0o700
    man, files = drc_copy(d, site.site)
    log = [json.loads(x) for x in files["records/backup-log.jsonl"].decode().splitlines()]
    assert {r["id"] for r in ran} <= {r["id"] for r in log}
    assert files["site/site.yaml"] == lab.site_file.read_bytes()
    assert "connection.known_hosts_file" in man["settings"]
    blob = b"".join(files.values())
    assert not any(v.encode() in blob for v in secret_values), "a secret in the DRC's copy"
    assert b"PRIVATE KEY" not in blob
    p = cli("workstation", "mirror", "--check", str(lab.site_file), "--json")
    check = json.loads(p.stdout)
    assert p.returncode == 0 and check["ok"] and check["hosts"]["drc"]["current"], p.stdout

    # 2. The escrow (the secrets' only copy off the hosts), then the workstation is lost.
    p = cli("secrets", "escrow", "--out", str(tmp_path / "escrow"), "--passphrase-file", str(passphrase), str(lab.site_file), "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    escrow_file = json.loads(p.stdout)["encrypted"]
    before = secret_sums(hosts, lab)

    # 3. A clean workstation: an empty directory, the admin's own key, a known_hosts with the DRC's key.
    new = tmp_path / "new-workstation"
    env = {"XDG_STATE_HOME": str(tmp_path / "state"), "SIAGA_ESCROW_PASSPHRASE_FILE": ""}
    common = ["--from", str(site.hosts["drc"].address), "--escrow", escrow_file, "--site-dir", str(new),
              "--key", str(site.connection.key_file), "--user", site.connection.user,
              "--known-hosts", str(site.connection.known_hosts_file), "--json"]
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-passphrase-at-all\n")
    wrong.chmod(0o600)
    p = cli("workstation", "restore", *common, "--passphrase-file", str(wrong), cwd=tmp_path, env=env)
    assert p.returncode == 2 and "wrong passphrase" in p.stdout, p.stdout
    assert not new.exists()
    # Without a known_hosts file, the DRC's key fingerprint read off its console; another key is refused.
    fp = d.check_output("ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub").split()[1]
    by_fp = [x for x in common if x not in ("--known-hosts", str(site.connection.known_hosts_file))]
    p = cli("workstation", "restore", *by_fp, "--host-key", "SHA256:" + "A" * 43, "--passphrase-file", str(passphrase),
            cwd=tmp_path, env=env)
    assert p.returncode == 2 and f"is {fp}, not the SHA256:" in " ".join(p.stdout.split()), p.stdout
    assert not new.exists()
    common = [*by_fp, "--host-key", fp]
    t0 = time.monotonic()
    p = cli("workstation", "restore", *common, "--passphrase-file", str(passphrase), cwd=tmp_path, env=env)
    print(f"workstation restore (with its dry deploy): {time.monotonic() - t0:.1f} s")
    res = json.loads(p.stdout)
    assert p.returncode == 0 and res["ok"], p.stdout[-5000:]
    assert not any(v in p.stdout + p.stderr for v in secret_values), "a secret in the output"
    assert all(r["ok"] and r["match"] for r in res["proof"]["secrets"].values()), res["proof"]
    assert res["deploy"]["ok"], res["deploy"]
    assert res["tls_key"]["ok"] and not [x for x in res["missing"] if "tls_key" in x]

    # What the restored workstation holds, where siaga expects it.
    restored = load_site(new / "site.yaml")
    # The DNS update key (only ever on the workstation) came back from the escrow: the failover's
    # traffic step works from the new workstation (SOP EM-2 step 6).
    assert not [x for x in res["missing"] if "dns_update" in x], res["missing"]
    key = restored.traffic.dns_update.key_file
    assert key.parent == new / "secrets" and key.read_text() == site.traffic.dns_update.key_file.read_text()
    assert restored.records_dir == new / "records" and restored.replication.secrets_dir == str(new / "secrets")
    sec = new / "secrets"
    assert stat.S_IMODE(sec.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in sec.iterdir() if not f.name.endswith(".pub")), \
        {f.name: oct(f.stat().st_mode) for f in sec.iterdir()}
    got = [json.loads(x) for x in (new / "records/backup-log.jsonl").read_text().splitlines()]
    assert {r["id"] for r in ran} <= {r["id"] for r in got}
    restores = [json.loads(x) for x in (new / "records/workstation-restores.jsonl").read_text().splitlines()]
    assert restores[-1]["result"] == "success"
    # The dry deploy's custody step fetched what the escrow does not hold (replication, SSH keys).
    assert (sec / "replication.password").is_file()

    # 4. A real site deploy from the restored workstation changes nothing on any host.
    t0 = time.monotonic()
    again = run_deploy(new / "site.yaml", env={"XDG_STATE_HOME": str(tmp_path / "state")})
    print(f"site deploy from the restored workstation: {time.monotonic() - t0:.1f} s")
    assert no_change_problem(again) is None, (no_change_problem(again), again.output[-4000:])
    assert secret_sums(hosts, lab) == before

    # 5. The restored workstation carries the copy on; the old one is refused until it takes over.
    p = cli("backup", "log", str(new / "site.yaml"), "--json", cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "workstation copy on drc updated" in p.stderr, p.stderr[-2000:]  # pushed before the command returned
    man2 = drc_copy(d, site.site)[0]
    assert man2["instance"] != man["instance"]
    assert man2["lineage"] == man["lineage"] and man2["seq"] > man["seq"]
    assert drc_copy(d, site.site)[1]["site/site.yaml"] == (new / "site.yaml").read_bytes()
    p = cli("workstation", "mirror", str(lab.site_file), "--json")
    assert p.returncode == 1 and "another workstation" in p.stdout, p.stdout
    # A command of the old workstation still works; its copy is marked behind, with a record.
    p = cli("backup", "log", str(lab.site_file), "--json")
    assert p.returncode == 0 and "is behind since" in p.stderr, p.stderr[-2000:]
    failed = [json.loads(x) for x in (Path(site.records_dir) / "workstation-mirror.jsonl").read_text().splitlines()]
    assert failed[-1]["result"] == "failure" and "another workstation" in failed[-1]["error"]
    p = cli("workstation", "mirror", "--check", str(lab.site_file), "--json")
    assert p.returncode == 1 and not json.loads(p.stdout)["hosts"]["drc"]["ours"], p.stdout
    p = cli("workstation", "mirror", "--take-over", str(lab.site_file), "--json")
    assert p.returncode == 0, p.stdout
    assert drc_copy(d, site.site)[1]["site/site.yaml"] == lab.site_file.read_bytes()
