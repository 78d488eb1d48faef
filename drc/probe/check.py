"""`siaga probe check LOG`: every write the probe saw acknowledged is looked for on the current
primary: its row (by name, with the sha256 the probe computed) and its file (sha256 of the file
the row points to). RPO = acknowledged writes missing or different; RTO = the largest gap between
consecutive acknowledged writes. SOP EM-3 (DRC data up to date), EM-2 step 6."""

from __future__ import annotations

import io
import os
import shlex
from pathlib import Path

from drc.hosts.remote import connection, parallel, run, why
from drc.probe.writer import ProbeError, gaps, read_log
from drc.site import Site

TIMEOUT_S = 120.0


def current_primary(site: Site) -> str:
    """The one data-tier host whose PostgreSQL is not in recovery (decided from the hosts, never
    from the site file's labels)."""
    port = site.firewall.postgresql_port
    cmd = f"sudo -n -u postgres psql -XAtq -p {port} -d postgres -c 'SELECT pg_is_in_recovery()'"
    answers = parallel(list(site.hosts), lambda h: run(site, h, cmd, 20), 30, lambda h: None)
    primaries = [h for h, r in answers.items() if r is not None and r.ok and r.stdout.strip() == "f"]
    if len(primaries) != 1:
        seen = {h: (r.stdout.strip() if r and r.ok else (r.error or r.stderr.strip()) if r else "no answer") for h, r in answers.items()}
        raise ProbeError(f"{len(primaries)} writable primaries ({seen}): the check needs exactly one")
    return primaries[0]


def _stored(site: Site, host: str, names: list[str]) -> dict[str, tuple[str, str]]:
    """name -> (sha256, path) of the probe's rows on `host`."""
    if not names:
        return {}
    pg = site.postgresql
    prefix = names[0].rsplit("-", 1)[0] + "-"
    sql = f"SELECT name, sha256, path FROM tender_document WHERE name LIKE '{prefix}%'"
    cmd = (f"sudo -n -u postgres psql -XAtq -F '|' -p {site.firewall.postgresql_port} -d {shlex.quote(pg.database)} "
           f"-c {shlex.quote(sql)}")
    r = run(site, host, cmd, TIMEOUT_S)
    if not r.ok:
        raise ProbeError(f"reading the probe's rows on {host}: {r.error or r.stderr.strip()}")
    out = {}
    for line in r.stdout.splitlines():
        name, digest, path = line.split("|", 2)
        out[name] = (digest, path)
    return out


def _file_digests(site: Site, host: str, paths: list[str]) -> dict[str, str]:
    """sha256 of each file on `host` (the list goes on stdin, NUL-separated)."""
    if not paths:
        return {}
    # The list goes as a file (sftp), not on stdin: a remote command's stdin gets no EOF from
    # Fabric once a large list is sent, and the check would hang.
    listing = f"/tmp/siaga-probe-check-{os.getpid()}.list"
    try:
        with connection(site, host) as conn:
            conn.put(io.BytesIO("\0".join(paths).encode()), listing)
            r = conn.run(f"sudo -n xargs -0 -r -a {listing} sha256sum --; rc=$?; rm -f {listing}; exit $rc", hide=True,
                         warn=True, timeout=TIMEOUT_S, in_stream=False)
    except Exception as exc:  # noqa: BLE001
        raise ProbeError(f"reading the probe's files on {host}: {why(exc)}") from None
    out = {}
    for line in r.stdout.splitlines():
        digest, _, path = line.partition("  ")
        out[path] = digest
    return out


def check(site: Site, log_path: Path) -> dict:
    rows = read_log(log_path)
    acked = [r for r in rows if r.get("event") == "ack"]
    host = current_primary(site)
    stored = _stored(site, host, [r["name"] for r in acked])
    files = _file_digests(site, host, sorted({p for _d, p in stored.values()}))
    missing, wrong_row, wrong_file = [], [], []
    for r in acked:
        row = stored.get(r["name"])
        if row is None:
            missing.append(r["seq"])
        elif row[0] != r["sha256"]:
            wrong_row.append(r["seq"])
        elif files.get(row[1]) != r["sha256"]:
            wrong_file.append(r["seq"])
    g = gaps(rows)
    addresses = sorted({r["address"] for r in acked})
    timelines = sorted({r["timeline"] for r in acked if r.get("timeline") is not None})
    start = next((r for r in rows if r.get("event") == "start"), {})
    return {"log": str(log_path), "run": start.get("run"), "primary": host, "writes": sum(1 for r in rows if "name" in r),
            "acked": len(acked), "verified": len(acked) - len(missing) - len(wrong_row) - len(wrong_file),
            "missing": missing, "row_differs": wrong_row, "file_differs": wrong_file,
            "rpo_writes": len(missing) + len(wrong_row) + len(wrong_file), "rto_s": g["max_gap_s"], "gap_from": g["gap_from"],
            "addresses": addresses, "timelines": timelines}
