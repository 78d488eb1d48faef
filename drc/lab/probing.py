"""The probe and the watcher on a lab, for tests and bench/: the probe in the outsider's network
namespace (a client outside both sites, resolving through the lab's DNS), the watcher from the
admin workstation, and afterwards the check (drc/probe). Used as:

    with ProbeRun(lab, tmp_dir) as run:     # both started, each seen working
        ...                                 # e.g. a switch-over
    report = run.check()                    # RPO, RTO, the watcher's split-brain count
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from drc.lab.lab import Lab, LabError, wait_for

START_DEADLINE_S = 30.0
STOP_DEADLINE_S = 30.0


def _lines(path: Path, event: str) -> int:
    try:
        return sum(f'"event": "{event}"' in line for line in path.read_text().splitlines())
    except OSError:
        return 0


class ProbeRun:
    def __init__(self, lab: Lab, log_dir: Path, duration_s: float | None = None):
        self.lab, self.duration_s = lab, duration_s
        log_dir.mkdir(parents=True, exist_ok=True)
        self.probe_log, self.watch_log = log_dir / "probe.jsonl", log_dir / "watch.jsonl"
        self.site = str(lab.site_file)
        self.watcher: subprocess.Popen | None = None
        self.probe: subprocess.Popen | None = None
        self.probe_summary: dict | None = None
        self.watch_summary: dict | None = None

    def __enter__(self) -> ProbeRun:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _spawn(self, argv: list[str]) -> subprocess.Popen:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def _alive(self, proc: subprocess.Popen, what: str) -> None:
        if proc.poll() is not None and (what == "watcher" or self.duration_s is None):
            out, err = proc.communicate()
            raise LabError(f"the {what} stopped (exit {proc.returncode}): {(err or out).strip()[-800:]}")

    def start(self) -> None:
        """The watcher first (its rounds running), then the probe (its first write acknowledged)."""
        py = [sys.executable, "-m", "drc.probe"]
        self.watcher = self._spawn([*py, "watch", self.site, "--log", str(self.watch_log)])

        def watching() -> bool:
            self._alive(self.watcher, "watcher")
            return _lines(self.watch_log, "round") > 0

        wait_for("the watcher's first round", watching, START_DEADLINE_S, 0.1)
        extra = ["--duration", str(self.duration_s)] if self.duration_s else []
        self.probe = self._spawn(self.lab.netns_argv("outsider", [*py, "run", self.site, "--log", str(self.probe_log), *extra]))

        def writing() -> bool:
            self._alive(self.probe, "probe")
            return _lines(self.probe_log, "ack") > 0

        wait_for("the probe's first acknowledged write", writing, START_DEADLINE_S, 0.1)

    def wait(self, timeout_s: float) -> dict:
        """Wait for a probe started with a duration to finish; its summary."""
        out, err = self.probe.communicate(timeout=timeout_s)
        return self._summary(self.probe, out, err, "probe")

    def _summary(self, proc: subprocess.Popen, out: str, err: str, what: str) -> dict:
        lines = [ln for ln in (out or "").splitlines() if ln.startswith("{")]
        if not lines:
            raise LabError(f"the {what} gave no summary (exit {proc.returncode}): {(err or '').strip()[-800:]}")
        summary = json.loads(lines[-1])
        setattr(self, f"{'probe' if what == 'probe' else 'watch'}_summary", summary)
        return summary

    def stop(self) -> None:
        """SIGTERM to the probe, then the watcher: each writes its end line and summary."""
        for proc, what in ((self.probe, "probe"), (self.watcher, "watcher")):
            if proc is None:
                continue
            if proc.poll() is None:
                proc.terminate()
            try:
                out, err = proc.communicate(timeout=STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            except ValueError:  # already read by wait()
                continue
            if (what == "probe" and self.probe_summary is None) or (what == "watcher" and self.watch_summary is None):
                self._summary(proc, out, err, what)

    def check(self, timeout_s: float = 300) -> dict:
        """`siaga probe check` of the probe's log with the watcher's: RPO, RTO, split brain."""
        start = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "drc.probe", "check", str(self.probe_log), self.site, "--watch-log",
                            str(self.watch_log)], capture_output=True, text=True, timeout=timeout_s)
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            raise LabError(f"probe check gave no report (exit {p.returncode}): {(p.stderr or p.stdout).strip()[-800:]}")
        return {**json.loads(lines[-1]), "exit": p.returncode, "check_seconds": round(time.monotonic() - start, 1)}
