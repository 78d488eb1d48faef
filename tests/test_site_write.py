"""The site file written back after a runbook: active_site changed, comments kept, the result
validated before the file is replaced (issue 10 point 2)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from drc.site import SiteError, load_site
from drc.site.write import set_active_site

EXAMPLE = Path(__file__).resolve().parent.parent / "inventory" / "production.example.yaml"


def test_the_active_site_moves_and_every_comment_stays(tmp_path):
    path = tmp_path / "site.yaml"
    shutil.copy(EXAMPLE, path)
    before = path.read_text()
    site = set_active_site(path, "drc")
    after = path.read_text()
    assert site.active_site == "drc" and site.backup.repository_site == "primary"
    assert load_site(path).replication.source_site == "drc"
    comments = lambda text: [ln.strip() for ln in text.splitlines() if ln.strip().startswith("#")]  # noqa: E731
    assert comments(after) == comments(before) and len(comments(before)) > 20
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert changed == [("active_site: primary", "active_site: drc")]
    set_active_site(path, "primary")
    assert path.read_text() == before


def test_settings_written_out_that_follow_the_active_site_move_with_it(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text(EXAMPLE.read_text() + "replication:\n  source_site: primary  # follows active_site\n")
    set_active_site(path, "drc")
    assert re.search(r"\n  source_site: drc +# follows active_site\n", path.read_text())
    assert load_site(path).replication.source_site == "drc"


def test_a_file_that_would_not_validate_is_left_as_it_was(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text(EXAMPLE.read_text() + "backup:\n  bogus_key: 1\n")
    before = path.read_text()
    with pytest.raises(SiteError, match="bogus_key"):
        set_active_site(path, "drc")
    assert path.read_text() == before and [p.name for p in tmp_path.iterdir()] == ["site.yaml"]


def test_a_failover_marks_the_lost_site_and_the_repository_stays_at_the_serving_site(tmp_path):
    # SOP EM-3.2-3.5, BK-9: while the main site is lost, backups go into the DRC's repository.
    path = tmp_path / "site.yaml"
    shutil.copy(EXAMPLE, path)
    before = path.read_text()
    site = set_active_site(path, "drc", lost="primary")
    assert site.lost_site == "primary" and site.serving_alone and site.lost_hosts == site.hosts_in("primary")
    assert site.backup.repository_site == "drc" and site.replication.source_site == "drc"
    changed = [(a, b) for a, b in zip(before.splitlines(), path.read_text().splitlines()) if a != b]
    assert changed[0] == ("active_site: primary", "active_site: drc") and "\nactive_site: drc\nlost_site: primary\n\n" in path.read_text()
    # The fail-back takes the mark away: two sites again, the repository away from the data.
    site = set_active_site(path, "drc")
    assert site.lost_site is None and site.backup.repository_site == "primary" and not re.search(r"^lost_site:", path.read_text(), re.M)
    set_active_site(path, "primary")
    assert path.read_text() == before  # every comment back in its place


def test_a_lost_site_that_serves_is_refused_naming_the_key(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text(EXAMPLE.read_text().replace("active_site: primary", "active_site: primary\nlost_site: primary"))
    with pytest.raises(SiteError, match="lost_site.*active site"):
        load_site(path)
    path.write_text(EXAMPLE.read_text().replace("active_site: primary", "active_site: primary\nlost_site: moon"))
    with pytest.raises(SiteError, match="lost_site.*not a site"):
        load_site(path)
