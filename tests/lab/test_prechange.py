"""SOP BK-2 on the real lab: a deploy that changes the database's configuration takes a backup of
the database first, on the repository host (a new pgBackRest label, recorded with trigger
pre-change and its reason), shows that step in --dry as a change with its reason, and stops,
changing nothing on any host, when that backup fails. The lab is deployed back to its own site
file at the end, so later tests see it converged. Issue 8 point 5."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml

from tests.helpers import lab_host, pg_version, run_deploy

PGBR = "runuser -u siagabak -- pgbackrest --config-path=/etc/siaga/pgbackrest-repo --stanza=spse --output=json info"
LOG = "/var/log/siaga/backup.jsonl"
STEP = "Pre-change backup (SOP BK-2)"


def site_with(lab, directory: Path, **postgresql) -> Path:
    """A copy of the lab's site file with these postgresql settings."""
    site = yaml.safe_load(Path(lab.site_file).read_text())
    site["postgresql"] = {**(site.get("postgresql") or {}), **postgresql}
    path = directory / "site-changed.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path


def labels(drc) -> list[str]:
    return [b["label"] for b in json.loads(drc.check_output(PGBR))[0].get("backup") or []]


def records(h) -> list[dict]:
    f = h.file(LOG)
    return [json.loads(x) for x in f.content_string.splitlines() if x.strip()] if f.exists else []


def sha(h, path: str) -> str:
    return h.check_output(f"sha256sum {path}").split()[0]


@pytest.fixture(scope="module")
def conf(lab) -> str:
    """The cluster's siaga.conf, under the lab's PostgreSQL major."""
    return f"/etc/postgresql/{pg_version(lab)}/main/conf.d/siaga.conf"


@pytest.fixture(scope="module")
def lab_hosts(lab, deployed, tmp_path_factory, conf):
    hosts = {"primary": lab_host(lab, "primary"), "drc": lab_host(lab, "drc")}
    original = sha(hosts["primary"], conf)
    yield hosts
    # The lab back to its own site file (that deploy takes its own pre-change backup).
    lab.set_wan(cut=False)
    back = run_deploy(lab, "deploys/data_tier.py")
    assert back.ok, back.output[-4000:]
    assert sha(hosts["primary"], conf) == original


@pytest.fixture(scope="module")
def changed(lab, tmp_path_factory) -> Path:
    return site_with(lab, tmp_path_factory.mktemp("bk2"), log_min_duration_statement="3s")


def step_of(result, host: str):
    return next((r for r in result.operations if r.host == host and STEP in r.op), None)


def test_dry_run_shows_the_database_backup_as_a_change_with_its_reason(lab, lab_hosts, changed, conf):
    p, d = lab_hosts["primary"], lab_hosts["drc"]
    conf_before, labels_before = sha(p, conf), labels(d)
    res = run_deploy(lab, "deploys/data_tier.py", "--dry", site_file=changed)
    assert res.ok, res.output[-4000:]
    step = step_of(res, "drc")
    assert step and step.state == "will change", [(r.host, r.op, r.state) for r in res.operations][:20]
    assert "a backup of the database" in step.op and f"because {conf} changes" in step.op, step.op
    assert step_of(res, "primary").state == "will change"
    ops = [r.op for r in res.operations if r.host == "primary"]
    conf_step = next(i for i, op in enumerate(ops) if op.endswith(f"{conf}") or f"| {conf}" in op)
    assert ops.index(step_of(res, "primary").op) < conf_step  # the backup comes before the change
    assert (sha(p, conf), labels(d)) == (conf_before, labels_before)  # --dry changed nothing
    print(f"--dry: {step.op}")


def test_a_failed_prechange_backup_stops_the_deploy_and_changes_nothing(lab, lab_hosts, changed, conf):
    p, d = lab_hosts["primary"], lab_hosts["drc"]
    conf_before, labels_before, n_before = sha(p, conf), labels(d), len(records(d))
    lab.set_wan(cut=True)  # the repository host cannot reach the primary: pgBackRest fails for real
    try:
        res = run_deploy(lab, "deploys/data_tier.py", site_file=changed)
    finally:
        lab.set_wan(cut=False)
    assert not res.ok, res.output[-4000:]
    assert step_of(res, "drc").state == "error"
    assert [(r.host, r.op) for r in res.changes] == [], res.changes  # no change on any host
    assert sha(p, conf) == conf_before and labels(d) == labels_before
    new = records(d)[n_before:]
    assert [(r["set"], r["trigger"], r["result"]) for r in new] == [("db", "pre-change", "failure")], new
    print(f"failed pre-change backup stopped the deploy: {new[0]['error'][:200]}")


def test_a_database_config_change_takes_a_database_backup_first(lab, lab_hosts, changed, conf):
    p, d = lab_hosts["primary"], lab_hosts["drc"]
    labels_before, nd, np_ = labels(d), len(records(d)), len(records(p))
    res = run_deploy(lab, "deploys/data_tier.py", site_file=changed)
    assert res.ok, res.output[-4000:]
    new_labels = [x for x in labels(d) if x not in labels_before]
    assert len(new_labels) == 1, (labels_before, labels(d))
    db = [r for r in records(d)[nd:] if r["set"] == "db"]
    assert [(r["trigger"], r["result"], r["details"]["label"]) for r in db] == [("pre-change", "success", new_labels[0])]
    assert f"{conf} changes" in db[0]["details"]["why"]
    files = [(r["set"], r["trigger"], r["result"]) for r in records(p)[np_:]]
    assert files == [("system", "pre-change", "success")], files
    # The change went ahead only after the backup had ended.
    assert "log_min_duration_statement = '3s'" in p.file(conf).content_string
    changed_at = int(p.check_output(f"stat -c %Y {conf}"))
    assert dt.datetime.fromisoformat(db[0]["end"]).timestamp() <= changed_at + 1
    print(f"pre-change backup {new_labels[0]} ({db[0]['duration_s']} s) before {conf} changed")
