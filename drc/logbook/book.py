"""The logbook's data: the hosts' answers (drc/hostside/logbook_read.py) made into records, and the
records read back as logbook entries. No host is contacted here. SOP RA-5, RA-6.

Records (drc/records/store.py: append-only JSON lines, deduplicated by id, mirrored to the DRC):
- `logbook-sessions.jsonl`: one per ended SSH session of an admin account, with the admin (by the
  key's fingerprint), the network (the ssh_allowlist entry's label), start and end. A session still
  open is not written until it has ended (a later collect writes it), so no record is ever rewritten.
- `logbook-failures.jsonl`: one per failed attempt (source address and port): wrong key, unknown
  user, or refused by the firewall before sshd saw it.
- `logbook-notes.jsonl`: the fault, its analysis and the repair, per session (`siaga logbook note`);
  the latest note of a session counts, and a note with an analysis closes the entry.

Manual or automated: a session that opened a shell or a terminal is a person at work (manual); one
that only ran commands or sftp without a terminal is a program: siaga itself (deploys, status,
backups, runbooks, all with the admin's own key) or the admin's scripts. Automated sessions are
kept, but listed and reported grouped per host, admin and day, and are never overdue.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import re

from drc.records.render import month_of
from drc.site import Site

SESSIONS = "logbook-sessions.jsonl"
FAILURES = "logbook-failures.jsonl"
NOTES = "logbook-notes.jsonl"
# The workstation's bookkeeping of where each host's journal was read to (a dot file: not mirrored;
# without it a collect reads the whole lookback again, and the ids keep it from adding anything twice).
COLLECT_STATE = ".logbook-collect.json"
SHORT_ID = 10
# A collect reads this much before where the last one left off. A failed attempt spans at most
# ~2 min (TCP's SYN retries, sshd's LoginGraceTime 30 s): one that began in this margin was
# recorded by the last collect, whole; read from its middle it would get another start and id.
MARGIN_S = 300.0
# Lines may reach the journal a little after their time (ulogd2 writes through syslog): the next
# collect reports again what began this long before this one (the same start: the same id).
LAG_S = 60.0

# Kinds of failed attempts as the report names them (Indonesian, for the SOP form).
FAILURE_LABELS = {
    "refused by firewall": "ditolak firewall (di luar daftar IP yang diizinkan)",
    "invalid user": "akun tidak dikenal",
    "not authenticated": "gagal login (kunci tidak diterima)",
    "failed publickey": "kunci SSH ditolak",
    "failed password": "kata sandi ditolak",
    "too many attempts": "terlalu banyak percobaan",
    "user not allowed": "akun tidak diizinkan",
}


def fingerprint(public_key: str) -> str | None:
    """OpenSSH's SHA256 fingerprint of a public key line ("SHA256:..." as sshd logs it)."""
    parts = public_key.split()
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (IndexError, ValueError):
        return None
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def admin_keys(site: Site) -> dict[str, str]:
    """Key fingerprint -> admin name."""
    return {fp: a.name for a in site.admins for k in a.ssh_keys if (fp := fingerprint(k))}


def network_of(site: Site, address: str) -> str:
    """The network a source address belongs to: the label of the most specific ssh_allowlist entry
    holding it (its network when unlabelled), a site host, or 'outside ssh_allowlist'."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    inside = [e for e in site.ssh_allowlist if e.network.version == ip.version and ip in e.network]
    if inside:
        best = max(inside, key=lambda e: e.network.prefixlen)
        return best.label or str(best.network)
    for name, h in site.hosts.items():
        if h.address == ip:
            return f"host {name} (site {site.site_of[name]})"
    return "di luar ssh_allowlist"


def is_interactive(channels: list[str]) -> bool:
    """A shell, or anything on a terminal (`ssh -t host cmd`): a person at work."""
    return any(c == "shell" or c.startswith("shell ") or " on " in c for c in channels)


def iso(t: float | None, tz: dt.tzinfo) -> str | None:
    return None if t is None else dt.datetime.fromtimestamp(t, tz).isoformat(timespec="seconds")


def _id(*parts) -> str:
    return hashlib.sha1("|".join(str(p) for p in parts).encode()).hexdigest()


def session_records(site: Site, host: str, answer: dict, tz: dt.tzinfo) -> tuple[list[dict], list[dict]]:
    """(records of ended admin sessions, sessions still open) from one host's answer. Sessions of
    accounts that are not admins (the backup repository, the uploads sync: keys forced to one
    command by sshd) are data paths between the hosts, not remote access: left out."""
    keys, admins = admin_keys(site), {a.name: a for a in site.admins}
    done, ongoing = [], []
    for s in answer.get("sessions", []):
        if s.get("user") not in admins:
            continue
        rec = {
            "v": 1, "id": _id(site.site, host, s.get("boot_id"), s.get("pid"), f"{s.get('start', 0):.6f}"),
            "site": site.site, "host": host, "site_role": site.site_of.get(host), "user": s["user"],
            # The key says who: an admin's own account is theirs, but an unknown key is shown as such.
            "admin": keys.get(s.get("fingerprint") or "", None if s.get("fingerprint") else s["user"]),
            "fingerprint": s.get("fingerprint"), "key_type": s.get("key_type"), "method": s.get("method"),
            "address": s.get("address"), "port": s.get("port"), "network": network_of(site, s.get("address", "")),
            "start": iso(s.get("start"), tz), "end": iso(s.get("end"), tz), "ended": s.get("ended"),
            "channels": s.get("channels", []), "kind": "manual" if is_interactive(s.get("channels", [])) else "automated",
        }
        (done if s.get("ended") else ongoing).append(rec)
    return done, ongoing


def failure_records(site: Site, host: str, answer: dict, tz: dt.tzinfo) -> list[dict]:
    keys = admin_keys(site)
    out = []
    for f in answer.get("failures", []):
        out.append({
            "v": 1, "id": _id(site.site, host, f.get("boot_id"), f.get("address"), f.get("port"), f"{f.get('start', 0):.6f}"),
            "site": site.site, "host": host, "site_role": site.site_of.get(host), "address": f.get("address"),
            "port": f.get("port"), "network": network_of(site, f.get("address", "")), "user": f.get("user"),
            "fingerprint": f.get("fingerprint"), "admin": keys.get(f.get("fingerprint") or ""),
            "kind": f.get("kind"), "start": iso(f.get("start"), tz), "end": iso(f.get("end"), tz), "lines": f.get("lines", 1),
        })
    return out


def read_window(resume_from: float | None, oldest: float) -> tuple[float, float]:
    """(since, report_from) for a host's next read: from MARGIN_S before where the last collect
    left off (never before `oldest`, the lookback), reporting failed attempts that began after it."""
    since = max(oldest, (resume_from or oldest) - MARGIN_S)
    return since, since + MARGIN_S


def resume_from(site: Site, answer: dict) -> float:
    """Where the next read of this host may start: the start of its oldest admin session still
    open (written once it has ended, so read again then), else LAG_S before the host's time of
    this read."""
    admins = {a.name for a in site.admins}
    starts = [s["start"] for s in answer.get("sessions", []) if not s.get("ended") and s.get("user") in admins]
    return min([*starts, (answer.get("now") or LAG_S) - LAG_S])


# --- reading the logbook back ----------------------------------------------------------------------

SECRET_RE = re.compile(r"PRIVATE KEY|(?i:\b(pass(word|wd|phrase)?|secret|token|kata ?sandi)\s*[:=]\s*\S)")


def secret_in(text: str) -> str | None:
    """Why a note's text looks like it holds a secret (records are mirrored and printed), or None."""
    m = SECRET_RE.search(text or "")
    return f"it contains {m.group(0)[:20]!r}" if m else None


def latest_notes(notes: list[dict]) -> dict[str, dict]:
    """Session id -> its latest note."""
    out: dict[str, dict] = {}
    for n in sorted(notes, key=lambda n: n.get("at") or ""):
        out[n.get("session")] = n
    return out


def parse_time(value: str | None) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


def entries(site: Site, sessions: list[dict], notes: list[dict], now: dt.datetime) -> list[dict]:
    """Every recorded session with its note and its state: 'closed' (a note with an analysis),
    'open', or 'overdue' (open longer than logbook.analysis_due_days after it ended: SOP RA-5).
    Automated sessions are 'automated' (grouped, never overdue). Oldest first."""
    due = dt.timedelta(days=site.logbook.analysis_due_days)
    by_id = latest_notes(notes)
    out = []
    for s in sorted(sessions, key=lambda s: s.get("start") or ""):
        e = dict(s, note=by_id.get(s["id"]))
        if e["note"] and e["note"].get("analysis"):
            e["state"] = "closed"
        elif s.get("kind") == "automated":
            e["state"] = "automated"
        else:
            end = parse_time(s.get("end")) or parse_time(s.get("start"))
            e["state"] = "overdue" if end and now - end > due else "open"
        out.append(e)
    return out


def in_month(rec: dict, year: int, month: int, tz: dt.tzinfo) -> bool:
    return month_of(rec, tz) == (year, month)


def automated_groups(entries_: list[dict], tz: dt.tzinfo) -> list[dict]:
    """Automated sessions per day, host and admin: how many, first start, last end, from where."""
    groups: dict[tuple, dict] = {}
    for e in entries_:
        if e["state"] != "automated":
            continue
        start = parse_time(e["start"]).astimezone(tz)
        key = (start.date().isoformat(), e["host"], e.get("admin") or e["user"])
        g = groups.setdefault(key, {"date": key[0], "host": key[1], "admin": key[2], "sessions": 0, "first": e["start"],
                                    "last": e.get("end") or e["start"], "networks": set(), "site_role": e.get("site_role")})
        g["sessions"] += 1
        g["last"] = max(g["last"], e.get("end") or e["start"])
        g["networks"].add(e["network"])
    return [dict(g, networks=sorted(g["networks"])) for _, g in sorted(groups.items())]


def find_session(sessions: list[dict], prefix: str) -> list[dict]:
    return [s for s in sessions if s.get("id", "").startswith(prefix.lower())] if prefix else []

