"""An unplanned failover and its fail-back at about 1 GiB of data, with the figures issue 11 names.

Usage: .venv/bin/python bench/failover.py [--lab bench-fo] [--ttl 60] [--gib 1.0] [--wan-mbit 100] [--keep]

Raises its own lab ("bench-fo"), converges it, sets the public name's TTL to --ttl, loads about
--gib GiB into a database of its own on the primary (pgbench's tables), waits for the DRC to
replay it and for a CHECKPOINT (a site in service has one at least every checkpoint_timeout: what
the killed primary's crash recovery replays is the writes since, not the whole load). Then, with the probe (a client outside both sites writing through the public name every
100 ms) and the watcher running:
- the primary's machine is killed (a site loss) and `siaga failover --to drc --yes` runs;
- afterwards the primary boots again (its fence guard finds the DRC promoted and fences it);
- `siaga failback` rewinds it into a standby of the DRC;
- a fresh copy of the same data (pg_basebackup from the DRC, into a scratch directory on the old
  primary: what a rebuild would have to transfer) is timed against the rewind.
The fail-back and the fresh copy cross the lab's WAN limited to --wan-mbit Mbit/s (a token bucket
on both sites' bridges; 0: the bare lab bridge, a local copy from the same disk); the fresh copy is
also timed on the bare bridge, for reference.

Printed, each beside its goal and the machine's load:
- decision confirmed → PostgreSQL accepting writes on the DRC, and → the app serving behind open
  ports (goal ≤ 10 s, server side);
- the probe's largest gap between acknowledged writes, with the DNS TTL beside it (client side);
- the rewind's time against the fresh copy's (goal ≤ 20 % at 1 GiB).

Exit 0 when measured (goals printed as met / NOT met), 2 when the measurement itself failed.
The lab is removed at the end unless --keep.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from drc.hosts.deploy import REPO, converged_lab, machine_load, release_lab
from drc.lab.lab import Lab
from drc.lab.probing import ProbeRun
from drc.runbooks.journal import Journal
from drc.site import load_site

sys.path.insert(0, str(Path(__file__).resolve().parent))
from switchover import goal, set_ttl  # bench/switchover.py: the same TTL setting and goal words

LAB = "bench-fo"
GOAL_WRITES_S = 10.0
GOAL_REWIND_SHARE = 0.20
BENCH_DB = "bench_failover"
PGBENCH_ROWS_PER_SCALE = 100_000  # pgbench_accounts rows per scale unit, about 15 MiB with indexes


def siaga(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "drc.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=3600)


def on(lab: Lab, host: str, command: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    return subprocess.run(lab.ssh_cmd(host) + [f"sudo -n sh -c {shlex.quote(command)}"], capture_output=True, text=True,
                          timeout=timeout)


def last_json(proc: subprocess.CompletedProcess, what: str) -> dict:
    line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("{")), None)
    if proc.returncode != 0 or not line:
        print(proc.stdout[-4000:], proc.stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"{what} failed (exit {proc.returncode})")
    return json.loads(line)


def step_at(j: Journal, step: str, event: str = "step-end") -> float:
    at = next(e["at"] for e in j.events if e.get("step") == step and e["event"] == event and e.get("result", "done") != "failed")
    return dt.datetime.fromisoformat(at).timestamp()


def load_data(lab: Lab, pgv: str, gib: float) -> float:
    """About `gib` GiB in BENCH_DB on the primary; returns its size in GiB once the DRC has replayed it."""
    scale = max(1, round(gib * 1024 / 15))
    r = on(lab, "primary", f"runuser -u postgres -- createdb {BENCH_DB} 2>/dev/null; "
                           f"runuser -u postgres -- /usr/lib/postgresql/{pgv}/bin/pgbench -i -q -s {scale} {BENCH_DB}")
    if r.returncode != 0:
        raise SystemExit(f"pgbench -i: {r.stderr[-1000:]}")
    lsn = on(lab, "primary", "runuser -u postgres -- psql -XAtc 'select pg_current_wal_lsn()'").stdout.strip()
    end = time.monotonic() + 1800
    while time.monotonic() < end:
        replayed = on(lab, "drc", f"runuser -u postgres -- psql -XAtc \"select pg_last_wal_replay_lsn() >= '{lsn}'\"").stdout
        if replayed.strip() == "t":
            break
        time.sleep(2)
    size = on(lab, "primary", f"runuser -u postgres -- psql -XAtc \"select pg_database_size('{BENCH_DB}')\"").stdout
    return int(size.strip()) / 2**30


def fresh_copy_seconds(lab: Lab, pgv: str, user: str, stream: bool = False) -> tuple[float, float | None]:
    """pg_basebackup of the DRC into a scratch directory on the old primary: a rebuild's transfer.
    With `stream`, the copy is then started as a standby beside the running one (another port, no
    connections) until the DRC streams to it: (the copy's seconds, the copy and catch-up's seconds)."""
    scratch = "/var/lib/postgresql/siaga-bench-copy"
    on(lab, "primary", f"rm -rf {scratch}")
    t0 = time.monotonic()
    r = on(lab, "primary", f"runuser -u postgres -- /usr/lib/postgresql/{pgv}/bin/pg_basebackup -h {lab.address('drc')} "
                           f"-U {user} -D {scratch} -X stream -c fast -w{' -R' if stream else ''}")
    took, streamed = time.monotonic() - t0, None
    if r.returncode != 0:
        on(lab, "primary", f"rm -rf {scratch}")
        raise SystemExit(f"pg_basebackup: {r.stderr[-1000:]}")
    if stream:
        etc = f"/etc/postgresql/{pgv}/main"
        conf = (f"port = 5499\nlisten_addresses = ''\nunix_socket_directories = '/tmp'\nhba_file = '{etc}/pg_hba.conf'\n"
                f"ident_file = '{etc}/pg_ident.conf'\nhot_standby = off\nshared_buffers = '32MB'\narchive_mode = off\n"
                "cluster_name = 'benchcopy'\n")
        on(lab, "primary", f"printf %s {shlex.quote(conf)} > {scratch}/postgresql.conf && chown postgres: {scratch}/postgresql.conf && "
                           f"runuser -u postgres -- /usr/lib/postgresql/{pgv}/bin/pg_ctl -D {scratch} -l /tmp/siaga-bench-copy.log start")
        end = time.monotonic() + 600
        while time.monotonic() < end:
            q = on(lab, "drc", "runuser -u postgres -- psql -XAtc \"select state from pg_stat_replication "
                               "where application_name = 'benchcopy'\"").stdout.strip()
            if q == "streaming":
                streamed = time.monotonic() - t0
                break
            time.sleep(0.5)
        on(lab, "primary", f"runuser -u postgres -- /usr/lib/postgresql/{pgv}/bin/pg_ctl -D {scratch} -m immediate stop")
    on(lab, "primary", f"rm -rf {scratch}")
    return took, streamed


def acks_from(log: Path, address: str) -> int:
    rows = [json.loads(ln) for ln in log.read_text().splitlines()] if log.exists() else []
    return sum(1 for r in rows if r.get("event") == "ack" and r.get("address") == address)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lab", default=LAB)
    ap.add_argument("--ttl", type=int, default=60)
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--wan-mbit", type=int, default=100, help="the inter-site link's bandwidth (0: unlimited)")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    lab = Lab(a.lab)
    try:
        if not converged_lab(lab, a.lab).ok:
            return 2
        set_ttl(lab.site_file, a.ttl)
        site = load_site(lab.site_file)
        pgv = str(site.postgresql.version)
        size = load_data(lab, pgv, a.gib)
        on(lab, "primary", "runuser -u postgres -- psql -XAtqc checkpoint")
        with tempfile.TemporaryDirectory(prefix="siaga-bench-fo-") as tmp:
            with ProbeRun(lab, Path(tmp)) as probe:
                lab.stop_host("primary", kill=True)
                fo = last_json(siaga("failover", "--to", "drc", "--reason", "bench: site loss", "--decided-by", "bench",
                                     "--yes", "--json", str(lab.site_file)), "failover")
                # The probe's writes go on through the DRC once the old address has expired (the TTL).
                end, drc = time.monotonic() + a.ttl + 180, lab.address("drc")
                while acks_from(Path(tmp) / "probe.jsonl", drc) < 20:
                    if time.monotonic() > end:
                        raise SystemExit("the probe never wrote through the DRC")
                    time.sleep(1)
            report = probe.check()
        j = Journal.load(Path(fo["journal"]))
        decided = step_at(j, "decision", "step-start")
        writes_s, serving_s = step_at(j, "promote") - decided, step_at(j, "web") - decided
        lab.restart_host("primary")
        lab.set_wan_rate(a.wan_mbit or None)
        fb = last_json(siaga("failback", "--json", str(lab.site_file)), "failback")
        fbj = Journal.load(Path(fb["journal"]))
        ends = {e["step"]: e for e in fbj.events if e.get("step") and e["event"] == "step-end" and e.get("result") == "done"}
        # The serving timeline's WAL the rewind copies grows with this (a segment per archive_timeout at least).
        served_min = (dt.datetime.fromisoformat(fbj.events[0]["at"]).timestamp() - decided) / 60
        rewind_s = ends["rewind"]["seconds"]
        # What pg_rewind copied (its own count) and the serving host's pg_wal trimmed before it.
        rewind_mb, trim = (ends["rewind"].get("did") or {}).get("copied_mb"), ends.get("wal-trim", {}).get("did") or {}
        breakdown = (ends["rewind"].get("did") or {}).get("breakdown")
        # The rewind and its catch-up: from the rewind step's start until the rewound host streams
        # (the follow step's check): the WAL it fetches from the archive (or the serving host) counted.
        rejoin_s = step_at(fbj, "follow") - step_at(fbj, "rewind", "step-start")
        copy_s, _ = fresh_copy_seconds(lab, pgv, site.replication.user)
        copy_only_s, copy_stream_s = fresh_copy_seconds(lab, pgv, site.replication.user, stream=True)
        lab.set_wan_rate(None)
        bare_copy_s, _ = fresh_copy_seconds(lab, pgv, site.replication.user)
        load = machine_load()
    finally:
        release_lab(lab, a.keep)
    share = rewind_s / copy_s if copy_s else None
    print(f"\nfailover and fail-back, {size:.2f} GiB of data, DNS TTL {a.ttl} s (lab '{a.lab}')")
    print(f"decision → writes accepted by PostgreSQL on the DRC {writes_s:.1f} s, → the app serving behind open ports "
          f"{serving_s:.1f} s (goal ≤ {GOAL_WRITES_S:g} s, server side: {goal(serving_s, GOAL_WRITES_S)})")
    print(f"client side: the probe's largest gap between acknowledged writes {report['rto_s']} s with a {a.ttl} s TTL; "
          f"{report['acked']} acknowledged, {report['rpo_writes']} lost (listed by the fail-back); two writable primaries "
          f"in {report['watcher']['split_brain_rounds']} of {report['watcher']['rounds']} rounds (goal 0: "
          f"{goal(report['watcher']['split_brain_rounds'], 0)})")
    link = f"a {a.wan_mbit} Mbit/s WAN" if a.wan_mbit else "the bare lab bridge"
    print(f"fail-back across {link}: pg_rewind {rewind_s:.1f} s against a fresh copy (pg_basebackup) {copy_s:.1f} s = "
          f"{(share or 0):.0%} (goal ≤ {GOAL_REWIND_SHARE:.0%}: {goal(share, GOAL_REWIND_SHARE)}); the same copy on the "
          f"bare lab bridge {bare_copy_s:.1f} s; {load}")
    print(f"rewind + catch-up (rewind step's start → the rewound host streams, the follow step) {rejoin_s:.1f} s against "
          f"a fresh copy + catch-up (pg_basebackup -R, started as a standby until the DRC streams to it) "
          f"{copy_stream_s if copy_stream_s is not None else float('nan'):.1f} s (its copy {copy_only_s:.1f} s) = "
          f"{(rejoin_s / copy_stream_s if copy_stream_s else float('nan')):.0%}; the rewound host's WAL: {trim.get('wal_from')}")
    print(f"pg_rewind copied {rewind_mb} MB, {served_min:.1f} min after the failover's decision; the serving host's pg_wal before it: {trim.get('pg_wal_before')} → "
          f"{trim.get('pg_wal_after')} (WAL kept from {trim.get('keep_from')}{'' if trim.get('trimmed') else ', not trimmed: ' + str(trim.get('why'))})")
    if breakdown:
        print("what pg_rewind fetched, MB: " + ", ".join(f"{k} {v / 1e6:.1f}" for k, v in breakdown["fetched_bytes"].items())
              + f" ({breakdown['fetched_files']} files; largest other files {breakdown['largest_other_files']})")
        order = ("start", "crash recovery", "diverged", "copy", "control file", "sync")  # as pg_rewind goes
        print("pg_rewind's phases, s: " + ", ".join(f"{k} {breakdown['phase_seconds'][k]}" for k in order
                                                     if k in breakdown["phase_seconds"])
              + f"; the step around it {rewind_s:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
