"""SOP BK-2, the pre-change backup, without a host: what the site deploy backs up first and why,
decided from the data host's files (roles/backup/prechange.py), and the runner's part of it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drc.site.data_tier import load_data_tier
from drc.site.platform import DEFAULT_PLATFORM, PLATFORMS
from roles.backup.prechange import decide, watched_files
from tests.test_backup_units import load_runner, run_args

PRIMARY_NODE = {"running": True, "in_recovery": False, "user_databases": ["epns_prod"]}


@pytest.fixture(scope="module")
def tier():
    return load_data_tier("inventory/production.example.yaml")


def converged(tier):
    """The data host as a converged deploy leaves it: every watched file as the roles render it."""
    src = tier.db_source_hosts[0]
    return src, {w.path: w.sha1 for w in watched_files(tier, src)}


def plan_with(tier, files: dict, schema=5, latest=5, node=PRIMARY_NODE):
    return decide(tier, watched_files(tier, tier.db_source_hosts[0]), files.get, schema, latest, node)


def test_a_converged_host_needs_no_backup(tier):
    _, files = converged(tier)
    plan = plan_with(tier, files)
    assert not plan.needed and plan.sets_on(plan.repository_host) == [] and plan.sets_on(plan.data_host) == []
    assert "nothing" in plan.step_name(plan.data_host)


def test_a_database_config_change_backs_up_the_database_on_the_repository_host_first(tier):
    src, files = converged(tier)
    conf = next(p for p in files if p.endswith("conf.d/siaga.conf"))
    plan = plan_with(tier, {**files, conf: "0" * 40})
    assert plan.needed and plan.reasons == [f"{conf} changes"]
    assert plan.repository_host != src
    assert plan.sets_on(plan.repository_host) == ["db"]
    assert plan.sets_on(src) == ["system"]  # before_change sets; the uploads are not touched by a config change
    name = plan.step_name(plan.repository_host)
    assert "a backup of the database" in name and f"because {conf} changes" in name


def test_an_application_change_also_backs_up_the_uploads(tier):
    _, files = converged(tier)
    unit = next(p for p in files if p.startswith("/etc/systemd/system/"))
    plan = plan_with(tier, {**files, unit: None})
    assert plan.reasons == [f"{unit} is added"] and plan.sets_on(plan.data_host) == ["uploads", "system"]
    assert plan.sets_on(plan.repository_host) == ["db"]
    mig = plan_with(tier, files, schema=3, latest=5)
    assert mig.needed and "migrated (3 -> 5)" in mig.because() and mig.sets_on(mig.data_host) == ["uploads", "system"]


def test_a_file_the_role_removes_counts_when_it_is_there(tier):
    _, files = converged(tier)
    standby = next(p for p in files if p.endswith("siaga-standby.conf"))
    plan = plan_with(tier, {**files, standby: "1" * 40})
    assert plan.reasons == [f"{standby} is removed"]


@pytest.mark.parametrize("node", [None, {"running": False, "in_recovery": None, "user_databases": []},
                                  {"running": True, "in_recovery": True, "user_databases": ["epns_prod"]},
                                  {"running": True, "in_recovery": False, "user_databases": []}])
def test_no_backup_without_a_primary_holding_data(tier, node):
    plan = plan_with(tier, {}, node=node)  # every file would change
    assert not plan.needed and "no database holding data" in plan.not_needed


def test_the_watched_postgresql_files_are_the_ones_the_role_writes(tier):
    from roles.postgresql.deploy import cluster_files
    from roles.workstation_secrets import sha1_text

    src = tier.db_source_hosts[0]
    written = cluster_files(tier.site, src, tier.postgresql, tier.replication.user, [tier.spse_app.user])
    watched = {w.path: w.sha1 for w in watched_files(tier, src)}
    for dest, (_, content) in written.items():
        assert watched[dest] == sha1_text(content)


def runner_cfg(tmp_path, runs):
    return {"log_file": str(tmp_path / "backup.jsonl"), "host": "primary", "runs": runs, "lock_dir": str(tmp_path),
            "restic": {"sets": [{"name": "uploads", "paths": ["/nonexistent-u"]},
                                {"name": "system", "paths": ["/nonexistent-s"], "before_change": True}]}}


def test_prechange_only_runs_exactly_the_named_sets_and_records_why(tmp_path, capsys):
    runner = load_runner()
    cfg = runner_cfg(tmp_path, ["uploads", "system", "prune"])
    why = f"because /etc/postgresql/{PLATFORMS[DEFAULT_PLATFORM].postgresql}/main/conf.d/siaga.conf changes"
    assert runner.cmd_run(cfg, run_args(set="prechange", only=["system"], why=why, trigger="pre-change")) == 1
    recs = [json.loads(x) for x in Path(cfg["log_file"]).read_text().splitlines()]
    assert [(r["set"], r["trigger"], r["details"]["why"]) for r in recs] == [("system", "pre-change", why)]
    assert "do not exist" in recs[0]["error"]  # it really ran (and failed on the missing path)


def test_prechange_only_with_a_set_of_another_host_fails(tmp_path):
    runner = load_runner()
    cfg = runner_cfg(tmp_path, ["uploads", "system", "prune"])
    assert runner.cmd_run(cfg, run_args(set="prechange", only=["db"], why=None)) == 1
    r = json.loads(Path(cfg["log_file"]).read_text())
    assert r["result"] == "failure" and "do not run on this host" in r["error"]


def test_plain_prechange_says_the_database_runs_elsewhere(tmp_path, capsys):
    runner = load_runner()
    cfg = runner_cfg(tmp_path, ["uploads", "system", "prune"])
    runner.cmd_run(cfg, run_args(set="prechange", only=None, why=None))
    assert "NOTE db: not on this host" in capsys.readouterr().out
