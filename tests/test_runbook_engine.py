"""The runbook engine on a world of real files: preflight, journal, lock, roll-back, resume.

Each step of the toy runbook makes a file; its check reads the file, its undo removes it. Actions
count their calls in the world too, so a test sees whether a step ran again. One test kills a
real child process (SIGKILL) inside a step and resumes in this one. SOP: EM-2, EM-3.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from drc.hostside import runbook_lock
from drc.runbooks import journal as journals
from drc.runbooks.engine import Check, Engine, Reading, Runbook, RunbookError, Step
from drc.runbooks.lock import FileLock

REPO = Path(__file__).resolve().parent.parent


class World:
    def __init__(self, root: Path):
        self.root = root
        root.mkdir(exist_ok=True)

    def has(self, name: str) -> bool:
        return (self.root / name).exists()

    def make(self, name: str) -> None:
        self.count(name)
        (self.root / name).write_text("x")

    def remove(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)
        (self.root / f"undo-{name}").write_text("x")

    def count(self, name: str) -> None:
        c = self.root / f"calls-{name}"
        c.write_text(str(self.calls(name) + 1))

    def calls(self, name: str) -> int:
        c = self.root / f"calls-{name}"
        return int(c.read_text()) if c.exists() else 0


def step(name: str, *, undo: bool = True, no_return: bool = False, fail: bool = False, guard=None) -> Step:
    def action(w: World):
        w.make(name)
        if fail or w.has(f"fail-{name}"):
            (w.root / name).unlink()
        return {"made": name}

    return Step(name=name, sop="EM-2", does=f"make {name}", action=action,
                check=lambda w: Reading(w.has(name), f"{name} missing", {"exists": w.has(name)}),
                undo=(lambda w: w.remove(name)) if undo else None, guard=guard, no_return=no_return, deadline_s=0.3)


def book(*steps: Step, preflight_ok: bool = True, target: str = "drc") -> Runbook:
    return Runbook("toy", target, "a toy runbook", (Check("ready", "EM-3", lambda w: Reading(preflight_ok, "not ready")),), steps)


@pytest.fixture
def env(tmp_path):
    w = World(tmp_path / "world")
    records = tmp_path / "records"
    lock_file = tmp_path / "host" / "runbook.lock"
    return w, records, lock_file


def engine(b, env) -> Engine:
    w, records, lock_file = env
    return Engine(b, w, records, FileLock(lock_file))


def test_a_run_does_each_step_once_journals_it_and_releases_the_lock(env):
    w, records, lock_file = env
    out = engine(book(step("a"), step("b"), step("c")), env).run()
    assert out.outcome == "finished" and out.ok
    assert [w.calls(n) for n in "abc"] == [1, 1, 1]
    j = journals.Journal.load(out.journal)
    assert [e["event"] for e in j.events] == ["begin", "preflight", "lock"] + ["step-start", "step-end"] * 3 + ["end"]
    assert all(e["result"] == "done" and e["read"] == {"exists": True} for e in j.events if e["event"] == "step-end")
    assert not lock_file.exists()


def test_the_preflight_refuses_and_nothing_changes(env):
    w, records, lock_file = env
    out = engine(book(step("a"), preflight_ok=False), env).run()
    assert out.outcome == "refused" and "ready: not ready" in out.message
    assert w.calls("a") == 0 and not lock_file.exists()
    assert journals.Journal.load(out.journal).outcome == "refused"


def test_a_dry_run_reads_the_preflight_and_writes_nothing(env):
    w, records, _ = env
    out = engine(book(step("a")), env).run(dry_run=True)
    assert out.outcome == "planned" and out.preflight[0][1].ok
    assert w.calls("a") == 0 and not (records / journals.SUBDIR).exists()


def test_a_failure_before_the_point_of_no_return_rolls_back_newest_first(env):
    w, _, lock_file = env
    out = engine(book(step("a"), step("b"), step("c", fail=True), step("d")), env).run()
    assert out.outcome == "rolled-back" and "step c failed" in out.message
    assert not any(w.has(n) for n in "abcd") and w.calls("d") == 0
    j = journals.Journal.load(out.journal)
    assert [e["step"] for e in j.events if e["event"] == "undo-end"] == ["c", "b", "a"]
    assert not lock_file.exists()


def test_a_failure_after_the_point_of_no_return_stops_keeps_the_lock_and_resumes_forward(env):
    w, _, lock_file = env
    b = book(step("a"), step("promote", no_return=True), step("c"), step("d"))
    w.root.joinpath("fail-c").write_text("x")
    out = engine(b, env).run()
    assert out.outcome == "stopped" and "no way back" in out.message
    assert w.has("a") and w.has("promote") and not w.has("c") and lock_file.exists()
    w.root.joinpath("fail-c").unlink()  # the operator fixed the cause
    out2 = engine(b, env).run()
    assert out2.outcome == "finished" and out2.run_id == out.run_id
    assert [w.calls(n) for n in ("a", "promote", "c", "d")] == [1, 1, 2, 1]
    assert not lock_file.exists()


class Killed(BaseException):
    """siaga dying inside an action, after the action's effect (the journal has no step-end)."""


def test_an_interrupted_step_whose_effect_is_there_is_not_repeated(env):
    w, _, _ = env

    def dies_after_promoting(ww: World):
        ww.make("promote")
        raise Killed

    promote = Step("promote", "EM-2", "promote", dies_after_promoting, lambda ww: Reading(ww.has("promote")), no_return=True)
    b = book(step("a"), promote, step("c"))
    with pytest.raises(Killed):
        engine(b, env).run()
    promote_again = Step("promote", "EM-2", "promote", lambda ww: ww.make("promote"), lambda ww: Reading(ww.has("promote")), no_return=True)
    out = engine(book(step("a"), promote_again, step("c")), env).run()
    assert out.outcome == "finished" and w.calls("promote") == 1 and w.calls("c") == 1
    assert any(e.get("result") == "already done" for e in journals.Journal.load(out.journal).events)


def test_an_interrupted_step_without_its_effect_runs_again_only_if_its_guard_holds(env):
    w, _, _ = env

    def dies_before(ww: World):
        raise Killed

    b = book(step("a"), Step("b", "EM-2", "b", dies_before, lambda ww: Reading(ww.has("b")), undo=lambda ww: ww.remove("b")))
    with pytest.raises(Killed):
        engine(b, env).run()
    guarded = step("b", guard=lambda ww: Reading(ww.has("allowed"), "not allowed any more"))
    out = engine(book(step("a"), guarded), env).run()
    assert out.outcome == "rolled-back" and "not allowed any more" in out.message and w.calls("b") == 0
    assert not w.has("a")


def test_an_operator_rolls_an_open_run_back_unless_a_step_has_no_way_back(env):
    w, _, lock_file = env
    w.root.joinpath("fail-c").write_text("x")
    b = book(step("a"), step("promote", no_return=True), step("c"))
    assert engine(b, env).run().outcome == "stopped"
    out = engine(b, env).run(rollback=True)
    assert out.outcome == "stopped" and "cannot roll back" in out.message and w.has("promote")

    w2 = World(w.root.parent / "world2")
    env2 = (w2, env[1] / "other", env[2].parent / "other.lock")
    b2 = book(step("x"), step("y", no_return=False), step("z"))
    Engine(b2, w2, env2[1], FileLock(env2[2])).run()  # finishes
    assert Engine(b2, w2, env2[1], FileLock(env2[2])).run(rollback=True).outcome == "refused"  # nothing open


def test_another_runs_lock_on_the_host_stops_a_run_before_any_step(env):
    w, _, lock_file = env
    runbook_lock.acquire(str(lock_file), "switchover-primary-20261126T000000", {"by": "sari", "workstation": "laptop-2"})
    out = engine(book(step("a")), env).run()
    assert out.outcome == "locked" and "sari" in out.message and "laptop-2" in out.message
    assert w.calls("a") == 0


def test_an_open_run_of_another_runbook_blocks_a_new_one(env):
    w, _, _ = env
    w.root.joinpath("fail-b").write_text("x")
    assert engine(book(step("a", no_return=True), step("b")), env).run().outcome == "stopped"
    with pytest.raises(RunbookError, match="is open"):
        engine(book(step("a"), target="primary"), env).run()


def test_the_lock_program_is_reentrant_for_its_run_and_refuses_others(tmp_path):
    path = str(tmp_path / "l")
    assert runbook_lock.acquire(path, "r1", {})["again"] is False
    assert runbook_lock.acquire(path, "r1", {})["again"] is True
    assert runbook_lock.acquire(path, "r2", {})["ok"] is False
    assert runbook_lock.release(path, "r2")["ok"] is False
    assert runbook_lock.release(path, "r1")["released"] is True
    Path(path).write_text("{torn")
    assert runbook_lock.acquire(path, "r3", {})["ok"] is False  # an unreadable lock still locks


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from drc.runbooks.engine import Engine, Reading, Runbook, Step
    from drc.runbooks.lock import FileLock
    root = Path({root!r})
    def slow(_):
        (root / "b-started").write_text("x")
        while not (root / "never").exists():
            time.sleep(0.05)
    steps = (Step("a", "EM-2", "a", lambda _: (root / "a").write_text("x"), lambda _: Reading((root / "a").exists())),
             Step("b", "EM-2", "b", slow, lambda _: Reading((root / "b").exists())))
    Engine(Runbook("toy", "drc", "t", (), steps), None, Path({records!r}), FileLock(Path({lock!r}))).run()
""")


def test_siaga_killed_in_a_step_then_run_again_resumes_without_repeating_done_steps(tmp_path):
    root, records, lock = tmp_path / "w", tmp_path / "rec", tmp_path / "lock"
    root.mkdir()
    p = subprocess.Popen([sys.executable, "-c", CHILD.format(repo=str(REPO), root=str(root), records=str(records), lock=str(lock))])
    deadline = time.monotonic() + 30
    while not (root / "b-started").exists():
        assert p.poll() is None and time.monotonic() < deadline, "the child did not reach step b"
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait(10)
    j = journals.open_runs(records)
    assert len(j) == 1 and j[0].step_state("a") == "done" and j[0].step_state("b") == "started"
    assert json.loads(lock.read_text())["run_id"] == j[0].run_id  # the lock outlives the killed run
    calls = []
    steps = (Step("a", "EM-2", "a", lambda _: calls.append("a"), lambda _: Reading((root / "a").exists())),
             Step("b", "EM-2", "b", lambda _: (calls.append("b"), (root / "b").write_text("x")), lambda _: Reading((root / "b").exists())))
    out = Engine(Runbook("toy", "drc", "t", (), steps), None, records, FileLock(lock)).run()
    assert out.outcome == "finished" and out.run_id == j[0].run_id and calls == ["b"]
    assert not lock.exists()


def test_a_final_failure_stops_the_polling_at_once():
    """A check that knows waiting will not mend it (the backup it ran failed) ends the step now."""
    from drc.runbooks.engine import poll

    calls = []

    def check(_ctx):
        calls.append(1)
        return Reading(False, "the backup failed", final=True)

    t0 = time.monotonic()
    r = poll(check, None, 30)
    assert not r.ok and len(calls) == 1 and time.monotonic() - t0 < 1


class _DiesAfterRelease(FileLock):
    """siaga killed right after it released the lock: the release happens, then the process is gone."""

    def release(self, run_id: str) -> None:
        super().release(run_id)
        raise KeyboardInterrupt


@pytest.mark.parametrize("fail", [False, True])
def test_killed_between_the_lock_release_and_the_end_the_run_is_open_and_a_rerun_ends_it(env, fail):
    """The lock goes before "end" (finished or rolled back): a run whose journal says it ended never
    holds the hosts' lock (a CI kill test found a fail-back ended with drc still locked)."""
    w, records, lock_file = env
    b = book(step("a"), step("b", fail=fail))
    with pytest.raises(KeyboardInterrupt):
        Engine(b, w, records, _DiesAfterRelease(lock_file)).run()
    assert not lock_file.exists()
    assert journals.open_runs(records), "the run must still be open"
    if fail:
        (w.root / "fail-b").unlink(missing_ok=True)
    out = engine(b, env).run()
    assert out.outcome == ("rolled-back" if fail else "finished") and not lock_file.exists()
    assert not journals.open_runs(records)
