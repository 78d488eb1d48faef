"""The direction of imports that docs/architecture.md draws, held by reading every module's imports
(top level and inside functions) and by importing the model in a clean interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
THIRD_PARTY_REMOTE = ("pyinfra", "pyinfra_cli", "fabric", "paramiko", "invoke", "gevent")
COMMANDS = ("drc.cli", "drc.status", "drc.backup", "drc.runbooks", "drc.lab", "drc.secrets", "drc.probe", "drc.logbook", "drc.capacity")
ROLE_DEPLOY_CODE = tuple(f"roles.{r.name}.{part}" for r in (REPO / "roles").iterdir() if (r / "defaults.py").exists()
                         for part in ("deploy", "operations", "facts"))

# (modules this rule is about, modules they may not import, why)
RULES: list[tuple[tuple[str, ...], tuple[str, ...], str]] = [
    (("drc.site",), THIRD_PARTY_REMOTE + COMMANDS + ("drc.hosts", "drc.records") + ROLE_DEPLOY_CODE + ("roles.managed_files", "roles.packages", "roles.workstation_secrets"),
     "the model loads and validates a site file touching no host (siaga check, inventories)"),
    (("drc.records",), THIRD_PARTY_REMOTE + COMMANDS + ("drc.hosts",), "records and reports are data, not commands"),
    (("drc.hosts",), COMMANDS, "reaching hosts serves the commands, never the reverse"),
    (("drc.status",), ("drc.cli", "drc.backup", "drc.runbooks", "drc.lab"), "status reads; it drives nothing"),
    (("drc.backup",), ("drc.cli", "drc.status", "drc.runbooks", "drc.lab", "drc.secrets"), "backup commands stand beside status"),
    (("drc.secrets",), ("drc.cli", "drc.status", "drc.runbooks", "drc.lab"), "secrets commands stand beside backup (they may read its media rules)"),
    (("drc.runbooks",), ("drc.cli", "drc.lab"), "runbooks run on production; the lab is for tests"),
    (("drc.workstation",), ("drc.cli", "drc.status", "drc.runbooks", "drc.lab"),
     "the workstation's copy on the DRC serves the commands and the runbooks, never the reverse"),
    (("drc.traffic",), THIRD_PARTY_REMOTE + COMMANDS + ("drc.hosts", "drc.records"),
     "the traffic switch speaks DNS (or runs the site's command) and no SSH; runbooks use it"),
    (("drc.probe",), ("drc.cli", "drc.status", "drc.backup", "drc.runbooks", "drc.lab", "drc.secrets"),
     "the probe is a command beside the others; bench/ and the tests drive it"),
    (("drc.probe.writer",), THIRD_PARTY_REMOTE + ("drc.hosts",),
     "the probe runs outside both sites (the outsider's network), with no SSH key"),
    (("drc.logbook",), ("drc.cli", "drc.status", "drc.backup", "drc.runbooks", "drc.lab", "drc.secrets", "drc.probe"),
     "the logbook is a command beside the others"),
    (("drc.capacity",), THIRD_PARTY_REMOTE + ("drc.cli", "drc.status", "drc.backup", "drc.runbooks", "drc.lab", "drc.secrets", "drc.logbook", "drc.hosts"),
     "the capacity report reads Prometheus's HTTP API (no SSH); a command beside the others"),
    (("roles", "deploys"), COMMANDS + ("drc.records",), "roles and deploys converge hosts; they never call a command"),
]
# Who may import the lab at all.
LAB_IMPORTERS = ("drc.lab", "drc.cli", "tests", "bench", "inventory.lab")


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module a source imports, anywhere in it; `from a import b` counts as a and a.b."""
    out: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return out


def python_files() -> list[Path]:
    roots = ("drc", "roles", "deploys", "inventory", "tests", "bench")
    return sorted(p for root in roots for p in (REPO / root).rglob("*.py")
                  if "peers" not in p.parts and not any(part.startswith(".") for part in p.relative_to(REPO).parts))


def host_programs() -> list[Path]:
    """Programs that run on the hosts: drc/hostside/*.py and the roles' files/ with a python shebang."""
    found = [p for p in (REPO / "drc/hostside").glob("*.py") if p.name != "__init__.py"]
    for p in (REPO / "roles").glob("*/files/*"):
        if p.is_file() and p.read_bytes().startswith(b"#!/usr/bin/python3"):
            found.append(p)
    return sorted(found)


def under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(module: str, imported: set[str]) -> list[str]:
    out = []
    for owners, forbidden, why in RULES:
        if under(module, owners):
            out += [f"{module} imports {name}: {why}" for name in sorted(imported) if under(name, forbidden)]
    if not under(module, LAB_IMPORTERS):
        out += [f"{module} imports {name}: only the lab command, tests and bench use the lab"
                for name in sorted(imported) if under(name, ("drc.lab",))]
    return out


def test_the_checker_sees_a_violation():
    # Inside a function, relative, and `from package import module` forms are all seen.
    src = "def f():\n    from drc import lab\n    from ..hosts import remote\n    import pyinfra.api\n"
    found = violations("drc.site.model", imports_of(src, "drc.site.model"))
    assert any("drc.lab" in v for v in found) and any("drc.hosts" in v for v in found) and any("pyinfra" in v for v in found)
    assert violations("roles.base.deploy", {"drc.backup.command"})
    assert not violations("roles.base.deploy", {"drc.site", "pyinfra.api"})


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_imports_point_the_way_the_architecture_says(path):
    module = module_name(path)
    assert violations(module, imports_of(path.read_text(), module, path.name == "__init__.py")) == []


@pytest.mark.parametrize("path", host_programs(), ids=lambda p: str(p.relative_to(REPO)))
def test_host_programs_use_the_standard_library_only(path):
    """They run with the host's Debian python3: nothing of siaga's, nothing from PyPI."""
    imported = {name.split(".")[0] for name in imports_of(path.read_text(), "hostprogram")}
    foreign = sorted(n for n in imported if n and n not in sys.stdlib_module_names)
    # psycopg2 is Debian's python3-psycopg2, installed by the roles where a program needs it.
    assert [n for n in foreign if n != "psycopg2"] == []


def test_loading_and_checking_a_site_imports_no_remote_library():
    code = ("import sys; from drc.site import load_site; from drc.site import check; "
            "load_site('inventory/production.example.yaml'); "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {THIRD_PARTY_REMOTE!r}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
