"""Run siaga's pyinfra deploys as an admin would, and read what each operation did on each host.

The deploy runs through pyinfra's Python API in a child process (`python -m drc.hosts.run_deploy`:
pyinfra patches the standard library with gevent, so it never runs inside the caller); the child
reads every operation's state per host from pyinfra's state and writes it as JSON. Nothing here
parses pyinfra's printed tables. This module imports neither pyinfra nor gevent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import drc

# The folder holding the drc package: the source checkout, or site-packages when installed.
REPO = Path(drc.__file__).resolve().parent.parent

# `siaga deploy --only NAME` and run_deploy("NAME"): the deploy entry files shipped with siaga.
DEPLOYS = {"site": "site.py", "remote-access": "remote_access.py", "data-tier": "data_tier.py", "security": "security.py", "monitoring": "monitoring.py"}

CHANGE_STATES = ("changed", "will change")  # "will change if" only fires after another change
KNOWN_STATES = ("changed", "no change", "error", "error (ignored)", "not run", "will change", "will change if")


def deploys_dir() -> Path:
    """siaga's deploy entry files (deploys/*.py), installed beside the drc package."""
    d = REPO / "deploys"
    if not (d / "site.py").is_file():
        raise FileNotFoundError(f"siaga's deploy files are missing: no {d / 'site.py'} (a broken installation?)")
    return d


def resolve_deploy(deploy: str | Path) -> Path:
    """A deploy given as a name (site, remote-access, data-tier), as `deploys/<file>.py` (siaga's
    own, wherever siaga is installed), or as any other path (relative to the current directory)."""
    if str(deploy) in DEPLOYS:
        return deploys_dir() / DEPLOYS[str(deploy)]
    p = Path(deploy)
    if not p.is_absolute() and len(p.parts) == 2 and p.parts[0] == "deploys":
        return deploys_dir() / p.name
    return p.resolve()


@dataclass(frozen=True)
class OpResult:
    """One operation on one host: its name as pyinfra shows it and its state (KNOWN_STATES)."""

    host: str
    op: str
    state: str
    stderr: str = ""


@dataclass
class DeployResult:
    returncode: int
    output: str  # the human-readable log: pyinfra's, with its error messages
    seconds: float
    dry: bool = False
    operations: list[OpResult] = field(default_factory=list)  # per host and operation, in run order
    hosts: dict[str, str] = field(default_factory=dict)  # host -> ok / failed / unreachable
    error: str | None = None  # why the deploy stopped, when it did

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def changes(self) -> list[OpResult]:
        """Per host: operations that changed (with --dry: will change) something."""
        return [r for r in self.operations if r.state in CHANGE_STATES]

    @property
    def changed(self) -> list[str]:
        """Operations that changed (or, with --dry, will change) something on at least one host."""
        return list(dict.fromkeys(r.op for r in self.changes))

    @property
    def errors(self) -> list[OpResult]:
        return [r for r in self.operations if r.state == "error"]

    def counts(self) -> dict[str, dict[str, int]]:
        """host -> state -> number of operations."""
        out: dict[str, dict[str, int]] = {h: {} for h in self.hosts}
        for r in self.operations:
            out.setdefault(r.host, {})
            out[r.host][r.state] = out[r.host].get(r.state, 0) + 1
        return out


def no_change_problem(rerun: DeployResult) -> str | None:
    """The idempotence check, for a re-run of a deploy on converged hosts: why it is not a no-change
    run, or None. A run that read no operation at all is never taken for a no-change run."""
    if not rerun.ok:
        return f"the re-run failed (exit {rerun.returncode}{': ' + rerun.error if rerun.error else ''})"
    if not rerun.operations:
        return "the re-run reported no operation at all, so nothing proves it changed nothing"
    if rerun.changes:
        verb = "would change" if rerun.dry else "changed"
        return f"the re-run {verb} " + "; ".join(f"{r.host}: {r.op}" for r in rerun.changes)
    return None


def idempotence_check(site_file: str | Path, deploy: str | Path = "deploys/site.py", *extra: str,
                      preview: bool = False, timeout: float = 1200) -> tuple[DeployResult, str | None]:
    """Run a deploy again on hosts it converged: the re-run and why it is not a no-change run (None
    when it is). With preview, a --dry --diff run must see nothing to change either. The one
    idempotence check of the tests, `make demo` and bench/."""
    again = run_deploy(site_file, deploy, *extra, timeout=timeout)
    problem = no_change_problem(again)
    if problem is None and preview:
        dry = run_deploy(site_file, deploy, *extra, "--dry", "--diff", timeout=timeout)
        problem = no_change_problem(dry)
        if problem is not None:
            again = dry
            problem = f"--dry: {problem}"
    return again, problem


def run_deploy(site_file: str | Path, deploy: str | Path = "deploys/site.py", *extra: str,
               env: dict | None = None, timeout: float = 1200,
               echo: Callable[[str], None] | None = None) -> DeployResult:
    """Run a deploy (see resolve_deploy) on the hosts of a site file; never raises for a failed run.

    extra: --dry, --diff, --limit HOST (pyinfra's meanings). The log is captured in the result and,
    when echo is given, passed to it line by line as it comes.
    """
    start = time.monotonic()
    path = resolve_deploy(deploy)
    child_env = {**os.environ, **(env or {}), "PYINFRA_PROGRESS": "off"}
    if (REPO / "pyproject.toml").is_file():  # a source checkout: the child imports this same tree
        child_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), child_env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory(prefix="siaga-deploy-") as tmp:
        result_file = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "drc.hosts.run_deploy", "--site", str(Path(site_file).expanduser()),
               "--result", str(result_file), *extra, str(path)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env,
                                start_new_session=True, preexec_fn=_die_with_parent)
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, kill)
        timer.start()
        lines = []
        try:
            for line in proc.stdout:
                lines.append(line)
                if echo:
                    echo(line.rstrip("\n"))
            returncode = proc.wait()
        except BaseException:  # e.g. Ctrl-C in `siaga deploy`: the deploy stops too, not left running
            stop(proc)
            raise
        finally:
            timer.cancel()
        output = "".join(lines)
        if timed_out.is_set():
            output += f"\nsiaga: the deploy was stopped after {timeout:.0f} s (timeout)\n"
            returncode = returncode or 124
        return read_result(result_file, returncode, output, time.monotonic() - start, dry="--dry" in extra)


def _die_with_parent() -> None:
    """In the deploy's child: killed when siaga dies (prctl PR_SET_PDEATHSIG), so a runbook killed
    mid-deploy and run again never has two deploys at work on the same hosts."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def stop(proc: subprocess.Popen) -> None:
    """Interrupt a deploy's process group as Ctrl-C would (pyinfra stops its greenlets), then kill it."""
    for sig, wait_s in ((signal.SIGINT, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait_s)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def read_result(result_file: Path, returncode: int, output: str, seconds: float, dry: bool = False) -> DeployResult:
    """The child's JSON result as a DeployResult. Missing or malformed results make the run a
    failure: a deploy whose results are unknown never passes for one that changed nothing."""
    try:
        data = json.loads(result_file.read_text())
        ops = [OpResult(r["host"], r["op"], r["state"], r.get("stderr", "")) for r in data["operations"]]
        unknown = sorted({r.state for r in ops} - set(KNOWN_STATES))
        if unknown:
            raise ValueError(f"unknown operation states {unknown}")
        return DeployResult(returncode, output, seconds, dry=bool(data.get("dry", dry)), operations=ops,
                            hosts=dict(data["hosts"]), error=data.get("error"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        why = f"siaga: no readable deploy result ({type(exc).__name__}: {exc})"
        return DeployResult(returncode or 1, f"{output}\n{why}\n", seconds, dry=dry, error=why)


def machine_load() -> str:
    """The load the benchmarks print beside each figure (the machine is shared)."""
    return f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores)"


def converged_lab(lab, name: str) -> DeployResult:
    """The benchmarks' starting point: lab `name` raised and converged by the site deploy. Prints
    the load first (the machine is shared) and, when the deploy fails, the tail of its output."""
    print("load average before: " + machine_load().removeprefix("load average "))
    lab.up(log=lambda _m: None)
    dep = run_deploy(lab.site_file)
    if dep.ok:
        print(f"lab '{name}' up and deployed ({dep.seconds:.0f} s for the deploy, {len(dep.changed)} operations changed)")
    else:
        print(dep.output[-6000:], file=sys.stderr)
        print(f"converging deploy failed (exit {dep.returncode})", file=sys.stderr)
    return dep


def release_lab(lab, keep: bool) -> None:
    """The benchmarks' end: the lab removed, or left up (with the command that removes it)."""
    if keep:
        print(f"lab '{lab.name}' left up: .venv/bin/siaga --lab {lab.name} lab down")
    else:
        lab.down(log=lambda _m: None)
