"""Fail-back after a failover: the old primary, fenced, rejoins as a standby of the site that serves
now, by pg_rewind, without a rebuild; what it wrote that the new primary never got is listed, never
silently discarded (SOP EM-3.8, EM-3). The service comes home afterwards with the planned
switch-over (`siaga switchover --to primary`).

Read as a table. The context is a switch-over's towards the serving site (`target`: the primary
now; `source`: the host that rejoins):
- a CHECKPOINT on the new primary (pg_rewind reads its timeline from the control file) and the
  replication role allowed to run pg_rewind's functions there;
- the writes lost on the old primary: its WAL after the fork (the new timeline's switch point) read
  with pg_waldump, each committed transaction with the tables it wrote, saved in the records
  (`failback-lost-writes-<run>.json`) and that WAL kept on the host; the uploads that exist only
  there, kept in an archive on the host and listed;
- pg_rewind (no way back), the fence released, the slot, the old primary streaming as a standby;
- the site deploy converges (the uploads sync from the serving site, backups, the firewall), WAL
  reaches the repository at the rejoined site and a backup is taken there, and the serving host
  gives back the authority its failover granted: two sites again.
"""

from __future__ import annotations

import datetime as dt
import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from drc.hostside.pg_role import lsn_int
from drc.hosts import remote
from drc.records import store
from drc.runbooks import hosts as H
from drc.runbooks import switchover as sw
from drc.runbooks.engine import Check, Reading, Runbook, Step
from drc.site import load_site

REWIND_FUNCTIONS = ("pg_catalog.pg_ls_dir(text, boolean, boolean)", "pg_catalog.pg_stat_file(text, boolean)",
                    "pg_catalog.pg_read_binary_file(text)", "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)")


@dataclass
class Failback(sw.Switch):
    def fence(self, host: str, args: dict, timeout: float = 600) -> dict:
        return H.program_json(remote.run_program(self.site, host, "fence", args, timeout=timeout))

    @property
    def lost_writes_file(self) -> Path:
        return store.records_dir(self.site) / f"failback-lost-writes-{self.run_id}.json"

    def record(self) -> dict:
        """The run's record (the lost writes, the old primary's uploads, the trim's point); {} before
        the lost-writes step wrote it."""
        return json.loads(self.lost_writes_file.read_text()) if self.lost_writes_file.exists() else {}

    def save_record(self, rec: dict) -> None:
        self.lost_writes_file.write_text(json.dumps(rec, indent=1) + "\n")

    def detached(self, mode: str, args: dict, deadline_s: float = 7200) -> dict:
        """A fence mode that runs in a unit of its own on the old primary (rewind, fresh-copy), asked
        every half minute over a short SSH command: a host that goes down meanwhile is noticed at the
        next question, not after the whole deadline."""
        end = time.monotonic() + deadline_s
        while True:
            out = self.fence(self.source, {**args, "mode": mode, "wait_s": 30}, timeout=120)
            if not out.get("running"):
                return out
            if time.monotonic() > end:
                return {"ok": False, "error": f"{out.get('unit')} still runs after {deadline_s:g} s (it goes on: run "
                                              "siaga failback again to wait for it)"}

    def reported(self) -> dict:
        """This process's readings; the lost writes and the old primary's uploads from the run's record
        when an earlier, interrupted process of the same run read them: a resumed fail-back still says
        what was lost."""
        if "lost_writes" not in self.readings and self.run_id and (rec := self.record()):
            self.readings["lost_writes"] = {"transactions": len(rec["transactions"]),
                                            "per_table": rec["transactions_per_table"]}
            kept = rec.get("uploads_only_on_old_primary")
            if kept is not None and "uploads" not in self.readings:
                self.readings["uploads"] = {"copied_to_serving": kept["copied_to_serving"], "orphans": kept["orphans"],
                                            "archive": kept["orphans_archive_on_host"],
                                            "only_on_serving": rec.get("uploads_made_while_serving_alone")}
        return self.readings


def failback_context(site_file: Path, echo: Callable[[str], None]) -> Failback:
    return Failback(Path(site_file), load_site(site_file).active_site, echo)


# --- preflight: read only ---------------------------------------------------------------------

def serving_is_primary(f: Failback) -> Reading:
    st = f.known(f.target)
    ok = st.get("running") and st.get("in_recovery") is False
    return Reading(bool(ok), f"{f.target} is not a running primary (in_recovery={st.get('in_recovery')})",
                   {"timeline": st.get("timeline"), "system_identifier": st.get("system_identifier")})


def old_primary_fenced_and_down(f: Failback) -> Reading:
    st = f.fence(f.source, {"mode": "state"}, timeout=30)
    if not st.get("ok"):
        return Reading(False, f"{f.source}: {st.get('error')}")
    if st.get("postgresql") == "active":
        return Reading(False, f"{f.source}: PostgreSQL runs (a standby already? then there is nothing to fail back)")
    if not st.get("fenced") and not st.get("held"):
        return Reading(False, f"{f.source} is neither fenced nor held: fail-back is for a host a failover superseded")
    sysid = f.known(f.target).get("system_identifier")
    if st.get("system_identifier") != sysid:
        return Reading(False, f"{f.source} holds another database (system identifier {st.get('system_identifier')}, "
                              f"{f.target} has {sysid}): rebuild it as a standby instead")
    return Reading(True, data={"timeline": st.get("timeline"), "fenced": bool(st.get("fenced"))})


PREFLIGHT = (
    Check("the serving host is the primary", "EM-3", serving_is_primary),
    Check("siaga's programs on the hosts are this siaga's", "EM-3", sw.programs_current),
    Check("the old primary is fenced (or held), down, of the same database", "EM-3", old_primary_fenced_and_down),
)


# --- steps ------------------------------------------------------------------------------------

def grant_rewind(f: Failback) -> dict:
    user = f.site.replication.user
    sql = "; ".join(f"GRANT EXECUTE ON FUNCTION {fn} TO {user}" for fn in REWIND_FUNCTIONS)
    r = f.psql(f.target, sql)
    if not r.ok:
        raise RuntimeError(f"{f.target}: {r.error or r.stderr.strip()}")
    return {"granted_to": user}


def rewind_granted(f: Failback) -> Reading:
    user = f.site.replication.user
    checks = " AND ".join(f"has_function_privilege('{user}', '{fn}', 'EXECUTE')" for fn in REWIND_FUNCTIONS)
    r = f.psql(f.target, f"SELECT {checks}")
    return Reading(r.ok and r.stdout.strip() == "t", f"{f.target}: {user} may not run pg_rewind's functions")


def serving_history(f: Failback) -> tuple[int, list[tuple[int, str]]]:
    """(the serving timeline, its history file's entries: each earlier timeline and the LSN where it was left)."""
    st = f.known(f.target)
    tl = int(st.get("timeline") or 0)
    pg = f.site.postgresql
    path = f"/var/lib/postgresql/{pg.version}/{pg.cluster}/pg_wal/{tl:08X}.history"
    r = remote.run(f.site, f.target, f"sudo -n cat {path}", timeout=30)
    lines = [ln.split() for ln in r.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
    if not r.ok or not lines:
        raise RuntimeError(f"{f.target}: {path}: {r.error or r.stderr.strip() or 'empty'}")
    return tl, [(int(ln[0]), ln[1]) for ln in lines]


def fork_point(f: Failback) -> tuple[int, str]:
    """(the old timeline, the LSN where the serving timeline left it), from its history file."""
    return serving_history(f)[1][-1]


def lsn_str(n: int) -> str:
    return f"{n >> 32:X}/{n & 0xFFFFFFFF:X}"


def wal_name(tli: int, segno: int, seg_bytes: int) -> str:
    per = 0x100000000 // seg_bytes
    return f"{tli:08X}{segno // per:08X}{segno % per:08X}"


def wal_segno(name: str, seg_bytes: int) -> int:
    return int(name[8:16], 16) * (0x100000000 // seg_bytes) + int(name[16:24], 16)


def recovery_names(history: list[tuple[int, str]], serving_tl: int, first_lsn: str, last_segno: int,
                   seg_bytes: int) -> list[str]:
    """The WAL file names a recovery following `serving_tl` asks its restore_command for, from the
    segment of `first_lsn` to `last_segno`: for each segment the newest timeline that began in it or
    before (PostgreSQL's XLogFileReadAnyTLI; a timeline that begins mid-segment owns that segment)."""
    begins = [(serving_tl, lsn_int(history[-1][1]) // seg_bytes)] if history else [(serving_tl, 0)]
    for i in range(len(history) - 1, -1, -1):
        begins.append((history[i][0], lsn_int(history[i - 1][1]) // seg_bytes if i else 0))
    return [wal_name(next(tl for tl, b in begins if b <= seg), seg, seg_bytes)
            for seg in range(lsn_int(first_lsn) // seg_bytes, last_segno + 1)]


def archive_keep_from(names: list[str], present: set[str], redo: str, last_segno: int, seg_bytes: int) -> str:
    """Where the serving host's pg_wal may begin when the rewound host reads the archive: at the first
    of the WAL files it needs (`names`, from the replay start on) that the archive lacks, else just
    after the last archived segment. Never later than what it needs and cannot fetch."""
    for name in names:
        if name not in present:
            return lsn_str(max(lsn_int(redo), wal_segno(name, seg_bytes) * seg_bytes))
    return lsn_str(max(lsn_int(redo), (last_segno + 1) * seg_bytes))


def table_names(f: Failback, rels: set[str]) -> dict[str, str]:
    """tablespace/database/relfilenode → database.schema.table, read on the serving host (same catalog)."""
    names: dict[str, str] = {}
    dbs = f.psql(f.target, "SELECT oid, datname FROM pg_database WHERE datallowconn")
    by_oid = dict(ln.split("|") for ln in dbs.stdout.splitlines() if "|" in ln) if dbs.ok else {}
    for rel in rels:
        _spc, db_oid, node = rel.split("/")
        db = by_oid.get(db_oid)
        if db is None:
            names[rel] = rel
            continue
        r = f.psql(f.target, f"SELECT relnamespace::regnamespace || '.' || relname FROM pg_class WHERE relfilenode = {int(node)} "
                             f"OR (relfilenode = 0 AND pg_relation_filenode(oid) = {int(node)})", db=db)
        names[rel] = f"{db}.{r.stdout.strip().splitlines()[0]}" if r.ok and r.stdout.strip() else f"{db}.(relfilenode {node})"
    return names


def lost_writes(f: Failback) -> dict:
    old_tl, fork = fork_point(f)
    out = f.fence(f.source, {"mode": "diverged", "timeline": old_tl, "fork_lsn": fork, "run_id": f.run_id})
    if not out.get("ok"):
        raise RuntimeError(f"{f.source}: {out.get('error')}")
    xacts = out["transactions"]
    names = table_names(f, {rel for x in xacts for rel in x["ops"]})
    for x in xacts:
        x["tables"] = {names.get(rel, rel): ops for rel, ops in x.pop("ops").items()}
    per_table: dict[str, int] = {}
    for x in xacts:
        for t in x["tables"]:
            per_table[t] = per_table.get(t, 0) + 1
    report = {"run_id": f.run_id, "host": f.source, "fork": {"timeline": old_tl, "lsn": fork}, "end_lsn": out.get("end_lsn"),
              "kept_on_host": out.get("kept"), "common_redo": out.get("common_redo"), "transactions": xacts, "transactions_per_table": per_table,
              "written_at": dt.datetime.now().astimezone().isoformat(timespec="seconds")}
    f.save_record(report)
    f.readings["lost_writes"] = {"transactions": len(xacts), "per_table": per_table}
    return {"transactions": len(xacts), "per_table": per_table, "file": str(f.lost_writes_file), "kept": out.get("kept")}


def lost_writes_reported(f: Failback) -> Reading:
    return Reading(f.lost_writes_file.exists(), f"{f.lost_writes_file} missing")


def copy_uploads(f: Failback, files: list[str]) -> None:
    """`files` (relative to the uploads) from the old primary to the serving host, over this
    workstation's SFTP (a tar made and unpacked as root; the app's account owns them there)."""
    import tempfile

    app, up = f.site.spse_app, shlex.quote(f.site.spse_app.uploads_dir)
    staged = f"/tmp/siaga-failback-{f.run_id}.tar"
    listing = "\\n".join(files)
    user = f.site.connection.user
    r = remote.run(f.site, f.source, f"printf '%b' {shlex.quote(listing)} | sudo -n tar -C {up} -cf {staged} "
                                     f"--verbatim-files-from -T - && sudo -n chown {shlex.quote(user)} {staged}", timeout=1800)
    if not r.ok:
        raise RuntimeError(f"{f.source}: {r.error or r.stderr.strip()}")
    with tempfile.TemporaryDirectory() as tmp:
        local = f"{tmp}/uploads.tar"
        with remote.connection(f.site, f.source) as c:
            c.get(staged, local)
            c.run(f"rm -f {staged}", hide=True, warn=True)
        with remote.connection(f.site, f.target) as c:
            c.put(local, staged)
    cmd = (f"sudo -n tar -C {up} --no-same-owner -xf {staged} && sudo -n tar -tf {staged} | sed 's|^|{app.uploads_dir}/|' | "
           f"sudo -n xargs -d '\\n' chown {shlex.quote(app.user)}: ; rc=$?; rm -f {staged}; exit $rc")
    r = remote.run(f.site, f.target, cmd, timeout=1800)
    if not r.ok:
        raise RuntimeError(f"{f.target}: {r.error or r.stderr.strip()}")


def keep_old_only_uploads(f: Failback) -> dict:
    """Files only on the old primary, before the uploads sync from the serving site mirrors (and
    deletes) them: those the serving database knows (their row reached it, their file had not been
    synced) are copied to it, checked by sha256; the others (their rows are among the lost writes)
    are archived on the old primary and listed."""
    src, dst = H.uploads_digest(f.site, f.source), H.uploads_digest(f.site, f.target)
    if not src.get("ok") or not dst.get("ok"):
        raise RuntimeError(f"uploads: {src.get('error') or dst.get('error')}")
    only_old = sorted(p for p in src["files"] if p not in dst["files"])
    only_new = sorted(p for p in dst["files"] if p not in src["files"])
    known = H.known_uploads(f.site, f.target, also_ask=[f.source]) or {}
    restore = [p for p in only_old if known.get(p) and known[p] == src["files"][p][1]]
    orphans = [p for p in only_old if p not in restore]
    if restore:
        copy_uploads(f, restore)
    archive = f"/var/lib/siaga/fence/diverged-{f.run_id}/uploads-only-here.tar"
    if orphans:
        listing = "\\n".join(orphans)
        cmd = (f"printf '%b' {shlex.quote(listing)} | sudo -n tar -C {shlex.quote(f.site.spse_app.uploads_dir)} "
               f"-cf {archive} --verbatim-files-from -T -")
        r = remote.run(f.site, f.source, cmd, timeout=1800)
        if not r.ok:
            raise RuntimeError(f"{f.source}: {r.error or r.stderr.strip()}")
    f.readings["uploads"] = {"only_on_old": only_old, "copied_to_serving": restore, "orphans": orphans,
                             "only_on_serving": len(only_new), "archive": archive if orphans else None}
    data = f.record()
    data["uploads_only_on_old_primary"] = {"copied_to_serving": restore, "orphans": orphans,
                                           "orphans_archive_on_host": archive if orphans else None}
    data["uploads_made_while_serving_alone"] = len(only_new)
    f.save_record(data)
    return {"copied_to_serving": len(restore), "orphans": len(orphans), "archive": archive if orphans else None,
            "only_on_serving": len(only_new)}


def old_only_uploads_kept(f: Failback) -> Reading:
    rec = f.record()
    if not rec:
        return Reading(False, "no lost-writes record")
    kept = rec.get("uploads_only_on_old_primary")
    if kept is None:
        return Reading(False, "the old primary's own uploads are not listed yet")
    if kept["copied_to_serving"]:
        dst = H.uploads_digest(f.site, f.target)
        src = H.uploads_digest(f.site, f.source)
        bad = [p for p in kept["copied_to_serving"] if (dst.get("files") or {}).get(p) != (src.get("files") or {}).get(p)]
        if bad:
            return Reading(False, f"{f.target}: {len(bad)} copied uploads differ or are missing ({', '.join(bad[:3])})")
    if kept["orphans"]:
        r = remote.run(f.site, f.source, f"sudo -n test -s {kept['orphans_archive_on_host']}", timeout=30)
        return Reading(r.ok, f"{f.source}: {kept['orphans_archive_on_host']} missing")
    return Reading(True)


def common_redo(f: Failback) -> str | None:
    """The old primary's last checkpoint before the fork (its REDO): its replay after pg_rewind starts there."""
    return f.record().get("common_redo")


def allow_archive_reads(f: Failback) -> dict:
    """The repository host lets the old primary's pgBackRest in (its key, pgBackRest's remote only):
    after the failover the repository account's keys file names the serving host only. Until the
    converge step's site deploy writes it as the site file says (the repository then moves to the
    rejoined site). Nothing to do without backups."""
    from roles.backup.keys import REMOTE_WRAPPER, keys_file
    from roles.backup.topology import repository_host

    if not f.site.backup.enabled:
        return {"ok": False, "error": "backups are off: no archive"}
    return H.pg(f.site, repository_host(f.tier()), "repo_allow", keys_file=keys_file(f.site.backup.repository_user),
                wrapper=REMOTE_WRAPPER, address=f.address(f.source), timeout=60)


def archived_keep_from(f: Failback, redo: str) -> tuple[str, str]:
    """Where the serving host's pg_wal may begin, and why. The rewound host fetches from the pgBackRest
    archive (restore_command, the follow step) the WAL it needs that is archived, when (1) the serving
    host's WAL up to now is archived (pg_switch_wal, its archiver caught up) and (2) the host to be
    rewound finds in the archive, with its own pgBackRest, every WAL file from its replay start on
    and reads the history and the first of them. Else from the replay start (pg_rewind copies it)."""
    sw_out = H.pg(f.site, f.target, "switch_archived", deadline_s=120, timeout=180)
    if not sw_out.get("ok"):
        return redo, f"the serving host's WAL is not shown archived ({sw_out.get('error')}): pg_wal kept from the replay start"
    seg_bytes, last = int(sw_out["seg_bytes"]), sw_out["segment"]
    last_segno = wal_segno(last, seg_bytes)
    if lsn_int(redo) // seg_bytes > last_segno:
        return redo, "the replay start is in WAL not yet archived: pg_wal kept from the replay start"
    tl, history = serving_history(f)
    names = recovery_names(history, tl, redo, last_segno, seg_bytes)
    allowed = allow_archive_reads(f)
    if not allowed.get("ok"):
        return redo, f"the repository does not let {f.source} in ({allowed.get('error')}): pg_wal kept from the replay start"
    has = H.pg(f.site, f.source, "archive_has", names=names, stanza=f.site.backup.stanza, timeline=tl, timeout=900)
    if not has.get("ok"):
        return redo, f"{f.source} cannot read the archive ({has.get('error')}): pg_wal kept from the replay start"
    present = set(has.get("present") or ())
    keep = archive_keep_from(names, present, redo, last_segno, seg_bytes)
    missing = [n for n in names if n not in present]
    if missing:
        return keep, f"the archive lacks {missing[0]} ({len(missing)} of {len(names)} WAL files): pg_wal kept from it"
    return keep, f"{len(names)} WAL files from the replay start to {last} come from the archive"


def trim_wal(f: Failback) -> dict:
    """pg_rewind copies the serving host's whole pg_wal (PostgreSQL 17 cannot skip it): there,
    wal_keep_size's 1 GB, as many bytes as a fresh copy of 1 GiB. The rewound host needs only the
    WAL from its last checkpoint before the fork on, and that part of it already in the pgBackRest
    archive it fetches from there (compressed; archive_timeout's segments are mostly zeros): the
    rest of pg_wal goes first (roles/postgresql/README.md)."""
    redo = common_redo(f)
    if redo is None:
        return {"trimmed": False, "why": f"{f.source} checkpointed after the fork (or it is unknown): WAL kept as it is"}
    rec = f.record()
    if rec.get("wal_trim_keep_from") is None:  # decided once per run: a resumed step trims to the same point
        rec["wal_trim_keep_from"], rec["wal_trim_source"] = archived_keep_from(f, redo)
        f.save_record(rec)
    keep_from, source = rec["wal_trim_keep_from"], rec["wal_trim_source"]
    out = H.pg(f.site, f.target, "wal_trim", keep_from=keep_from, timeout=3600)
    if not out.get("ok"):
        raise RuntimeError(f"{f.target}: {out.get('error')}")

    def size(d: dict | None) -> str | None:
        return f"{d.get('files')} files, {round(d.get('bytes', 0) / 2**20)} MiB" if d else None

    f.readings["wal_trim"] = {"keep_from": keep_from, "replay_start": redo, "before": out.get("before"), "after": out.get("after")}
    return {"keep_from": keep_from, "replay_start": redo, "wal_from": source, "trimmed": out.get("trimmed"), "why": out.get("why"),
            "pg_wal_before": size(out.get("before")), "pg_wal_after": size(out.get("after"))}


def trim_keep_from(f: Failback) -> str | None:
    """The WAL position the serving host's pg_wal is kept from (the run's record), else the replay start."""
    rec = f.record()
    return rec.get("wal_trim_keep_from") or rec.get("common_redo")


def from_archive(f: Failback) -> bool:
    """The trim left WAL the rewound host needs to the archive only (the run's record)."""
    rec = f.record()
    keep, redo = rec.get("wal_trim_keep_from"), rec.get("common_redo")
    return bool(keep and redo and lsn_int(keep) > lsn_int(redo))


def wal_trimmed(f: Failback) -> Reading:
    """The serving host's pg_wal still holds the WAL the rewound host needs and cannot fetch from the
    archive, and no trim setting is left over."""
    keep_from = trim_keep_from(f)
    if keep_from is None:
        return Reading(True)
    out = H.pg(f.site, f.target, "wal_trim", keep_from=keep_from, check=True, timeout=120)
    st = out.get("before") or {}
    if not out.get("ok"):
        return Reading(False, f"{f.target}: {out.get('error')}")
    left = st.get("overrides") or {}
    if set(left) == {"wal_keep_size", "wal_recycle"} and left.get("wal_recycle") == "off":
        return Reading(False, f"{f.target}: postgresql.auto.conf still holds the trim's temporary settings {left}")
    return Reading(True, data={"pg_wal_files": st.get("files"), "pg_wal_bytes": st.get("bytes"),
                               "segment_present": st.get("segment_present")})


def do_rewind(f: Failback) -> dict:
    """pg_rewind; a fresh copy only when pg_rewind says a rewind is impossible (no common ancestor,
    the WAL it needs gone, no wal_log_hints nor checksums, a rewind interrupted half-way), saying why.
    Both run on the host in a unit of their own; a re-run of this step waits for them."""
    # common_redo: the breakdown of what pg_rewind fetched tells the WAL the rewound host needs from the rest.
    out = f.detached("rewind", {"source": f.address(f.target), "run_id": f.run_id, "common_redo": common_redo(f)})
    if out.get("ok"):
        f.readings["rejoin"] = {"method": "rewind", "seconds": out.get("seconds"), "copied_mb": out.get("copied_mb"),
                                "breakdown": out.get("breakdown")}
        return {"method": "rewind", "seconds": out.get("seconds"), "copied_mb": out.get("copied_mb"),
                "source_mb": out.get("source_mb"), "breakdown": out.get("breakdown"), "log": out.get("log")}
    if not out.get("impossible"):
        raise RuntimeError(f"{f.source}: {out.get('error')}")
    f.echo(f"  a rewind of {f.source} is impossible: {out.get('why')}; a fresh copy from {f.target} instead "
           f"(its data directory kept beside it)")
    copy = f.detached("fresh-copy", {"source": f.address(f.target), "run_id": f.run_id, "why": out.get("why")})
    if not copy.get("ok"):
        raise RuntimeError(f"{f.source}: a rewind is impossible ({out.get('why')}), and the fresh copy failed: {copy.get('error')}")
    f.readings["rejoin"] = {"method": "fresh-copy", "why": out.get("why"), "seconds": copy.get("seconds"),
                            "kept": copy.get("kept")}
    return {"method": "fresh-copy", "why": out.get("why"), "seconds": copy.get("seconds"), "kept": copy.get("kept")}


def rewound(f: Failback) -> Reading:
    out = f.fence(f.source, {"mode": "rewound"}, timeout=30)
    done = (out.get("rewound") or {}).get("run_id") == f.run_id
    return Reading(done, f"{f.source}: not rewound by {f.run_id} ({out.get('error') or out.get('rewound')})")


def release_fence(f: Failback) -> dict:
    out = f.fence(f.source, {"mode": "release"}, timeout=120)
    if not out.get("ok"):
        raise RuntimeError(f"{f.source}: {out.get('error')}")
    return {"did": out.get("did")}


def fence_released(f: Failback) -> Reading:
    st = f.fence(f.source, {"mode": "state"}, timeout=30)
    ok = st.get("ok") and not st.get("fenced") and not st.get("firewall") and st.get("standby")
    return Reading(bool(ok), f"{f.source}: fenced={st.get('fenced')}, ports closed={st.get('firewall')}, "
                             f"standby.signal={st.get('standby')}")


def follow_rewound(f: Failback) -> dict:
    from roles.replication.standby import restore_line, standby_conf

    # The WAL the serving host's pg_wal no longer holds comes from the archive; the site deploy (the
    # converge step, once it streams) writes the standby settings without it again.
    conf = standby_conf(f.tier(), f.source, f.target)
    # Only when the trim left WAL to the archive: a restore_command that cannot reach the repository
    # costs its connect timeout for every WAL file recovery asks for (seen: 10 s a segment).
    if from_archive(f):  # a site deploy since the trim may have written the keys file again
        allowed = allow_archive_reads(f)
        if not allowed.get("ok"):
            raise RuntimeError(f"the repository must let {f.source} read the archive (the WAL {f.target} no longer "
                               f"holds): {allowed.get('error')}")
        conf += restore_line(f.site.backup.stanza)
    out = H.pg(f.site, f.source, "follow", conf=conf, rewound=True, timeout=300)
    if not out.get("ok"):
        raise RuntimeError(f"{f.source}: {out.get('error')}")
    return {"control": out.get("control")}


def drop_authority(f: Failback) -> dict:
    out = f.fence(f.target, {"mode": "authority", "action": "drop"}, timeout=30)
    if not out.get("ok"):
        raise RuntimeError(f"{f.target}: {out.get('error')}")
    return {}


def no_authority(f: Failback) -> Reading:
    st = f.fence(f.target, {"mode": "state"}, timeout=30)
    return Reading(st.get("ok") and not st.get("authority"), f"{f.target} still holds the authority")


def failback(site_file: Path, echo: Callable[[str], None] = print) -> tuple[Runbook, Failback]:
    f = failback_context(site_file, echo)
    old, new = f.source, f.target
    steps = (
        Step("checkpoint", "EM-3.8", f"CHECKPOINT on {new}: its control file names its timeline", sw.checkpoint,
             sw.checkpoint_on_timeline, deadline_s=60),
        Step("grants", "EM-3.8", f"the replication role may run pg_rewind's functions on {new}", grant_rewind, rewind_granted),
        Step("lost-writes", "EM-3", f"what {old} committed after the fork, read from its WAL and recorded (its WAL kept)",
             lost_writes, lost_writes_reported),
        Step("old-uploads", "EM-3", f"uploads only on {old}: those {new}'s database knows copied there, the others "
             f"archived on {old} and listed", keep_old_only_uploads, old_only_uploads_kept),
        Step("wal-trim", "EM-3.8", f"{new}'s pg_wal trimmed to what {old} needs after pg_rewind (it copies it whole)",
             trim_wal, wal_trimmed, deadline_s=60),
        Step("rewind", "EM-3.8", f"pg_rewind {old} from {new} (a fresh copy only when a rewind is impossible, saying "
             "why); standby.signal", do_rewind, rewound, no_return=True),
        Step("release", "EM-3", f"{old}'s fence released (it can only start as a standby now)", release_fence, fence_released),
        Step("slot", "EM-3", f"replication slot for {old} on {new}", sw.slot_for_source, sw.source_slot_present),
        # Its recovery first fetches the archived WAL (a segment per archive_timeout at least while {new} served).
        Step("follow", "EM-3", f"{old} streams from {new} as a standby", follow_rewound, sw.source_streams_from_target,
             deadline_s=900),
        Step("site-file", "EM-2", f"the site file no longer says lost_site: {old}'s site is deployed and synced again",
             sw.write_site_file, sw.site_file_says),
        Step("converge", "EM-2", "the site deploy: uploads sync, web ports, app, backups as the site file says", sw.converge,
             sw.converged, deadline_s=1),
        Step("archive", "BK-1", f"{new}'s WAL reaches the repository (pgbackrest check, its timeline's history file)",
             sw.archive_check_target, sw.archive_follows, deadline_s=30),
        Step("backup", "BK-1", f"a database backup of {new} into the repository at {old}'s site", sw.backup_after_switch,
             sw.backup_ok, deadline_s=900),
        Step("two-sites", "EM-3", f"{new} gives back the authority of its failover: two sites again", drop_authority, no_authority),
    )
    return Runbook("failback", old, f"Fail-back: {old} rejoins as a standby of {new}", PREFLIGHT, steps), f
