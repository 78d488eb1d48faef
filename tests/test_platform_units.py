"""The site's platform (drc/site/platform.py): PostgreSQL's major and pgBackRest follow it, a hand-set
version must agree, a host's /etc/os-release is checked against it, and a deploy never installs a
pgBackRest older than one a host has or one that wrote the repository (roles/backup/versions.py).
SOP BK-1, BK-8, IN-2."""

from __future__ import annotations

import pytest

from drc.site import SiteError, load_site
from drc.site.platform import PLATFORMS, block_incremental, os_release_problem, parse_os_release, version_tuple
from roles.backup import versions
from tests.test_site_validation import LAB, edit, write

DEBIAN12 = LAB.replace("site: lab\n", "site: lab\nplatform: debian12\n")


def test_the_default_platform_is_debian13_with_its_postgresql(tmp_path):
    site = load_site(write(tmp_path, LAB))
    assert site.platform == "debian13" and site.os.suite == "trixie"
    assert site.postgresql.version == PLATFORMS["debian13"].postgresql
    assert load_site(write(tmp_path, DEBIAN12)).postgresql.version == PLATFORMS["debian12"].postgresql
    assert PLATFORMS["debian12"].postgresql != PLATFORMS["debian13"].postgresql


def test_a_postgresql_version_that_is_not_the_platforms_is_refused_with_file_key_and_fix(tmp_path):
    other = PLATFORMS["debian12"].postgresql
    text = edit(LAB, ("firewall:\n", f"postgresql:\n  version: '{other}'\nfirewall:\n"))
    with pytest.raises(SiteError) as exc:
        load_site(write(tmp_path, text))
    msg = str(exc.value)
    assert "key 'postgresql.version'" in msg and f"PostgreSQL {other} is not the one of platform 'debian13'" in msg
    assert "Fix: remove postgresql.version" in msg and f"site.yaml:{text.splitlines().index('  version: ' + repr(other)) + 1}" in msg
    same = edit(DEBIAN12, ("firewall:\n", f"postgresql:\n  version: '{other}'\nfirewall:\n"))
    assert load_site(write(tmp_path, same)).postgresql.version == other


def test_an_unknown_platform_is_refused(tmp_path):
    with pytest.raises(SiteError, match=r"key 'platform'.*Fix: use one of the allowed values"):
        load_site(write(tmp_path, LAB.replace("site: lab\n", "site: lab\nplatform: debian11\n")))


OS_RELEASE_12 = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n'
OS_RELEASE_13 = 'PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nVERSION_ID="13"\nVERSION_CODENAME=trixie\nID=debian\n'


def test_a_host_that_runs_another_release_is_named_with_the_fix():
    assert os_release_problem(PLATFORMS["debian13"], parse_os_release(OS_RELEASE_13), "drc") == ""
    problem = os_release_problem(PLATFORMS["debian13"], parse_os_release(OS_RELEASE_12), "drc", "site.yaml")
    assert problem.startswith("drc runs Debian GNU/Linux 12 (bookworm), but site.yaml says platform 'debian13'")
    assert "nothing was changed" in problem and "Fix: set 'platform: debian12' in site.yaml" in problem
    other = os_release_problem(PLATFORMS["debian12"], {"ID": "ubuntu", "VERSION_ID": "24.04"}, "drc")
    assert "Fix: install Debian 12 (bookworm) on drc" in other


def test_versions_compare_on_their_upstream_numbers():
    assert version_tuple("2.55.1-1~deb12siaga1") == (2, 55, 1) and version_tuple("2.45-1") == (2, 45)
    assert version_tuple("1:2.57.0-1.pgdg120+1") == (2, 57, 0)
    assert block_incremental(PLATFORMS["debian13"].pgbackrest) and not block_incremental(PLATFORMS["debian12"].pgbackrest)


def _site(tmp_path, text, apt=False, key=b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n"):
    if apt:
        (tmp_path / "pgdg.asc").write_bytes(key)
        text = edit(text, ("firewall:\n", "backup:\n  pgbackrest_apt:\n    url: http://mirror.example/apt\n"
                                         f"    suite: bookworm-pgdg\n    key_file: {tmp_path / 'pgdg.asc'}\nfirewall:\n"))
    return load_site(write(tmp_path, text))


def test_block_incremental_with_debian13s_pgbackrest_or_an_apt_repository_not_with_debian12s(tmp_path):
    from types import SimpleNamespace

    from roles.backup.layout import ROLE_DIR
    from roles.templating import render

    for text, apt, block in ((LAB, False, True), (DEBIAN12, False, False), (DEBIAN12, True, True)):
        site = _site(tmp_path, text, apt)
        assert versions.uses_block_incremental(site) == block
        conf = render(ROLE_DIR, "pgbackrest-repo.conf.j2", header="h", b=site.backup, backup_host="primary", block=block,
                      db_address="10.0.1.10", pg=SimpleNamespace(version=site.postgresql.version, cluster="main"),
                      port=5432, passphrase="x")
        assert ("repo1-block=y" in conf and "repo1-bundle=y" in conf) == block, (text[:40], apt)
        assert f"pg1-path=/var/lib/postgresql/{site.postgresql.version}/main" in conf


def test_options_of_the_configs_are_ones_pgbackrest_2_45_knows(tmp_path):
    """Debian 12's 2.45 refuses an unknown option: what its configs use is a known list."""
    from types import SimpleNamespace

    from roles.backup.layout import REPO_CONFIG_PATH, ROLE_DIR
    from roles.templating import render

    known_245 = {"repo1-path", "repo1-cipher-type", "repo1-cipher-pass", "repo1-retention-full", "log-path", "log-level-file",
                 "lock-path", "compress-type", "process-max", "start-fast", "pg1-host", "pg1-host-user", "pg1-path", "pg1-port",
                 "repo1-host", "repo1-host-user", "repo1-host-config-path", "archive-push-queue-max", "log-level-console"}
    site = _site(tmp_path, DEBIAN12)
    pg = SimpleNamespace(version=site.postgresql.version, cluster="main")
    confs = [render(ROLE_DIR, "pgbackrest-repo.conf.j2", header="h", b=site.backup, backup_host="primary", block=False,
                    db_address="10.0.1.10", pg=pg, port=5432, passphrase="x"),
             render(ROLE_DIR, "pgbackrest.conf.j2", header="h", b=site.backup, pg=pg, port=5432, repo_host="drc",
                    repo_address="10.0.2.10", repo_config_path=REPO_CONFIG_PATH)]
    used = {line.split("=", 1)[0] for c in confs for line in c.splitlines() if "=" in line and not line.startswith("#")}
    assert used <= known_245, used - known_245


def test_a_pgbackrest_older_than_the_installed_one_is_refused_with_the_fixes(tmp_path):
    old = _site(tmp_path, DEBIAN12)
    backport = {"primary": "2.55.1-1~deb12siaga1", "drc": "2.55.1-1~deb12siaga1"}
    problem = versions.downgrade_problem(old, backport, None, "drc:/srv/siaga-backup/pgbackrest")
    assert "drc has pgBackRest 2.55.1-1~deb12siaga1, primary has pgBackRest 2.55.1-1~deb12siaga1" in problem
    assert f"provides pgBackRest {PLATFORMS['debian12'].pgbackrest}" in problem and "nothing was changed" in problem
    assert "backup.pgbackrest_apt" in problem and "platform: debian13" in problem and "verified offline copy" in problem
    # the repository's record alone (the package removed from the hosts) is enough to stop
    assert "written by pgBackRest 2.55.1" in versions.downgrade_problem(old, {"primary": None, "drc": None}, "2.55.1-1",
                                                                         "drc:/srv/siaga-backup/pgbackrest")
    assert versions.downgrade_problem(old, {"primary": "2.45-1", "drc": None}, "2.45-1", "r") == ""
    # no record (a repository of siaga before it), no package: its bundled backups are enough
    bundled = versions.downgrade_problem(old, {"primary": None, "drc": None}, None, "drc:/r", block_backups=True)
    assert "drc:/r holds block-incremental (bundled) backups" in bundled
    assert versions.downgrade_problem(_site(tmp_path, LAB), {"drc": None}, None, "drc:/r", block_backups=True) == ""
    # an apt repository keeps the newer one; Debian 13's own is as new
    assert versions.downgrade_problem(_site(tmp_path, DEBIAN12, apt=True), backport, "2.55.1", "r") == ""
    assert versions.downgrade_problem(_site(tmp_path, LAB), backport, "2.55.1-1", "r") == ""
    assert "2.57" in versions.downgrade_problem(_site(tmp_path, LAB), {"drc": "2.57.0-1.pgdg130+1"}, None, "r")


def test_the_apt_repository_pins_only_pgbackrest():
    pin = versions.pin_preferences("apt.postgresql.org")
    blocks = [dict(line.split(": ", 1) for line in b.splitlines()) for b in pin.strip().split("\n\n")]
    assert blocks == [{"Package": "*", "Pin": 'origin "apt.postgresql.org"', "Pin-Priority": "100"},
                      {"Package": "pgbackrest", "Pin": 'origin "apt.postgresql.org"', "Pin-Priority": "600"}]


def test_the_apt_source_names_its_key_by_the_keys_form(tmp_path):
    site = _site(tmp_path, DEBIAN12, apt=True)
    files = versions.apt_files(site.backup.pgbackrest_apt, b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n", "/etc/apt/keyrings/k")
    assert files["source"] == "deb [signed-by=/etc/apt/keyrings/k.asc] http://mirror.example/apt bookworm-pgdg main\n"
    assert files["origin"] == "mirror.example" and 'origin "mirror.example"' in files["pin"]
    assert versions.apt_files(site.backup.pgbackrest_apt, b"\x99\x01binary", "/k")["keyring"] == "/k.gpg"


def test_an_apt_repository_key_file_that_is_missing_is_refused(tmp_path):
    text = edit(DEBIAN12, ("firewall:\n", "backup:\n  pgbackrest_apt:\n    url: http://mirror.example/apt\n"
                                          "    suite: bookworm-pgdg\n    key_file: /nonexistent/pgdg.asc\nfirewall:\n"))
    with pytest.raises(SiteError, match=r"key 'backup.pgbackrest_apt.key_file': cannot read /nonexistent/pgdg.asc.*Fix: "):
        load_site(write(tmp_path, text))


def test_the_lab_image_is_cached_per_suite():
    from drc.lab.lab import image_key

    assert image_key("bookworm") != image_key("trixie")
