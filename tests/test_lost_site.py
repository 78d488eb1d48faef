"""A site lost in a disaster (`lost_site`, written by siaga failover): what follows from it, read
from the site file alone (SOP EM-3.2-3.5, BK-9)."""

from __future__ import annotations

import shutil
from pathlib import Path

from drc.backup.runs import backup_hosts
from drc.hosts.inventory import pyinfra_groups
from drc.site import load_site
from drc.site.data_tier import data_tier_of
from drc.site.write import set_active_site
from roles.backup.deploy import runner_config, timers
from roles.uploads_sync.topology import is_source, sends, target_hosts

EXAMPLE = Path(__file__).resolve().parent.parent / "inventory" / "production.example.yaml"


def lost_primary(tmp_path):
    path = tmp_path / "site.yaml"
    shutil.copy(EXAMPLE, path)
    return path, set_active_site(path, "drc", lost="primary")


def test_the_lost_sites_hosts_are_out_of_deploys_syncs_and_replication(tmp_path, capsys):
    path, site = lost_primary(tmp_path)
    old, new = site.hosts_in("primary")[0], site.hosts_in("drc")[0]
    groups = pyinfra_groups(path)
    assert groups["primary"] == [] and [n for n, _ in groups["drc"]] == [new]
    assert f"{old} left out" in capsys.readouterr().err
    tier = data_tier_of(site)
    assert tier.db_source_hosts == [new] and tier.db_standby_hosts == []  # no slot kept for the lost host
    # The serving host keeps its sync key and config (a secret is never dropped) but sends to nobody.
    assert target_hosts(site) == [] and is_source(site, new) and not sends(site, new)


def test_backups_go_on_at_the_serving_site_on_one_host(tmp_path):
    _, site = lost_primary(tmp_path)
    new = site.hosts_in("drc")[0]
    assert backup_hosts(site) == [new]
    runs = runner_config(data_tier_of(site), new, generation=1)["runs"]
    assert set(runs) == {*timers(site.backup)} - {"db-full", "db-incr"} | {"db"}
    # Two sites again: the repository away from the data, each host its own part.
    two = load_site(EXAMPLE)
    src, repo = two.hosts_in("primary")[0], two.hosts_in("drc")[0]
    assert runner_config(data_tier_of(two), repo, generation=1)["runs"] == ["db", "offline"]
    assert "db" not in runner_config(data_tier_of(two), src, generation=1)["runs"]
