"""The planned switch-over: the service moves to the other site with nothing lost (RPO 0).
SOP EM-2 step 6, EM-3 (make sure the DRC's data is up to date, then move the service).

Read as a table: the preflight (repmgr's dry-run checks), then each step with its check. Which host
is primary is read from PostgreSQL on both hosts, never taken from the site file. The old
primary's clean shutdown leaves a demotion token (its last checkpoint's LSN, from pg_controldata);
the target is promoted only after it has replayed past that token, so every write acknowledged by
the old primary is on the new one. Until the promotion every step can be undone and a failure puts
the old primary back in service; from the promotion on, the run only goes forward.

After the promotion the old primary follows the new one (no rebuild: it shut down cleanly and the
new primary has all its WAL), the site file's `active_site` is written back, and the site deploy
converges everything that follows from it: the uploads sync's direction, the firewall's web
ports, the app on the new site only, the backups taken from the new primary to a repository at
the other site.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from drc.hosts import remote
from drc.runbooks import hosts as H
from drc.runbooks.engine import Check, Reading, Runbook, Step
from drc.site import Site, load_site
from drc.site.model import other_site
from drc.status.command import parse_lsn as lsn
from roles.spse_app.defaults import MAINTENANCE_PAGE as NOTICE_FILE

# How long the old primary may take to shut down cleanly before the switch-over is abandoned.
SHUTDOWN_DEADLINE_S = 60.0
# A switch-over needs room for WAL and the new repository's first backup on both hosts.
MIN_FREE_FRACTION = 0.10


@dataclass
class Switch:
    """What a switch-over works on: the site, and the hosts by where they stand (not by role)."""

    site_file: Path
    to: str
    echo: Callable[[str], None] = print
    site: Site = field(init=False)
    readings: dict = field(default_factory=dict)
    run_id: str = ""
    journal: object = None  # the run's journal (drc.runbooks.journal.Journal), set by the engine

    def __post_init__(self) -> None:
        self.site = load_site(self.site_file)
        if self.to not in ("primary", "drc"):
            raise ValueError(f"--to {self.to!r}: use primary or drc")

    @property
    def target(self) -> str:
        return self.site.hosts_in(self.to)[0]

    @property
    def source(self) -> str:
        return self.site.hosts_in(other_site(self.to))[0]

    def address(self, host: str) -> str:
        return str(self.site.hosts[host].address)

    def state(self, host: str) -> dict:
        """PostgreSQL's state on `host`, read now (and kept for the checks that follow)."""
        st = H.pg(self.site, host, "state", timeout=30)
        self.readings[host] = st
        return st

    def reported(self) -> dict:
        """The readings the command reports at the end (--json): this process's."""
        return self.readings

    def known(self, host: str) -> dict:
        """The state the preflight read last, or read now: the preflight reads each host once."""
        return self.readings.get(host) or self.state(host)

    def tier(self):
        from drc.site.data_tier import data_tier_of

        return data_tier_of(self.site)

    def psql(self, host: str, sql: str, db: str = "postgres", timeout: float = 120) -> remote.Result:
        port = self.site.firewall.postgresql_port
        return remote.run(self.site, host, f"sudo -n -u postgres psql -XAtq -p {port} -d {shlex.quote(db)} -v ON_ERROR_STOP=1 "
                                           f"-c {shlex.quote(sql)}", timeout=timeout)

    @property
    def lost_after(self) -> str | None:
        """The site the run leaves lost in the site file (lost_site): none after a switch-over."""
        return None

    def slot_of(self, host: str) -> str:
        from roles.replication.standby import slot_name

        return slot_name(self.tier(), host)


# --- preflight: read only ---------------------------------------------------------------------

def both_answer(s: Switch) -> Reading:
    bad = {h: st.get("error") for h in (s.source, s.target) if not (st := s.state(h)).get("reachable", True) or st.get("error")}
    return Reading(not bad, "; ".join(f"{h}: {e}" for h, e in bad.items()), {"hosts": [s.source, s.target]})


def programs_current(s: Switch) -> Reading:
    """siaga's programs on both hosts are the ones this workstation ships (a runbook run against
    older ones fails midway): compared by sha256."""
    import hashlib
    import shlex

    from drc.hosts import remote
    from drc.hostside import PROGRAMS

    want = {p.path: hashlib.sha256(p.source.read_bytes()).hexdigest() for p in PROGRAMS.values() if p.role == "base"}
    stale = []
    for h in (s.source, s.target):
        r = remote.run(s.site, h, "sha256sum " + " ".join(shlex.quote(p) for p in want), timeout=30)
        have = {path: digest for digest, _, path in (ln.partition("  ") for ln in r.stdout.splitlines())}
        stale += [f"{h}:{p.rsplit('/', 1)[1]}" for p, d in want.items() if have.get(p) != d]
    return Reading(not stale, f"siaga's host programs differ from this workstation's ({', '.join(stale)}). Fix: run the site "
                              "deploy first", {"stale": stale})


def source_is_primary(s: Switch) -> Reading:
    st = s.known(s.source)
    if st.get("running") and st.get("in_recovery") is False:
        return Reading(True, data={"timeline": st.get("timeline"), "lsn": st.get("current_lsn")})
    if s.readings.get(s.target, {}).get("in_recovery") is False and s.site.active_site == s.to:
        return Reading(False, f"{s.target} is already the primary and the site file says active_site: {s.to}: nothing to switch")
    return Reading(False, f"{s.source} is not a running primary (running={st.get('running')}, in_recovery={st.get('in_recovery')})")


def target_streams(s: Switch) -> Reading:
    st = s.known(s.target)
    recv = st.get("receiver") or {}
    data = {"receiver": recv, "replay_lsn": st.get("replay_lsn"), "replay_paused": st.get("replay_paused")}
    if not st.get("in_recovery"):
        return Reading(False, f"{s.target} is not a standby (in_recovery={st.get('in_recovery')})", data)
    if recv.get("status") != "streaming" or recv.get("sender_host") != s.address(s.source):
        return Reading(False, f"{s.target} does not stream from {s.source} ({recv.get('status')} from {recv.get('sender_host')})", data)
    if st.get("replay_paused"):
        return Reading(False, f"{s.target}: WAL replay is paused (pg_wal_replay_resume() it first)", data)
    return Reading(True, data=data)


def slot_present(s: Switch) -> Reading:
    st = s.known(s.source)
    name = s.slot_of(s.target)
    slot = next((x for x in st.get("slots") or [] if x["name"] == name), None)
    return Reading(bool(slot and slot["active"]), f"slot {name} on {s.source}: {'inactive' if slot else 'missing'}", {"slot": slot})


def no_archive_backlog(s: Switch) -> Reading:
    """Read after `pgbackrest check`, fresh: its WAL switch wakes an archiver that gave up after a
    failure (it retries only after a minute), so a repository repaired just before the run is not
    refused for a backlog the check has just cleared."""
    st = s.state(s.source)
    ready, arch = st.get("archive_ready"), st.get("archiver") or {}
    ok = ready is not None and ready <= 1 and not arch.get("failing")
    return Reading(ok, f"{s.source}: {ready} WAL files wait to be archived, archiver failing={arch.get('failing')} "
                       f"(last failed {arch.get('last_failed_wal')})", {"archive_ready": ready, "archiver": arch})


def lag_within_threshold(s: Switch) -> Reading:
    """The target is close behind: the promotion waits for it to replay everything, and the
    outage grows with what it still has to replay (status thresholds, EM-3)."""
    src, dst = s.known(s.source), s.known(s.target)
    cur, rep = lsn(src.get("current_lsn")), lsn(dst.get("replay_lsn"))
    if cur is None or rep is None:
        return Reading(False, f"lag unknown (primary at {src.get('current_lsn')}, standby replayed {dst.get('replay_lsn')})")
    lag, limit = max(0, cur - rep), s.site.status.max_lag_bytes
    return Reading(lag <= limit, f"{s.target} is {lag} bytes of WAL behind (threshold {limit})", {"lag_bytes": lag})


def archive_works(s: Switch) -> Reading:
    """`pgbackrest check` on the primary: WAL archiving works and the repository answers (BK-1)."""
    out = H.pg(s.site, s.source, "pgbackrest_check", stanza=s.site.backup.stanza, timeout=150)
    return Reading(bool(out.get("ok")), f"{s.source}: pgbackrest check: {out.get('error')}")


def rejoin_possible(s: Switch) -> Reading:
    bad = []
    for h in (s.source, s.target):
        st = s.known(h)
        if st.get("wal_log_hints") != "on" and st.get("data_checksums") != "on":
            bad.append(f"{h}: neither wal_log_hints nor data checksums are on (a rejoin by pg_rewind needs one)")
        if st.get("full_page_writes") != "on":
            bad.append(f"{h}: full_page_writes is off")
    return Reading(not bad, "; ".join(bad))


def reverse_connection(s: Switch) -> Reading:
    """The old primary will stream from the target: its replication login must work now."""
    out = H.pg(s.site, s.source, "reach", peer=s.address(s.target), user=s.site.replication.user, timeout=30)
    return Reading(bool(out.get("ok")), f"{s.source} → {s.target} replication connection: {out.get('error')}",
                   {"system_identifier": out.get("system_identifier")})


def disk_space(s: Switch) -> Reading:
    low = []
    for h in (s.source, s.target):
        st = s.known(h)
        free, size = st.get("disk_free_bytes"), st.get("disk_size_bytes")
        if not free or not size or free / size < MIN_FREE_FRACTION:
            low.append(f"{h}: {free} of {size} bytes free (under {MIN_FREE_FRACTION:.0%})")
    return Reading(not low, "; ".join(low))


def uploads_in_sync(s: Switch) -> Reading:
    from drc.status.command import probe_host, uploads_lag

    if not s.site.uploads_sync.enabled:
        return Reading(False, "uploads_sync is disabled (EM-3.7?): the DRC's uploads may be stale; enable it first")
    src, dst = probe_host(s.site, s.source), probe_host(s.site, s.target)
    if "files" not in (src.get("uploads") or {}) or "files" not in (dst.get("uploads") or {}):
        return Reading(False, f"uploads not listed: {src.get('error') or (src.get('uploads') or {}).get('error')} / "
                              f"{dst.get('error') or (dst.get('uploads') or {}).get('error')}")
    lag = uploads_lag(src["uploads"], dst["uploads"], src["now"], s.site.uploads_sync.exclude)
    ok = lag["lag_seconds"] <= s.site.status.max_lag_seconds
    return Reading(ok, f"uploads on {s.target} are {lag['lag_seconds']:.0f} s behind ({lag['missing']} missing)", lag)


def recent_backup(s: Switch) -> Reading:
    """A successful database backup within its period (BK-1): the switch-over starts from a known good copy."""
    from drc.backup import runs

    db = (runs.collect(s.site).get("sets") or {}).get("db") or {}
    ok = bool(db.get("last_success")) and not db.get("late")
    return Reading(ok, f"the database backup's last success {db.get('last_success') or 'never'} is not within its period",
                   {"db": {k: db.get(k) for k in ("last_success", "due", "late")}})


PREFLIGHT = (
    Check("both hosts answer", "EM-3", both_answer),
    Check("siaga's programs on the hosts are this siaga's", "EM-3", programs_current),
    Check("the old primary is the primary", "EM-3", source_is_primary),
    Check("the target streams from it, replay not paused", "EM-3", target_streams),
    Check("the target's replication slot is on the primary", "EM-3", slot_present),
    Check("the target's replay lag within the threshold", "EM-3", lag_within_threshold),
    Check("WAL archiving works and the repository answers (pgbackrest check)", "BK-1", archive_works),
    Check("no WAL waits to be archived", "BK-1", no_archive_backlog),
    Check("a rejoin is possible (wal_log_hints or checksums, full_page_writes)", "EM-3", rejoin_possible),
    Check("the reverse replication connection works", "EM-3", reverse_connection),
    Check("a good database backup within its period", "BK-1", recent_backup),
    Check("disk space on both hosts", "IN-4", disk_space),
    Check("uploads in sync", "EM-3", uploads_in_sync),
)


# --- steps ------------------------------------------------------------------------------------

def notice_on(s: Switch) -> dict:
    import shlex

    from drc.hosts import remote

    text = (f"<!doctype html><meta charset=utf-8><title>Pemeliharaan</title><h1>Layanan SPSE sedang dipindahkan</h1>"
            f"<p>Layanan dipindahkan ke {s.to.upper()} (pemeliharaan terencana). Silakan coba lagi dalam beberapa saat.</p>")
    r = remote.run(s.site, s.source, f"printf %s {shlex.quote(text)} | sudo -n install -D -m 0644 /dev/stdin {NOTICE_FILE}", timeout=30)
    if not r.ok:
        raise RuntimeError(f"{s.source}: {r.error or r.stderr.strip()}")
    return {"file": NOTICE_FILE}


def notice_shown(s: Switch) -> Reading:
    from drc.hosts import remote

    return Reading(remote.run(s.site, s.source, f"test -s {NOTICE_FILE}", timeout=30).ok, f"{NOTICE_FILE} missing on {s.source}")


def notice_off(s: Switch, host: str | None = None) -> dict:
    from drc.hosts import remote

    r = remote.run(s.site, host or s.source, f"sudo -n rm -f {NOTICE_FILE}", timeout=30)
    if not r.ok:
        raise RuntimeError(f"{host or s.source}: {r.error or r.stderr.strip()}")
    return {}


def app_stop_source(s: Switch) -> dict:
    return H.systemctl(s.site, s.source, "stop", s.site.spse_app.unit)


def app_stopped_on_source(s: Switch) -> Reading:
    return Reading(not H.is_active(s.site, s.source, s.site.spse_app.unit), f"{s.site.spse_app.unit} still active on {s.source}")


def app_start_source(s: Switch) -> dict:
    return H.systemctl(s.site, s.source, "start", s.site.spse_app.unit)


def shut_down_source(s: Switch) -> dict:
    out = H.pg(s.site, s.source, "stop", deadline_s=SHUTDOWN_DEADLINE_S, timeout=SHUTDOWN_DEADLINE_S + 30)
    if not out.get("stopped"):
        raise RuntimeError(f"{s.source} did not shut down cleanly: {out.get('error') or out.get('control')}")
    return {"token": out.get("token"), "timeline": out.get("timeline"), "seconds": out.get("seconds")}


def token(s: Switch) -> Reading:
    """The demotion token: the old primary is down and its control file says 'shut down'."""
    st = s.state(s.source)
    cd = st.get("control") or {}
    ok = not st.get("running") and cd.get("state") == "shut down" and bool(cd.get("checkpoint_lsn"))
    return Reading(ok, f"{s.source}: running={st.get('running')}, control file state {cd.get('state')!r}",
                   {"token": cd.get("checkpoint_lsn"), "timeline": cd.get("timeline")})


def start_source(s: Switch) -> dict:
    return H.pg(s.site, s.source, "start", timeout=120)


def wait_for_replay(s: Switch) -> dict:
    return {}  # the check waits: the standby replays by itself


def replayed_past_token(s: Switch) -> Reading:
    t = token(s)
    if not t.ok:
        return t
    st = s.state(s.target)
    replay = st.get("replay_lsn")
    ok = st.get("in_recovery") is not None and lsn(replay) is not None and lsn(replay) > lsn(t.data["token"])
    return Reading(ok, f"{s.target} replayed {replay}, not past the token {t.data['token']}",
                   {"token": t.data["token"], "replay_lsn": replay, "in_recovery": st.get("in_recovery")})


def _push_units() -> tuple[str, str]:
    from roles.uploads_sync.layout import RESYNC_TIMER, SYNC_UNIT

    return SYNC_UNIT, RESYNC_TIMER


def _push(s: Switch, verb: str, doing: str) -> None:
    """`systemctl VERB --now` of the source's uploads push units (lsyncd, the re-sync timer)."""
    r = remote.run(s.site, s.source, f"sudo -n systemctl {verb} --now {' '.join(_push_units())}", timeout=120)
    if not r.ok:
        raise RuntimeError(f"{s.source}: {doing} the uploads push: {r.error or r.stderr.strip()[-300:]}")


def push_off(s: Switch) -> dict:
    """The old site's uploads push stopped and disabled before the target can take writes: a later
    start of its lsyncd (Restart=always, a reboot) or of its hourly re-sync would copy its uploads
    over the new site's with --delete, removing every upload made there since. The converge that
    follows keeps them off (it is no longer the uploads source)."""
    _push(s, "disable", "stopping")
    return {"stopped": list(_push_units())}


def push_is_off(s: Switch) -> Reading:
    units = _push_units()
    r = remote.run(s.site, s.source, f"systemctl is-active {' '.join(units)}; systemctl is-enabled {' '.join(units)}", timeout=30)
    if not r.reachable:
        return Reading(False, f"{s.source}: {r.error}")
    states = r.stdout.split()
    on = [f"{u} {st}" for u, st in zip(units * 2, states) if st in ("active", "activating", "reloading", "enabled")]
    return Reading(len(states) == 2 * len(units) and not on, f"{s.source}: {', '.join(on) or r.stdout.strip()}")


def push_on(s: Switch) -> dict:
    """Rolled back before the promotion: the source pushes its uploads again, as its role has it."""
    _push(s, "enable", "starting again")
    return {}


def final_uploads_sync(s: Switch) -> dict:
    from roles.uploads_sync.layout import RESYNC_UNIT

    out = H.systemctl(s.site, s.source, "start", RESYNC_UNIT, timeout=1800)
    if not out.get("ok"):
        raise RuntimeError(f"{s.source}: {RESYNC_UNIT}: {out.get('error')}")
    return {}


def uploads_identical(s: Switch) -> Reading:
    """Every file of the old site is on the target with the same size and sha256."""
    src, dst = H.uploads_digest(s.site, s.source), H.uploads_digest(s.site, s.target)
    if not src.get("ok") or not dst.get("ok"):
        return Reading(False, f"digest: {src.get('error') or dst.get('error')}")
    a, b = src["files"], dst["files"]
    missing = sorted(p for p in a if p not in b)
    differ = sorted(p for p in a if p in b and a[p] != b[p])
    # The uploads the database knows (the application's own records, when its profile names them):
    # each on the target with the sha256 the database holds (the target is a standby: same rows).
    # Those ClamAV quarantined are left out: their file left on purpose (roles/clamav, SOP IN-2).
    try:
        records = H.known_uploads(s.site, s.target, also_ask=[s.source]) or {}
    except RuntimeError as exc:
        return Reading(False, str(exc))
    known = len(records)
    unknown_file = sorted(rel for rel, digest in records.items() if (b.get(rel) or [None, None])[1] != digest)
    ok = not missing and not differ and not unknown_file
    return Reading(ok, f"{len(missing)} files missing on {s.target} ({', '.join(missing[:5])}), {len(differ)} differ "
                       f"({', '.join(differ[:5])}), {len(unknown_file)} of the {known} uploads the database knows are not "
                       f"there with its sha256 ({', '.join(unknown_file[:5])})",
                   {"files": len(a), "missing": missing[:20], "differ": differ[:20], "db_known": known,
                    "db_known_not_there": unknown_file[:20]})


def promote(s: Switch) -> dict:
    out = H.pg(s.site, s.target, "promote", timeout=120)
    if not out.get("ok"):
        raise RuntimeError(f"{s.target}: promote: {out.get('error')}")
    return {}


def promote_guard(s: Switch) -> Reading:
    return replayed_past_token(s)


def target_is_primary(s: Switch) -> Reading:
    st = s.state(s.target)
    return Reading(st.get("in_recovery") is False, f"{s.target} in_recovery={st.get('in_recovery')}",
                   {"timeline": st.get("timeline"), "lsn": st.get("current_lsn")})


def drop_standby_conf(s: Switch) -> dict:
    out = H.pg(s.site, s.target, "unfollow")
    if not out.get("ok"):
        raise RuntimeError(f"{s.target}: {out.get('error')}")
    return {}


def no_standby_conf(s: Switch) -> Reading:
    st = s.state(s.target)
    return Reading(st.get("standby_conf") is False, f"{s.target} still has conf.d/siaga-standby.conf")


def app_start_target(s: Switch) -> dict:
    notice_off(s, s.target)  # a notice left there by an earlier switch-over away from it
    return H.systemctl(s.site, s.target, "start", s.site.spse_app.unit)


def new_site(s: Switch) -> Site:
    """The site as it is once the target serves (the site file is written back later)."""
    from drc.site.write import with_active_site

    return with_active_site(s.site_file, s.to)


def open_web_target(s: Switch) -> dict:
    from roles.firewall.ruleset import render_ruleset

    content, version = render_ruleset(new_site(s), s.target)
    out = H.load_ruleset(s.site, s.target, content)
    if not out.get("ok"):
        raise RuntimeError(f"{s.target}: firewall: {out.get('error')}")
    return {"version": version}


def web_open_on_target(s: Switch) -> Reading:
    from roles.firewall.ruleset import TABLE, render_ruleset

    want = render_ruleset(new_site(s), s.target)[1]
    have = H.loaded_ruleset_version(s.site, s.target, TABLE)
    return Reading(have == want, f"{s.target}: loaded firewall {have}, want {want}", {"version": have})


def forward_on(s: Switch) -> dict:
    """The old site's Apache forwards the app to the new site: clients that still hold the old
    address (the DNS TTL) are served, not refused (issue 10 point 5)."""
    from drc.hosts import remote
    from roles.spse_app.defaults import FORWARD_CONF
    from roles.spse_app.forward import render_forward

    conf = render_forward(s.site.spse_app, s.address(s.target), s.run_id)
    out = H.program_json(remote.run_program(s.site, s.source, "apache_forward", {"mode": "on", "path": FORWARD_CONF, "conf": conf},
                                     timeout=90))
    if not out.get("ok"):
        raise RuntimeError(f"{s.source}: the forward to {s.target}: {out.get('error')}")
    return {"to": s.address(s.target)}


def forwarded(s: Switch) -> Reading:
    return health_on(s, s.source, through_apache=True)


def traffic_switch(s: Switch) -> dict:
    from drc.traffic.switch import switch

    return switch(s.site, s.to, log=s.echo).to_dict()


def traffic_points_to_target(s: Switch) -> Reading:
    from drc.traffic.switch import current, settings

    want = str(settings(s.site).addresses[s.to])
    answers = current(s.site)
    ok = bool(answers) and all(want in a.addresses for a in answers)
    return Reading(ok, f"{settings(s.site).public_name}: {[a.to_dict() for a in answers]} (want {want})",
                   {"answers": [a.to_dict() for a in answers]})


def ttl_passed(s: Switch) -> Reading:
    """Clients cache the old address for up to the TTL after the switch; until then the old site's
    forward must stay (the converge that follows removes it and closes the old web ports)."""
    import datetime as dt

    ttl = s.site.traffic.ttl if s.site.traffic else 0
    done = [e["at"] for e in (s.journal.events if s.journal else []) if e["event"] == "step-end" and e.get("step") == "traffic"
            and e.get("result") in ("done", "already done")]
    if not ttl:
        return Reading(True, data={"ttl": 0})
    if not done:
        return Reading(False, "the traffic switch's time is not in the journal")
    waited = (dt.datetime.now().astimezone() - dt.datetime.fromisoformat(done[-1])).total_seconds()
    return Reading(waited >= ttl, f"{waited:.0f} s since the traffic switch, TTL {ttl} s", {"waited_s": round(waited, 1), "ttl": ttl})


def slot_for_source(s: Switch) -> dict:
    out = H.pg(s.site, s.target, "slot", name=s.slot_of(s.source))
    if not out.get("ok"):
        raise RuntimeError(out.get("error"))
    return {"slot": s.slot_of(s.source)}


def source_slot_present(s: Switch) -> Reading:
    st = s.state(s.target)
    name = s.slot_of(s.source)
    return Reading(any(x["name"] == name for x in st.get("slots") or []), f"slot {name} missing on {s.target}")


def source_follows(s: Switch) -> dict:
    from roles.replication.standby import standby_conf

    conf = standby_conf(s.tier(), s.source, s.target)
    out = H.pg(s.site, s.source, "follow", conf=conf, timeout=180)
    if not out.get("ok"):
        raise RuntimeError(f"{s.source}: {out.get('error')}")
    return {"control": out.get("control")}


def source_streams_from_target(s: Switch) -> Reading:
    st = s.state(s.source)
    recv = st.get("receiver") or {}
    ok = st.get("in_recovery") is True and recv.get("status") == "streaming" and recv.get("sender_host") == s.address(s.target)
    return Reading(ok, f"{s.source}: in_recovery={st.get('in_recovery')}, receiver {recv.get('status')} from {recv.get('sender_host')}",
                   {"receiver": recv})


def write_site_file(s: Switch) -> dict:
    from drc.site.write import set_active_site

    s.site = set_active_site(s.site_file, s.to, lost=s.lost_after)
    return {"active_site": s.to, "lost_site": s.lost_after}


def site_file_says(s: Switch) -> Reading:
    s.site = load_site(s.site_file)
    ok = s.site.active_site == s.to and s.site.lost_site == s.lost_after
    return Reading(ok, f"active_site is {s.site.active_site}, lost_site {s.site.lost_site}")


def skip_prechange_reason(s: Switch) -> dict:
    """BK-2's pre-change backup is this runbook's own: a good backup was required by the preflight
    and one is taken right after (step backup); mid-move, the repository is being set up at the
    other site, so a backup inside the deploy could not work."""
    from roles.backup.prechange import SKIP_ENV

    return {SKIP_ENV: f"switch-over {s.run_id} to {s.to}: database backup checked by the preflight, taken again "
                      "after this deploy, repository moving to the other site"}


def converge(s: Switch) -> dict:
    from drc.hosts.deploy import run_deploy

    res = run_deploy(s.site_file, env=skip_prechange_reason(s), echo=None)
    if not res.ok:
        raise RuntimeError(f"the site deploy failed: {res.error or ''} {[f'{e.host}: {e.op}: {e.stderr[-200:]}' for e in res.errors][:3]}")
    return {"changed": len(res.changed), "seconds": round(res.seconds, 1)}


def converged(s: Switch) -> Reading:
    """Proven, not assumed: a preview of the site deploy finds nothing left to change, and the app
    runs on the target only (a lost source is neither deployed nor asked)."""
    from drc.hosts.deploy import no_change_problem, run_deploy

    problem = no_change_problem(run_deploy(s.site_file, "deploys/site.py", "--dry", env=skip_prechange_reason(s), echo=None))
    app = s.site.spse_app.unit
    on_target = H.is_active(s.site, s.target, app)
    on_source = s.source not in s.site.lost_hosts and H.is_active(s.site, s.source, app)
    ok = problem is None and on_target and not on_source
    return Reading(ok, f"site deploy preview: {problem or 'no change'}; {app} active on {s.target}={on_target}, "
                       f"on {s.source}={on_source}")


def nothing(s: Switch) -> dict:
    return {}


def health_on(s: Switch, host: str, through_apache: bool = False) -> Reading:
    """The app's health endpoint asked on `host` (status-probe's health part only: these checks sit
    inside the outage): the app itself, or through that host's Apache on 443."""
    from drc.hosts import remote

    app = s.site.spse_app
    url = (f"https://127.0.0.1{app.context_path}/health" if through_apache
           else f"http://127.0.0.1:{app.listen_port}{app.context_path}/health")
    # Through Apache as a client asks: for the public name (a forward verifies the other site's
    # certificate against the name the client asked for).
    r = remote.run_program(s.site, host, "status_probe", {"only": "health", "health_url": url, "timeout": 3,
                                                          "through_local_https": through_apache,
                                                          "host_header": (app.server_name or (s.site.traffic and s.site.traffic.public_name)) if through_apache else None},
                           timeout=15, sudo=False)
    try:
        h = json.loads(r.stdout)["health"] if r.ok else {"status": "down", "detail": r.error or r.stderr.strip()[-200:]}
    except (ValueError, KeyError):
        h = {"status": "down", "detail": r.stdout.strip()[-200:]}
    return Reading(h.get("status") == "ok", f"{host}: app health {h.get('status')} ({h.get('detail')})", {"health": h})


def app_healthy(s: Switch) -> Reading:
    return health_on(s, s.target)


def checkpoint(s: Switch) -> dict:
    """After a promotion the control file names the old timeline until a checkpoint: pg_rewind and
    pgBackRest's backup read it (a backup before one fails: WAL timeline does not match pg_control)."""
    r = s.psql(s.target, "CHECKPOINT", timeout=600)
    if not r.ok:
        raise RuntimeError(f"{s.target}: CHECKPOINT: {r.error or r.stderr.strip()}")
    return {}


def checkpoint_on_timeline(s: Switch) -> Reading:
    st = s.state(s.target)
    ok = st.get("checkpoint_timeline") == st.get("timeline")
    return Reading(ok, f"{s.target}: last checkpoint on timeline {st.get('checkpoint_timeline')}, serving {st.get('timeline')}")


def archive_check_target(s: Switch) -> dict:
    """The serving timeline's history into the repository in use, if PostgreSQL archived it to
    another one (before a fail-back moved the repository); the check runs pgbackrest check."""
    st = s.state(s.target)
    out = H.pg(s.site, s.target, "history_push", stanza=s.site.backup.stanza, timeline=st.get("timeline") or 1, timeout=300)
    if not out.get("ok"):
        raise RuntimeError(f"{s.target}: {out.get('error')}")
    return {"history_pushed": out.get("pushed")}


def archive_follows(s: Switch) -> Reading:
    """On the new primary: `pgbackrest check` passes and the new timeline's history file is in the
    repository (its archive-push reaches the repository at the other site)."""
    st = s.state(s.target)
    chk = H.pg(s.site, s.target, "pgbackrest_check", stanza=s.site.backup.stanza, timeout=150)
    if not chk.get("ok"):
        return Reading(False, f"{s.target}: pgbackrest check: {chk.get('error')}")
    hist = H.pg(s.site, s.target, "history_archived", stanza=s.site.backup.stanza, timeline=st.get("timeline") or 0, timeout=150)
    return Reading(bool(hist.get("ok")), f"{s.target}: {hist.get('error')}", {"history": hist.get("file"), "timeline": st.get("timeline")})


# Said by the backup runner when the set's lock is held (a run this runbook started before it was
# killed goes on on the host): the step's check waits for that run instead.
STILL_GOING = "is still going"


def backup_after_switch(s: Switch) -> dict:
    from drc.backup import runs

    plan, problems = runs.plan_run(s.site, runs.read_hosts(s.site), "db")
    if problems or not plan:
        raise RuntimeError(f"no host runs the database backup: {'; '.join(problems)}")
    host = next(iter(plan))  # the repository host, at the site that does not serve now
    out = runs.run_sets(s.site, plan, runs.operator(s.site))[host]
    s.readings["backup"] = out
    return {"records": [{k: r.get(k) for k in ("set", "result", "error")} for r in out.get("records") or []], "error": out.get("error")}


def backup_ok(s: Switch) -> Reading:
    """A database backup that succeeded in this step: the one the action ran, or (resumed, or a run
    started before siaga was killed still going) one read from the hosts' backup logs."""
    from drc.backup import runs

    recs = (s.readings.get("backup") or {}).get("records") or []
    if recs and all(r.get("result") == "success" for r in recs):
        return Reading(True)
    failed = [r.get("error") for r in recs if r.get("result") != "success" and STILL_GOING not in (r.get("error") or "")]
    if failed:
        return Reading(False, f"backup after the switch: {failed}", final=True)
    # Since this step first started (a backup that a killed run started ends after it): the runbooks
    # that reuse this step (failover, fail-back) have no promotion of their own to count from.
    began = [e["at"] for e in (s.journal.events if s.journal else []) if e.get("step") == "backup" and e["event"] == "step-start"]
    db = (runs.collect(s.site).get("sets") or {}).get("db") or {}
    last = db.get("last_success")
    ok = bool(last and began and runs.parse_time(last) >= runs.parse_time(began[0]))
    return Reading(ok, f"no database backup succeeded since this step began ({began[:1]}; last success {last})",
                   {"last_success": last})


def switchover(site_file: Path, to: str, echo: Callable[[str], None] = print) -> tuple[Runbook, Switch]:
    s = Switch(Path(site_file), to, echo)
    src, dst = s.source, s.target
    steps = (
        Step("notice", "IN-3", f"show the maintenance notice on {src}", notice_on, notice_shown, undo=notice_off),
        Step("stop-app", "EM-2", f"stop the app on {src}", app_stop_source, app_stopped_on_source, undo=app_start_source),
        Step("shutdown", "EM-2", f"CHECKPOINT and clean shutdown of {src}'s PostgreSQL; read its demotion token",
             shut_down_source, token, undo=start_source, deadline_s=10),
        Step("replayed", "EM-3", f"{dst} has replayed past the token", wait_for_replay, replayed_past_token, deadline_s=30),
        Step("push-off", "EM-3", f"{src}'s uploads push (lsyncd, hourly re-sync) stopped and disabled: once {dst} "
             "serves, nothing of the old site copies over its uploads", push_off, push_is_off, undo=push_on),
        Step("uploads", "EM-3", f"final uploads sync {src} → {dst}, verified file for file (size, sha256)",
             final_uploads_sync, uploads_identical, deadline_s=10),
        Step("promote", "EM-2", f"promote {dst}", promote, target_is_primary, guard=promote_guard, no_return=True),
        Step("app-up", "EM-2", f"start the app on {dst}: it serves reads and writes", app_start_target, app_healthy,
             deadline_s=60),
        Step("web", "IN-2", f"open the web ports on {dst} (the firewall role's ruleset for {to} active)", open_web_target,
             web_open_on_target),
        Step("forward", "EM-2", f"{src}'s Apache forwards the app to {dst} (clients holding the old address)", forward_on,
             forwarded, deadline_s=15),
        *((Step("traffic", "EM-2", f"users' traffic to {dst}: {s.site.traffic.method} of {s.site.traffic.public_name}",
                traffic_switch, traffic_points_to_target, deadline_s=5),) if s.site.traffic else ()),
        Step("primary-conf", "EM-3", f"{dst}'s standby settings removed, as the replication role has them on a primary",
             drop_standby_conf, no_standby_conf),
        Step("slot", "EM-3", f"replication slot for {src} on {dst}", slot_for_source, source_slot_present),
        Step("rejoin", "EM-3", f"{src} follows {dst} as a streaming standby (no rebuild)", source_follows,
             source_streams_from_target, deadline_s=60),
        Step("site-file", "EM-2", f"the site file says active_site: {to}", write_site_file, site_file_says),
        *((Step("ttl", "EM-2", f"the DNS TTL ({s.site.traffic.ttl} s) has passed since the traffic switch: no client holds "
                f"{src}'s address any more", nothing, ttl_passed, deadline_s=s.site.traffic.ttl + 15),) if s.site.traffic else ()),
        Step("converge", "EM-2", "the site deploy: uploads sync reversed, web ports, app, backups follow", converge, converged,
             deadline_s=1),
        Step("app", "EM-2", f"the app on {dst} still serves reads and writes after the deploy", nothing, app_healthy,
             deadline_s=60),
        Step("archive", "BK-1", f"{dst}'s WAL reaches the repository (pgbackrest check, the new timeline's history file)",
             archive_check_target, archive_follows, deadline_s=5),
        Step("backup", "BK-1", f"a database backup of {dst} into the repository at {src}'s site", backup_after_switch, backup_ok,
             deadline_s=900),
    )
    return Runbook("switchover", to, f"Switch-over to {to.upper()}: {src} → {dst}", PREFLIGHT, steps), s
