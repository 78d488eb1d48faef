"""`siaga secrets escrow` on the workstation (SOP BK-8): the document holds what reading the offline
copies needs, the encrypted file opens with a plain `gpg --decrypt` and only with its passphrase,
the passphrase never reaches a command line, the sheet is 0600, secret and Indonesian."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from drc.secrets import escrow as esc
from drc.secrets import restore, rotate
from tests.test_roles_render import make_site

needs_gpg = pytest.mark.skipif(not shutil.which("gpg"), reason="needs gpg (apt-get install gnupg)")
PASS = "kepala-lpse-menyimpan-ini"
REPO1, RESTIC = "A" * 30 + "b" * 34, "R" * 20 + "9" * 44


@pytest.fixture
def site(tmp_path):
    d = tmp_path / "secrets"
    d.mkdir(mode=0o700)
    for name, value in (("pgbackrest-repo1.passphrase", REPO1), ("restic-repo1.password", RESTIC)):
        fd = os.open(d / name, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, (value + "\n").encode())
        os.close(fd)
    return make_site(replication={"secrets_dir": str(d)}, records_dir=str(tmp_path / "records"))


def test_the_document_holds_what_reading_the_copies_needs(site):
    doc = esc.escrow_document(site, now=dt.datetime(2026, 11, 26, 4, 0, tzinfo=dt.timezone.utc))
    p, r = doc["pgbackrest"], doc["restic"]
    assert (p["cipher_pass"], p["cipher_type"], p["stanza"]) == (REPO1, "aes-256-cbc", site.backup.stanza)
    assert p["repository_path"] == f"{site.backup.repository_path}/pgbackrest"
    assert p["postgresql_version"] == site.postgresql.version
    assert r["password"] == RESTIC and r["repository_path"] == f"{site.backup.repository_path}/restic"
    assert {s["name"] for s in r["sets"]} == {s.name for s in site.backup.sets}
    assert doc["offline"]["mount_point"] == site.backup.offline.mount_point
    assert "not needed" in doc["ssh_keys"]


def test_a_missing_secret_stops_the_escrow_with_the_fix(site):
    Path(site.replication.secrets_dir, "restic-repo1.password").unlink()
    with pytest.raises(esc.EscrowError, match="restic-repo1.password: missing.*run the site deploy"):
        esc.escrow_document(site)


def test_retired_secrets_are_listed_for_the_copies_that_still_need_them(site):
    esc.add_retired(site, {"key": "restic", "value": "OLD" * 10, "retired_at": "2026-11-01", "needed_by": "older copies"})
    path = esc.retired_path(site)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = esc.escrow_document(site)
    assert [x["value"] for x in doc["restic"]["retired"]] == ["OLD" * 10]
    assert restore.host_secrets(doc)["restic"]["passwords"] == [RESTIC, "OLD" * 10]
    assert "OLD" * 10 in esc.render_sheet(doc) and "OLD" * 10 in esc.escrow_text(doc)


def test_the_text_round_trips_and_a_foreign_text_is_refused(site):
    doc = esc.escrow_document(site)
    assert esc.parse_escrow_text(esc.escrow_text(doc)) == doc
    with pytest.raises(esc.EscrowError, match="not a siaga escrow"):
        esc.parse_escrow_text("hello")


@needs_gpg
def test_encrypted_escrow_opens_with_plain_gpg_and_only_with_its_passphrase(site, tmp_path):
    doc = esc.escrow_document(site)
    paths = esc.write_outputs(doc, PASS, tmp_path / "out")
    for p in paths.values():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    data = paths["encrypted"].read_bytes()
    assert data.startswith(b"-----BEGIN PGP MESSAGE-----")
    assert REPO1.encode() not in data and RESTIC.encode() not in data
    # A standard gpg alone (its own home, the passphrase as a person would type it) reads it.
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    out = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--passphrase-fd", "0",
                          "--decrypt", str(paths["encrypted"])], input=PASS.encode() + b"\n", capture_output=True)
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    assert REPO1 in text and RESTIC in text and "pgbackrest" in text
    assert esc.parse_escrow_text(text) == doc
    with pytest.raises(esc.EscrowError, match="wrong passphrase"):
        esc.read_escrow(paths["encrypted"], PASS + "x")
    assert esc.read_escrow(paths["encrypted"], PASS) == doc
    with pytest.raises(esc.EscrowError, match="exists: not replaced"):
        esc.write_outputs(doc, PASS, tmp_path / "out")


@needs_gpg
def test_the_cipher_is_aes256(site, tmp_path):
    data = esc.encrypt("x", PASS)
    home = tmp_path / "g"
    home.mkdir(mode=0o700)
    f = tmp_path / "e.asc"
    f.write_bytes(data)
    p = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--list-packets", "--pinentry-mode", "loopback",
                        "--passphrase", PASS, str(f)], capture_output=True, text=True)
    assert re.search(r"symkey enc packet: version \d, cipher 9", p.stdout + p.stderr), p.stdout + p.stderr


def test_the_passphrase_goes_to_gpg_on_a_pipe_never_its_command_line(monkeypatch):
    seen = {}
    real = subprocess.run

    def spy(cmd, **kw):
        seen["cmd"] = cmd
        seen["pass_fds"] = kw.get("pass_fds")
        return real(["true"], capture_output=True)

    monkeypatch.setattr(esc.subprocess, "run", spy)
    esc._gpg(["--symmetric"], PASS, b"data")
    assert PASS not in " ".join(seen["cmd"])
    fd = seen["cmd"][seen["cmd"].index("--passphrase-fd") + 1]
    assert seen["pass_fds"] == (int(fd),)


def test_passphrase_from_a_named_private_file_or_the_environment(tmp_path):
    f = tmp_path / "pp"
    f.write_text(PASS + "\n")
    f.chmod(0o600)
    assert esc.read_passphrase(str(f), confirm=True, env={}) == PASS
    assert esc.read_passphrase(None, confirm=True, env={esc.PASSPHRASE_ENV: str(f)}) == PASS
    f.chmod(0o644)
    with pytest.raises(esc.EscrowError, match="readable by others"):
        esc.read_passphrase(str(f), confirm=False, env={})
    short = tmp_path / "short"
    short.write_text("pendek\n")
    short.chmod(0o600)
    with pytest.raises(esc.EscrowError, match="at least 12"):
        esc.read_passphrase(str(short), confirm=False, env={})


def test_the_sheet_is_secret_indonesian_and_carries_the_commands(site):
    doc = esc.escrow_document(site)
    html = esc.render_sheet(doc)
    assert "RAHASIA" in html and "BK-8" in html and "LEMBAR PEMULIHAN BACKUP" in html
    assert REPO1 in html and RESTIC in html and site.backup.stanza in html
    assert "pgbackrest --config=" in html and "restic restore latest --tag uploads" in html
    assert "gpg --decrypt" in html and "Kepala LPSE" in html


def test_the_scram_verifier_answers_rfc_7677s_exchange():
    """RFC 7677's example (password 'pencil', its salt and nonces): the server key of our verifier
    signs the exchange as the RFC's server does, and its stored key accepts the RFC client's proof."""
    import base64
    import hashlib
    import hmac

    v = rotate.scram_verifier("pencil", salt=base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="), iterations=4096)
    m = re.fullmatch(r"SCRAM-SHA-256\$4096:W22ZaJ0SNY7soEsUEjb6gQ==\$([^:]+):(.+)", v)
    assert m, v
    stored, server = (base64.b64decode(x) for x in m.groups())
    nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    auth = f"n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r={nonce}".encode()
    assert base64.b64encode(hmac.new(server, auth, "sha256").digest()).decode() == "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    proof = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    client_key = bytes(a ^ b for a, b in zip(proof, hmac.new(stored, auth, "sha256").digest()))
    assert hashlib.sha256(client_key).digest() == stored


def test_restic_times_parse_with_nanoseconds_and_offsets():
    assert restore.restic_time("2026-11-26T04:01:02.123456789Z") == dt.datetime(2026, 11, 26, 4, 1, 2, 123456, tzinfo=dt.timezone.utc)
    assert restore.restic_time("2026-11-26T11:01:02+07:00").utcoffset() == dt.timedelta(hours=7)


def test_the_table_comparison_names_missing_and_changed_tables():
    got = restore.compare_tables({"db": {"a": 1, "b": 5}}, {"db": {"a": 1, "b": 6, "c": 2}})
    assert got["db"] == {"missing": ["c"], "equal": ["a"], "differ": {"b": {"restored": 5, "production": 6}}}


def test_retired_secrets_merge_each_value_once_oldest_first():
    a = {"key": "restic", "value": "A", "retired_at": "2026-11-01T00:00:00+07:00"}
    b = {"key": "restic", "value": "B", "retired_at": "2026-11-20T00:00:00+07:00"}
    assert esc.merge_retired([b], [a, b], []) == [a, b]
    assert esc.merge_retired([]) == []


def test_the_escrow_names_the_repository_generation_in_use(site):
    # After `siaga secrets rotate repo1` the repository is <repository_path>/pgbackrest-genN (SOP BK-8).
    assert esc.escrow_document(site)["pgbackrest"]["repository_path"] == f"{site.backup.repository_path}/pgbackrest"
    assert esc.escrow_document(site, generation=3)["pgbackrest"]["repository_path"] == f"{site.backup.repository_path}/pgbackrest-gen3"


def test_the_dns_update_key_is_in_the_escrow_or_said_missing(site, tmp_path):
    # A new workstation moves users' traffic with it (issue 11 point 4, SOP EM-2 step 6).
    key = tmp_path / "dns-update.key"
    traffic = {"public_name": "lpse.example.go.id", "ttl": 60, "addresses": {"primary": "203.0.113.10", "drc": "198.51.100.10"},
               "method": "dns-update", "dns_update": {"servers": ["192.0.2.53"], "zone": "example.go.id",
                                                      "key_name": "lpse-update", "key_file": str(key)}}
    with_dns = make_site(traffic=traffic)
    assert "missing" in esc.dns_update_key(with_dns) and "text" not in esc.dns_update_key(with_dns)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b'key "lpse-update" { algorithm hmac-sha256; secret "c2VjcmV0"; };\n')
    os.close(fd)
    got = esc.dns_update_key(with_dns)
    assert got["text"].startswith('key "lpse-update"') and got["key_name"] == "lpse-update"
    assert esc.escrow_document(site)["dns_update_key"] is None  # a site without DNS updates
    assert "c2VjcmV0" in esc.escrow_text({**esc.escrow_document(site), "dns_update_key": got})
