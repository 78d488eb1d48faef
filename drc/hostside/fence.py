#!/usr/bin/python3
"""fence '<json args>' | fence guard | fence allow | fence watch: never two writable primaries.

With two sites and no third, the operator is the witness (siaga failover); this program makes that
decision stick on the host it runs on. Installed by roles/fencing as /usr/local/lib/siaga/fence, run
as root. Standard library only. SOP EM-3 (one copy of the data accepts writes).

The host's settings (PostgreSQL version, cluster, port, the peer's address, the replication user,
the units to hold) are in CONFIG, written by roles/fencing. The fence itself is MARKER: while it
exists, PostgreSQL, the app and the uploads sync do not start on this host (their units call
`fence guard` / `fence allow` before they start), whoever starts them.

Modes given as one JSON word (by siaga over SSH):
- `state`: the marker, the authority, which held units and PostgreSQL are active, the fence's
  firewall table, the control file's timeline (never the site file).
- `fence`: fence this host now: the marker first (so nothing starts again: the units' gate), then
  the app and the uploads sync stopped, PostgreSQL stopped, pgBackRest stopped for the stanza (its
  archive-push and backups refused), and the web and database ports closed to everyone but the new
  primary (`peer`). The admin's SSH stays open. Repeating it changes nothing more.
- `release`: the marker, pgBackRest's stop and the firewall table removed; nothing is
  started (the runbook or the operator does that, knowing why).
- `diverged` (fail-back, PostgreSQL down): the transactions this former primary committed after the
  fork, read from its WAL (pg_waldump), and that WAL kept in STATE_DIR/diverged-<run>/.
- `rewind` (fail-back): pg_rewind from the new primary, then standby.signal, in a systemd unit of
  its own (`siaga-rewind-<run>`: a killed siaga, or a dropped SSH connection, never interrupts it,
  which would leave the data directory beyond rewinding); called again for the same run, it waits
  for that unit and answers its result: whether a rewind is impossible here, and why.
- `fresh-copy` (fail-back, only when a rewind is impossible): pg_basebackup from the new primary in
  place of the data directory, which is kept beside it renamed; then standby.signal. In a unit of
  its own too (`siaga-fresh-copy-<run>`); an interrupted copy is started again. `rewound` says
  when, and by which method.
- `authority`: `grant` or `drop` this host's authority: a host granted it (by a failover, or
  `siaga fence release`) may start read-write when it cannot reach its peer.

Commands run by systemd:
- `guard` (ExecStartPre of PostgreSQL): exit 1 keeps PostgreSQL down. A standby (standby.signal)
  always starts. A would-be primary starts only when its peer answers and is not a primary of the
  same database on the same or a newer timeline (such a peer was promoted by a failover: this host
  is superseded and fences itself), or, when no peer answers within the wait, only if this host holds the authority.
  After a plain power loss of the main site with the DRC unreachable, the primary therefore waits
  for the DRC (or for `siaga fence release`): the price of never having two writable copies.
- `allow` (ExecStartPre of the app and of the uploads sync, ordered after PostgreSQL): exit 1 while
  the marker exists or while the guard keeps PostgreSQL down.
- `watch` (siaga-fence-watch.timer): a running primary whose peer answers as a primary of the same
  database on a newer timeline fences itself at once (an old primary reconnected after a partition);
  a streaming standby records the primary's last reported WAL position (the failover's data at risk);
  PostgreSQL held down for want of an answer starts once the peer answers and did not supersede it
  (the WAN back after a power loss), or is fenced if it did.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

CONFIG = "/etc/siaga/fence.json"
STATE_DIR = "/var/lib/siaga/fence"
MARKER = f"{STATE_DIR}/fenced.json"
AUTHORITY = f"{STATE_DIR}/authority.json"
REWINDING = f"{STATE_DIR}/rewinding.json"  # a rewind began and the data directory is not known sound since
HELD = f"{STATE_DIR}/held.json"  # why the guard last kept PostgreSQL down (read by `state`)
# A standby's last view of its primary, kept by `watch`: the last WAL position the primary reported
# and what this host had received then. After the primary is lost, the failover's "data at risk".
RECEIVER = f"{STATE_DIR}/receiver.json"
RECEIVER_SQL = ("SELECT json_build_object('status', status, 'sender_host', sender_host, 'flushed_lsn', flushed_lsn::text, "
                "'latest_end_lsn', latest_end_lsn::text, 'latest_end_time', latest_end_time, 'received_tli', received_tli) "
                "FROM pg_stat_wal_receiver")
NFT_TABLE = "siaga_fence"
FENCE_STOP_S = 10  # how long the fence waits for a clean shutdown before an immediate one
PASSFILE = "/var/lib/postgresql/.pgpass"


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def run(cmd, timeout=60, user=None):
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/", stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return 124, "", f"{cmd[0]}: timed out after {timeout} s"
    return p.returncode, p.stdout, p.stderr


def load_config(path=CONFIG):
    with open(path) as f:
        return json.load(f)


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_json(path, data):
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def remove(path):
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def data_dir(c):
    return f"/var/lib/postgresql/{c['version']}/{c['cluster']}"


def pg_unit(c):
    return f"postgresql@{c['version']}-{c['cluster']}.service"


def controldata(c):
    """pg_controldata's lines as {field: value} ({} when it cannot read the control file)."""
    rc, so, _ = run([f"/usr/lib/postgresql/{c['version']}/bin/pg_controldata", "-D", data_dir(c)], 30)
    return {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in so.splitlines())} if rc == 0 else {}


def local_control(c):
    """The control file's timeline and system identifier (PostgreSQL may be down)."""
    cd = controldata(c)
    tl = cd.get("Latest checkpoint's TimeLineID")
    return {"timeline": int(tl) if tl else None, "system_identifier": cd.get("Database system identifier")}


def parse_identify(out):
    """IDENTIFY_SYSTEM's row (systemid|timeline|xlogpos|dbname) then SHOW in_hot_standby's → dict, or None."""
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    parts = lines[0].split("|") if lines else []
    if len(parts) < 3 or not parts[1].isdigit():
        return None
    standby = lines[1].strip() == "on" if len(lines) > 1 else None
    return {"system_identifier": parts[0], "timeline": int(parts[1]), "lsn": parts[2], "standby": standby}


def ask_peer(c, address, timeout_s=3):
    """The peer's system identifier, timeline and whether it is a standby, over a replication
    connection (as postgres, with the cluster's passfile): what a primary and a standby both answer."""
    dsn = (f"host={address} port={c['port']} user={c['replication_user']} dbname=replication replication=true "
           f"connect_timeout={timeout_s} passfile={PASSFILE} application_name=siaga-fence")
    rc, so, _ = run(["psql", "-XAtq", dsn, "-c", "IDENTIFY_SYSTEM", "-c", "SHOW in_hot_standby"], timeout_s + 5, user="postgres")
    return parse_identify(so) if rc == 0 else None


def peers_view(c, wait_s):
    """Each peer's answer (None: no answer), asked until one answers or `wait_s` passes."""
    end = time.monotonic() + wait_s
    while True:
        answers = {p: ask_peer(c, p) for p in c["peers"]}
        if any(answers.values()) or time.monotonic() >= end:
            return answers
        time.sleep(1)


def superseding_peer(answers):
    """The peer that answers as a primary (the fence's table lets it in: it rewinds this host later)."""
    return next((p for p, a in answers.items() if a and a.get("standby") is False), None)


def verdict(local, answers, has_authority, standby):
    """(may start, why): the guard's decision, a pure function. `local`: this host's control file
    (timeline, system identifier); `answers`: each peer's IDENTIFY_SYSTEM and standby state (None: no
    answer). Only a writable copy of the same database (same system identifier) on the same or a newer
    timeline supersedes this one (a standby on a newer timeline does not: e.g. after a point-in-time
    restore of this primary)."""
    if standby:
        return True, "a standby (standby.signal): never writable"
    tl, sysid = local.get("timeline"), local.get("system_identifier")
    newer = {p: a["timeline"] for p, a in answers.items()
             if a and tl is not None and a["standby"] is False and a["timeline"] >= tl and a["system_identifier"] in (sysid, None)}
    if newer:
        return False, (f"superseded: peer {', '.join(f'{p} is a primary on timeline {t}' for p, t in newer.items())}, "
                       f"local timeline {tl}")
    if any(answers.values()):
        return True, f"the peer answers and is not a primary of this database on its timeline or a newer one (local {tl})"
    if has_authority:
        return True, "no peer answers; this host holds the authority (granted by a failover or a release)"
    return False, "no peer answers and this host holds no authority: it may have been superseded"


def is_standby(c):
    return os.path.exists(os.path.join(data_dir(c), "standby.signal"))


def fence_now(c, why, by="", peer=None, starting=False):
    """The whole fence; each part idempotent. Returns what was done. `starting`: called by the guard
    while PostgreSQL's start waits on it (its start is refused instead of stopped; nothing waits)."""
    did = []
    if not os.path.exists(MARKER):
        write_json(MARKER, {"since": now(), "why": why, "by": by, "peer": peer})
        did.append("marker written")
    # Units siaga writes to /etc/systemd/system cannot be masked: the fence's gate (`fence allow`
    # before each starts, roles/fencing) holds them instead, as long as the marker exists.
    for unit in c.get("hold_units", []):
        rc, so, _ = run(["systemctl", "is-active", unit], 30)
        if so.strip() in ("active", "activating", "reloading"):
            run(["systemctl", "stop", *(["--no-block"] if starting else []), unit], 120)
            did.append(f"{unit} stopped (held while fenced)")
    rc, so, _ = run(["systemctl", "is-active", pg_unit(c)], 30)
    if not starting and so.strip() in ("active", "reloading"):
        did.append(stop_postgresql(c))
    if c.get("stanza") and os.path.exists("/usr/bin/pgbackrest"):
        rc, so, se = run(["pgbackrest", f"--stanza={c['stanza']}", "stop"], 60, user="postgres")
        if "already" not in (se + so) and rc == 0:
            did.append("pgBackRest stopped for the stanza (archive-push refused)")
    if close_ports(c, peer):
        did.append(f"ports {', '.join(map(str, c['closed_ports']))} closed except from {peer or 'nobody'}")
    return did


def stop_postgresql(c, clean_s=FENCE_STOP_S):
    """Stop PostgreSQL now: a clean (fast) shutdown if it comes within `clean_s`, else an immediate
    one (SIGQUIT to the postmaster). Cut off from its standby, a primary's clean shutdown waits for
    its walsender up to wal_sender_timeout; a fence cannot wait that long, and the fail-back's
    pg_rewind recovers an immediate stop like a crash (its WAL is all there)."""
    unit = pg_unit(c)
    if run(["systemctl", "stop", unit], clean_s)[0] == 0:
        return "PostgreSQL stopped"
    run(["systemctl", "kill", "--kill-whom=main", "--signal=SIGQUIT", unit], 30)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        if run(["systemctl", "is-active", unit], 30)[1].strip() not in ("active", "deactivating", "reloading"):
            return f"PostgreSQL stopped (immediate: no clean shutdown within {clean_s} s)"
        time.sleep(0.5)
    return "PostgreSQL stop failed: still running 60 s after SIGQUIT"


def nft_script(c, peer):
    """The fence's own table, before siaga's firewall (lower priority number): the web and database
    ports refused to everyone but the new primary (`peer`, which rewinds this host later); the
    admin's SSH is never touched."""
    ports = ", ".join(str(p) for p in c["closed_ports"])
    but = f"ip saddr != {peer} " if peer else ""
    return (f"table inet {NFT_TABLE} {{\n    chain input {{\n"
            f"        type filter hook input priority filter - 10; policy accept;\n"
            f"        meta nfproto ipv4 tcp dport {{ {ports} }} {but}reject with tcp reset\n"
            f"        meta nfproto ipv6 tcp dport {{ {ports} }} reject with tcp reset\n    }}\n}}\n")


def fence_table_loaded():
    return run(["nft", "list", "table", "inet", NFT_TABLE], 30)[0] == 0


def close_ports(c, peer):
    if fence_table_loaded():
        return False
    script = nft_script(c, peer)
    p = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise RuntimeError(f"nft: {p.stderr.strip()[-300:]}")
    return True


def release(c):
    did = []
    if remove(MARKER):
        did.append("marker removed")
    remove(HELD)
    if c.get("stanza") and os.path.exists("/usr/bin/pgbackrest"):
        rc, so, se = run(["pgbackrest", f"--stanza={c['stanza']}", "start"], 60, user="postgres")
        if rc == 0 and "not stopped" not in (se + so):
            did.append("pgBackRest started for the stanza")
    if fence_table_loaded():
        run(["nft", "delete", "table", "inet", NFT_TABLE], 30)
        did.append("fence firewall table removed")
    return did


def state(c):
    active = [u for u in c.get("hold_units", []) if run(["systemctl", "is-active", u], 30)[1].strip() == "active"]
    return {"ok": True, "fenced": os.path.exists(MARKER), "marker": read_json(MARKER), "authority": read_json(AUTHORITY),
            "held": read_json(HELD), "receiver": read_json(RECEIVER), "active_units": active,
            "postgresql": run(["systemctl", "is-active", pg_unit(c)], 30)[1].strip(), "firewall": fence_table_loaded(), "standby": is_standby(c),
            **local_control(c)}


def guard(c):
    """ExecStartPre of PostgreSQL: 0 lets it start, 1 keeps it down (said on stderr, in the journal)."""
    if os.path.exists(MARKER):
        m = read_json(MARKER) or {}
        print(f"siaga fence: this host is fenced since {m.get('since')} ({m.get('why')}); release: siaga fence release",
              file=sys.stderr)
        return 1
    standby = is_standby(c)
    answers = {} if standby else peers_view(c, c.get("guard_wait_s", 20))
    ok, why = verdict(local_control(c), answers, os.path.exists(AUTHORITY), standby)
    if ok:
        remove(HELD)
        return 0
    if why.startswith("superseded"):
        fence_now(c, why, by="fence guard", peer=superseding_peer(answers), starting=True)
    write_json(HELD, {"at": now(), "why": why})
    print(f"siaga fence: PostgreSQL kept down: {why}", file=sys.stderr)
    return 1


def record_receiver(c):
    """On a streaming standby: what the primary last reported (RECEIVER), for the failover."""
    rc, so, _ = run(["psql", "-XAtq", "-p", str(c["port"]), "-d", "postgres", "-c", RECEIVER_SQL], 10, user="postgres")
    try:
        seen = json.loads(so.strip()) if rc == 0 and so.strip() else None
    except ValueError:
        seen = None
    if seen and seen.get("status") == "streaming" and seen.get("latest_end_lsn"):
        write_json(RECEIVER, {**seen, "recorded_at": now()})


def allow():
    """ExecStartPre of the app and the uploads sync: not while fenced, nor while the guard keeps
    PostgreSQL down (this host may have been superseded: its lsyncd must never push its old uploads
    over the new primary's)."""
    for path, what in ((MARKER, "fenced"), (HELD, "held by the fence guard")):
        if os.path.exists(path):
            print(f"siaga fence: this host is {what} ({(read_json(path) or {}).get('why')})", file=sys.stderr)
            return 1
    return 0


def retry_held(c):
    """PostgreSQL kept down for want of an answer: once the peer answers and this host was not
    superseded (the WAN is back after a power loss), start it and the held units that are enabled."""
    answers = {p: ask_peer(c, p) for p in c["peers"]}
    ok, why = verdict(local_control(c), answers, os.path.exists(AUTHORITY), is_standby(c))
    if not ok:
        if why.startswith("superseded"):
            fence_now(c, why, by="fence watch", peer=superseding_peer(answers))
        write_json(HELD, {"at": now(), "why": why})
        return
    remove(HELD)
    run(["systemctl", "start", pg_unit(c)], 300)
    for unit in c.get("hold_units", []):
        if run(["systemctl", "is-enabled", unit], 30)[1].strip() == "enabled":
            run(["systemctl", "start", "--no-block", unit], 60)
    print(f"siaga fence: {why}: PostgreSQL started again", file=sys.stderr)


def watch(c):
    """A running primary whose peer is on a newer timeline fences itself (timer, every few seconds);
    a standby records its view of the primary."""
    if os.path.exists(MARKER):
        return 0
    rc, so, _ = run(["systemctl", "is-active", pg_unit(c)], 30)
    if so.strip() != "active":
        if os.path.exists(HELD):
            retry_held(c)
        return 0
    if is_standby(c):
        record_receiver(c)
        return 0
    rc, so, _ = run(["psql", "-XAtq", "-p", str(c["port"]), "-d", "postgres", "-c",
                     "SELECT pg_is_in_recovery(), (SELECT timeline_id FROM pg_control_checkpoint()), "
                     "(SELECT system_identifier FROM pg_control_system())"], 10, user="postgres")
    if rc != 0 or not so.startswith("f|"):
        return 0
    _, tl, sysid = so.strip().split("|")
    answers = {p: ask_peer(c, p) for p in c["peers"]}
    ok, why = verdict({"timeline": int(tl), "system_identifier": sysid}, answers, True, False)
    if not ok:
        did = fence_now(c, why, by="fence watch", peer=superseding_peer(answers))
        print(f"siaga fence: {why}; fenced: {'; '.join(did)}", file=sys.stderr)
    return 0


WALDUMP_RE = re.compile(r"rmgr: (\S+)\s+len.*?tx:\s+(\d+), lsn: ([0-9A-F/]+), prev [0-9A-F/]+, desc: (\S+)(.*)")
REL_RE = re.compile(r"rel (\d+)/(\d+)/(\d+)")


def parse_waldump(text):
    """pg_waldump's lines → the committed transactions: xid, commit time, first and last LSN, and per
    relation (tablespace/database/relfilenode) how many records of each kind (INSERT, UPDATE, ...)."""
    xacts = {}
    for line in text.splitlines():
        m = WALDUMP_RE.search(line)
        if not m:
            continue
        rmgr, xid, lsn, kind, rest = m.group(1), int(m.group(2)), m.group(3), m.group(4), m.group(5)
        if xid == 0:
            continue
        x = xacts.setdefault(xid, {"xid": xid, "first_lsn": lsn, "ops": {}, "committed": None})
        x["last_lsn"] = lsn
        if rmgr == "Transaction":
            if kind.startswith("COMMIT"):
                x["committed"], x["commit_time"] = True, rest.strip().split(";")[0]
            elif kind.startswith("ABORT"):
                x["committed"] = False
        elif rmgr in ("Heap", "Heap2"):
            rel = REL_RE.search(rest)
            if rel:
                key = "/".join(rel.groups())
                op = kind.split("+")[0]
                x["ops"].setdefault(key, {}).setdefault(op, 0)
                x["ops"][key][op] += 1
    return [x for x in xacts.values() if x["committed"]]


def lsn_int(lsn):
    hi, lo = lsn.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def common_redo(c, timeline, fork_lsn):
    """Where the rewound host's replay will start: the REDO location of its last checkpoint before the
    fork (pg_rewind's "last common checkpoint"), when that is the control file's latest, as after a
    primary died; None when it checkpointed after the fork (then the fail-back trims no WAL)."""
    cd = controldata(c)
    try:
        if (int(cd["Latest checkpoint's TimeLineID"]) == int(timeline)
                and lsn_int(cd["Latest checkpoint location"]) < lsn_int(fork_lsn)):
            return cd["Latest checkpoint's REDO location"]
    except (KeyError, ValueError):
        pass
    return None


def diverged(c, a):
    """What this former primary wrote after the fork (the new primary's timeline switch point): its
    committed transactions read from its own WAL with pg_waldump, and those WAL files kept in
    STATE_DIR/diverged-<run>/ (the rewind that follows would discard them). PostgreSQL is down."""
    wal = os.path.join(data_dir(c), "pg_wal")
    keep = os.path.join(STATE_DIR, f"diverged-{a['run_id']}")
    os.makedirs(keep, mode=0o700, exist_ok=True)
    tli = f"{int(a['timeline']):08X}"
    segs = sorted(f for f in os.listdir(wal) if len(f) == 24 and f.startswith(tli))
    for f in segs:
        dest = os.path.join(keep, f)
        if not os.path.exists(dest):
            shutil.copy2(os.path.join(wal, f), dest)
    rc, so, se = run([f"/usr/lib/postgresql/{c['version']}/bin/pg_waldump", "-p", wal, "-t", str(int(a["timeline"])),
                      "-s", a["fork_lsn"]], 600, user="postgres")
    xacts = parse_waldump(so)
    # pg_waldump stops at the end of the WAL with an error about the next (absent) record: that is the end.
    end = re.search(r"error in WAL record at ([0-9A-F/]+)", se) or re.search(r"at ([0-9A-F]+/[0-9A-F]+)", se)
    if rc != 0 and not so.strip() and "could not find a valid record" not in se and "error in WAL record" not in se:
        return {"ok": False, "error": f"pg_waldump: {se.strip()[-400:]}"}
    return {"ok": True, "transactions": xacts, "end_lsn": end.group(1) if end else None, "kept": keep,
            "common_redo": common_redo(c, a["timeline"], a["fork_lsn"]),
            "segments": len(segs), "note": se.strip().splitlines()[-1][-200:] if se.strip() else ""}


# pg_rewind's words for a rewind that cannot work on this data directory, whatever is retried: the
# way back is then a fresh copy (fail-back, SOP EM-3.8).
REWIND_IMPOSSIBLE = (
    ("could not find common ancestor", "the two timelines have no common ancestor"),
    ("needs to use either data checksums", "this host ran without wal_log_hints and without data checksums"),
    ("could not find previous WAL record", "this host's WAL from before the fork is gone"),
    ("could not open file", "a WAL file pg_rewind needs is gone"),
    ("could not read WAL record", "this host's WAL from before the fork cannot be read"),
)
# pg_rewind changes the target only after it has printed this: a failure after it leaves a data
# directory half rewound.
REWIND_CHANGING = "need to copy"
DETACHED = {"rewind": "rewind-now", "fresh-copy": "fresh-copy-now"}  # kind -> the mode its unit runs


def result_path(kind, run_id):
    return os.path.join(STATE_DIR, f"{kind}-{re.sub(r'[^A-Za-z0-9_.-]', '_', run_id)}.json")


def detached(kind, a, wait_s=7200):
    """The `kind` (rewind, fresh-copy) of run `run_id`, run in a systemd unit of its own so that a
    killed siaga or a dropped SSH connection never interrupts it; its result, waiting for it to end,
    or {"running": true} after `wait_s`. Called again for the same run, it waits for that unit or
    answers the result it left. A rewind that failed before changing anything is started again; a
    data directory a rewind left suspect (REWINDING, whatever run) is never rewound again."""
    result = result_path(kind, a["run_id"])
    unit = f"siaga-{kind}-" + re.sub(r"[^A-Za-z0-9_-]", "_", a["run_id"]) + ".service"
    done = read_json(result)
    if done and not done.get("ok") and done.get("retry_safe"):
        remove(result)
        remove(result + ".started")
        done = None
    if done is None:
        active = run(["systemctl", "is-active", unit], 30)[1].strip()
        if active not in ("active", "activating", "deactivating"):
            suspect = read_json(REWINDING) if kind == "rewind" else None
            if suspect is not None:
                why = suspect.get("why") or (f"the rewind of {suspect.get('run_id')} was interrupted (journalctl -u "
                                             f"'siaga-rewind-*'): the data directory may be half rewound")
                return {"ok": False, "impossible": True, "why": why, "error": why}
            rc, so, se = run(["systemd-run", f"--unit={unit}", "--quiet", "--no-block", "--property=Type=oneshot",
                              "--property=RemainAfterExit=no", sys.executable, os.path.abspath(__file__),
                              json.dumps({**a, "mode": DETACHED[kind]})], 60)
            if rc != 0:
                return {"ok": False, "error": f"systemd-run: {(se or so).strip()[-300:]}"}
        end, start_by = time.monotonic() + wait_s, time.monotonic() + 60
        while not os.path.exists(result):
            running = run(["systemctl", "is-active", unit], 30)[1].strip() in ("active", "activating", "deactivating")
            if not running and (os.path.exists(result + ".started") or time.monotonic() > start_by):
                break  # ended (its result is read below), or never started
            if time.monotonic() > end:
                return {"ok": False, "running": True, "unit": unit}  # still at work: ask again
            time.sleep(0.5)
    return read_json(result) or {"ok": False, "error": f"{unit} gave no result (journalctl -u {unit})"}


def in_unit(kind, work, c, a):
    """Run `work` inside the unit `detached` started; its result kept for `detached` to answer."""
    result = result_path(kind, a["run_id"])
    write_json(result + ".started", {"at": now()})
    try:
        out = work(c, a)
    except Exception as exc:  # noqa: BLE001 (a result, always: no result reads as an interruption)
        out = {"ok": False, "error": f"{kind}: {type(exc).__name__}: {exc} (journalctl -u 'siaga-{kind}-*'); "
                                    "look before running siaga failback again"}
    write_json(result, out)
    return out


def replication_password(source):
    """The replication role's password for `source`, from its one passfile (roles/replication)."""
    return next((":".join(p[4:]) for ln in open(PASSFILE).read().splitlines()
                 if len(p := ln.split(":")) >= 5 and p[0] == source and p[2] == "replication"), None)


def run_passfile(c, a, database):
    """A passfile for this run only (0600, postgres), removed by the caller."""
    password = replication_password(a["source"])
    if password is None:
        raise RuntimeError(f"{PASSFILE} holds no replication password for {a['source']}")
    runfile = f"/run/siaga-{a['mode']}.pgpass"
    fd = os.open(runfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{a['source']}:{c['port']}:{database}:{c['replication_user']}:{password}\n")
    shutil.chown(runfile, "postgres", "postgres")
    return runfile


def become_standby(c, a, method, **extra):
    """standby.signal at once (nothing may start this host as a primary again), and the record."""
    signal_file = os.path.join(data_dir(c), "standby.signal")
    with open(signal_file, "a"):
        pass
    shutil.chown(signal_file, "postgres", "postgres")
    write_json(os.path.join(STATE_DIR, "rewound.json"), {"run_id": a["run_id"], "at": now(), "source": a["source"],
                                                          "method": method, **extra, **local_control(c)})


def rewind_now(c, a):
    """pg_rewind this (stopped, fenced) former primary from the new primary. The missing WAL of this
    host comes from its own pg_wal; the new primary's from its server. A failure says whether a
    retry is safe (nothing changed yet) and whether a rewind is impossible (a fresh copy is the way)."""
    try:
        runfile = run_passfile(c, a, "postgres")  # pg_rewind logs in to database postgres
    except (OSError, RuntimeError) as exc:
        return {"ok": False, "retry_safe": True, "error": str(exc)}
    src = (f"host={a['source']} port={c['port']} user={c['replication_user']} dbname=postgres "
           f"passfile={runfile} connect_timeout=10")
    # Written before pg_rewind touches anything; left in place when it ends with the directory in
    # doubt (interrupted: the host went down; or failed while changing it), so no later run rewinds it.
    write_json(REWINDING, {"run_id": a["run_id"], "since": now()})
    t0 = time.monotonic()
    try:
        # Debian keeps the configuration in /etc/postgresql: pg_rewind's crash recovery of a host that
        # stopped uncleanly (single-user mode) must be told where it is.
        conf = f"/etc/postgresql/{c['version']}/{c['cluster']}/postgresql.conf"
        # --debug: every file and block it fetches, kept in the log and summed by kind in the result.
        rc, lines = run_logged([f"/usr/lib/postgresql/{c['version']}/bin/pg_rewind", "-D", data_dir(c),
                                f"--source-server={src}", f"--config-file={conf}", "--progress", "--debug"],
                               7200, rewind_log(a["run_id"]), user="postgres")
    finally:
        remove(runfile)
    out, seconds = "\n".join(ln for _, ln in lines if not DEBUG_LINE.match(ln)).strip(), round(time.monotonic() - t0, 1)
    if rc != 0:
        failure = rewind_failure(out) if rc != 124 else {  # killed by run()'s timeout, wherever it was
            "impossible": True, "retry_safe": False, "why": "pg_rewind did not end within 2 h: the data directory may be half rewound"}
        if failure["retry_safe"]:
            remove(REWINDING)
        else:
            write_json(REWINDING, {"run_id": a["run_id"], "since": now(), "why": failure["why"]})
        return {"ok": False, "error": f"pg_rewind: {out[-600:]}", "seconds": seconds, **failure}
    remove(REWINDING)
    copied = re.search(r"need to copy (\d+) MB \(total source directory size is (\d+) MB\)", out)
    become_standby(c, a, "rewind")
    return {"ok": True, "seconds": seconds, "output": out[-600:], "log": rewind_log(a["run_id"]),
            "copied_mb": int(copied.group(1)) if copied else None, "source_mb": int(copied.group(2)) if copied else None,
            "breakdown": rewind_breakdown(lines, a.get("common_redo"))}


def rewind_log(run_id):
    return os.path.join(STATE_DIR, "rewind-" + re.sub(r"[^A-Za-z0-9_.-]", "_", run_id) + ".log")


def run_logged(cmd, timeout, log_path, user=None):
    """`cmd` with its output (stderr into stdout) read line by line, each line with the seconds since
    its start, also written to `log_path` (0600) as it comes: pg_rewind's phases can be timed after."""
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    os.makedirs(os.path.dirname(log_path), mode=0o755, exist_ok=True)
    lines, t0 = [], time.monotonic()
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as log:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd="/",
                             stdin=subprocess.DEVNULL)
        timer = threading.Timer(timeout, p.kill)
        timer.start()
        try:
            for line in p.stdout:
                t = round(time.monotonic() - t0, 3)
                lines.append((t, line.rstrip("\n")))
                log.write(f"{t:9.3f} {line}")
            p.wait()
        finally:
            timer.cancel()
    return (124 if p.returncode == -signal.SIGKILL and time.monotonic() - t0 >= timeout else p.returncode), lines


DEBUG_LINE = re.compile(r"^pg_rewind: debug: ")
CHUNK = re.compile(r'received chunk for file "([^"]+)", offset (\d+), size (\d+)')
ACTION = re.compile(r"^pg_rewind: debug: (\S+) \((COPY|COPY_TAIL|TRUNCATE|CREATE|REMOVE|NONE)\)$")
REL_FILE = re.compile(r"^(global|base/\d+|pg_tblspc/\d+/[^/]+/\d+)/\d+(\.\d+)?$")
WAL_FILE = re.compile(r"^pg_wal/([0-9A-F]{8})([0-9A-F]{16})$")
# pg_rewind's progress messages (PostgreSQL 13-17), in the order they come.
PHASES = (("crash recovery", "for target server to complete crash recovery"), ("diverged", "servers diverged at WAL location"),
          ("copy", "need to copy "), ("control file", "creating backup label and updating control file"),
          ("sync", "syncing target data directory"), ("done", "Done!"))


def rewind_breakdown(lines, common_redo=None, seg_bytes=16 * 2**20):
    """What pg_rewind fetched (its --debug lines), in bytes by kind, and how long each phase took.
    The serving host's pg_wal is split at the rewound host's replay start (`common_redo`): its WAL
    from there on is needed, the segments before it are not."""
    action, fetched = {}, {}
    for _, line in lines:
        if m := ACTION.match(line):
            action[m.group(1)] = m.group(2)
        elif m := CHUNK.search(line):
            fetched[m.group(1)] = fetched.get(m.group(1), 0) + int(m.group(3))
    redo_seg = lsn_int(common_redo) // seg_bytes if common_redo else None
    kinds, others = {}, {}
    for path, n in fetched.items():
        if m := WAL_FILE.match(path):
            seg = int(m.group(2)[:8], 16) * (2**32 // seg_bytes) + int(m.group(2)[8:], 16)
            kind = "pg_wal before the replay start" if redo_seg is not None and seg < redo_seg else "pg_wal from the replay start"
        elif path.startswith("pg_wal/"):
            kind = "pg_wal other (history, .partial)"
        elif REL_FILE.match(path):
            kind = "relation files, whole" if action.get(path) == "COPY" else "relation blocks"
        else:
            kind = "other files, whole"
            others[path] = n
        kinds[kind] = kinds.get(kind, 0) + n
    at = {}
    for t, line in lines:
        for name, words in PHASES:
            if name not in at and words in line:
                at[name] = t
    end = lines[-1][0] if lines else 0
    marks = sorted(at.items(), key=lambda kv: kv[1])
    phases = {"start": round(marks[0][1], 1) if marks else round(end, 1)}
    for i, (name, t) in enumerate(marks):
        if name != "done":
            phases[name] = round((marks[i + 1][1] if i + 1 < len(marks) else end) - t, 1)
    return {"fetched_bytes": {k: kinds[k] for k in sorted(kinds)}, "fetched_files": len(fetched),
            "largest_other_files": sorted(others.items(), key=lambda kv: -kv[1])[:5], "phase_seconds": phases}


def rewind_failure(out):
    """What pg_rewind's output on failure means: impossible (and why: a fresh copy is the way), or
    safe to retry (it stopped before changing anything: the new primary unreachable, a login refused)."""
    changed = REWIND_CHANGING in out
    why = next((w for words, w in REWIND_IMPOSSIBLE if words in out), None)
    if changed:
        why = "pg_rewind failed while changing the data directory: it is half rewound"
    return {"impossible": why is not None, "why": why, "retry_safe": why is None and not changed}


def du_bytes(path):
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


def fresh_copy_now(c, a):
    """A fresh copy of the new primary (pg_basebackup) in place of this host's data directory, when a
    rewind is impossible. The old directory is kept beside it, renamed (never deleted: its diverged
    writes are the LPSE's to read), and only when the disk holds both. Run again after an
    interruption, the partial copy (this run's own: the old directory is already aside) is removed
    and the copy starts again."""
    pgdata = data_dir(c)
    kept = f"{pgdata}.diverged-{re.sub(r'[^A-Za-z0-9_.-]', '_', a['run_id'])}"
    if not os.path.isdir(kept):
        need, free = int(du_bytes(pgdata) * 1.1), shutil.disk_usage(os.path.dirname(pgdata)).free
        if free < need:
            return {"ok": False, "retry_safe": True, "error": f"a fresh copy needs about {need / 2**30:.1f} GiB beside the "
                    f"old data directory, which is kept; {free / 2**30:.1f} GiB free: free space on "
                    f"{os.path.dirname(pgdata)}, or move {pgdata} elsewhere yourself, then run siaga failback again"}
        os.rename(pgdata, kept)
    elif os.path.isdir(pgdata):
        shutil.rmtree(pgdata)  # this run's partial copy
    os.mkdir(pgdata, 0o700)
    shutil.chown(pgdata, "postgres", "postgres")
    try:
        runfile = run_passfile(c, a, "replication")
    except (OSError, RuntimeError) as exc:
        return {"ok": False, "retry_safe": True, "kept": kept, "error": str(exc)}
    t0 = time.monotonic()
    try:
        src = f"host={a['source']} port={c['port']} user={c['replication_user']} passfile={runfile} connect_timeout=10"
        rc, so, se = run([f"/usr/lib/postgresql/{c['version']}/bin/pg_basebackup", "-d", src, "-D", pgdata, "-X", "stream",
                          "-c", "fast", "-w"], 7200, user="postgres")
    finally:
        remove(runfile)
    seconds = round(time.monotonic() - t0, 1)
    if rc != 0:
        return {"ok": False, "retry_safe": True, "seconds": seconds, "kept": kept,
                "error": f"pg_basebackup: {(so + se).strip()[-600:]}"}
    become_standby(c, a, "fresh-copy", kept=kept, why=a.get("why", ""))
    remove(REWINDING)  # a new data directory: nothing of the rewind's doubt is left
    return {"ok": True, "seconds": seconds, "kept": kept}


def main(argv=None):
    argv = sys.argv if argv is None else argv
    if len(argv) == 2 and argv[1] in ("guard", "allow", "watch"):
        if argv[1] == "allow":
            return allow()
        try:
            c = load_config()
        except (OSError, ValueError) as exc:
            print(f"siaga fence: {CONFIG}: {exc}", file=sys.stderr)
            return 1 if argv[1] == "guard" else 0
        return {"guard": guard, "watch": watch}[argv[1]](c)
    try:
        a = json.loads(argv[1]) if len(argv) > 1 else {}
        c = load_config(a.get("config", CONFIG))
        mode = a.get("mode")
        if mode == "state":
            out = state(c)
        elif mode == "fence":
            out = {"ok": True, "did": fence_now(c, a.get("why", "fenced by siaga"), a.get("by", ""), a.get("peer"))}
            out.update(state(c))
        elif mode == "release":
            out = {"ok": True, "did": release(c)}
            out.update(state(c))
        elif mode == "diverged":
            out = diverged(c, a)
        elif mode in DETACHED:
            out = detached(mode, a, float(a.get("wait_s", 7200)))
        elif mode == "rewind-now":
            out = in_unit("rewind", rewind_now, c, a)
        elif mode == "fresh-copy-now":
            out = in_unit("fresh-copy", fresh_copy_now, c, a)
        elif mode == "rewound":
            out = {"ok": True, "rewound": read_json(os.path.join(STATE_DIR, "rewound.json"))}
        elif mode == "authority":
            if a.get("action") == "grant":
                write_json(AUTHORITY, {"since": now(), "by": a.get("by", ""), "why": a.get("why", "")})
            else:
                remove(AUTHORITY)
            out = state(c)
        else:
            out = {"ok": False, "error": f"unknown mode {mode!r}"}
    except Exception as exc:  # noqa: BLE001 (one JSON answer, always)
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(out))
    return 0 if out.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
