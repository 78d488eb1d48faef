"""Shared fixtures. Lab tests (marker `lab`) use ONE lab for the whole session, raised on first
use and torn down at the end, also when tests fail. SIAGA_TEST_LAB names it (default "test");
SIAGA_TEST_KEEP_LAB=1 reuses a running lab and leaves it up (used by `make demo`)."""

from __future__ import annotations

import os

import pytest

from tests.helpers import lab_host, run_deploy


def pytest_collection_modifyitems(items):
    for item in items:
        if "/tests/lab/" in str(item.fspath):
            item.add_marker(pytest.mark.lab)


@pytest.fixture(scope="session")
def lab():
    from drc.lab.lab import Lab

    the_lab = Lab(os.environ.get("SIAGA_TEST_LAB", "test"))
    keep = os.environ.get("SIAGA_TEST_KEEP_LAB") == "1"
    the_lab.up()
    try:
        yield the_lab
    finally:
        if not keep:
            the_lab.down()


@pytest.fixture(scope="session")
def fresh_hosts(lab) -> bool:
    """Whether no siaga deploy ever ran on the lab's servers (read from the hosts, before the
    session's first deploy): then that deploy must report changes on every host."""
    from drc.site import load_site

    return not any(lab_host(lab, h).file("/usr/local/lib/siaga").exists for h in load_site(lab.site_file).hosts)


@pytest.fixture(scope="session")
def deployed(lab, fresh_hosts):
    """The site deploy applied once; its result (per host and operation, from pyinfra's API) is kept
    for the tests of a first deploy and of idempotence."""
    result = run_deploy(lab)
    assert result.ok, result.output[-6000:]
    return result


@pytest.fixture(scope="session")
def primary(lab, deployed):
    return lab_host(lab, "primary")


@pytest.fixture(scope="session")
def drc(lab, deployed):
    return lab_host(lab, "drc")


@pytest.fixture(scope="module")
def hosts(lab, deployed):
    """The lab's two servers as testinfra hosts, by site."""
    return {"primary": lab_host(lab, "primary"), "drc": lab_host(lab, "drc")}


@pytest.fixture(scope="module")
def passphrase(tmp_path_factory):
    """An escrow passphrase in a 0600 file (never on a command line)."""
    import secrets

    f = tmp_path_factory.mktemp("pp") / "passphrase"
    fd = os.open(f, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, (secrets.token_urlsafe(24) + "\n").encode())
    os.close(fd)
    return f
