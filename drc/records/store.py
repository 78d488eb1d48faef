"""Records on the admin workstation: append-only JSON lines, one file per kind, deduplicated by id.

Where: the site's `records_dir`, by default `$XDG_STATE_HOME/siaga/<site>/records`
(~/.local/state/siaga/<site>/records), outside any repository. A record once written is never
rewritten: collecting again appends only records whose `id` is not there yet. SOP BK-3, BK-7.

Every command finds the directory through `records_dir(site)`, so this module also notes which
records directories the running command used: `siaga` pushes those to the DRC's copy of the
workstation after the command (issue 11 point 4: drc/records/mirror.py, drc/workstation/mirror.py).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable
from pathlib import Path

from drc.site import Site

# Records directories handed out since the command began (forget_used): what the mirror looks at.
_used: set[Path] = set()


def records_path(site: Site) -> Path:
    """Where the site's records live (nothing created)."""
    return site.records_dir or Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local/state") / "siaga" / site.site / "records"


def records_dir(site: Site) -> Path:
    base = records_path(site)
    base.mkdir(parents=True, exist_ok=True, mode=0o750)
    _used.add(base.resolve())
    return base


def used() -> set[Path]:
    """The records directories this command used (each possibly written)."""
    return set(_used)


def forget_used() -> None:
    _used.clear()


def read(path: Path) -> list[dict]:
    """Every record of a JSON-lines file (a torn last line, from a crash, is skipped)."""
    out = []
    try:
        with open(path) as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
    except FileNotFoundError:
        pass
    return out


def append_new(path: Path, records: Iterable[dict]) -> list[dict]:
    """Append the records whose id the file does not hold yet, under a lock, fsynced.
    Returns the records appended."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        have = {r.get("id") for r in read(path)}
        new = []
        for r in records:
            if r.get("id") and r["id"] not in have:
                have.add(r["id"])
                new.append(r)
        if new:
            os.write(fd, "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in new).encode())
            os.fsync(fd)
        return new
    finally:
        os.close(fd)
