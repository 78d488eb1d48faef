"""What the lab's services (its DNS, its alert receivers) need of the machine and of their lab: a
command run with its error said, a condition polled to a deadline, a file written into a host's
root from the workstation, and the lab seen only as its hosts' roots and SSH commands (`LabHosts`),
so that those services never import the lab that raises them (drc/lab/lab.py)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Callable, Protocol


class LabError(RuntimeError):
    pass


class LabHosts(Protocol):
    """A lab as its services see it (drc/lab/lab.py's Lab is one)."""

    name: str
    dir: Path
    site_file: Path

    def rootfs(self, host: str) -> Path: ...

    def ssh_cmd(self, host: str, user: str | None = None, key: Path | None = None) -> list[str]: ...


def run(cmd: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a command, capturing output; raise LabError with its stderr on failure."""
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def wait_for(what: str, condition: Callable[[], bool], deadline_s: float, interval_s: float = 0.2) -> None:
    """Poll `condition` until true or the deadline passes (never a fixed sleep)."""
    end = time.monotonic() + deadline_s
    while True:
        if condition():
            return
        if time.monotonic() > end:
            raise LabError(f"timed out after {deadline_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


def write_into_root(path: Path, text: str, mode: int, gid: int | None = None) -> bool:
    """Write a file into a host's root (from the workstation); True when it changed."""
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.siaga")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    if gid is not None:
        os.chown(tmp, 0, gid)
    tmp.replace(path)
    return True
