"""`siaga check`: validates a site file and prints the plan per host; exit 0, or 2 on a bad file."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from drc import cli
from drc.site import load_site

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "inventory" / "production.example.yaml"


@pytest.fixture
def wide(monkeypatch):
    # Wide consoles so rich does not wrap the lines the tests look for; output goes to capsys.
    monkeypatch.setattr(cli, "console", Console(width=250))
    monkeypatch.setattr(cli, "err_console", Console(width=250, stderr=True))


def test_check_prints_the_plan_per_host(wide, capsys):
    assert cli.main(["check", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    for text in ("lpse-contoh", "spse-primary", "spse-drc", "10.10.1.10", "10.20.1.10", "primary (active)",
                 "base", "ssh_hardening", "firewall", "budi", "sari", "Asia/Jakarta", "198.51.100.0/28",
                 "rollback after 60 s", "Nothing was contacted"):
        assert text in out, text
    primary, drc = out.split("spse-primary: inbound")[1].split("spse-drc: inbound")
    assert "443/tcp" in primary and "anywhere" in primary
    assert "443/tcp" not in drc and "anywhere" not in drc  # web closed on the standby site
    assert "5432/tcp │ 10.20.1.10/32" in primary and "5432/tcp │ 10.10.1.10/32" in drc


def test_check_refuses_a_bad_file_with_exit_2(wide, capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("  - network: 10.10.0.0/24 ", "  - network: 10.10.0.300/24 "))
    assert cli.main(["check", str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{bad}:" in captured.err and "key 'ssh_allowlist[0].network'" in captured.err and "Fix: " in captured.err


def test_check_missing_file_exit_2(wide, capsys, tmp_path):
    assert cli.main(["check", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read the site file" in capsys.readouterr().err


def test_production_example_validates():
    site = load_site(EXAMPLE)
    assert site.site_of == {"spse-primary": "primary", "spse-drc": "drc"}
    assert site.connection.user in {a.name for a in site.admins}
    assert all("REPLACE" in key for a in site.admins for key in a.ssh_keys)
