"""The watcher: beside the probe, asks PostgreSQL on every data-tier host whether it is writable
(pg_is_in_recovery) at least every 0.5 s, over one SSH connection per host kept open, and counts
the moments with more than one writable primary (split brain; SOP EM-3). One JSON line per round."""

from __future__ import annotations

import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

from drc.hosts.remote import connection, why
from drc.site import Site

ROUND_S = 0.25
ANSWER_S = 0.4  # a host that has not answered by then is 'unknown' in that round


class _Host:
    def __init__(self, site: Site, name: str):
        self.site, self.name = site, name
        self.conn = None
        self.busy = threading.Lock()
        port = site.firewall.postgresql_port
        self.command = f"sudo -n -u postgres psql -XAtq -p {port} -d postgres -c 'SELECT pg_is_in_recovery()'"

    def poll(self) -> str:
        """'primary', 'standby', or 'down: why' (PostgreSQL or the host not answering)."""
        if not self.busy.acquire(blocking=False):
            return "unknown: previous poll still running"
        try:
            if self.conn is None:
                self.conn = connection(self.site, self.name, timeout=2)
                self.conn.open()
            r = self.conn.run(self.command, hide=True, warn=True, in_stream=False, timeout=2)
            out = r.stdout.strip()
            return {"f": "primary", "t": "standby"}.get(out, f"down: {(r.stderr.strip() or out)[:200]}")
        except Exception as exc:  # noqa: BLE001 (a host that cannot be asked is reported, then asked again)
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            return f"down: {why(exc)}"
        finally:
            self.busy.release()


def watch(site: Site, log_path: Path, duration_s: float | None, round_s: float = ROUND_S) -> dict:
    hosts = [_Host(site, h) for h in site.hosts]
    stop = {"now": False}

    def _stop(*_a):
        stop["now"] = True

    old = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    rounds = split = 0
    longest = 0.0
    last_round = None
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=len(hosts))
    with open(log_path, "w") as log:
        log.write(json.dumps({"event": "start", "hosts": [h.name for h in hosts], "round_s": round_s, "at": time.time()}) + "\n")
        try:
            next_at = time.monotonic()
            while not stop["now"] and (duration_s is None or time.monotonic() - start < duration_s):
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_at = max(next_at + round_s, time.monotonic())
                at = time.time()
                futures = {h.name: pool.submit(h.poll) for h in hosts}
                wait(futures.values(), timeout=ANSWER_S)
                states = {n: f.result() if f.done() else "unknown: no answer in time" for n, f in futures.items()}
                writable = sorted(n for n, s in states.items() if s == "primary")
                rounds += 1
                split += len(writable) > 1
                now = time.monotonic()
                if last_round is not None:
                    longest = max(longest, now - last_round)
                last_round = now
                log.write(json.dumps({"event": "round", "at": round(at, 3), "states": states, "writable": writable}) + "\n")
                log.flush()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            pool.shutdown(wait=False, cancel_futures=True)
            for h in hosts:
                if h.conn is not None:
                    h.conn.close()
            summary = {"event": "end", "rounds": rounds, "split_brain_rounds": split, "longest_round_gap_s": round(longest, 3),
                       "at": time.time()}
            log.write(json.dumps(summary) + "\n")
    return summary


def summarise(rows: list[dict]) -> dict:
    """From a watcher log: rounds, moments with more than one writable primary, rounds where no
    host was writable, and the longest time between rounds."""
    rounds = [r for r in rows if r.get("event") == "round"]
    ats = [r["at"] for r in rounds]
    return {"rounds": len(rounds), "split_brain_rounds": sum(len(r["writable"]) > 1 for r in rounds),
            "no_primary_rounds": sum(not r["writable"] for r in rounds),
            "primaries": sorted({w for r in rounds for w in r["writable"]}),
            "longest_round_gap_s": round(max((b - a for a, b in zip(ats, ats[1:])), default=0.0), 3)}
