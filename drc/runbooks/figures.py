"""A switch-over's figures, read from its journal: how long the service was down on the server
side (the old app stopped → the new site's app healthy and its web ports open), how long the old
primary took to stream from the new one after the promotion, and the whole run. The client-side
gap comes from the probe (drc.probe), which measures what users see."""

from __future__ import annotations

import datetime as dt

from drc.runbooks.journal import Journal


def _at(j: Journal, event: str, step: str, last: bool = False) -> dt.datetime | None:
    hits = [e["at"] for e in j.events if e["event"] == event and e.get("step") == step
            and (event != "step-end" or e.get("result") in ("done", "already done"))]
    if not hits:
        return None
    return dt.datetime.fromisoformat(hits[-1] if last else hits[0])


def _secs(a: dt.datetime | None, b: dt.datetime | None) -> float | None:
    return round((b - a).total_seconds(), 2) if a and b else None


def switchover_figures(j: Journal) -> dict:
    begin = dt.datetime.fromisoformat(j.begin["at"]) if j.begin.get("at") else None
    end = next((dt.datetime.fromisoformat(e["at"]) for e in reversed(j.events) if e["event"] == "end"), None)
    return {
        "run_id": j.run_id,
        "outcome": j.outcome,
        # Server side: no app answers from the old app's stop until the new one is healthy behind open ports.
        "service_gap_s": _secs(_at(j, "step-start", "stop-app"), _at(j, "step-end", "web", last=True)),
        "promotion_to_streaming_s": _secs(_at(j, "step-end", "promote", last=True), _at(j, "step-end", "rejoin", last=True)),
        "runbook_s": _secs(begin, end),
    }
