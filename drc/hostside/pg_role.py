#!/usr/bin/python3
"""pg-role '<json args>': read and change this host's PostgreSQL role for the runbooks.

Installed by roles/postgresql as /usr/local/lib/siaga/pg-role, run as root (sudo) by
drc/runbooks. Standard library only. Every mode prints one JSON object; args always carry
{"version": "<PostgreSQL major>", "cluster": "main", "port": 5432}. Modes:

- `state`: what the server says it is (never the site file): running, pg_is_in_recovery, timeline,
  LSNs, replay paused, the WAL receiver (status, sender), slots, WAL waiting to be archived
  (.ready files) and the archiver's failures, wal_log_hints / data_checksums / full_page_writes,
  pg_controldata (state, latest checkpoint), free disk space of the data directory.
- `stop`: CHECKPOINT, then a clean (fast) shutdown within `deadline_s`; then pg_controldata's
  latest checkpoint location: the demotion token a standby must replay past before it may be
  promoted. `stopped` is true only when the control file says "shut down".
- `start`: start the cluster and wait until it accepts connections.
- `promote`: pg_promote(wait => true) on a standby.
- `slot`: make the physical replication slot `name` if missing; with `drop`, drop it if there (and idle).
- `reach`: as postgres, open a replication connection to `peer` as `user` with the cluster's
  passfile (IDENTIFY_SYSTEM): the connection a rejoined standby will need, tried before anything changes.
- `unfollow`: on a promoted server, remove conf.d/siaga-standby.conf (its settings are ignored by a
  primary; the replication role removes it on the primary too) and reload.
- `pgbackrest_check`: `pgbackrest check` as postgres with this host's configuration: a WAL segment
  archived and found in the repository (the archive works, the repository answers).
- `history_archived`: the timeline's history file (`0000000N.history`) is in the repository's archive
  (archive-get into a scratch file): the new primary's archive-push reached it.
- `wal_trim` (fail-back, on the serving primary, before pg_rewind, which copies the source's whole
  pg_wal): the WAL before `keep_from` (the rewound host's last common checkpoint's REDO: its replay
  starts there) removed by one CHECKPOINT under a temporary `wal_keep_size` just covering it and
  `wal_recycle = off` (ALTER SYSTEM, reset before returning). WAL not yet archived stays (the
  archiver's rule); `keep_from`'s segment must still be there afterwards. With `check`: read only.
- `switch_archived` (fail-back, on the serving primary, before the trim): pg_switch_wal(), then wait
  until the archiver has archived the segment it closed (no failure newer): the WAL before is archived.
- `archive_has` (fail-back, on the host to be rewound): which WAL files of `names` its pgBackRest finds
  in the archive (repo-ls), the history file of `timeline` and the first name fetched (archive-get).
- `repo_allow` (fail-back, on the repository host): the pgBackRest key's line of the repository account's
  keys file also accepts `address` (the old primary), until the site deploy writes it again.
- `records`: the application's own record of its uploads: (path, sha256) of every row of `table`
  (identifiers validated by the site file's application profile), read from `database`.
- `follow`: make a cleanly shut down former primary a standby: write `conf` (its
  conf.d/siaga-standby.conf, rendered by the replication role's template) and standby.signal, and
  start it. Refused unless the control file says "shut down" (a crashed primary may hold WAL the
  new primary never got: that is fail-back's pg_rewind, not this).
"""

import json
import math
import os
import re
import subprocess
import sys
import time

PASSFILE = "/var/lib/postgresql/.pgpass"  # the replication role's (roles/replication/standby.py)
# The archiver's counters, and whether its last attempt failed (a failure newer than its last success).
ARCHIVER_SQL = """(SELECT row_to_json(a) FROM (SELECT archived_count, failed_count, last_archived_wal, last_failed_wal,
                   coalesce(last_failed_time > coalesce(last_archived_time, 'epoch'), false) AS failing
                   FROM pg_stat_archiver) a)"""
STATE_SQL = """
SELECT json_build_object(
  'in_recovery', pg_is_in_recovery(),
  'current_lsn', CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,
  'wal_timeline', CASE WHEN pg_is_in_recovery() THEN NULL
                  ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,
  'receive_lsn', pg_last_wal_receive_lsn()::text,
  'replay_lsn', pg_last_wal_replay_lsn()::text,
  'replay_paused', CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() <> 'not paused' ELSE false END,
  'checkpoint_timeline', (SELECT timeline_id FROM pg_control_checkpoint()),
  'receiver', (SELECT row_to_json(r) FROM (SELECT status, sender_host, sender_port, slot_name, received_tli,
                                                  flushed_lsn::text AS flushed_lsn FROM pg_stat_wal_receiver) r),
  'slots', (SELECT coalesce(json_agg(json_build_object('name', slot_name, 'active', active,
                                                       'restart_lsn', restart_lsn::text)), '[]') FROM pg_replication_slots),
  'senders', (SELECT coalesce(json_agg(json_build_object('address', client_addr::text, 'state', state,
                                                         'replay_lsn', replay_lsn::text)), '[]') FROM pg_stat_replication),
  'wal_log_hints', current_setting('wal_log_hints'),
  'data_checksums', current_setting('data_checksums'),
  'full_page_writes', current_setting('full_page_writes'),
  'archive_mode', current_setting('archive_mode'),
  'archiver', {archiver},
  'system_identifier', (SELECT system_identifier::text FROM pg_control_system())
)
""".format(archiver=ARCHIVER_SQL)


def run(cmd, timeout=60, user=None):
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/", stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout, p.stderr


def paths(a):
    v, c = str(a["version"]), a["cluster"]
    return {"data": f"/var/lib/postgresql/{v}/{c}", "conf": f"/etc/postgresql/{v}/{c}",
            "bin": f"/usr/lib/postgresql/{v}/bin", "unit": f"postgresql@{v}-{c}.service"}


def psql(a, sql, timeout=30):
    return run(["psql", "-XAtq", "-p", str(a["port"]), "-d", "postgres", "-c", sql], timeout, user="postgres")


def running(a):
    rc, _, _ = run(["pg_ctlcluster", str(a["version"]), a["cluster"], "status"], 30)
    return rc == 0


def parse_controldata(text):
    """pg_controldata's lines as a dict of the fields the runbooks use."""
    fields = {"Database cluster state": "state", "Latest checkpoint location": "checkpoint_lsn",
              "Latest checkpoint's TimeLineID": "timeline", "Database system identifier": "system_identifier",
              "Minimum recovery ending location": "min_recovery_lsn"}
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in fields:
            out[fields[key.strip()]] = value.strip()
    if "timeline" in out:
        out["timeline"] = int(out["timeline"])
    return out


def controldata(a):
    p = paths(a)
    rc, so, se = run([f"{p['bin']}/pg_controldata", "-D", p["data"]], 30)
    return parse_controldata(so) if rc == 0 else {"error": (se or so).strip()[-300:]}


def archive_ready(a):
    d = os.path.join(paths(a)["data"], "pg_wal", "archive_status")
    try:
        return sum(1 for f in os.listdir(d) if f.endswith(".ready"))
    except OSError:
        return None


def state(a):
    p = paths(a)
    out = {"running": running(a), "control": controldata(a), "archive_ready": archive_ready(a),
           "standby_signal": os.path.exists(os.path.join(p["data"], "standby.signal")),
           "standby_conf": os.path.exists(standby_conf_path(a))}
    try:
        st = os.statvfs(p["data"])
        out["disk_free_bytes"] = st.f_bavail * st.f_frsize
        out["disk_size_bytes"] = st.f_blocks * st.f_frsize
    except OSError:
        pass
    if out["running"]:
        rc, so, se = psql(a, STATE_SQL)
        if rc == 0:
            out.update(json.loads(so.strip()))
            out["timeline"] = out["wal_timeline"] or (out["receiver"] or {}).get("received_tli") or out["checkpoint_timeline"]
        else:
            out["error"] = (se or so).strip()[-300:]
    return out


def wait_ready(a, deadline_s):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if run(["pg_isready", "-q", "-p", str(a["port"])], 10)[0] == 0:
            return True
        time.sleep(0.2)
    return False


def stop(a):
    p = paths(a)
    deadline = float(a.get("deadline_s", 30))
    t0 = time.monotonic()
    if running(a):
        # A checkpoint first, so the shutdown checkpoint has little left to write (fast, predictable).
        psql(a, "CHECKPOINT", timeout=max(5, deadline / 2))
        try:
            rc, so, se = run(["systemctl", "stop", p["unit"]], timeout=max(1, deadline - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            return {"ok": False, "stopped": False, "error": f"not shut down within {deadline:g} s", "control": controldata(a)}
        if rc != 0:
            return {"ok": False, "stopped": False, "error": f"systemctl stop: {(se or so).strip()[-300:]}", "control": controldata(a)}
    cd = controldata(a)
    stopped = cd.get("state") == "shut down" and not running(a)
    return {"ok": stopped, "stopped": stopped, "token": cd.get("checkpoint_lsn"), "timeline": cd.get("timeline"),
            "control": cd, "seconds": round(time.monotonic() - t0, 3)}


def start(a):
    rc, so, se = run(["systemctl", "start", paths(a)["unit"]], 120)
    ready = rc == 0 and wait_ready(a, float(a.get("deadline_s", 60)))
    return {"ok": ready, "error": None if ready else f"not accepting connections: {(se or so).strip()[-300:]}"}


def promote(a):
    rc, so, se = psql(a, "SELECT pg_promote(true, 60)", timeout=90)
    ok = rc == 0 and so.strip() == "t"
    return {"ok": ok, "error": None if ok else (se or so).strip()[-300:]}


def slot(a):
    name = a["name"]
    if not re.fullmatch(r"[a-z0-9_]{1,63}", name):
        return {"ok": False, "error": f"slot name {name!r}"}
    if a.get("drop"):  # a lost host's slot (failover): it would keep WAL until the disk fills
        sql = f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{name}' AND NOT active"
    else:
        sql = (f"SELECT pg_create_physical_replication_slot('{name}') WHERE NOT EXISTS "
               f"(SELECT 1 FROM pg_replication_slots WHERE slot_name = '{name}')")
    rc, so, se = psql(a, sql)
    return {"ok": rc == 0, "error": None if rc == 0 else (se or so).strip()[-300:]}


def reach(a):
    conninfo = (f"host={a['peer']} port={int(a['port'])} user={a['user']} passfile={a.get('passfile', PASSFILE)} "
                "dbname=replication replication=true connect_timeout=5")
    rc, so, se = run(["psql", "-XAtq", conninfo, "-c", "IDENTIFY_SYSTEM"], 30, user="postgres")
    ok = rc == 0 and bool(so.strip())
    return {"ok": ok, "system_identifier": so.split("|")[0].strip() if ok else None,
            "error": None if ok else (se or so).strip()[-300:]}


def pgbackrest_check(a):
    rc, so, se = run(["pgbackrest", f"--stanza={a['stanza']}", "--log-level-console=warn", "check"], 120, user="postgres")
    return {"ok": rc == 0, "error": None if rc == 0 else (se or so).strip()[-400:]}


def archive_get(stanza, name, timeout):
    """pgBackRest's archive-get of `name` into a scratch directory, as postgres: (fetched, error)."""
    import tempfile

    # In /tmp, not $TMPDIR: under sudo that is root's private /tmp/user/0 (libpam-tmpdir), which
    # postgres cannot enter.
    with tempfile.TemporaryDirectory(prefix="siaga-archive-", dir="/tmp") as d:
        os.chown(d, *_postgres())
        rc, so, se = run(["pgbackrest", f"--stanza={stanza}", "--log-level-console=warn", "archive-get", name,
                          os.path.join(d, name)], timeout, user="postgres")
        found = rc == 0 and os.path.exists(os.path.join(d, name))
    return found, None if found else (se or so).strip()[-400:] or f"{name} not in the archive"


def history_name(timeline) -> str:
    return f"{int(timeline):08X}.history"


def history_archived(a):
    name = history_name(a["timeline"])
    found, error = archive_get(a["stanza"], name, 120)
    return {"ok": found, "file": name, "error": error}


def history_push(a):
    """Every timeline history file in pg_wal that the repository in use lacks, pushed to it: a
    repository set up after a promotion (the fail-back moves it back to the other site) never got
    the history its restores across timelines need, since PostgreSQL archived it elsewhere."""
    wal = os.path.join(paths(a)["data"], "pg_wal")
    pushed = []
    for tl in range(2, int(a["timeline"]) + 1):
        if history_archived({**a, "timeline": tl})["ok"] or not os.path.exists(os.path.join(wal, history_name(tl))):
            continue
        rc, so, se = run(["pgbackrest", f"--stanza={a['stanza']}", "--log-level-console=warn", "archive-push",
                          os.path.join(wal, history_name(tl))], 120, user="postgres")
        if rc != 0:
            return {"ok": False, "pushed": pushed, "error": f"archive-push {history_name(tl)}: {(se or so).strip()[-400:]}"}
        pushed.append(history_name(tl))
    return {"ok": True, "pushed": pushed}


def switch_archived(a):
    """pg_switch_wal() on the serving primary, then wait (`deadline_s`) until its archiver has
    archived the segment it closed, with no failure newer than that: every WAL file before the next
    segment is then in the archive (the archiver goes in order, and PostgreSQL keeps what it has not
    archived). Returns the closed segment's name and the segment size."""
    rc, so, se = psql(a, "SELECT pg_walfile_name(pg_switch_wal()), "
                         "(SELECT setting FROM pg_settings WHERE name = 'wal_segment_size')", timeout=60)  # bytes
    if rc != 0 or "|" not in so:
        return {"ok": False, "error": (se or so).strip()[-300:]}
    segment, seg_bytes = so.strip().split("|")
    end = time.monotonic() + float(a.get("deadline_s", 60))
    arch = {}
    while True:
        rc, so, se = psql(a, f"SELECT {ARCHIVER_SQL}", timeout=30)
        if rc == 0 and so.strip():
            arch = json.loads(so)
            done = arch.get("last_archived_wal") or ""
            # Same timeline: the 24 hex digits order as the WAL does (a .partial or .history is no segment).
            if re.fullmatch(r"[0-9A-F]{24}", done) and done >= segment and not arch.get("failing"):
                return {"ok": True, "segment": segment, "seg_bytes": int(seg_bytes), "archiver": arch}
        if time.monotonic() > end:
            return {"ok": False, "segment": segment, "archiver": arch,
                    "error": f"{segment} not archived within {a.get('deadline_s', 60)} s (archiver: {arch})"}
        time.sleep(0.5)


ARCHIVED = re.compile(r"\b([0-9A-F]{24})-[0-9a-f]{40}")


def archive_has(a):
    """On the host to be rewound: which of the WAL files `names` its pgBackRest (its own configuration,
    the one a restore_command there uses) finds in the repository's archive (`repo-ls` of the stanza's
    archive), and whether it can read them: the timeline's history file and the first of `names` are
    fetched with archive-get into a scratch directory."""
    names, stanza = list(a["names"]), a["stanza"]
    if not all(re.fullmatch(r"[0-9A-F]{24}", n) for n in names):
        return {"ok": False, "error": "names must be WAL segment names"}
    rc, so, se = run(["pgbackrest", f"--stanza={stanza}", "--log-level-console=warn", "repo-ls", "--recurse",
                      f"archive/{stanza}"], 300, user="postgres")
    if rc != 0:
        return {"ok": False, "error": f"repo-ls: {(se or so).strip()[-400:]}"}
    listed = set(ARCHIVED.findall(so))
    fetched = {}
    for name in [history_name(a["timeline"]), *names[:1]]:
        fetched[name], error = archive_get(stanza, name, 300)
        if not fetched[name]:
            return {"ok": False, "fetched": fetched, "error": f"archive-get {name}: {error}"}
    return {"ok": True, "present": [n for n in names if n in listed], "fetched": fetched}


ADDRESS = re.compile(r"^[0-9A-Fa-f.:]{2,45}$")


def repo_allow(a):
    """On the repository host, for the fail-back: the database hosts' pgBackRest key (the line of the
    repository account's keys file forced to `wrapper`, pgBackRest's remote only) accepted from
    `address` too (the old primary, to archive-get the WAL the serving host trimmed). The site deploy
    writes the file as the site file says again (the converge step). With `check`: read only."""
    path, wrapper, address = a["keys_file"], a["wrapper"], a["address"]
    if not ADDRESS.match(address):
        return {"ok": False, "error": f"bad address {address!r}"}
    try:
        with open(path) as fh:
            lines = fh.readlines()
    except OSError as exc:
        return {"ok": False, "error": f"{path}: {exc}"}
    line = re.compile(r'^restrict,from="([^"]*)",command="' + re.escape(wrapper) + r'" (.*)$', re.S)
    found, allowed = False, False
    for i, ln in enumerate(lines):
        m = line.match(ln)
        if not m:
            continue
        found = True
        if address in m.group(1).split(","):
            allowed = True
        elif not a.get("check"):
            lines[i] = f'restrict,from="{m.group(1)},{address}",command="{wrapper}" {m.group(2)}'
            allowed = True
    if not found:
        return {"ok": False, "error": f"{path} has no line forced to {wrapper}"}
    if allowed and not a.get("check"):
        st = os.stat(path)
        tmp = path + ".siaga-new"
        with open(tmp, "w") as fh:
            fh.writelines(lines)
        os.chown(tmp, st.st_uid, st.st_gid)
        os.chmod(tmp, st.st_mode & 0o777)
        os.replace(tmp, path)
    return {"ok": allowed or bool(a.get("check")), "allowed": allowed}


LSN = re.compile(r"^[0-9A-F]{1,8}/[0-9A-F]{1,8}$")
TRIMMED = ("wal_keep_size", "wal_recycle")
# The longest the trim waits between reading the WAL position and its CHECKPOINT (the reload's wait
# below, bounded): the WAL written meanwhile moves the checkpoint's segment on, kept by guard segments.
TRIM_WINDOW_S = 12


def lsn_int(lsn):
    hi, lo = lsn.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def trim_keep(current, keep_from, seg_bytes, wal_bytes_per_s):
    """Segments for wal_keep_size so that a CHECKPOINT keeps `keep_from`'s segment and removes every
    one before it: the checkpoint keeps the `wal_keep_size` segments before its own, which is
    `current`'s plus those the WAL written before it starts reaches (at most the guard: one segment
    boundary crossed at any rate, more at the rate measured just before, over TRIM_WINDOW_S).
    Returns (segments to keep, guard segments among them)."""
    need = lsn_int(current) // seg_bytes - lsn_int(keep_from) // seg_bytes
    guard = max(1, math.ceil(wal_bytes_per_s * TRIM_WINDOW_S / seg_bytes))
    return need + guard, guard


def wal_dir(a, keep_from=None):
    """pg_wal's WAL files (count, bytes), whether keep_from's segment (any timeline) is among them,
    and the ALTER SYSTEM settings of the two parameters wal_trim changes."""
    seg = f"substr(pg_walfile_name('{keep_from}'), 9, 16)" if keep_from else "NULL"
    names = ", ".join(f"'{n}'" for n in TRIMMED)
    rc, so, se = psql(a, "SELECT json_build_object("
                         "'files', (SELECT count(*) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'), "
                         "'bytes', (SELECT coalesce(sum(size), 0) FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'), "
                         f"'segment_present', (SELECT count(*) > 0 FROM pg_ls_waldir() WHERE substr(name, 9, 16) = {seg}), "
                         "'in_recovery', pg_is_in_recovery(), "
                         f"'overrides', (SELECT coalesce(json_object_agg(name, setting), '{{}}') FROM pg_file_settings WHERE name IN ({names}) "
                         "AND sourcefile LIKE '%/postgresql.auto.conf'))", timeout=60)
    if rc != 0:
        raise RuntimeError((se or so).strip()[-300:])
    return json.loads(so)


def leftover(overrides):
    """Both settings as wal_trim sets them: a trim interrupted before its reset (run it again)."""
    return set(overrides) == set(TRIMMED) and overrides["wal_recycle"] == "off"


def wal_trim(a):
    keep_from = a.get("keep_from")
    if not isinstance(keep_from, str) or not LSN.match(keep_from):
        return {"ok": False, "error": f"keep_from {keep_from!r} is not an LSN"}
    try:
        before = wal_dir(a, keep_from)
        if a.get("check") or before["in_recovery"]:
            return {"ok": not before["in_recovery"], "before": before,
                    "error": "in recovery: not the serving primary" if before["in_recovery"] else None}
        if before["overrides"] and not leftover(before["overrides"]):
            # An admin's ALTER SYSTEM: the reset below would drop it. Nothing trimmed (a slower rewind).
            return {"ok": True, "trimmed": False, "before": before,
                    "why": f"postgresql.auto.conf sets {', '.join(before['overrides'])}: left as they are, nothing trimmed"}

        def q(sql, timeout=60):
            rc, so, se = psql(a, sql, timeout=timeout)
            if rc != 0:
                raise RuntimeError(f"{sql}: {(se or so).strip()[-300:]}")
            return so.strip()

        # First the dirty buffers written, so the trimming checkpoint is quick: little WAL comes
        # between the position read below and the trimming checkpoint. The WAL written meanwhile
        # gives the rate the guard segments cover.
        t0, lsn0 = time.monotonic(), q("SELECT pg_current_wal_lsn()")
        q("CHECKPOINT", 1800)
        t1, current = time.monotonic(), q("SELECT pg_current_wal_lsn()")
        seg_bytes = int(q("SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'"))
        rate = (lsn_int(current) - lsn_int(lsn0)) / max(t1 - t0, 1.0)
        keep_segs, guard = trim_keep(current, keep_from, seg_bytes, rate)
        keep_mb = keep_segs * seg_bytes // 2**20
        configured_mb = int(q("SELECT setting FROM pg_settings WHERE name = 'wal_keep_size'"))
        if keep_mb >= configured_mb and q("SHOW wal_recycle") == "off":
            return {"ok": True, "trimmed": False, "before": before, "why": "wal_keep_size already keeps no more"}
        try:
            q(f"ALTER SYSTEM SET wal_keep_size = '{min(keep_mb, configured_mb)}MB'")
            q("ALTER SYSTEM SET wal_recycle = off")  # old segments removed, not renamed into future ones
            q("SELECT pg_reload_conf()")
            # The checkpointer reads the reload after the postmaster: a new session seeing the value
            # says the postmaster has it; the checkpointer is signalled right after.
            deadline = time.monotonic() + TRIM_WINDOW_S - 2
            while q("SHOW wal_recycle") != "off" and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)
            seen = q("SHOW wal_recycle") == "off"
            if seen:  # else past the window the guard covers: no trimming checkpoint (a slower rewind)
                q("CHECKPOINT", 1800)
        finally:
            for name in TRIMMED:
                psql(a, f"ALTER SYSTEM RESET {name}", timeout=60)
            psql(a, "SELECT pg_reload_conf()", timeout=60)
        after = wal_dir(a, keep_from)
        if not seen:
            return {"ok": not after["overrides"], "trimmed": False, "before": before, "after": after,
                    "why": f"the reload of the trim's settings was not seen within {TRIM_WINDOW_S - 2} s: nothing trimmed",
                    "error": f"settings left in postgresql.auto.conf: {after['overrides']}" if after["overrides"] else None}
    except RuntimeError as exc:
        return {"ok": False, "error": str(exc)}
    ok = (after["segment_present"] or not before["segment_present"]) and not after["overrides"]
    return {"ok": ok, "trimmed": True, "keep_mb": keep_mb, "guard_segments": guard, "wal_rate_mb_s": round(rate / 2**20, 2),
            "before": before, "after": after,
            "error": None if ok else (f"settings left in postgresql.auto.conf: {after['overrides']}" if after["overrides"]
                                      else f"the segment of {keep_from} is gone")}


IDENT = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$")


def records(a):
    names = (a["table"], a["path_column"], a["sha256_column"])
    if not all(IDENT.match(n) for n in names) or not re.match(r"^[A-Za-z0-9_]+$", a["database"]):
        return {"ok": False, "error": f"not identifiers: {names} / {a['database']!r}"}
    sql = f"SELECT {a['path_column']}, {a['sha256_column']} FROM {a['table']} WHERE {a['path_column']} IS NOT NULL"
    rc, so, se = run(["psql", "-XAtq", "-F", "|", "-p", str(a["port"]), "-d", a["database"], "-c", sql], 300, user="postgres")
    if rc != 0:
        return {"ok": False, "error": (se or so).strip()[-300:]}
    rows = [ln.split("|", 1) for ln in so.splitlines() if "|" in ln]
    return {"ok": True, "records": rows}


def standby_conf_path(a):
    return os.path.join(paths(a)["conf"], "conf.d", "siaga-standby.conf")


def unfollow(a):
    conf = standby_conf_path(a)
    if os.path.exists(conf):
        os.unlink(conf)
        if running(a):
            rc, so, se = psql(a, "SELECT pg_reload_conf()")
            if rc != 0:
                return {"ok": False, "error": (se or so).strip()[-300:]}
    return {"ok": True, "present": os.path.exists(conf)}


def follow(a):
    p = paths(a)
    if running(a):
        return {"ok": False, "error": "PostgreSQL is running: stop it cleanly first"}
    cd = controldata(a)
    # After pg_rewind (fail-back) the control file says "in archive recovery": it must replay as a standby.
    clean = ("shut down", "shut down in recovery", *(("in archive recovery",) if a.get("rewound") else ()))
    # After the fail-back's fresh copy (pg_basebackup of the running primary) it says "in production",
    # beside the backup_label its recovery starts from.
    base_backup = a.get("rewound") and os.path.exists(os.path.join(p["data"], "backup_label"))
    if cd.get("state") not in clean and not (base_backup and cd.get("state") == "in production"):
        return {"ok": False, "error": f"the control file says {cd.get('state')!r}, not a clean shutdown: this needs "
                                      "fail-back (pg_rewind), not a plain rejoin", "control": cd}
    conf = standby_conf_path(a)
    tmp = conf + ".siaga-new"
    with open(tmp, "w") as fh:
        fh.write(a["conf"])
    os.chown(tmp, *_postgres())
    os.chmod(tmp, 0o640)
    os.replace(tmp, conf)
    signal = os.path.join(p["data"], "standby.signal")
    with open(signal, "a"):
        pass
    os.chown(signal, *_postgres())
    os.chmod(signal, 0o600)
    return {**start(a), "control": cd}


def _postgres():
    import pwd

    pw = pwd.getpwnam("postgres")
    return pw.pw_uid, pw.pw_gid


MODES = {"repo_allow": repo_allow, "switch_archived": switch_archived, "archive_has": archive_has, "history_push": history_push, "wal_trim": wal_trim, "state": state, "stop": stop, "start": start, "promote": promote, "slot": slot, "reach": reach, "unfollow": unfollow, "follow": follow,
         "pgbackrest_check": pgbackrest_check, "history_archived": history_archived, "records": records}


def main():
    try:
        a = json.loads(sys.argv[1])
        if a.get("mode") not in MODES:
            out = {"ok": False, "error": f"pg-role has no mode {a.get('mode')!r}: this host's siaga programs are older "
                                        "than the workstation's siaga. Fix: run the site deploy"}
        else:
            out = MODES[a["mode"]](a)
    except (IndexError, ValueError, KeyError) as exc:
        out = {"ok": False, "error": f"bad arguments: {type(exc).__name__}: {exc}"}
    except subprocess.TimeoutExpired as exc:
        out = {"ok": False, "error": f"timed out: {exc}"}
    print(json.dumps(out))
    return 0 if out.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
