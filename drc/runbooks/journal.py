"""A runbook's journal: every event of one run, appended and fsynced as it happens.

One JSON-lines file per run in `<records_dir>/runbooks/<run_id>.jsonl`. The engine writes an event
before and after each step (start, end, result, what the check read), so after siaga is killed at
any point a re-run reads here which steps are done, which one was interrupted, and whether the run
was going forward or rolling back. A run is open until its `end` event. The same file is the
step-by-step record the SOP asks for (start and end of each step).
"""

from __future__ import annotations

import datetime as dt
import getpass
import socket
from dataclasses import dataclass, field
from pathlib import Path

from drc.records import store

SUBDIR = "runbooks"
# The outcomes that close a run.
FINISHED, ROLLED_BACK, REFUSED = "finished", "rolled-back", "refused"


def now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="milliseconds")


@dataclass
class Journal:
    path: Path
    run_id: str
    events: list[dict] = field(default_factory=list)

    @classmethod
    def new(cls, directory: Path, runbook: str, target: str) -> Journal:
        stamp = dt.datetime.now().astimezone().strftime("%Y%m%dT%H%M%S")
        run_id = f"{runbook}-{target}-{stamp}"
        return cls(directory / SUBDIR / f"{run_id}.jsonl", run_id)

    @classmethod
    def load(cls, path: Path) -> Journal:
        return cls(path, path.stem, store.read(path))

    def write(self, event: str, **data) -> dict:
        rec = {"id": f"{self.run_id}:{len(self.events)}", "run_id": self.run_id, "event": event, "at": now(), **data}
        if not store.append_new(self.path, [rec]):
            raise RuntimeError(f"journal {self.path}: event {rec['id']} already there (two writers?)")
        self.events.append(rec)
        return rec

    # --- what the events say -------------------------------------------------------------------
    @property
    def begin(self) -> dict:
        return next((e for e in self.events if e["event"] == "begin"), {})

    @property
    def outcome(self) -> str | None:
        return next((e["outcome"] for e in reversed(self.events) if e["event"] == "end"), None)

    @property
    def is_open(self) -> bool:
        return bool(self.events) and self.outcome is None

    @property
    def rolling_back(self) -> bool:
        return any(e["event"] == "rollback" for e in self.events)

    def step_state(self, step: str) -> str | None:
        """'done', 'failed' or 'started' (interrupted, or failed without an end) for the step's last attempt."""
        state = None
        for e in self.events:
            if e.get("step") != step:
                continue
            if e["event"] == "step-start":
                state = "started"
            elif e["event"] == "step-end":
                state = "done" if e["result"] in ("done", "already done") else "failed"
        return state

    def undone(self, step: str) -> bool:
        return any(e["event"] == "undo-end" and e.get("step") == step and e.get("result") == "done" for e in self.events)


def holder() -> dict:
    """Who runs a runbook: the workstation's user and name (for the lock and the records)."""
    return {"by": getpass.getuser(), "workstation": socket.gethostname()}


def runs(directory: Path, runbook: str | None = None) -> list[Journal]:
    """Every journal, oldest first (a run id sorts by its start time within one runbook)."""
    out = [Journal.load(p) for p in sorted((directory / SUBDIR).glob("*.jsonl"))]
    return [j for j in out if runbook is None or j.begin.get("runbook") == runbook]


def open_runs(directory: Path) -> list[Journal]:
    return [j for j in runs(directory) if j.is_open]
