#!/usr/bin/python3
"""status-probe '<json args>': the part of `siaga status` that runs ON each host.

Installed by roles/base as /usr/local/lib/siaga/status-probe (drc/hostside/__init__.py) and run as
the admin (no sudo: it asks sudo itself for psql as postgres and for the uploads listing).
Standard library only (Debian's python3 on the servers), read-only, one JSON object on stdout:

    {"now": 1718000000.1,                      # the host's clock (uploads ages are on primary's)
     "pg": {...} | {"error": "..."},           # PostgreSQL itself, via `sudo -u postgres psql`
     "health": {"status": "ok" | "read-only" | "down", "http": 200, "detail": "..."},
     "uploads": {"dir": "...", "files": [[path, size, mtime], ...]} | {"error": "..."},
     "components": {"<name>": {"state": "up" | "down", "detail": "..."}},
     "updates": {"security": 3, "other": 1, "packages": ["libssl3", ...], "lists_age_s": 5400.0} | {"error": "..."},
     "reboot": {"required": true, "packages": ["linux-image-6.1.0-28-amd64"]}}

Nothing here decides anything: drc/status/command.py evaluates what every host said. SOP IN-4, EM-3.
"""

import glob
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

# One row, '|'-separated; empty fields where a value does not apply (e.g. receive LSN on a primary).
PG_SQL = """
SELECT pg_is_in_recovery(),
       CASE WHEN pg_is_in_recovery() THEN '' ELSE pg_current_wal_lsn()::text END,
       coalesce(pg_last_wal_receive_lsn()::text, ''),
       coalesce(pg_last_wal_replay_lsn()::text, ''),
       coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp())::text, ''),
       coalesce((SELECT status FROM pg_stat_wal_receiver), ''),
       coalesce((SELECT sender_host FROM pg_stat_wal_receiver), ''),
       coalesce((SELECT extract(epoch FROM now() - last_msg_receipt_time) FROM pg_stat_wal_receiver)::text, '')
"""
PG_FIELDS = ("in_recovery", "current_lsn", "receive_lsn", "replay_lsn", "replay_age_s", "receiver_status",
             "sender_host", "receiver_contact_age_s")


def _run(cmd, timeout):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/", stdin=subprocess.DEVNULL)


def _short(text):
    return " ".join((text or "").split())[:300]


def pg(port, timeout):
    """PostgreSQL's own view: role (pg_is_in_recovery), LSNs, WAL receiver. No password: peer auth."""
    try:
        proc = _run(["sudo", "-n", "-u", "postgres", "psql", "-XAtq", "-F", "|", "-p", str(port), "-d", "postgres",
                     "-c", PG_SQL], timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"psql: {exc}"}
    if proc.returncode != 0 or not proc.stdout.strip():
        return {"error": f"psql: {_short(proc.stderr) or 'no answer'}"}
    return parse_pg(proc.stdout)


def parse_pg(stdout):
    """psql's '|'-separated row of PG_SQL as a dict (None for empty fields, numbers as floats)."""
    values = stdout.strip().splitlines()[0].split("|")
    if len(values) != len(PG_FIELDS):
        return {"error": f"psql: unexpected answer {stdout.strip()[:200]!r}"}
    row = dict(zip(PG_FIELDS, values))
    out = {k: (v or None) for k, v in row.items()}
    out["in_recovery"] = {"t": True, "f": False}.get(row["in_recovery"])
    for key in ("replay_age_s", "receiver_contact_age_s"):
        out[key] = float(row[key]) if row[key] else None
    return out


def health(url, timeout, context=None, host_header=None):
    """The application's health endpoint: ok (reads and writes), read-only (a standby), down."""
    req = urllib.request.Request(url, headers={"Host": host_header} if host_header else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            code, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        code, body = exc.code, exc.read()
    except (OSError, ValueError) as exc:
        return {"status": "down", "http": None, "detail": str(getattr(exc, "reason", exc))[:200]}
    try:
        said = json.loads(body).get("status")
    except (ValueError, AttributeError):
        said = None
    status = said if said in ("ok", "read-only", "down") else ("ok" if code == 200 else "down")
    return {"status": status, "http": code, "detail": "" if said else body[:200].decode(errors="replace")}


def uploads(directory, timeout):
    """Every file under the uploads directory: [relative path, size, mtime] (find -printf '%P %s %T@').
    A file that goes between find reading its name and its size (the app's temporary file renamed
    into place, under write load) is left out, not an error (-ignore_readdir_race)."""
    try:
        proc = subprocess.run(["sudo", "-n", "find", directory, "-ignore_readdir_race", "-type", "f", "-printf",
                               "%P\\0%s\\0%T@\\0"],
                              capture_output=True, timeout=timeout, cwd="/", stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"find: {exc}"}
    if proc.returncode != 0:
        return {"error": f"find {directory}: {_short(proc.stderr.decode(errors='replace')) or proc.returncode}"}
    return {"dir": directory, "files": parse_listing(proc.stdout)}


def parse_listing(raw):
    """find's NUL-separated `%P %s %T@` triples as [[path, size, mtime], ...]."""
    parts = raw.decode(errors="surrogateescape").split("\0")[:-1]
    return [[parts[i], int(parts[i + 1]), float(parts[i + 2])] for i in range(0, len(parts) - 2, 3)]


def component(kind, target, timeout):
    try:
        if kind == "tcp":
            host, _, port = target.rpartition(":")
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
                return {"state": "up", "detail": "connects"}
        if kind == "http":
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # up or not; certificates are not this check
            try:
                with urllib.request.urlopen(target, timeout=timeout, context=ctx) as resp:
                    code = resp.status
            except urllib.error.HTTPError as exc:
                code = exc.code
            return {"state": "up" if code < 400 else "down", "detail": f"HTTP {code}"}
        if kind == "systemd":
            proc = _run(["systemctl", "is-active", target], timeout)
            state = proc.stdout.strip() or _short(proc.stderr)
            return {"state": "up" if proc.returncode == 0 else "down", "detail": state}
        return {"state": "down", "detail": f"unknown kind {kind}"}
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        return {"state": "down", "detail": str(getattr(exc, "reason", exc))[:200]}


# `apt-get -s` lines: "Inst pkg [old] (new Label:version/archive, Label:version/archive [arch])".
INST_RE = re.compile(r"^Inst (\S+) (?:\[[^\]]*\] )?\((\S+) ([^\[]*?)\s*\[[^\]]*\]\)")
REBOOT_REQUIRED = "/var/run/reboot-required"


def is_security_origin(origins):
    """Whether one of an Inst line's 'Label:version/archive' origins is Debian's security archive."""
    return any(o.split(":", 1)[0].endswith("Security") or o.rsplit("/", 1)[-1].endswith("-security")
               for o in (x.strip() for x in origins.split(",")) if o)


def parse_simulation(stdout):
    """`apt-get -s dist-upgrade` as {security, other, packages (security ones, sorted)}."""
    security, other = set(), set()
    for line in stdout.splitlines():
        m = INST_RE.match(line)
        if m:
            (security if is_security_origin(m.group(3)) else other).add(m.group(1))
    return {"security": len(security), "other": len(other), "packages": sorted(security)}


def updates(timeout):
    """Pending upgrades as apt's last list refresh knows them (apt-daily.timer): a simulation as
    this user (no root, no lock, no `apt-get update`: the network is not asked), with the lists' age."""
    try:
        proc = _run(["apt-get", "-s", "-q", "-o", "Debug::NoLocking=1", "dist-upgrade"], timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"apt-get -s: {exc}"}
    if proc.returncode != 0:
        return {"error": f"apt-get -s: {_short(proc.stderr) or proc.returncode}"}
    out = parse_simulation(proc.stdout)
    stamps = [os.path.getmtime(p) for p in glob.glob("/var/lib/apt/lists/*Release")]
    out["lists_age_s"] = round(time.time() - max(stamps), 1) if stamps else None
    return out


def reboot_required(path=REBOOT_REQUIRED):
    """Debian's flag file, and the packages that asked for the reboot (its .pkgs)."""
    if not os.path.exists(path):
        return {"required": False, "packages": []}
    try:
        with open(path + ".pkgs") as f:
            pkgs = sorted({line.strip() for line in f if line.strip()})
    except OSError:
        pkgs = []
    return {"required": True, "packages": pkgs}


FENCE_DIR = "/var/lib/siaga/fence"  # roles/fencing: the fence's marker, the authority, why PostgreSQL is held


def fence_state(directory=FENCE_DIR):
    """What the fence says on this host (its files are world-readable): fenced, held, authority."""
    out = {}
    for key, name in (("fenced", "fenced.json"), ("held", "held.json"), ("authority", "authority.json")):
        try:
            with open(os.path.join(directory, name)) as f:
                out[key] = json.load(f)
        except (OSError, ValueError):
            out[key] = None
    return out


def security_state(files, timeout=10):
    """The security services' own status files (roles/clamav's is world-readable; roles/file_integrity
    keeps its directory root-only: read through sudo), by name; None for a file that is not there
    (the service is off, or not deployed yet)."""
    out = {}
    for name, path in files.items():
        try:
            with open(path) as f:
                out[name] = json.load(f)
            continue
        except PermissionError:
            pass
        except (OSError, ValueError):
            out[name] = None
            continue
        try:
            proc = _run(["sudo", "-n", "cat", path], timeout)
            out[name] = json.loads(proc.stdout) if proc.returncode == 0 else None
        except (OSError, ValueError, subprocess.TimeoutExpired):
            out[name] = None
    return out


def probe(args):
    """Everything this host says about itself, as a JSON-ready dict."""
    timeout = args.get("timeout", 5)
    if args.get("only") == "health":  # a runbook's check inside an outage: the app's answer alone
        ctx = None
        if args.get("through_local_https"):  # this host's Apache on 127.0.0.1 (its name is not 127.0.0.1)
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        return {"health": health(args["health_url"], timeout, ctx, args.get("host_header")), "now": time.time()}
    out = {"pg": pg(args["pg_port"], timeout * 2), "health": health(args["health_url"], timeout)}
    out["components"] = {c["name"]: component(c["kind"], c["target"], timeout) for c in args.get("components", [])}
    out["updates"] = updates(args.get("apt_timeout", 30))
    out["reboot"] = reboot_required()
    out["fence"] = fence_state()
    out["security"] = security_state(args.get("security_files", {}))
    out["uploads"] = uploads(args["uploads_dir"], args.get("listing_timeout", 60))
    out["now"] = time.time()  # after the listing: a file written during it has age >= 0
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: status-probe '<json args>'", file=sys.stderr)
        return 2
    print(json.dumps(probe(json.loads(argv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
