"""Move users' traffic to a site, and read where it goes now (issue 10 point 4; SOP EM-2 step 6).

`switch(site, to_site)` is idempotent: when the name already points at the target nothing is
sent, only verified. With `dns-update` the update carries the prerequisite that the name still
points at the other site's address, then every authoritative server is asked until all answer the
new address and TTL (deadline). With `command` the configured command runs (or siaga waits for
someone, printing the instructions) until `check` prints the new address.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable

import dns.rcode

from drc.site import Site
from drc.site.model import other_site
from drc.site.traffic import TrafficSettings
from drc.traffic.dns import (
    Answer,
    TrafficError,
    ask,
    build_update,
    read_key,
    send_update,
)

POLL_S = 0.2


@dataclass
class SwitchResult:
    to_site: str
    address: str
    changed: bool  # False: it already pointed there, nothing was sent or run
    seconds: float
    answers: list[dict] = field(default_factory=list)  # each server's (or the check's) last answer
    old_address: str | None = None

    def to_dict(self) -> dict:
        return {"to_site": self.to_site, "address": self.address, "changed": self.changed, "seconds": round(self.seconds, 3),
                "old_address": self.old_address, "answers": self.answers}


def settings(site: Site) -> TrafficSettings:
    if site.traffic is None:
        raise TrafficError(f"site {site.site}: no traffic settings. Fix: add `traffic:` to the site file (README: traffic switch).")
    return site.traffic


def current(site: Site) -> list[Answer]:
    """What each authoritative server answers now (dns-update), or what the check prints (command)."""
    t = settings(site)
    if t.method == "dns-update":
        u = t.dns_update
        return [ask(str(s), u.port, t.public_name) for s in u.servers]
    return [_check(t, {})]


def site_of_address(t: TrafficSettings, addresses: tuple[str, ...]) -> str | None:
    by_address = {str(a): role for role, a in t.addresses.items()}
    return by_address.get(addresses[0]) if len(addresses) == 1 else None


def switch(site: Site, to_site: str, deadline_s: float | None = None, log: Callable[[str], None] = print) -> SwitchResult:
    t = settings(site)
    if to_site not in t.addresses:
        raise TrafficError(f"no public address for site {to_site!r} (traffic.addresses). Fix: add traffic.addresses.{to_site}.")
    deadline_s = t.verify_deadline_seconds if deadline_s is None else deadline_s
    start = time.monotonic()
    if t.method == "dns-update":
        changed, old, answers = _dns_switch(t, to_site, deadline_s, log)
    else:
        changed, old, answers = _command_switch(t, to_site, deadline_s, log)
    return SwitchResult(to_site, str(t.addresses[to_site]), changed, time.monotonic() - start,
                        [a.to_dict() for a in answers], old)


def _dns_switch(t: TrafficSettings, to_site: str, deadline_s: float, log) -> tuple[bool, str | None, list[Answer]]:
    u = t.dns_update
    new, old = str(t.addresses[to_site]), str(t.addresses[other_site(to_site)])
    now = ask(u.primary, u.port, t.public_name)
    if now.error:
        raise TrafficError(f"{t.public_name} on {u.primary}: {now.error}; nothing changed. Fix: check that the server "
                           "serves traffic.dns_update.zone and has the record.")
    changed = False
    if now.addresses != (new,):
        if now.addresses != (old,):
            raise TrafficError(f"{t.public_name} points at {', '.join(now.addresses)} on {u.primary}, neither site's address "
                               f"alone ({old} expected before the switch); nothing changed. Fix: find out who changed it, "
                               f"set it to {old} by hand, then run again.")
        key = read_key(u)
        log(f"traffic: {t.public_name} {old} -> {new} (RFC 2136 update to {u.primary}, TSIG {u.key_name})")
        rcode = send_update(u.primary, u.port, build_update(u.zone, t.public_name, t.ttl, new, old, key))
        if rcode == dns.rcode.NXRRSET:
            again = ask(u.primary, u.port, t.public_name)
            if again.addresses != (new,):
                raise TrafficError(f"{u.primary} refused the update: {t.public_name} no longer points at {old} "
                                   f"(now {', '.join(again.addresses) or again.error}); another run changed it. Nothing sent over it.")
        elif rcode != dns.rcode.NOERROR:
            raise TrafficError(f"{u.primary} refused the update: {dns.rcode.to_text(rcode)}. Fix: the zone's ACL must allow "
                               f"updates of {t.public_name} signed with key {u.key_name}.")
        else:
            changed = True
    answers = _verify(lambda: [ask(str(s), u.port, t.public_name) for s in u.servers],
                      lambda a: a.addresses == (new,) and a.ttl == t.ttl, deadline_s,
                      f"every authoritative server to answer {t.public_name} = {new} (TTL {t.ttl})")
    return changed, old if changed else None, answers


def _verify(read: Callable[[], list[Answer]], good: Callable[[Answer], bool], deadline_s: float, what: str) -> list[Answer]:
    end = time.monotonic() + deadline_s
    while True:
        answers = read()
        if all(good(a) for a in answers):
            return answers
        if time.monotonic() > end:
            got = "; ".join(f"{a.server}: {', '.join(a.addresses) or a.error} (TTL {a.ttl})" for a in answers)
            raise TrafficError(f"timed out after {deadline_s:.0f}s waiting for {what}: {got}")
        time.sleep(POLL_S)


def _fill(argv: list[str], values: dict[str, str]) -> list[str]:
    return [w.format(**values) for w in argv]


def _check(t: TrafficSettings, values: dict[str, str]) -> Answer:
    c = t.command
    argv = _fill(c.check, {"name": t.public_name, "address": "", "old_address": "", "site": "", "old_site": "", **values})
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=c.timeout_seconds)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Answer(" ".join(argv), error=str(exc))
    if p.returncode != 0:
        return Answer(" ".join(argv), error=f"exit {p.returncode}: {p.stderr.strip()[:200]}")
    return Answer(" ".join(argv), tuple(sorted(w for w in p.stdout.split() if w)))


def _command_switch(t: TrafficSettings, to_site: str, deadline_s: float, log) -> tuple[bool, str | None, list[Answer]]:
    c, old_site = t.command, other_site(to_site)
    values = {"name": t.public_name, "address": str(t.addresses[to_site]), "old_address": str(t.addresses[old_site]),
              "site": to_site, "old_site": old_site}
    now = _check(t, values)
    if now.addresses == (values["address"],):
        return False, None, [now]
    if c.run:
        argv = _fill(c.run, values)
        log(f"traffic: running {' '.join(argv)}")
        p = subprocess.run(argv, capture_output=True, text=True, timeout=c.timeout_seconds)
        if p.returncode != 0:
            raise TrafficError(f"traffic command {' '.join(argv)} failed (exit {p.returncode}): {p.stderr.strip()[:300]}")
    else:
        log(f"traffic: waiting for: {c.instructions.format(**values)}")
    answers = _verify(lambda: [_check(t, values)], lambda a: a.addresses == (values["address"],), deadline_s,
                      f"the check to show {t.public_name} at {values['address']}")
    return True, values["old_address"], answers
