"""The runbook engine: an ordered table of steps, each proven by a check, journaled, resumable.

A runbook reads as one table (after pg_auto_failover's keeper): each `Step` has a name, the SOP ID it
serves, what it does, an `action`, a `check` that proves it worked (read from the hosts' actual
state, polled until a deadline), an optional `guard` that must hold before the action runs, and an
optional `undo`. The engine:

1. runs the preflight checks; any failure refuses the run (journaled) and touches nothing;
   `dry_run` prints the plan with the live preflight results and stops; a `confirm` callback (a
   failover's decision) sees the results and may decline, which changes nothing;
2. takes the lock on the hosts (drc.runbooks.lock), so no second runbook runs at once;
3. runs each step: guard → action → check; every step's start and end, result and what the check
   read go to the journal before the next step starts;
4. on a failure before a `no_return` step is done, rolls back (the undos of the done steps, newest
   first) to the state it started from; after one, it stops where it is, keeps the lock, and says
   so: a re-run goes forward from there (promoting twice, or un-promoting, are worse than waiting
   for the operator);
5. after an interruption (siaga killed anywhere), a re-run finds the open journal and resumes it:
   done steps are not repeated; the interrupted step is re-checked, and its action runs again only
   when its check says its effect is missing and its guard still holds (never blindly). A run that
   was rolling back goes on rolling back. `rollback=True` rolls an open run back (refused once a
   `no_return` step is done).
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from drc.runbooks.journal import (
    FINISHED,
    REFUSED,
    ROLLED_BACK,
    Journal,
    holder,
    open_runs,
)
from drc.runbooks.lock import Lock

POLL_S = 0.25


@dataclass(frozen=True)
class Reading:
    """What a check read on the hosts: whether it holds, why not, and the values it read."""

    ok: bool
    why: str = ""
    data: dict = field(default_factory=dict)
    # A failure that waiting will not mend (e.g. the backup the step ran failed): stop polling.
    final: bool = False


@dataclass(frozen=True)
class Step:
    name: str
    sop: str
    does: str
    action: Callable[[Any], dict | None]
    check: Callable[[Any], Reading]
    undo: Callable[[Any], dict | None] | None = None
    guard: Callable[[Any], Reading] | None = None
    # Once done, a failure no longer rolls back (e.g. a promotion): the re-run goes forward.
    no_return: bool = False
    # How long the check may take to come true after the action (polled).
    deadline_s: float = 30.0


@dataclass(frozen=True)
class Check:
    """A preflight check: read-only, run before anything changes."""

    name: str
    sop: str
    read: Callable[[Any], Reading]


@dataclass(frozen=True)
class Runbook:
    name: str  # e.g. "switchover"
    target: str  # e.g. "drc": part of a run's identity (a resume must be the same run)
    title: str
    preflight: tuple[Check, ...]
    steps: tuple[Step, ...]

    def __post_init__(self) -> None:
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError(f"runbook {self.name}: step names repeat: {names}")


@dataclass
class Outcome:
    run_id: str | None
    outcome: str  # finished | rolled-back | refused | stopped | planned | locked
    message: str
    journal: Path | None = None
    preflight: list[tuple[Check, Reading]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.outcome in (FINISHED, "planned")


class RunbookError(Exception):
    pass


def safely(fn: Callable[[Any], Reading], ctx: Any) -> Reading:
    """A check that raises has not passed; the exception is its reason."""
    try:
        r = fn(ctx)
    except Exception as exc:  # noqa: BLE001 (a check's failure is data, never a crash of the runbook)
        return Reading(False, f"{type(exc).__name__}: {exc}")
    return r if isinstance(r, Reading) else Reading(bool(r))


def poll(check: Callable[[Any], Reading], ctx: Any, deadline_s: float) -> Reading:
    end = time.monotonic() + deadline_s
    while True:
        r = safely(check, ctx)
        if r.ok or r.final or time.monotonic() >= end:
            return r
        time.sleep(POLL_S)


class Engine:
    def __init__(self, book: Runbook, ctx: Any, records: Path, lock: Lock,
                 progress: Callable[[str, dict], None] = lambda kind, data: None,
                 confirm: Callable[[list[tuple[Check, Reading]]], bool] | None = None):
        self.book, self.ctx, self.records, self.lock, self.progress = book, ctx, records, lock, progress
        # Asked once the preflight passed, before anything changes (a failover's decision): False
        # changes nothing and opens no journal.
        self.confirm = confirm

    # --- the entry point -----------------------------------------------------------------------
    def run(self, dry_run: bool = False, rollback: bool = False) -> Outcome:
        journal = self._open_journal()
        if journal is None:
            if rollback:
                return Outcome(None, REFUSED, f"no open {self.book.name} run to roll back")
            results = []
            for c in self.book.preflight:  # shown as each answers: the operator sees where it stands
                r = safely(c.read, self.ctx)
                results.append((c, r))
                self.progress("preflight", {"check": c.name, "sop": c.sop, "ok": r.ok, "why": r.why})
            failed = [(c, r) for c, r in results if not r.ok]
            if dry_run:
                return Outcome(None, "planned", "preflight: " + ("refused: " + "; ".join(f"{c.name}: {r.why}" for c, r in failed)
                                                                  if failed else "all checks pass"), preflight=results)
            if not failed and self.confirm is not None and not self.confirm(results):
                return Outcome(None, REFUSED, "not confirmed: nothing changed", preflight=results)
            journal = Journal.new(self.records, self.book.name, self.book.target)
            journal.write("begin", runbook=self.book.name, target=self.book.target, title=self.book.title,
                          plan=[{"step": s.name, "sop": s.sop, "does": s.does, "undo": s.undo is not None, "no_return": s.no_return}
                                for s in self.book.steps], **holder())
            journal.write("preflight", results=[{"check": c.name, "sop": c.sop, "ok": r.ok, "why": r.why, "read": r.data}
                                                for c, r in results])
            if failed:
                msg = "refused by the preflight, nothing changed: " + "; ".join(f"{c.name}: {r.why}" for c, r in failed)
                journal.write("end", outcome=REFUSED, message=msg)
                return Outcome(journal.run_id, REFUSED, msg, journal.path, results)
        elif dry_run:
            done = [s.name for s in self.book.steps if journal.step_state(s.name) == "done"]
            return Outcome(journal.run_id, "planned", f"run {journal.run_id} is open (interrupted): a re-run resumes it "
                           f"({'rolling back' if journal.rolling_back else 'forward'}); steps done: {', '.join(done) or 'none'}",
                           journal.path)
        if hasattr(self.ctx, "run_id"):  # steps may name their run (records, reasons) and read its journal
            self.ctx.run_id, self.ctx.journal = journal.run_id, journal
        ok, why = self.lock.acquire(journal.run_id, {"runbook": self.book.name, "target": self.book.target, **holder()})
        if not ok:
            return Outcome(journal.run_id, "locked", f"not started: {why}", journal.path)
        journal.write("lock", result=why)
        try:
            if rollback and not journal.rolling_back:
                passed = self._no_return_passed(journal)
                if passed:
                    return self._stopped(journal, f"cannot roll back: step {passed} is done and has no way back; re-run to go forward")
                journal.write("rollback", reason="asked by the operator")
            if journal.rolling_back:
                return self._roll_back(journal)
            return self._forward(journal)
        except KeyboardInterrupt:
            journal.write("interrupted")
            raise

    def _open_journal(self) -> Journal | None:
        """This runbook's open run (to resume); any other open run stops this one from starting."""
        opened = open_runs(self.records)
        same = [j for j in opened if (j.begin.get("runbook"), j.begin.get("target")) == (self.book.name, self.book.target)]
        other = [j for j in opened if j not in same]
        if other:
            j = other[-1]
            raise RunbookError(f"run {j.run_id} ({j.begin.get('runbook')} to {j.begin.get('target')}) is open (interrupted): "
                               f"re-run it to resume, or roll it back with --rollback, before starting another runbook")
        return same[-1] if same else None

    # --- forward ---------------------------------------------------------------------------------
    def _forward(self, journal: Journal) -> Outcome:
        for step in self.book.steps:
            state = journal.step_state(step.name)
            if state == "done":
                self.progress("step", {"step": step.name, "state": "done before"})
                continue
            failure = self._do(journal, step, resumed=state in ("started", "failed"))
            self._mirror()
            if failure:
                passed = self._no_return_passed(journal)
                if passed:
                    return self._stopped(journal, f"step {step.name} failed: {failure}. Step {passed} is done and has no way "
                                         f"back, so nothing was rolled back: fix the cause and re-run to go forward")
                journal.write("rollback", reason=f"step {step.name} failed: {failure}")
                return self._roll_back(journal)
        # The lock goes before the journal says "end": killed in between, the run is still open and a
        # re-run ends it (the other way round, a run that had ended kept its lock on the hosts).
        self.lock.release(journal.run_id)
        journal.write("end", outcome=FINISHED, message="every step done and checked")
        return Outcome(journal.run_id, FINISHED, "every step done and checked", journal.path)

    def _do(self, journal: Journal, step: Step, resumed: bool) -> str | None:
        """One step; returns why it failed, or None."""
        t0 = time.monotonic()
        if resumed:
            # Interrupted or failed last time: its effect may be in place already.
            r = safely(step.check, self.ctx)
            if r.ok:
                journal.write("step-end", step=step.name, result="already done", read=r.data, seconds=0.0)
                self.progress("step", {"step": step.name, "state": "already done"})
                return None
        journal.write("step-start", step=step.name, sop=step.sop, resumed=resumed)
        self.progress("step", {"step": step.name, "state": "running", "does": step.does})
        if step.guard is not None:
            g = safely(step.guard, self.ctx)
            if not g.ok:
                return self._failed(journal, step, f"its guard does not hold: {g.why}", g.data, t0)
        try:
            did = step.action(self.ctx) or {}
        except Exception as exc:  # noqa: BLE001 (journaled and rolled back or stopped, never half-silent)
            return self._failed(journal, step, f"{type(exc).__name__}: {exc}", {"traceback": traceback.format_exc(limit=3)}, t0)
        r = poll(step.check, self.ctx, step.deadline_s)
        if not r.ok:
            return self._failed(journal, step, f"check failed after {step.deadline_s:g} s: {r.why}", {**r.data, "did": did}, t0)
        secs = round(time.monotonic() - t0, 3)
        journal.write("step-end", step=step.name, result="done", did=did, read=r.data, seconds=secs)
        self.progress("step", {"step": step.name, "state": "done", "seconds": secs})
        return None

    def _failed(self, journal: Journal, step: Step, why: str, data: dict, t0: float) -> str:
        journal.write("step-end", step=step.name, result="failed", why=why, read=data, seconds=round(time.monotonic() - t0, 3))
        self.progress("step", {"step": step.name, "state": "failed", "why": why})
        return why

    def _no_return_passed(self, journal: Journal) -> str | None:
        return next((s.name for s in self.book.steps if s.no_return and journal.step_state(s.name) == "done"), None)

    # --- back ------------------------------------------------------------------------------------
    def _roll_back(self, journal: Journal) -> Outcome:
        # Undo every step whose action may have run (done, or failed/interrupted midway), newest first.
        touched = [s for s in self.book.steps if journal.step_state(s.name) in ("done", "failed", "started")]
        for step in reversed(touched):
            if step.undo is None or journal.undone(step.name):
                continue
            journal.write("undo-start", step=step.name)
            self.progress("undo", {"step": step.name, "state": "running"})
            try:
                did = step.undo(self.ctx) or {}
            except Exception as exc:  # noqa: BLE001
                why = f"{type(exc).__name__}: {exc}"
                journal.write("undo-end", step=step.name, result="failed", why=why)
                self.progress("undo", {"step": step.name, "state": "failed", "why": why})
                return self._stopped(journal, f"rolling back, the undo of {step.name} failed: {why}. Fix it and re-run: "
                                     "the roll-back goes on")
            journal.write("undo-end", step=step.name, result="done", did=did)
            self.progress("undo", {"step": step.name, "state": "done"})
            self._mirror()
        reason = next((e.get("reason") for e in journal.events if e["event"] == "rollback"), "")
        msg = f"rolled back to where it started ({reason})"
        self.lock.release(journal.run_id)  # before "end", as above
        journal.write("end", outcome=ROLLED_BACK, message=msg)
        return Outcome(journal.run_id, ROLLED_BACK, msg, journal.path)

    def _mirror(self) -> None:
        """The journal so far to the DRC's copy of the workstation, in the background (issue 11 point 4)."""
        if hasattr(self.ctx, "site_file") and hasattr(self.ctx, "site"):
            from drc.workstation.mirror import push_soon

            push_soon(self.ctx.site, self.ctx.site_file)

    def _stopped(self, journal: Journal, msg: str) -> Outcome:
        """Stop without closing the run: the lock stays, the journal stays open for the re-run."""
        journal.write("stopped", message=msg)
        return Outcome(journal.run_id, "stopped", msg, journal.path)
