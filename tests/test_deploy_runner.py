"""Deploy results from pyinfra's API (drc.hosts.run_deploy, drc.hosts.deploy) and `siaga deploy`,
without the lab: the states read from pyinfra's own state on this machine (@local), the result
file's reading, the idempotence check, bad input refused before any host, packaging."""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from drc import cli
from drc.hosts.deploy import (DEPLOYS, DeployResult, OpResult, deploys_dir, no_change_problem, read_result,
                              resolve_deploy, run_deploy)

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_SITE = REPO / "inventory/production.example.yaml"

# pyinfra's API on this machine through its @local connector: three operations whose outcome is
# known (a new file, a file already as wanted, a command that fails), read by run_deploy.collect.
LOCAL_RUN = r"""
import json, sys
from gevent import monkey
monkey.patch_all()
from io import StringIO
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.operation import add_op
from pyinfra.api.operations import run_ops
from pyinfra.operations import files, server
from drc.hosts.run_deploy import collect

d, dry = sys.argv[1], sys.argv[2] == "dry"
open(f"{d}/same", "w").write("same\n")
state = State(check_for_changes=dry)
state.init(Inventory((["@local"], {})), Config())
connect_all(state)
add_op(state, files.put, name="A new file", src=StringIO("new\n"), dest=f"{d}/new")
add_op(state, files.put, name="A file as wanted", src=StringIO("same\n"), dest=f"{d}/same")
add_op(state, server.shell, name="A command that fails", commands=["echo broken >&2; exit 3"])
add_op(state, files.put, name="After the failure", src=StringIO("late\n"), dest=f"{d}/late")
if not dry:
    try:
        run_ops(state)
    except PyinfraError:  # the only host failed: "No hosts remaining!"
        pass
print(json.dumps(collect(state, dry)))
"""


def local_states(tmp_path: Path, mode: str) -> tuple[dict, dict]:
    out = subprocess.run([sys.executable, "-c", LOCAL_RUN, str(tmp_path), mode], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    hosts, ops = json.loads(out.stdout.strip().splitlines()[-1])
    return hosts, {r["op"]: r for r in ops}


def test_applied_operations_are_read_per_host_from_pyinfras_state(tmp_path):
    hosts, ops = local_states(tmp_path, "apply")
    assert hosts == {"@local": "failed"}
    assert {name: r["state"] for name, r in ops.items()} == {
        "A new file": "changed", "A file as wanted": "no change", "A command that fails": "error", "After the failure": "not run"}
    assert "broken" in ops["A command that fails"]["stderr"]
    assert (tmp_path / "new").read_text() == "new\n" and not (tmp_path / "late").exists()


def test_dry_run_reads_what_would_change_and_changes_nothing(tmp_path):
    hosts, ops = local_states(tmp_path, "dry")
    assert hosts == {"@local": "ok"}
    assert {name: r["state"] for name, r in ops.items()} == {
        "A new file": "will change", "A file as wanted": "no change", "A command that fails": "will change",
        "After the failure": "will change"}
    assert not (tmp_path / "new").exists()


def result(*ops: tuple[str, str, str], returncode: int = 0, dry: bool = False) -> DeployResult:
    hosts = {h: "ok" for h, _, _ in ops}
    return DeployResult(returncode, "log", 1.0, dry=dry, operations=[OpResult(*o) for o in ops], hosts=hosts)


def test_changed_lists_each_operation_once_and_skips_conditional_changes():
    r = result(("primary", "Install sudo", "changed"), ("drc", "Install sudo", "changed"),
               ("drc", "Reload sshd", "will change if"), ("drc", "Banner", "no change"))
    assert r.changed == ["Install sudo"]
    assert [c.host for c in r.changes] == ["primary", "drc"]
    assert r.counts() == {"primary": {"changed": 1}, "drc": {"changed": 1, "will change if": 1, "no change": 1}}


def test_the_idempotence_check():
    assert no_change_problem(result(("primary", "Banner", "no change"), ("drc", "Banner", "no change"))) is None
    problem = no_change_problem(result(("primary", "Banner", "no change"), ("drc", "Timestamp", "changed")))
    assert problem == "the re-run changed drc: Timestamp"
    assert "would change primary: Banner" in no_change_problem(result(("primary", "Banner", "will change"), dry=True))
    assert "failed (exit 1" in no_change_problem(result(("primary", "Banner", "no change"), returncode=1))
    # A run whose operations were not read is never a no-change run.
    assert "no operation" in no_change_problem(result())


def test_a_missing_or_unreadable_result_is_a_failure(tmp_path):
    missing = read_result(tmp_path / "none.json", 0, "log\n", 1.0)
    assert not missing.ok and missing.changed == [] and "no readable deploy result" in missing.output
    assert no_change_problem(missing).startswith("the re-run failed")
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"hosts": {"primary": "ok"}, "operations": [{"host": "primary", "op": "x", "state": "done"}]}))
    assert not read_result(odd, 0, "", 1.0).ok
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"dry": False, "error": None, "hosts": {"primary": "ok"},
                                "operations": [{"host": "primary", "op": "x", "state": "changed"}]}))
    assert read_result(good, 0, "", 1.0).changed == ["x"]


def site_with(tmp_path: Path, **connection) -> Path:
    data = yaml.safe_load(EXAMPLE_SITE.read_text())
    data["connection"].update(connection)
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_child_refuses_bad_input_before_contacting_any_host(tmp_path):
    r = run_deploy(site_with(tmp_path, port=0), "remote-access")
    assert r.returncode == 2 and "site.yaml:" in r.output and "connection.port" in r.output, r.output
    assert "Connecting" not in r.output and r.operations == [] and r.hosts == {}
    r = run_deploy(site_with(tmp_path, key_file=str(tmp_path / "no-key")), "remote-access")
    assert r.returncode == 2 and "key 'connection.key_file': no such file" in r.output, r.output
    r = run_deploy(EXAMPLE_SITE, "remote-access", "--limit", "nosuchhost")
    assert r.returncode == 2 and "--limit 'nosuchhost' matches no host of the site" in r.output, r.output
    r = run_deploy(EXAMPLE_SITE, tmp_path / "missing.py")
    assert r.returncode == 2 and "no deploy file" in r.output, r.output


def test_siaga_deploy_refuses_a_bad_site_or_limit(tmp_path, capsys):
    bad = site_with(tmp_path, port=0)
    assert cli.main(["deploy", str(bad), "--dry"]) == 2
    # The console wraps long lines (a long tmp path under pytest-xdist): read it unwrapped.
    assert "site.yaml:" in capsys.readouterr().err.replace("\n", "")
    assert cli.main(["deploy", str(EXAMPLE_SITE), "--limit", "nosuchhost"]) == 2
    assert "not a host or group" in capsys.readouterr().out.replace("\n", " ")
    with pytest.raises(SystemExit):
        cli.main(["deploy", str(EXAMPLE_SITE), "--only", "firewall"])


def test_deploys_are_found_by_name_and_as_deploys_paths():
    assert {resolve_deploy(name).name for name in DEPLOYS} == {"site.py", "remote_access.py", "data_tier.py", "security.py", "monitoring.py"}
    assert resolve_deploy("deploys/data_tier.py") == deploys_dir() / "data_tier.py"
    # The site deploy includes its parts next to itself, not relative to the current directory.
    assert 'local.include("./remote_access.py")' in (deploys_dir() / "site.py").read_text()


def test_the_caller_is_never_patched_by_gevent():
    code = ("import sys, drc.cli, drc.hosts.deploy, drc.hosts.command; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'gevent', 'pyinfra', 'pyinfra_cli'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_package_ships_the_deploys_and_every_file_the_roles_use():
    """What pyproject.toml puts into a wheel (packages.find + package-data globs, as setuptools
    reads them) covers every non-Python file of drc/, roles/ and deploys/."""
    conf = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    include = conf["packages"]["find"]["include"]
    patterns = conf["package-data"]["*"]

    def package_of(path: Path) -> Path:
        d = path.parent
        while not (d / "__init__.py").exists():
            d = d.parent
        return d

    def shipped(path: Path) -> bool:
        pkg = package_of(path)
        name = ".".join(pkg.relative_to(REPO).parts)
        in_wheel = any(fnmatch.fnmatchcase(name, pat) for pat in include)
        return in_wheel and (path.suffix == ".py" or any(path in set(pkg.glob(p)) for p in patterns))

    files = [p for root in ("drc", "roles", "deploys") for p in (REPO / root).rglob("*")
             if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]
    assert {"site.py", "remote_access.py", "data_tier.py", "security.py", "monitoring.py"} <= {p.name for p in files if p.parent.name == "deploys"}
    assert [str(p.relative_to(REPO)) for p in files if not shipped(p)] == []


def test_the_summary_counts_states_per_host():
    r = result(("primary", "Install sudo", "changed"), ("drc", "Install sudo", "no change"))
    console = Console(record=True, width=200)
    from drc.hosts.command import print_summary

    print_summary(r, console)
    text = console.export_text()
    assert "changed: Install sudo (primary)" in text
    assert "ok: 1 operation(s) changed on 2 host(s)" in text
