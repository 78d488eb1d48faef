"""The watcher: beside the probe, asks PostgreSQL on every data-tier host whether it is writable
(pg_is_in_recovery) every 0.2 s (issue 10: at least every 0.5 s), over SSH connections kept open
(three per host, so one slow answer does not hold up the next poll), and counts the moments with
more than one writable primary (split brain; SOP EM-3). One JSON line per round; the end line has
each host's longest time between answered polls.

Each connection keeps one psql session open and sends it the query: a poll is one query on a
session, not an SSH exec, sudo, psql and a new backend. That chain cost tens of milliseconds of
CPU per poll and, on a loaded machine, answers later than FRESH_S (rounds counted unanswered). A
session that ends (PostgreSQL stopped or restarted: psql exits when its connection is lost), an
error or a late answer closes the connection; the next poll opens a new one."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from drc.hosts.remote import connection, why
from drc.site import Site

ROUND_S = 0.2
LANES = 3  # SSH connections per host: a slow answer (a loaded machine) never delays the next poll
FRESH_S = 1.0  # a round uses each host's newest answer to a poll sent at most this long before
ANSWER_S = 2.0  # a lane whose answer takes longer is closed (a new session next time)
QUERY = b"SELECT pg_is_in_recovery();\n"


class _Lane:
    """One SSH connection to a host with one psql session on it, asked one query at a time."""

    def __init__(self, host: _Host):
        self.host, self.lock = host, threading.Lock()
        self.conn = self.chan = None
        self.buf = b""

    def ask(self) -> str:
        if self.chan is None:
            self.conn = connection(self.host.site, self.host.name, timeout=2)
            self.conn.open()
            self.chan = self.conn.client.get_transport().open_session()
            self.chan.settimeout(ANSWER_S)
            self.chan.exec_command(self.host.command)
            self.buf = b""
        self.chan.sendall(QUERY)
        while b"\n" not in self.buf:
            data = self.chan.recv(256)
            if not data:  # psql ended: PostgreSQL down, or its connection lost
                err = self.chan.recv_stderr(4096).decode(errors="replace").strip() if self.chan.recv_stderr_ready() else ""
                self.close()
                return f"down: {err[-200:] or 'psql ended'}"
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        out = line.decode(errors="replace").strip()
        if out not in ("f", "t"):
            self.close()
        return {"f": "primary", "t": "standby"}.get(out, f"down: {out[:200]}")

    def close(self) -> None:
        for c in (self.chan, self.conn):
            if c is not None:
                with contextlib.suppress(Exception):  # closing what already broke
                    c.close()
        self.conn = self.chan = None


class _Host:
    def __init__(self, site: Site, name: str):
        self.site, self.name = site, name
        port = site.firewall.postgresql_port
        # psql itself, not Debian's wrapper (a Perl start per session), reading its queries from the
        # connection: the watcher must not load the hosts it watches.
        psql = f"/usr/lib/postgresql/{site.postgresql.version}/bin/psql"
        self.command = f"sudo -n -u postgres {psql} -XAtq -p {port} -d postgres"
        self.lanes = [_Lane(self) for _ in range(LANES)]
        self.latest: tuple[float, str] | None = None  # (monotonic time the poll was sent, state)
        self.sent_times: list[float] = []  # of the polls that were answered
        self.guard = threading.Lock()

    def poll(self) -> str:
        """'primary', 'standby', or 'down: why'; 'busy' when every lane is still waiting."""
        for lane in self.lanes:
            if lane.lock.acquire(blocking=False):
                break
        else:
            return "busy"
        sent = time.monotonic()
        try:
            state = lane.ask()
        except TimeoutError as exc:
            lane.close()
            state = f"down: no answer within {ANSWER_S:g} s ({why(exc)})"
        except Exception as exc:  # noqa: BLE001 (a host that cannot be asked is reported, then asked again)
            lane.close()
            state = f"down: {why(exc)}"
        finally:
            lane.lock.release()
        with self.guard:
            if self.latest is None or sent > self.latest[0]:
                self.latest = (sent, state)
            self.sent_times.append(sent)
        return state

    def close(self) -> None:
        for lane in self.lanes:
            lane.close()


def watch(site: Site, log_path: Path, duration_s: float | None, round_s: float = ROUND_S) -> dict:
    """Every `round_s`: a poll sent to each host, and one round logged with each host's newest
    answer (a poll sent within FRESH_S); more than one 'primary' in a round is a split brain."""
    hosts = [_Host(site, h) for h in site.hosts]
    stop = {"now": False}

    def _stop(*_a):
        stop["now"] = True

    old = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    rounds = split = 0
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pool = ThreadPoolExecutor(max_workers=len(hosts) * (LANES + 1))
    list(pool.map(_Host.poll, hosts))  # connections opened before the first round counts
    for h in hosts:
        h.sent_times.clear()
    start = time.monotonic()
    with open(log_path, "w") as log:
        log.write(json.dumps({"event": "start", "hosts": [h.name for h in hosts], "round_s": round_s, "at": time.time()}) + "\n")
        try:
            next_at = time.monotonic()
            while not stop["now"] and (duration_s is None or time.monotonic() - start < duration_s):
                for h in hosts:
                    pool.submit(h.poll)
                next_at += round_s
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                now = time.monotonic()
                states = {}
                for h in hosts:
                    with h.guard:
                        latest = h.latest
                    states[h.name] = latest[1] if latest and now - latest[0] <= FRESH_S else "unknown: no fresh answer"
                writable = sorted(n for n, st in states.items() if st == "primary")
                rounds += 1
                split += len(writable) > 1
                log.write(json.dumps({"event": "round", "at": round(time.time(), 3), "states": states, "writable": writable}) + "\n")
                log.flush()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            pool.shutdown(wait=True, cancel_futures=True)
            for h in hosts:
                h.close()
            gaps = {h.name: round(max((b - a for a, b in zip(sorted(h.sent_times), sorted(h.sent_times)[1:])), default=0.0), 3)
                    for h in hosts}
            summary = {"event": "end", "rounds": rounds, "split_brain_rounds": split, "longest_poll_gap_s": gaps,
                       "at": time.time()}
            log.write(json.dumps(summary) + "\n")
    return summary


def summarise(rows: list[dict]) -> dict:
    """From a watcher log: rounds, moments with more than one writable primary, rounds where every
    host answered and none was writable, rounds where a host did not answer, and the longest time
    between rounds."""
    rounds = [r for r in rows if r.get("event") == "round"]
    ats = [r["at"] for r in rounds]
    answered = [r for r in rounds if all(v in ("primary", "standby") for v in r.get("states", {}).values())]
    return {"rounds": len(rounds), "split_brain_rounds": sum(len(r["writable"]) > 1 for r in rounds),
            "no_primary_rounds": sum(not r["writable"] for r in answered),
            "unanswered_rounds": len(rounds) - len(answered),
            "primaries": sorted({w for r in rounds for w in r["writable"]}),
            "longest_round_gap_s": round(max((b - a for a, b in zip(ats, ats[1:])), default=0.0), 3),
            "longest_poll_gap_s": next((r.get("longest_poll_gap_s") for r in rows if r.get("event") == "end"), None)}
