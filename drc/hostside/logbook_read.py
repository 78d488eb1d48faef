#!/usr/bin/python3
"""logbook-read '<json>': the SSH sessions and failed attempts of this host, read from its journal.

Installed by roles/logbook as /usr/local/lib/siaga/logbook-read (drc/hostside/__init__.py), run by
`siaga logbook collect` with sudo (the journal's sshd entries are root's to read). Read-only.
Arguments (JSON): {"since": <unix seconds>, "report_from": <unix seconds>, "prefix": "siaga-ssh-refused"}:
the journal is read from `since`; a failed attempt whose first line is before `report_from` is
not reported (it began before the window, or in its first minutes, which the previous collect
covered: reported from the middle it would get another start, and so another record).
One JSON object on stdout:

    {"boot_id": "...", "now": 1790000000.0,
     "sessions": [{"boot_id", "pid", "user", "address", "port", "method", "key_type", "fingerprint",
                   "start", "end" (null: ongoing, or its boot ended first), "ended": "closed"|"boot"|null,
                   "channels": ["shell on pts/0", "command", "subsystem 'sftp'", ...]}],
     "failures": [{"address", "port", "user" (null: none given), "kind", "fingerprint", "start", "end"}]}

Where each part comes from (sshd at LogLevel VERBOSE, roles/ssh_hardening; the same lines on
Debian 12's OpenSSH 9.2 from `sshd` and Debian 13's OpenSSH 10 from `sshd-session`/`sshd-auth`):
- "Accepted publickey for U from A port P ssh2: ED25519 SHA256:..." starts a session, in the
  privileged monitor process that lives as long as the connection (its PID ties the lines);
- "Starting session: shell on pts/0 for U from A port P id 0" (VERBOSE) says what it ran: a shell
  on a terminal is a person at work, commands and sftp without a terminal are programs (siaga);
- "pam_unix(sshd:session): session closed for user U" (monitor PID) or "Disconnected from user U
  A port P" ends it;
- "Invalid user", "Failed publickey", "Connection closed by authenticating user ... [preauth]",
  "maximum authentication attempts exceeded" are failed attempts, one per source address and port;
- the firewall's NFLOG rule (roles/firewall, prefix `siaga-ssh-refused`), written to the journal by
  ulogd2 ("siaga-ssh-refused IN=eth0 ... SRC=A DST=... PROTO=TCP SPT=P DPT=22 ..."): connections
  refused before sshd ever saw them (sources outside ssh_allowlist).

Standard library only (Debian's python3). SOP RA-5, RA-6, IN-4.
"""

import json
import re
import subprocess
import sys
import time

PREFIX = "siaga-ssh-refused"
# The syslog identifiers of sshd's processes (Debian 12's sshd; Debian 13's sshd-session, monitor
# and child, and sshd-auth) and of ulogd2. Not _COMM: journald cannot read it from a process that is
# exiting, and a session's last line (the monitor's "session closed") comes from one.
IDENTIFIERS = ("sshd", "sshd-session", "sshd-auth", "ulogd")
JOURNAL_TIMEOUT_S = 120

ADDR = r"(?P<address>[0-9A-Fa-f:.]+)"
ACCEPTED = re.compile(r"^Accepted (?P<method>\S+) for (?P<user>\S+) from " + ADDR + r" port (?P<port>\d+)"
                      r"(?: ssh2(?:: (?P<key_type>\S+) (?P<fingerprint>\S+))?)?")
STARTING = re.compile(r"^Starting session: (?P<what>.+?)(?: on (?P<tty>\S+))? for (?P<user>\S+) from " + ADDR
                      + r" port (?P<port>\d+) id \d+$")
PAM_CLOSED = re.compile(r"^pam_unix\(sshd:session\): session closed for user (?P<user>\S+)")
DISCONNECTED = re.compile(r"^Disconnected from user (?P<user>\S+) " + ADDR + r" port (?P<port>\d+)")
# Failed attempts: (regex, kind). Each names the source; most name the user.
FAILED = (
    (re.compile(r"^Invalid user (?P<user>.*?) from " + ADDR + r" port (?P<port>\d+)"), "invalid user"),
    (re.compile(r"^Failed (?P<method>\S+) for (?:invalid user )?(?P<user>\S+) from " + ADDR + r" port (?P<port>\d+)"
                r"(?: ssh2(?:: (?P<key_type>\S+) (?P<fingerprint>\S+))?)?"), "failed {method}"),
    (re.compile(r"^maximum authentication attempts exceeded for (?:invalid user )?(?P<user>\S+) from " + ADDR
                + r" port (?P<port>\d+)"), "too many attempts"),
    (re.compile(r"^(?:Connection closed|Disconnected) by (?P<inv>invalid|authenticating) user (?P<user>\S+) " + ADDR
                + r" port (?P<port>\d+) \[preauth\]"), "not authenticated"),
    (re.compile(r"^User (?P<user>\S+) from " + ADDR + r" not allowed because"), "user not allowed"),
)
REFUSED_FIELD = re.compile(r"\b(SRC|SPT|DPT)=(\S+)")
# When one connection logs several lines, the most telling kind names it (a wrong key's connection
# also logs "Connection closed by authenticating user").
KIND_ORDER = ("refused by firewall", "invalid user", "user not allowed", "failed publickey", "failed password",
              "too many attempts", "not authenticated")


def _when(entry):
    return int(entry.get("__REALTIME_TIMESTAMP", "0")) / 1e6


def _pid(entry):
    return entry.get("SYSLOG_PID") or entry.get("_PID") or ""


def _text(value):
    """MESSAGE as a string (journald gives a byte array for non-UTF-8 text)."""
    if isinstance(value, list):
        return bytes(value).decode("utf-8", "replace")
    return value or ""


def _kind_rank(kind):
    base = kind if kind in KIND_ORDER else ("failed publickey" if kind.startswith("failed") else kind)
    return KIND_ORDER.index(base) if base in KIND_ORDER else len(KIND_ORDER)


def assemble(entries, boot_id, prefix=PREFIX, report_from=0.0):
    """Sessions and failed attempts from journal entries (dicts as `journalctl -o json` prints them),
    oldest first. boot_id: the running boot's (a session of an earlier boot that never closed
    ended with that boot). Failed attempts that began before report_from are left out."""
    sessions, by_pid, by_source, failures = [], {}, {}, {}
    for e in entries:
        msg, t, boot = _text(e.get("MESSAGE")), _when(e), e.get("_BOOT_ID", "")
        if prefix and msg.startswith(prefix):
            f = dict(REFUSED_FIELD.findall(msg))
            if "SRC" in f:
                _fail(failures, boot, f["SRC"], f.get("SPT"), None, "refused by firewall", None, t, dport=f.get("DPT"))
            continue
        m = ACCEPTED.match(msg)
        if m:
            s = {"boot_id": boot, "pid": _pid(e), "user": m["user"], "address": m["address"], "port": int(m["port"]),
                 "method": m["method"], "key_type": m["key_type"], "fingerprint": m["fingerprint"], "start": t,
                 "end": None, "ended": None, "channels": []}
            sessions.append(s)
            by_pid[(boot, s["pid"])] = s
            by_source[(boot, s["address"], s["port"])] = s
            continue
        m = STARTING.match(msg)
        if m:
            s = by_source.get((boot, m["address"], int(m["port"])))
            if s is not None:
                what = m["what"] + (f" on {m['tty']}" if m["tty"] else "")
                if what not in s["channels"]:  # a deploy runs hundreds of commands: each kind once
                    s["channels"].append(what)
            continue
        m = PAM_CLOSED.match(msg)
        s = by_pid.get((boot, _pid(e))) if m else None
        if s is None:
            m = DISCONNECTED.match(msg)
            s = by_source.get((boot, m["address"], int(m["port"]))) if m else None
        if s is not None:
            if s["ended"] is None or t > s["end"]:
                s["end"], s["ended"] = t, "closed"
            continue
        for rx, kind in FAILED:
            m = rx.match(msg)
            if m:
                g = m.groupdict()
                if kind == "not authenticated" and g.get("inv") == "invalid":
                    kind = "invalid user"
                _fail(failures, boot, g["address"], g.get("port"), g.get("user"), kind.format(method=g.get("method")),
                      g.get("fingerprint"), t)
                break
    for s in sessions:
        if s["ended"] is None and s["boot_id"] != boot_id:
            s["ended"] = "boot"
    # A connection that failed but then got in (a second key accepted) was no failed attempt.
    accepted = {(s["boot_id"], s["address"], s["port"]) for s in sessions}
    return sessions, [f for k, f in failures.items() if k not in accepted and f["start"] >= report_from]


def _fail(failures, boot, address, port, user, kind, fingerprint, t, dport=None):
    port = int(port) if port and str(port).isdigit() else None
    f = failures.get((boot, address, port))
    if f is None:
        f = failures[(boot, address, port)] = {"boot_id": boot, "address": address, "port": port, "user": None, "kind": kind,
                                               "fingerprint": None, "start": t, "end": t, "lines": 0}
        if dport:
            f["dport"] = int(dport) if dport.isdigit() else dport
    f["lines"] += 1
    f["end"] = max(f["end"], t)
    if user and f["user"] is None:
        f["user"] = user
    if fingerprint and f["fingerprint"] is None:
        f["fingerprint"] = fingerprint
    if _kind_rank(kind) < _kind_rank(f["kind"]):
        f["kind"] = kind


def journal(since, prefix=PREFIX):
    """The journal's sshd and ulogd entries since `since` (unix seconds), oldest first."""
    # Matches on one field are alternatives (OR).
    matches = [f"SYSLOG_IDENTIFIER={name}" for name in IDENTIFIERS]
    cmd = ["journalctl", "-o", "json", "--no-pager", "-q", f"--since=@{int(since)}",
           "--output-fields=MESSAGE,_BOOT_ID,_PID,SYSLOG_PID,__REALTIME_TIMESTAMP", *matches]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=JOURNAL_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"journalctl exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    out = []
    for line in proc.stdout.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def current_boot():
    with open("/proc/sys/kernel/random/boot_id") as fh:
        return fh.read().strip().replace("-", "")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = json.loads(argv[0]) if argv else {}
    prefix = args.get("prefix", PREFIX)
    try:
        boot = current_boot()
        since = args.get("since", 0)
        sessions, failures = assemble(journal(since, prefix), boot, prefix, args.get("report_from", since))
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
        print(json.dumps({"error": str(exc)[:400]}))
        return 1
    print(json.dumps({"boot_id": boot, "now": time.time(), "sessions": sessions, "failures": failures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
