"""Secret custody (roles/secret_custody.py, issue 9 point 1): the decision per secret, reading a
secret out of the hosts' files, the workstation's side (fetch 0600, generate, keep), the read
script on real files, and the backup accounts' sshd restrictions (issue 9 point 8). SOP BK-8."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
from pathlib import Path

import pytest

from roles import secret_custody as sc
from roles.backup.keys import KEYS_DIR, REMOTE_WRAPPER, db_account_keys, sshd_restrictions
from roles.workstation_secrets import SecretError, generate_ssh_key, read_ssh_key
from tests.test_roles_render import make_site

PW = "A" * 64
OTHER = "B" * 64


def spec(tmp_path: Path, kind: str = "password", name: str = "restic-repo1.password") -> sc.SecretSpec:
    return sc.SecretSpec("restic", name, "restic repository password", tmp_path / "secrets", kind,
                         (sc.Location("/etc/siaga/backup/restic-repo1.password", "ssh_key" if kind == "ssh_key" else "text"),),
                         check="restic snapshots", length=64, comment="restic@lab")


def seen(host: str, state: str, value: str | None = None, why: str = "") -> sc.Seen:
    return sc.Seen(host, "/etc/siaga/backup/restic-repo1.password", state, value, why)


# --- decide ---------------------------------------------------------------------------------------

def test_workstation_copy_equal_to_the_hosts_or_hosts_without_it_is_kept(tmp_path):
    s = spec(tmp_path)
    assert sc.decide(s, PW, [seen("primary", "value", PW), seen("drc", "absent")]).action == "keep"
    assert sc.decide(s, PW, [seen("primary", "absent"), seen("drc", "absent")]).action == "keep"
    # A host not read cannot change anything in this run: the workstation's copy goes on.
    assert sc.decide(s, PW, [seen("primary", "value", PW), seen("drc", "unknown", why="timeout")]).action == "keep"


def test_a_missing_workstation_copy_is_fetched_from_the_hosts(tmp_path):
    d = sc.decide(spec(tmp_path), None, [seen("primary", "value", PW), seen("drc", "absent")])
    assert (d.action, d.value, d.source.host) == ("fetch", PW, "primary")
    # Even when another host cannot be read: one holds it, so nothing new is made.
    d = sc.decide(spec(tmp_path), None, [seen("primary", "unknown", why="down"), seen("drc", "value", PW)])
    assert (d.action, d.source.host) == ("fetch", "drc")


def test_a_new_site_gets_a_new_secret_only_when_every_host_was_read(tmp_path):
    s = spec(tmp_path)
    assert sc.decide(s, None, [seen("primary", "absent"), seen("drc", "absent")]).action == "generate"
    d = sc.decide(s, None, [seen("primary", "absent"), seen("drc", "unknown", why="NoValidConnectionsError")])
    assert d.action == "stop"
    assert "drc could not be read (NoValidConnectionsError)" in d.message and "makes no new one" in d.message
    assert "Fix: deploy with drc reachable" in d.message


def test_a_workstation_copy_that_differs_from_the_hosts_stops_with_the_fix_and_no_value(tmp_path):
    s = spec(tmp_path)
    d = sc.decide(s, OTHER, [seen("primary", "value", PW), seen("drc", "absent")])
    assert d.action == "stop"
    assert "restic-repo1.password" in d.message and "differs from the one the hosts hold" in d.message
    assert "primary:/etc/siaga/backup/restic-repo1.password" in d.message and str(s.path) in d.message
    assert f"mv {s.path} {s.path}.stale" in d.message and "Nothing was changed" in d.message
    assert sc.fingerprint(PW) in d.message and sc.fingerprint(OTHER) in d.message
    assert PW not in d.message and OTHER not in d.message


def test_hosts_holding_different_copies_stop_the_deploy_whatever_the_workstation_holds(tmp_path):
    hosts = [seen("primary", "value", PW), seen("drc", "value", OTHER)]
    for workstation in (None, PW, OTHER):
        d = sc.decide(spec(tmp_path), workstation, hosts)
        assert d.action == "stop" and "the hosts hold different copies" in d.message
        assert "primary:" in d.message and "drc:" in d.message and PW not in d.message and OTHER not in d.message


def test_a_host_file_that_holds_no_readable_secret_stops_the_deploy(tmp_path):
    for state, words in (("unreadable", "cannot be read as this secret"), ("none", "holds no such value")):
        d = sc.decide(spec(tmp_path), PW, [seen("primary", "value", PW), seen("drc", state, why="odd")])
        assert d.action == "stop" and words in d.message and "drc:/etc/siaga/backup/restic-repo1.password" in d.message


def test_a_fetched_password_that_siaga_cannot_keep_is_refused(tmp_path):
    d = sc.decide(spec(tmp_path), None, [seen("primary", "value", "pass:word")])
    assert d.action == "stop" and "letters and digits" in d.message and "pass:word" not in d.message


# --- reading a secret out of a host's file ----------------------------------------------------------

def test_extract_reads_each_form():
    assert sc.extract("text", f"{PW}\n") == PW
    assert sc.extract("text", "\n") is None
    conf = f"[global]\nrepo1-path=/srv/x\nrepo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass={PW}\n[spse]\npg1-host=1.2.3.4\n"
    assert sc.extract("ini:repo1-cipher-pass", conf) == PW
    assert sc.extract("ini:repo1-cipher-pass", "[global]\nrepo1-path=/srv/x\n") is None
    with pytest.raises(ValueError):
        sc.extract("ini:repo1-cipher-pass", f"repo1-cipher-pass={PW}\nrepo1-cipher-pass={OTHER}\n")
    pgpass = f"10.0.0.10:5432:replication:replicator:{PW}\n10.0.0.11:5432:replication:replicator:{PW}\n"
    assert sc.extract("pgpass", pgpass) == PW
    assert sc.extract("pgpass", "10.0.0.10:5432:epns_prod:epns:x\n") is None
    with pytest.raises(ValueError):
        sc.extract("pgpass", f"a:1:replication:r:{PW}\nb:1:replication:r:{OTHER}\n")
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n"
    assert sc.extract("ssh_key", key) == key.strip()
    with pytest.raises(ValueError):
        sc.extract("ssh_key", "ssh-ed25519 AAAA public only\n")


def test_observe_turns_a_read_into_what_it_says_about_the_secret():
    loc = sc.Location("/etc/siaga/pgbackrest-repo/pgbackrest.conf", "ini:repo1-cipher-pass")
    assert sc.observe("drc", loc, "present", f"repo1-cipher-pass={PW}\n").value == PW
    assert sc.observe("drc", loc, "present", "[global]\n").state == "none"
    assert sc.observe("drc", loc, "present", "repo1-cipher-pass=a\nrepo1-cipher-pass=b\n").state == "unreadable"
    assert sc.observe("drc", loc, "absent").state == "absent"
    assert sc.observe("drc", loc, "unknown", why="down").why == "down"


def test_the_read_script_prints_each_file_once_read_whole_and_always_exits_0(tmp_path):
    present, absent, directory = tmp_path / "pw", tmp_path / "nope", tmp_path / "dir"
    present.write_text(f"{PW}\n")
    directory.mkdir()
    paths = [str(present), str(absent), str(directory)]
    out = subprocess.run(["sh", "-c", sc.read_script(paths)], capture_output=True, text=True)
    assert out.returncode == 0
    parsed = sc.parse_read(out.stdout.splitlines(), paths)
    assert parsed == {str(present): ("present", f"{PW}\n"), str(absent): ("absent", None), str(directory): ("unreadable", None)}
    assert PW not in sc.read_script(paths)  # the command line names paths only
    # A short or garbled answer is never taken for a value.
    assert sc.parse_read(["present !!notbase64"], paths[:2]) == {paths[0]: ("unreadable", None), paths[1]: ("unreadable", None)}
    assert sc.parse_read([f"present {base64.b64encode(b'x').decode()}"], paths[:1]) == {paths[0]: ("present", "x")}


# --- the workstation's side -----------------------------------------------------------------------

def test_apply_fetch_writes_0600_and_generate_never_overwrites(tmp_path):
    s = spec(tmp_path)
    line = sc.apply(s, sc.Decision("fetch", value=PW, source=seen("drc", "value", PW)))
    assert "fetched from drc:/etc/siaga/backup/restic-repo1.password" in line and PW not in line
    assert s.path.read_text() == PW + "\n" and stat.S_IMODE(os.stat(s.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(s.directory).st_mode) == 0o700
    assert sc.workstation_value(s) == PW
    with pytest.raises(FileExistsError):
        sc.apply(s, sc.Decision("generate"))
    assert s.path.read_text() == PW + "\n"
    with pytest.raises(SecretError, match="no way"):
        sc.apply(s, sc.Decision("stop", message="no way"))


def test_a_fetched_ssh_key_gets_its_public_half_with_the_same_comment(tmp_path):
    source = tmp_path / "host"
    private, public = generate_ssh_key(source, "k", "pgbackrest@lab")
    s = spec(tmp_path, "ssh_key", "backup-pgbackrest_ed25519")
    sc.apply(s, sc.Decision("fetch", value=private.strip(), source=seen("primary", "value", private.strip())))
    assert read_ssh_key(s.directory, s.name) == (private, public)  # the authorized key line stays the same
    assert stat.S_IMODE(os.stat(s.path).st_mode) == 0o600
    # A .pub of another key beside a kept private key is made again from the private key.
    (s.directory / (s.name + ".pub")).write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOther x\n")
    assert "made again" in sc.apply(s, sc.Decision("keep"))
    assert read_ssh_key(s.directory, s.name)[1] == public
    assert sc.apply(s, sc.Decision("keep")) == ""


def test_a_workstation_copy_readable_by_others_is_refused(tmp_path):
    s = spec(tmp_path)
    s.directory.mkdir(mode=0o700)
    s.path.write_text(PW + "\n")
    os.chmod(s.path, 0o644)
    with pytest.raises(SecretError, match="readable by others"):
        sc.workstation_value(s)


# --- which secrets, where ---------------------------------------------------------------------------

def test_every_secret_of_the_site_is_in_custody_with_where_the_hosts_hold_it(tmp_path):
    from drc.site.data_tier import data_tier_of

    tier = data_tier_of(make_site(replication={"secrets_dir": str(tmp_path / "s")}))
    specs = {s.key: s for s in sc.secret_specs(tier)}
    assert set(specs) == {"replication", "repo1", "restic", "pgbackrest_key", "restic_key", "repo_key", "uploads_sync"}
    where = {k: [(loc.path, loc.form) for loc in s.locations] for k, s in specs.items()}
    assert where["repo1"] == [("/etc/siaga/pgbackrest-repo/pgbackrest.conf", "ini:repo1-cipher-pass")]
    assert where["restic"] == [("/etc/siaga/backup/restic-repo1.password", "text")]
    assert where["replication"] == [("/var/lib/postgresql/.pgpass", "pgpass")]
    assert where["repo_key"] == [("/var/lib/siagabak/.ssh-client/id_ed25519", "ssh_key")]
    assert where["pgbackrest_key"] == [("/var/lib/postgresql/.ssh/siaga_backup_ed25519", "ssh_key")]
    assert where["restic_key"] == [("/etc/siaga/backup/restic_ed25519", "ssh_key")]
    assert where["uploads_sync"] == [("/etc/siaga/uploads-sync/id_ed25519", "ssh_key")]
    assert all(s.directory == tmp_path / "s" for s in specs.values())
    assert {s.kind for k, s in specs.items() if k in ("replication", "repo1", "restic")} == {"password"}
    off = data_tier_of(make_site(backup={"enabled": False}, uploads_sync={"enabled": False}))
    assert [s.key for s in sc.secret_specs(off)] == ["replication"]


def test_decisions_read_every_host_and_stop_on_a_conflict(tmp_path):
    from drc.site.data_tier import data_tier_of

    tier = data_tier_of(make_site(backup={"enabled": False}, uploads_sync={"enabled": False},
                                  replication={"secrets_dir": str(tmp_path / "s")}))
    hosts = list(tier.site.hosts)
    pgpass = f"10.0.0.1:5432:replication:replicator:{PW}\n"
    readings = {h: {"/var/lib/postgresql/.pgpass": ("present", pgpass, "")} for h in hosts}
    [(s, d)] = sc.decisions(tier, readings)
    assert (d.action, d.value) == ("fetch", PW)
    sc.apply(s, d)
    [(_, d)] = sc.decisions(tier, readings)
    assert d.action == "keep"
    readings[hosts[-1]] = {"/var/lib/postgresql/.pgpass": ("present", pgpass.replace(PW, OTHER), "")}
    [(_, d)] = sc.decisions(tier, readings)
    assert d.action == "stop" and "different copies" in d.message
    # A host missing from the readings is never taken for a host without the secret.
    (s.path).unlink()
    [(_, d)] = sc.decisions(tier, {hosts[0]: {"/var/lib/postgresql/.pgpass": ("absent", None, "")}})
    assert d.action == "stop" and "could not be read" in d.message


# --- the backup accounts' keys (issue 9 point 8) -----------------------------------------------------

def test_backup_accounts_read_keys_only_from_a_root_owned_file_and_postgres_is_forced():
    from roles.ssh_hardening.deploy import render_sshd_config

    site = make_site()
    blocks = {m["user"]: m for m in sshd_restrictions(site)}
    assert blocks["postgres"] == {"user": "postgres", "keys_file": f"{KEYS_DIR}/%u", "force_command": REMOTE_WRAPPER}
    assert blocks["siagabak"]["keys_file"] == f"{KEYS_DIR}/%u"
    text = render_sshd_config(site)
    pg = text.split("Match User postgres\n")[1].split("Match ")[0]
    assert f"AuthorizedKeysFile {KEYS_DIR}/%u" in pg and f"ForceCommand {REMOTE_WRAPPER}" in pg and "PermitTTY no" in pg
    bak = text.split("Match User siagabak\n")[1]
    assert f"AuthorizedKeysFile {KEYS_DIR}/%u" in bak and "ForceCommand" not in bak
    line = db_account_keys("hdr", "drc", "10.0.0.2", "ssh-ed25519 AAAA siagabak@lab").splitlines()[-1]
    assert line == f'restrict,from="10.0.0.2",command="{REMOTE_WRAPPER}" ssh-ed25519 AAAA siagabak@lab'


def test_hosts_are_read_through_pyinfra_without_printing_a_value(tmp_path, capfd, monkeypatch):
    """The read as the deploy does it (pyinfra's connector, here @local), with pyinfra told to print
    every fact's output (-vvv): the value comes back and is printed nowhere; a host that is not in
    the inventory is "unknown", never "absent"."""
    import click
    from pyinfra.api import Config, Inventory, State, output
    from pyinfra.api.connect import connect_all, disconnect_all
    from pyinfra.context import ctx_state

    monkeypatch.setattr(output, "_echo", click.echo)  # pyinfra's printing on, as its CLI and run_deploy set it

    secret = tmp_path / "restic-repo1.password"
    secret.write_text(PW + "\n")
    inventory = Inventory(([("@local", {"siaga_host": "primary"})], {}))
    state = State(inventory, Config())
    state.print_fact_output = state.print_output = state.print_fact_input = True
    with ctx_state.use(state):
        connect_all(state)
        try:
            got = sc.read_hosts(["primary", "drc"], [str(secret), str(tmp_path / "absent")])
        finally:
            disconnect_all(state)
    assert got["primary"] == {str(secret): ("present", PW + "\n", ""), str(tmp_path / "absent"): ("absent", None, "")}
    assert {v[0] for v in got["drc"].values()} == {"unknown"} and "inventory" in got["drc"][str(secret)][2]
    out, err = capfd.readouterr()
    assert PW not in out + err and base64.b64encode((PW + "\n").encode()).decode() not in out + err


def test_reconcile_fetches_once_per_run_and_a_conflict_raises_before_the_workstation_is_written(tmp_path, monkeypatch):
    """The whole step on pyinfra's API (@local as the host 'primary', 'drc' not in the inventory):
    a missing workstation copy is fetched (0600) and reported; the step runs once per deploy run;
    a differing copy raises DeployError with the fix, writing nothing."""
    from drc.site.data_tier import data_tier_of
    from pyinfra.api import Config, Inventory, State
    from pyinfra.api.connect import connect_all, disconnect_all
    from pyinfra.api.exceptions import DeployError
    from pyinfra.context import ctx_state

    held = tmp_path / "host" / "restic-repo1.password"
    held.parent.mkdir()
    held.write_text(PW + "\n")
    tier = data_tier_of(make_site(backup={"enabled": False}, uploads_sync={"enabled": False}))
    the_spec = sc.SecretSpec("restic", "restic-repo1.password", "restic repository password", tmp_path / "ws", "password",
                             (sc.Location(str(held)),), check="restic snapshots", length=64)
    monkeypatch.setattr(sc, "secret_specs", lambda _tier: [the_spec])
    reads = []
    real_read = sc.read_hosts
    monkeypatch.setattr(sc, "read_hosts", lambda *a: reads.append(a) or real_read(*a))

    def run() -> None:
        inventory = Inventory(([("@local", {"siaga_host": "primary"})], {}))
        state = State(inventory, Config())
        with ctx_state.use(state):
            connect_all(state)
            try:
                sc.reconcile(tier)
                sc.reconcile(tier)  # every host's deploy file calls it: the work is done once
                assert sc.password(tier, "restic") == PW
            finally:
                disconnect_all(state)

    run()
    assert len(reads) == 1 and the_spec.path.read_text() == PW + "\n"
    assert stat.S_IMODE(os.stat(the_spec.path).st_mode) == 0o600
    the_spec.path.write_text(OTHER + "\n")
    with pytest.raises(DeployError, match="differs from the one the hosts hold") as err:
        run()
    assert "nothing was changed on any host" in str(err.value) and OTHER not in str(err.value)
    assert the_spec.path.read_text() == OTHER + "\n" and held.read_text() == PW + "\n"
