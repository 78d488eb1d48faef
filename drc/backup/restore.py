"""`siaga backup restore-test`: prove a backup by restoring it (SOP BK-4, BK-7).

Picks a database backup and an uploads snapshot at random (BK-4 "random sampling"; or the ones
named), and:

- on the repository host (the DRC): `pgbackrest verify` of the whole repository, then the backup
  restored into a fresh scratch directory as the repository account, started as a throwaway
  PostgreSQL (another port, socket only, inside the scratch directory), recovered to the backup's
  consistent point (`--type=immediate`), or with `--target-time` to that point in time
  (`--type=time`, after production's WAL up to now was archived), queried, stopped and removed
  (drc/hostside/restore_probe.py, installed on the hosts by roles/backup);
- what is compared comes from the application profile (`spse_app.restore_test`, checks in
  drc/backup/compare.py): its tables always, others at random besides. A table with a timestamp
  column: row count and checksum of the rows older than the backup's start (minus `--slack`) in
  the restored database and in production must be the same (for `--target-time`, every row of the
  restored copy against production's rows older than the target: none missing, none later). A
  small table without one: compared whole, rows written after the backup told apart from a bad
  restore by their transaction's status in the restored copy;
- on the data host: `restic check` reading part of the data, then sampled upload files of the
  snapshot restored to a scratch directory and their sha256 compared with production's own files
  modified and changed before the snapshot (`files: production`), or with the application's own
  records (`files: records`, the stand-in's `tender_document.sha256`).

The result, with the restore duration, is appended to `<records_dir>/restore-tests.jsonl` and
written as the *Berita Acara Pelaksanaan Restore* (HTML, Indonesian, BK-7 fields) next to it.
A failed or unverifiable check makes the result GAGAL (failure) and the exit status 1: a backup is
never reported good unless it was restored and matched.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import uuid

from rich.console import Console
from rich.table import Table

from drc.hosts import remote
from drc.backup import compare
from drc.backup.sampling import pick_backup, pick_snapshot, sampler
from drc.records import store as records
from drc.records.render import render_report
from drc.site import Site, load_site

RESTORE_RECORDS = "restore-tests.jsonl"
SCRATCH_ROOT = "/var/tmp/siaga-restore-test"
SCRATCH_PORT = 54329
# The probe's JSON travels as one argument of `sudo` (drc.hosts.remote.run_program): Linux takes at
# most 128 KiB in one argument (MAX_ARG_STRLEN), with room left for the shell wrapper.
MAX_ARGS_BYTES = 120_000


def probe(site: Site, host: str, args: dict, timeout: float) -> dict:
    # The arguments on stdin: a sample of thousands of paths is longer than one argument may be
    # (128 kB: "Argument list too long", found by the failover lab test's full restore test).
    r = remote.run_with_input(site, host, remote.program_command("restore_probe") + " -", json.dumps(args), timeout)
    missing = remote.program_missing(r, "restore_probe") if r.reachable else None
    if not r.reachable or missing:
        return {"error": f"{host}: {r.error or missing}"}
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"{host}: probe exited {r.exited}: {(r.stderr or r.stdout).strip()[-400:]}"}


def parse_target_time(value: str) -> dt.datetime:
    """ISO 8601 time; without an offset it is read in this workstation's zone (use an offset,
    e.g. +07:00, to be exact)."""
    try:
        t = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: expected an ISO time, e.g. 2026-11-22T14:05:00+07:00") from None
    return t if t.tzinfo else t.astimezone()


def site_tz(site: Site) -> dt.tzinfo:
    """Records carry the site's local time (base.timezone: WIB/WITA/WIT)."""
    from zoneinfo import ZoneInfo

    return ZoneInfo(site.base.timezone)


def table_queries(tables: list[tuple[str, str, str | None]], db: str, cutoff: float | None) -> list[dict]:
    """Count and checksum of each table's rows older than cutoff (epoch s; None: every row)."""
    return [{"key": f"{sc}.{t}", "db": db, "sql": compare.timestamp_sql(compare.TableCheck(sc, t, ts, "profile"), cutoff)}
            for sc, t, ts in tables]


def app_zone(site: Site) -> str:
    """Zone of the application's `timestamp without time zone` values: the profile's, else the site's."""
    return site.spse_app.restore_test.time_zone or site.base.timezone


def restore_test(site: Site, args: argparse.Namespace, console: Console) -> dict:
    rng = sampler(args.seed)
    b = site.backup
    repo = site.hosts_in(b.repository_site)[0]
    data = site.hosts_in(site.replication.source_site)[0]
    t = args.timeout_run
    started = dt.datetime.now(site_tz(site))
    problems: list[str] = []
    result: dict = {"v": 1, "id": uuid.uuid4().hex, "site": site.site, "kind": "restore-test",
                    "start": started.isoformat(timespec="seconds"), "by": site.connection.user,
                    "requester": args.requester, "head": args.head, "seed": args.seed, "db": None, "files": None}

    # --- database: pick a backup at random ------------------------------------------------------------
    common = {"config_path": "/etc/siaga/pgbackrest-repo", "stanza": b.stanza, "user": b.repository_user}
    listing = probe(site, repo, {**common, "mode": "db-list"}, 300)
    backups = ((listing.get("info") or [{}])[0].get("backup") or []) if listing.get("ok") else []
    if not backups:
        problems.append(f"database: no backup to restore on {repo} ({listing.get('error') or 'pgbackrest info lists none'})")
    else:
        target = getattr(args, "target_time", None)
        if target is not None:
            result["target_time"] = target.isoformat(timespec="microseconds")
            # Point in time: only a backup that ended before the target can be replayed up to it.
            backups = [x for x in backups if float(x["timestamp"]["stop"]) < target.timestamp()]
        chosen = pick_backup(backups, args.label, rng)
        if chosen is None:
            problems.append(f"database: no backup labelled {args.label or '(any)'}"
                            + (f" that ended before {result['target_time']}" if target is not None else "")
                            + f" (have: {', '.join(x['label'] for x in backups) or 'none'})")
        else:
            result["db"] = db_part(site, repo, data, chosen, len(backups), common, rng, args, problems, t)
            result["db"]["candidates"] = [x["label"] for x in backups]

    # --- uploads: pick a snapshot at random -----------------------------------------------------------
    if not args.skip_files:
        result["files"] = files_part(site, data, rng, args, problems, t)

    ended = dt.datetime.now(site_tz(site))
    result["end"] = ended.isoformat(timespec="seconds")
    result["duration_s"] = round((ended - started).total_seconds(), 3)
    result["problems"] = problems
    result["result"] = "success" if not problems else "failure"
    return result


def db_part(site, repo, data, chosen, n_backups, common, rng, args, problems, t) -> dict:
    b, pg = site.backup, site.postgresql
    port = site.firewall.postgresql_port
    tz = site_tz(site)
    start_ts = float(chosen["timestamp"]["start"])
    target = getattr(args, "target_time", None)
    # Rows compared: older than the backup's start (minus slack), or, for a point-in-time restore,
    # older than the target in production against every row of the restored copy (exactly those).
    cutoff = target.timestamp() if target is not None else start_ts - args.slack
    part = {"label": chosen["label"], "type": chosen["type"], "chosen_from": n_backups,
            "backup_start": dt.datetime.fromtimestamp(start_ts, tz).isoformat(timespec="seconds"),
            "backup_stop": dt.datetime.fromtimestamp(float(chosen["timestamp"]["stop"]), tz).isoformat(timespec="seconds"),
            "cutoff": dt.datetime.fromtimestamp(cutoff, tz).isoformat(timespec="seconds"),
            "database": pg.database, "location": f"{repo}:{b.repository_path}/pgbackrest", "tables": {},
            "target_time": target.isoformat(timespec="microseconds") if target is not None else None}
    profile = site.spse_app.restore_test
    tz_name = app_zone(site)
    listed = probe(site, data, {"mode": "sql", "port": port,
                                "queries": [{"key": "tables", "db": pg.database, "sql": compare.TABLES_SQL}]}, 120)
    q = (listed.get("queries") or {}).get("tables") or {}
    if not q.get("ok"):
        problems.append(f"database: cannot list the tables of {pg.database} on {data}: {q.get('error') or listed.get('error')}")
        return part
    # The application profile's tables always (spse_app.restore_test), others at random.
    sample, missing = compare.plan_tables(profile, q["rows"], args.tables, rng)
    problems.extend(missing)
    part["profile"] = {"install": site.spse_app.install, "tables": [t.model_dump() for t in profile.tables],
                       "whole_table_max_rows": profile.whole_table_max_rows, "time_zone": tz_name, "files": profile.files}
    queries = compare.production_queries(sample, pg.database, cutoff, profile.whole_table_max_rows, tz_name)
    pitr: dict = {}
    if target is not None:
        # The target must be covered by archived WAL: switch segments and wait for the archiver.
        part["archive"] = probe(site, data, {"mode": "archive-now", "port": port, "timeout_s": 300}, 400)
        if not part["archive"].get("ok"):
            problems.append(f"database: WAL up to the target not archived on {data}: {part['archive'].get('error')}")
            return part
        pitr = {"target_time": target.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f+00")}
    # Production first (read-only), then the restore: the rows compared are older than the backup;
    # whole tables: the restored copy is asked about the transactions of production's rows.
    prod = probe(site, data, {"mode": "sql", "port": port, "queries": queries}, 600)
    prod_q = prod.get("queries") or {}
    restored_q = compare.restored_queries(sample, pg.database, None if target is not None else cutoff, prod_q, tz_name,
                                          profile.whole_table_max_rows)
    db_args = {**common, **pitr, "mode": "db", "label": chosen["label"], "port": SCRATCH_PORT, "production_port": port,
               "pg_bin": f"/usr/lib/postgresql/{pg.version}/bin", "scratch_root": SCRATCH_ROOT,
               "production_paths": ["/var/lib/postgresql", "/etc/postgresql", b.repository_path],
               "timeout_s": b.timeout_s, "start_timeout_s": 600, "queries": restored_q}
    size = len(json.dumps(db_args))
    if size > MAX_ARGS_BYTES:
        whole = sorted(((len(q["sql"]), q["key"].removesuffix("#xacts")) for q in restored_q if q["key"].endswith("#xacts")), reverse=True)
        problems.append(f"database: the restored copy's questions ({size} bytes) do not fit one command line ({MAX_ARGS_BYTES}). "
                        f"Fix: give {', '.join(k for _, k in whole[:2]) or 'the whole tables'} a timestamp_column in "
                        "spse_app.restore_test, or lower whole_table_max_rows")
        return part
    res = probe(site, repo, db_args, t)
    if res.get("error"):
        problems.append(f"database: {res['error']}")
        part["error"] = res["error"]
        return part
    part.update({k: res.get(k) for k in ("verify", "restore", "start", "cleanup")})
    if not (res.get("verify") or {}).get("ok"):
        problems.append(f"database: pgbackrest verify failed: {(res.get('verify') or {}).get('output', '')[-600:]}")
    if not (res.get("restore") or {}).get("ok"):
        problems.append(f"database: restore of {chosen['label']} failed: {(res.get('restore') or {}).get('output', '')[-600:]}")
    elif not (res.get("start") or {}).get("ok") or (res["start"].get("in_recovery") != "f"):
        problems.append(f"database: the restored copy did not start and recover: {(res.get('start') or {}).get('output', '')[-600:]}")
    if not (res.get("cleanup") or {}).get("removed"):
        problems.append(f"database: scratch directory {(res.get('cleanup') or {}).get('path')} not removed on {repo}")
    started_ok = (res.get("start") or {}).get("ok")
    for c in sample:
        row = compare.table_verdict(c, prod_q, res.get("queries") or {}, profile.whole_table_max_rows)
        why = compare.table_problem(c.key, row, part["cutoff"])
        if why and (started_ok or row["state"] == "too big"):
            problems.append(why)
        part["tables"][c.key] = row
    part["restore_seconds"] = ((res.get("restore") or {}).get("seconds") or 0) + ((res.get("start") or {}).get("seconds") or 0)
    return part


def files_part(site, data, rng, args, problems, t) -> dict | None:
    sets = [s for s in site.backup.sets if any(p == site.spse_app.uploads_dir or site.spse_app.uploads_dir.startswith(p.rstrip("/") + "/")
                                                for p in s.paths)]
    if not sets:
        return None
    tag = sets[0].name
    listing = probe(site, data, {"mode": "files-list", "tag": tag}, 300)
    snaps = listing.get("snapshots") or []
    if not snaps:
        problems.append(f"uploads: no snapshot of set '{tag}' ({listing.get('error') or 'restic lists none'})")
        return {"set": tag}
    snap = pick_snapshot(snaps, args.snapshot, rng)
    if snap is None:
        problems.append(f"uploads: no snapshot {args.snapshot}")
        return {"set": tag}
    tz = site_tz(site)
    snap_time = dt.datetime.fromisoformat(snap["time"][:26] + snap["time"][-6:] if "." in snap["time"] else snap["time"]).astimezone(tz)
    cutoff = snap_time.timestamp() - args.slack
    part = {"set": tag, "snapshot": snap["id"][:8], "chosen_from": len(snaps), "snapshot_time": snap_time.isoformat(timespec="seconds"),
            "cutoff": dt.datetime.fromtimestamp(cutoff, tz).isoformat(timespec="seconds"), "files": {}}
    profile = site.spse_app.restore_test
    part["compared_with"] = profile.files
    files_args = {"mode": "files", "snapshot": snap["id"], "read_data_subset": args.read_data, "scratch_root": SCRATCH_ROOT,
                  "production_paths": ["/home", "/var/lib/postgresql"], "timeout_s": site.backup.timeout_s}
    if site.clamav.enabled:  # uploads ClamAV quarantined (roles/clamav) are not expected in the snapshot
        files_args["quarantine_records"] = f"{site.clamav.state_dir}/quarantine.jsonl"
    if profile.files == "records":
        # The application's own record of each file's sha256 (the stand-in's tender_document).
        fr = profile.file_records
        sc, tb = fr.table.split(".", 1)
        docs = probe(site, data, {"mode": "sql", "port": site.firewall.postgresql_port, "queries": [{
            "key": "docs", "db": site.postgresql.database,
            "sql": f"SELECT {compare.ident(fr.path_column)}, {compare.ident(fr.sha256_column)} FROM {compare.ident(sc)}.{compare.ident(tb)} "
                   f"WHERE {compare.ident(fr.timestamp_column)} < to_timestamp({cutoff:.3f}) ORDER BY random() LIMIT {int(args.files)}"}]}, 120)
        d = (docs.get("queries") or {}).get("docs") or {}
        if not d.get("ok"):
            problems.append(f"uploads: cannot read the app's records ({fr.table}): {d.get('error') or docs.get('error')}")
            return part
        wanted = {row[0]: row[1].strip() for row in d["rows"]}
        res = probe(site, data, {**files_args, "paths": sorted(wanted)}, t)
    else:
        # Production's own files older than the snapshot (modified and changed before it), sampled
        # on the data host and hashed there: the restored copies must be the same.
        res = probe(site, data, {**files_args, "paths": [], "sample": {"root": site.spse_app.uploads_dir, "cutoff": cutoff,
                                                                     "count": int(args.files), "seed": rng.randrange(2**32)}}, t)
        wanted = {p: v for p, v in (res.get("production") or {}).items()}
    if res.get("error"):
        problems.append(f"uploads: {res['error']}")
        return part
    part.update({k: res.get(k) for k in ("check", "restore", "cleanup")})
    if res.get("quarantined"):
        part["quarantined"] = res["quarantined"]
        wanted = {p: v for p, v in wanted.items() if p not in res["quarantined"]}
    if not (res.get("check") or {}).get("ok"):
        problems.append(f"uploads: restic check failed: {(res.get('check') or {}).get('output', '')[-600:]}")
    if not (res.get("restore") or {}).get("ok"):
        problems.append(f"uploads: restic restore failed: {(res.get('restore') or {}).get('output', '')[-600:]}")
    gone = set(res.get("not_in_production") or [])
    part["files"] = compare.file_verdict({p: v for p, v in wanted.items() if p not in gone}, res.get("files") or {})
    if gone:
        # The app's record names a file production does not have either: no backup could hold it.
        # After a failover these are the uploads lost with the other site (siaga failback copies
        # them back from the old primary); otherwise a fault of the app's data to look into.
        part["not_in_production"] = sorted(gone)
        part["note"] = (f"{len(gone)} file(s) in the app's records are missing from production too (not a backup "
                        "fault; after a failover: lost with the other site until siaga failback)")
    source = "the app's record" if profile.files == "records" else "production's file"
    for path, f in part["files"].items():
        if not f["match"]:
            got = f["restored"]
            problems.append(f"uploads: {path}: sha256 {'missing from the snapshot' if got is None else got[:16] + '...'} "
                            f"!= {source} {(f['expected'] or 'unreadable')[:16]}...")
    if not wanted and not gone:
        part["note"] = ("no document older than the snapshot in the app's records: no file to sample" if profile.files == "records"
                        else "no file in production older than the snapshot: no file to sample")
    part["restore_seconds"] = (res.get("restore") or {}).get("seconds")
    return part


# --- report ---------------------------------------------------------------------------------------------

def render_berita_acara(result: dict, site: Site) -> str:
    return render_report("berita_acara_restore.html.j2", r=result, site=site, pretty=json.dumps(result, indent=2, ensure_ascii=False))


def cmd_restore_test(args: argparse.Namespace, console: Console) -> int:
    site = load_site(args.site)
    result = restore_test(site, args, console)
    out_dir = records.records_dir(site)
    name = f"berita-acara-restore-{result['start'][:19].replace(':', '').replace('-', '')}-{result['id'][:8]}.html"
    result["report"] = str(out_dir / name)
    (out_dir / name).write_text(render_berita_acara(result, site))
    records.append_new(out_dir / RESTORE_RECORDS, [result])
    if args.json:
        console.file.write(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        console.file.flush()
    else:
        t = Table(title=f"Uji restore (SOP BK-4) — site '{site.site}'", title_justify="left")
        for col in ("Bagian", "Cadangan", "Pemeriksaan", "Durasi restore"):
            t.add_column(col)
        db, fl = result.get("db") or {}, result.get("files") or {}
        if db:
            word = {"match": "cocok", "changed": "berubah sejak backup", "too big": "-", "mismatch": "BEDA"}
            tabs = ", ".join(f"{k}: {word.get(v.get('state'), '-')}" for k, v in db["tables"].items())
            t.add_row("database", f"{db['label']} ({db['type']})", f"verify {'ok' if (db.get('verify') or {}).get('ok') else 'GAGAL'}; {tabs}",
                      f"{db.get('restore_seconds') or 0:.1f} s")
        if fl:
            n = sum(1 for v in fl.get("files", {}).values() if v["match"])
            t.add_row("uploads", f"{fl.get('snapshot')}", f"restic check {'ok' if (fl.get('check') or {}).get('ok') else 'GAGAL'}; "
                      f"{n}/{len(fl.get('files', {}))} file sha256 cocok", f"{fl.get('restore_seconds') or 0:.1f} s")
        console.print(t)
        for p in result["problems"]:
            console.print(f"  - {p}", highlight=False)
        console.print(("[green]BERHASIL[/green]" if result["result"] == "success" else "[bold red]GAGAL[/bold red]")
                      + f" — Berita Acara: {result['report']}", highlight=False)
    return 0 if result["result"] == "success" else 1


def register(sub, common) -> None:
    rt = sub.add_parser("restore-test", help="restore a backup picked at random on scratch locations, verify it, write the Berita Acara (BK-4, BK-7)",
                        description="Exit 0 only when the backup was verified, restored and matched production; 1 otherwise.")
    rt.add_argument("--label", help="pgBackRest backup label or 'latest' (default: one at random)")
    rt.add_argument("--snapshot", help="restic snapshot id of the uploads set or 'latest' (default: one at random)")
    rt.add_argument("--requester", default="Kepala LPSE (uji restore berkala, SOP BK-4)", help="Pemohon (who asked for the restore)")
    rt.add_argument("--head", default="Kepala LPSE", help="Pimpinan (the head who signs)")
    rt.add_argument("--tables", type=int, default=3,
                    help="tables compared: the application profile's (spse_app.restore_test) always, others at random up to this many in all")
    rt.add_argument("--files", type=int, default=5, help="upload files sampled")
    rt.add_argument("--slack", type=float, default=60.0,
                    help="rows/files compared are older than the backup/snapshot start minus this many seconds (longer transactions)")
    rt.add_argument("--read-data", default="10%", help="restic check --read-data-subset (default %(default)s)")
    rt.add_argument("--target-time", type=parse_target_time, metavar="TIME",
                    help="point-in-time restore (pgBackRest --type=time) to this ISO time (site time zone if none given): "
                         "the restored copy must hold exactly production's rows older than it")
    rt.add_argument("--skip-files", action="store_true", help="database only")
    rt.add_argument("--seed", type=int, help="random seed (to repeat a sampling)")
    rt.add_argument("--timeout-run", type=float, default=4 * 3600, help=argparse.SUPPRESS)
    common(rt)
    rt.set_defaults(func=cmd_restore_test)
    register_restore(sub, common)


# --- restore into production (BK-7): refused unless the target is named twice ------------------------------

RESTORE_LOG = "restores.jsonl"


def reseed_standbys(site: Site, site_file: str, target: str) -> list[dict]:
    """After a restore into production: each standby emptied (preflight: a standby of this
    database system), then the data-tier deploy copies the restored primary to it again."""
    from drc.hosts.deploy import run_deploy
    from drc.site.data_tier import data_tier_of

    pg = site.postgresql
    r = remote.run(site, target, "sudo -n runuser -u postgres -- psql -XAtqc 'SELECT system_identifier FROM pg_control_system()'", 60)
    system_id = r.stdout.strip() if r.ok else ""
    standbys = data_tier_of(site).db_standby_hosts
    steps = []
    for h in standbys:
        # Emptied only if it is a standby of the restored system (drc/hostside/empty_standby.py).
        e = remote.run_program(site, h, "empty_standby", {"version": pg.version, "cluster": pg.cluster, "system_identifier": system_id},
                               300) if system_id else remote.Result(h, reachable=False, error=f"system id of {target} unread")
        steps.append({"step": f"empty standby {h}", "ok": e.ok and "emptied" in e.stdout,
                      "output": (e.error or e.stderr or e.stdout).strip()[-500:]})
    if standbys and all(st["ok"] for st in steps):
        d = run_deploy(site_file, "data-tier")  # siaga's own deploy, wherever siaga is installed
        steps.append({"step": "data-tier deploy: pg_basebackup to the standby", "ok": d.ok, "seconds": round(d.seconds, 1),
                      "output": "" if d.ok else d.output[-1500:]})
    return steps


def restore_refusal(site: Site, target: str | None, confirm: str | None) -> str | None:
    """Why a restore into production must not go on, or None. SOP BK-7: only on request, the
    target named twice, so a slip of the keyboard cannot overwrite production."""
    if not target:
        return "no --target given"
    if target not in site.hosts:
        return f"unknown host {target!r} (hosts: {', '.join(site.hosts)})"
    if confirm != target:
        return (f"restore into the production database on {target!r} refused: name the target twice "
                f"(--target {target} --confirm-target {target})" + (f"; --confirm-target was {confirm!r}" if confirm else ""))
    source = site.hosts_in(site.replication.source_site)[:1]
    if [target] != source:
        return (f"{target!r} is not the database source host ({', '.join(source) or 'none'}): a standby is rebuilt by the "
                "deploy (replication role), not restored")
    return None


def restore_args(label: str | None, target_time: dt.datetime | None) -> list[str]:
    if target_time is not None:
        return ["--type=time", f"--target={target_time.astimezone(dt.timezone.utc).strftime('%Y-%m-%d %H:%M:%S.%f+00')}",
                "--target-action=promote"]
    if label:
        return [f"--set={label}", "--type=immediate", "--target-action=promote"]
    return []  # the latest backup, then every archived WAL


def cmd_restore(args: argparse.Namespace, console: Console) -> int:
    from drc.backup import runs as backup

    site = load_site(args.site)
    tz = site_tz(site)
    by = site.connection.user
    confirm = args.confirm_target
    if args.target and confirm is None and not args.json and console.is_terminal:
        confirm = console.input(f"Restore OVERWRITES the production database on [bold]{args.target}[/bold]. "
                                "Type the host name again to go on: ").strip()
    started = dt.datetime.now(tz)
    rec = {"v": 1, "id": uuid.uuid4().hex, "site": site.site, "kind": "restore", "target": args.target, "by": by,
           "requester": args.requester, "head": args.head, "label": args.label,
           "target_time": args.target_time.isoformat() if args.target_time else None,
           "start": started.isoformat(timespec="seconds"), "pre_restore_backup": None, "restore": None}

    def finish(result: str, error: str | None) -> int:
        rec.update(result=result, error=error, end=dt.datetime.now(tz).isoformat(timespec="seconds"))
        records.append_new(records.records_dir(site) / RESTORE_LOG, [rec])
        if args.json:
            console.file.write(json.dumps(rec, indent=2, ensure_ascii=False) + "\n")
            console.file.flush()
        else:
            console.print(("[green]restored[/green]" if result == "success" else f"[bold red]{result.upper()}[/bold red]")
                          + (f": {error}" if error else ""), highlight=False)
        return 0 if result == "success" else (2 if result == "refused" else 1)

    why = restore_refusal(site, args.target, confirm)
    if why:
        return finish("refused", why)
    # A pre-restore backup first (BK-2: what the restore overwrites is backed up before).
    hosts = backup.read_hosts(site, args.timeout)
    plan, problems = backup.plan_run(site, hosts, "db")
    if problems:
        return finish("refused", "pre-restore backup not possible: " + "; ".join(problems))
    res = backup.run_sets(site, plan, by, args.timeout, trigger="pre-restore")
    recs = [r for v in res.values() for r in v["records"]]
    records.append_new(records.records_dir(site) / backup.LOG_RECORDS, recs)
    rec["pre_restore_backup"] = [{"id": r["id"], "result": r["result"], "label": (r.get("details") or {}).get("label"),
                                  "error": r.get("error")} for r in recs]
    if not recs or any(r.get("result") != "success" for r in recs):
        errs = "; ".join(filter(None, [r.get("error") for r in recs] + [v.get("error") for v in res.values()]))
        return finish("refused", f"the pre-restore backup failed, nothing restored: {errs or 'no record'}")
    a = {"version": site.postgresql.version, "stanza": site.backup.stanza, "timeout_s": site.backup.timeout_s,
         "restore_args": restore_args(args.label, args.target_time)}
    # Stop, pgBackRest restore, start, recovery settings cleared, restart: drc/hostside/prod_restore.py, as root.
    r = remote.run_program(site, args.target, "prod_restore", a, timeout=site.backup.timeout_s + 1200)
    try:
        rec["restore"] = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        rec["restore"] = {"ok": False, "error": r.error or f"exited {r.exited}: {(r.stderr or r.stdout).strip()[-400:]}"}
    if not rec["restore"].get("ok"):
        return finish("failure", f"restore on {args.target} failed: {json.dumps(rec['restore'].get('steps') or rec['restore'].get('error'))[-800:]}")
    if not args.json:
        console.print(f"{args.target} restored ({rec['restore']['seconds']:.0f} s); re-seeding the standby from it", highlight=False)
    rec["standby"] = reseed_standbys(site, args.site, args.target)
    if not all(st["ok"] for st in rec["standby"]):
        return finish("failure", f"{args.target} restored, but the standby was not re-seeded (the DRC does not follow it): "
                                 f"{json.dumps(rec['standby'])[-800:]}. Fix: see the step's output, then run the site deploy")
    return finish("success", None)


def register_restore(sub, common) -> None:
    rs = sub.add_parser("restore", help="restore a backup INTO PRODUCTION (BK-7): target named twice, pre-restore backup first",
                        description="Refused (exit 2) unless --confirm-target repeats --target (or the name is typed again "
                                    "at a terminal) and the target is the database source host. A pre-restore backup of "
                                    "the database is taken first; if it fails nothing is restored. Every attempt, also a "
                                    "refused one, is recorded in <records_dir>/restores.jsonl.")
    rs.add_argument("--target", help="host whose production database is overwritten (the database source host)")
    rs.add_argument("--confirm-target", help="the same host name again")
    rs.add_argument("--label", help="pgBackRest backup label (default: the latest, then every archived WAL)")
    rs.add_argument("--target-time", type=parse_target_time, metavar="TIME", help="point in time to restore to (ISO)")
    rs.add_argument("--requester", required=True, help="Pemohon: who asked for this restore (BK-7)")
    rs.add_argument("--head", default="Kepala LPSE", help="Pimpinan")
    common(rs)
    rs.set_defaults(func=cmd_restore)
