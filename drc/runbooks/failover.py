"""The unplanned failover: the old primary's site is lost; the service moves to the other site with
what it received (SOP EM-2, EM-3.2-3.5, EM-3.8).

With two sites and no third, the operator is the witness: the preflight proves the old primary does
not answer, neither this workstation nor the target (a host that still answers gets the planned
switch-over, or `--force`: then it is fenced before anything else); it reports the data at risk
(the last WAL position the old primary reported to the target, against what the target received)
and the operator confirms. The decision (who, when, why, what was at risk) is recorded first.

Then, read as a table: the old primary fenced if it answers (otherwise its guard fences it when it
comes back: roles/fencing), the authority granted to the target (it may start read-write while its
peer is gone), the promotion (no way back), the app and the web ports on the target, users'
traffic, the target's standby settings removed, the lost host's replication slot dropped (it would
hold WAL until the disk fills) and the site file saying what is true: `active_site` the target,
`lost_site` the other. Then the site deploy of the serving site alone, its WAL in the repository at
its own site (the repository site before the failover: degraded, SOP BK-9) and a backup there.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from drc.hosts import remote
from drc.records import store
from drc.runbooks import hosts as H
from drc.runbooks import switchover as sw
from drc.runbooks.engine import Check, Reading, Runbook, Step
from drc.status.command import parse_lsn as lsn

DECISIONS = "failover-decisions.jsonl"
# How long the workstation waits for the old primary's SSH before it counts as not answering.
ANSWER_TIMEOUT_S = 4.0


@dataclass
class Failover(sw.Switch):
    reason: str = ""
    decided_by: str = ""
    force: bool = False

    def fence(self, host: str, args: dict, timeout: float = 180, connect_timeout: float = remote.CONNECT_TIMEOUT_S) -> dict:
        return H.program_json(remote.run_program(self.site, host, "fence", args, timeout=timeout, connect_timeout=connect_timeout))

    @property
    def lost_after(self) -> str | None:
        return sw.other_site(self.to)

    def source_answers(self) -> bool:
        """The old primary answers this workstation (SSH) now."""
        r = remote.run(self.site, self.source, "true", timeout=ANSWER_TIMEOUT_S, connect_timeout=ANSWER_TIMEOUT_S)
        return r.reachable and r.exited == 0


# --- preflight: read only ---------------------------------------------------------------------

def target_answers(f: Failover) -> Reading:
    st = f.state(f.target)
    if not st.get("reachable", True) or st.get("error") or not st.get("running"):
        return Reading(False, f"{f.target}: {st.get('error') or 'PostgreSQL is not running'}")
    if st.get("in_recovery") is False:
        return Reading(False, f"{f.target} is already a primary (timeline {st.get('timeline')}): nothing to fail over")
    return Reading(True, data={"receive_lsn": st.get("receive_lsn"), "replay_lsn": st.get("replay_lsn")})


def fence_on_target(f: Failover) -> Reading:
    """The fence is installed on the target (roles/fencing): it will hold the authority."""
    st = f.readings["target_fence"] = f.fence(f.target, {"mode": "state"}, timeout=30)
    return Reading(bool(st.get("ok")), f"{f.target}: the fence program: {st.get('error')}. Fix: run the site deploy first",
                   {k: st.get(k) for k in ("fenced", "authority", "receiver")})


def not_answering_workstation(f: Failover) -> Reading:
    answers = f.source_answers()
    f.readings["source_answers"] = answers
    if answers and not f.force:
        return Reading(False, f"{f.source} answers this workstation: use the planned switch-over (siaga switchover --to "
                              f"{f.to}), or --force to fence it and fail over", {"answers": True})
    return Reading(True, f"{f.source} answers: --force fences it before the promotion" if answers else "", {"answers": answers})


def not_answering_target(f: Failover) -> Reading:
    """From the target: the old primary's PostgreSQL refuses the replication login or does not answer."""
    out = H.pg(f.site, f.target, "reach", peer=f.address(f.source), user=f.site.replication.user, timeout=30)
    if out.get("ok") and not f.force:
        return Reading(False, f"{f.target} still reaches {f.source}'s PostgreSQL: use the planned switch-over, or --force",
                       {"answers": True})
    return Reading(True, data={"answers": bool(out.get("ok"))})


def data_at_risk(f: Failover) -> Reading:
    """What the old primary may hold that the target never received (informational: never refuses).
    The last position the old primary reported to the target (recorded by the target's fence watch
    while it streamed) against what the target has received."""
    st = f.known(f.target)
    fence = f.readings.get("target_fence") or f.fence(f.target, {"mode": "state"}, timeout=30)  # read by the check before
    seen = fence.get("receiver") or {}
    received, reported = lsn(st.get("receive_lsn")), lsn(seen.get("latest_end_lsn"))
    risk = {"received_lsn": st.get("receive_lsn"), "primary_reported_lsn": seen.get("latest_end_lsn"),
            "primary_reported_at": seen.get("latest_end_time"), "recorded_at": seen.get("recorded_at"),
            "bytes": max(0, reported - received) if received is not None and reported is not None else None}
    uploads = sw.H.uploads_digest(f.site, f.target, timeout=120)
    if uploads.get("ok"):
        risk["uploads_on_target"] = len(uploads.get("files") or {})
    f.readings["at_risk"] = risk
    if risk["bytes"] is None:
        why = f"unknown: {f.target} never recorded the primary's position" if reported is None else "unknown"
    else:
        why = (f"{risk['bytes']} bytes of the WAL the old primary had reported (at {risk['primary_reported_lsn']}, last seen "
               f"streaming at {risk['recorded_at']}) are missing on {f.target}; what it wrote after that is unknown, and so "
               f"are uploads made after its last sync")
    return Reading(True, why, risk)


PREFLIGHT = (
    Check("the target answers and is a standby", "EM-3", target_answers),
    Check("the fence is installed on the target", "EM-3", fence_on_target),
    Check("the old primary does not answer this workstation", "EM-2", not_answering_workstation),
    Check("the old primary does not answer the target", "EM-2", not_answering_target),
    Check("the data at risk", "EM-3", data_at_risk),
)


# --- steps ------------------------------------------------------------------------------------

def decisions_file(f: Failover) -> Path:
    return store.records_dir(f.site) / DECISIONS


def record_decision(f: Failover) -> dict:
    rec = {"run_id": f.run_id, "at": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "to": f.to,
           "from": f.source, "decided_by": f.decided_by, "reason": f.reason, "force": f.force,
           "operator": f"{getpass.getuser()}@{socket.gethostname()}", "data_at_risk": f.readings.get("at_risk"),
           "source_answered": f.readings.get("source_answers")}
    store.append_new(decisions_file(f), [{"id": f"decision-{f.run_id}", **rec}])
    return {"record": str(decisions_file(f))}


def decision_recorded(f: Failover) -> Reading:
    path = decisions_file(f)
    found = path.exists() and any(json.loads(ln).get("run_id") == f.run_id for ln in path.read_text().splitlines() if ln.strip())
    return Reading(found, f"no decision of {f.run_id} in {path}")


def fence_source(f: Failover) -> dict:
    """Fence the old primary now when it answers; otherwise its guard fences it on its return."""
    if not f.source_answers():
        return {"answers": False, "fence": "on its return, by its guard (roles/fencing)"}
    out = f.fence(f.source, {"mode": "fence", "why": f"superseded by failover {f.run_id} to {f.to}: {f.reason}",
                             "by": f.decided_by, "peer": f.address(f.target)})
    if not out.get("ok"):
        raise RuntimeError(f"{f.source}: fence: {out.get('error')}")
    return {"answers": True, "did": out.get("did")}


def source_fenced_or_gone(f: Failover) -> Reading:
    st = f.fence(f.source, {"mode": "state"}, timeout=30, connect_timeout=ANSWER_TIMEOUT_S)
    if not st.get("reachable", True):
        return Reading(True, data={"answers": False})
    ok = bool(st.get("fenced")) and st.get("postgresql") != "active" and bool(st.get("firewall"))
    return Reading(ok, f"{f.source}: fenced={st.get('fenced')}, PostgreSQL {st.get('postgresql')}, "
                       f"ports closed={st.get('firewall')}", {"answers": True, "fenced": st.get("fenced")})


def grant_authority(f: Failover) -> dict:
    out = f.fence(f.target, {"mode": "authority", "action": "grant", "by": f.decided_by,
                             "why": f"failover {f.run_id}: {f.reason}"}, timeout=30)
    if not out.get("ok"):
        raise RuntimeError(f"{f.target}: {out.get('error')}")
    return {}


def target_has_authority(f: Failover) -> Reading:
    st = f.fence(f.target, {"mode": "state"}, timeout=30)
    return Reading(bool(st.get("authority")), f"{f.target}: no authority ({st.get('error') or 'not granted'})")


def promote_guard(f: Failover) -> Reading:
    """Promote only once the old primary was fenced in this run, or did not answer."""
    fenced = [e for e in (f.journal.events if f.journal else []) if e.get("step") == "fence-old" and e["event"] == "step-end"
              and e.get("result") in ("done", "already done")]
    return Reading(bool(fenced), "the old primary's fence step is not done")


def drop_source_slot(f: Failover) -> dict:
    out = H.pg(f.site, f.target, "slot", name=f.slot_of(f.source), drop=True)
    if not out.get("ok"):
        raise RuntimeError(out.get("error"))
    return {"slot": f.slot_of(f.source)}


def source_slot_absent(f: Failover) -> Reading:
    st = f.state(f.target)
    name = f.slot_of(f.source)
    return Reading(not any(x["name"] == name for x in st.get("slots") or []), f"slot {name} still on {f.target}")


def close_inbound_sync(f: Failover) -> dict:
    """The target accepts no uploads sync from the lost site any more: a returning old primary's
    lsyncd would copy its old uploads over (and delete) those made here during the emergency."""
    from roles.uploads_sync.topology import KEYS_DIR, receiving_account

    path = f"{KEYS_DIR}/{receiving_account(f.site)}"
    r = remote.run(f.site, f.target, f"sudo -n rm -f {path}", timeout=30)
    if not r.ok:
        raise RuntimeError(f"{f.target}: {r.error or r.stderr.strip()}")
    return {"removed": path}


def no_inbound_sync(f: Failover) -> Reading:
    from roles.uploads_sync.topology import KEYS_DIR, receiving_account

    path = f"{KEYS_DIR}/{receiving_account(f.site)}"
    r = remote.run(f.site, f.target, f"test ! -e {path}", timeout=30)
    return Reading(r.ok, f"{f.target}: {path} still there")


def failover(site_file: Path, to: str, reason: str, decided_by: str, force: bool = False,
             echo: Callable[[str], None] = print) -> tuple[Runbook, Failover]:
    f = Failover(Path(site_file), to, echo, reason=reason, decided_by=decided_by, force=force)
    src, dst = f.source, f.target
    steps = (
        Step("decision", "EM-2", f"record the decision: {decided_by}, why: {reason}", record_decision, decision_recorded),
        Step("fence-old", "EM-3", f"fence {src} if it answers (else its guard does on its return)", fence_source,
             source_fenced_or_gone, deadline_s=15),
        Step("no-sync-in", "EM-3", f"{dst} accepts no uploads sync from {src} any more", close_inbound_sync, no_inbound_sync),
        Step("authority", "EM-3", f"{dst} holds the authority: it starts read-write while {src} is gone", grant_authority,
             target_has_authority),
        Step("promote", "EM-2", f"promote {dst}", sw.promote, sw.target_is_primary, guard=promote_guard, no_return=True),
        Step("app-up", "EM-2", f"start the app on {dst}: it serves reads and writes", sw.app_start_target, sw.app_healthy,
             deadline_s=60),
        Step("web", "IN-2", f"open the web ports on {dst} (the firewall role's ruleset for {to} active)", sw.open_web_target,
             sw.web_open_on_target),
        *((Step("traffic", "EM-2", f"users' traffic to {dst}: {f.site.traffic.method} of {f.site.traffic.public_name}",
                sw.traffic_switch, sw.traffic_points_to_target, deadline_s=5),) if f.site.traffic else ()),
        Step("primary-conf", "EM-3", f"{dst}'s standby settings removed", sw.drop_standby_conf, sw.no_standby_conf),
        Step("slot", "EM-3", f"{src}'s replication slot dropped on {dst} (it would keep WAL until the disk fills)",
             drop_source_slot, source_slot_absent),
        Step("site-file", "EM-2", f"the site file says active_site: {to}, lost_site: {sw.other_site(to)}", sw.write_site_file,
             sw.site_file_says),
        Step("converge", "EM-2", f"the site deploy on {dst} alone: no sync or slot for {src}, backups into the repository "
             f"at {to} (degraded)", sw.converge, sw.converged, deadline_s=1),
        Step("checkpoint", "BK-1", f"CHECKPOINT on {dst}: its control file names its timeline (pgBackRest reads it)",
             sw.checkpoint, sw.checkpoint_on_timeline, deadline_s=60),
        Step("archive", "BK-1", f"{dst}'s WAL reaches the repository at its own site (pgbackrest check, its timeline's "
             "history file)", sw.archive_check_target, sw.archive_follows, deadline_s=5),
        Step("backup", "BK-1", f"a database backup of {dst} into the repository at its own site (the offline media are "
             "the copy away from it until the fail-back)", sw.backup_after_switch, sw.backup_ok, deadline_s=900),
    )
    return Runbook("failover", to, f"Failover to {to.upper()}: {src} lost, {dst} serves", PREFLIGHT, steps), f
