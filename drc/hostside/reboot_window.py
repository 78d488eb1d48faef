#!/usr/bin/python3
"""reboot-window '<json args>': reboot this host for a security update, inside its site's window only.

Installed by roles/base as /usr/local/lib/siaga/reboot-window and started by
siaga-reboot-window.timer at the start of the host's window (`base.security_updates.reboot`).
Standard library only. Args: {"day": "Sun", "start": "02:00", "minutes": 60}, in local time (the
host's timezone is `base.timezone`, the same on both sites).

It reboots only when all of these hold, else it says why on stdout (the journal) and exits 0:
- /var/run/reboot-required exists (written by Debian's packages, e.g. a new kernel or libc);
- now is inside [start, start + minutes) of this week's window;
- no backup is running (siaga-backup-*.service) and apt/dpkg are not (apt-daily*.service, the dpkg
  lock): it waits for them, polling, until the window ends; then it gives up until next week.
Unattended-upgrades itself never reboots (Automatic-Reboot "false"). The two sites' windows never
overlap (drc/site/model.py), so both sites are never down at once. SOP IN-2, EM-3.
"""

import fcntl
import json
import os
import subprocess
import sys
import time

REQUIRED = "/var/run/reboot-required"
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
BUSY_UNITS = ("siaga-backup-*.service", "apt-daily.service", "apt-daily-upgrade.service")
DPKG_LOCKS = ("/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock")


def minutes_into_window(tm, day, start, minutes):
    """Minutes since the window's start if `tm` (a time.struct_time) is inside it, else None.
    The window may run past midnight (Sun 23:30 for 60 min ends Mon 00:30)."""
    hh, mm = (int(x) for x in start.split(":"))
    begin = DAYS.index(day) * 1440 + hh * 60 + mm
    now = tm.tm_wday * 1440 + tm.tm_hour * 60 + tm.tm_min
    into = (now - begin) % (7 * 1440)
    return into if into < minutes else None


def busy_units():
    """Active backup or apt units (systemctl list-units), as names."""
    proc = subprocess.run(["systemctl", "list-units", "--plain", "--no-legend", "--state=activating,active,deactivating",
                           *BUSY_UNITS], capture_output=True, text=True, timeout=30)
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def dpkg_locked():
    """Whether apt or dpkg holds its lock (an admin's apt-get, an unattended run)."""
    for path in DPKG_LOCKS:
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.lockf(fd, fcntl.LOCK_UN)
        except OSError:
            return True
        finally:
            os.close(fd)
    return False


def decide(args, now, required, busy):
    """('reboot' | 'wait' | 'skip', why), from the window, the flag file's lines (None: absent)
    and what is busy. Pure: unit-tested on the workstation."""
    if required is None:
        return "skip", f"no reboot required ({REQUIRED} absent)"
    into = minutes_into_window(now, args["day"], args["start"], args["minutes"])
    window = f"{args['day']} {args['start']} + {args['minutes']} min"
    if into is None:
        return "skip", f"reboot required, but outside the window {window}: next window"
    if busy:
        return "wait", f"reboot required, in the window {window}, waiting for {', '.join(busy)}"
    return "reboot", f"reboot required ({', '.join(required) or 'no package named'}), in the window {window}"


def read_required():
    """None when no reboot is required, else the packages asking for it (reboot-required.pkgs)."""
    if not os.path.exists(REQUIRED):
        return None
    try:
        with open(REQUIRED + ".pkgs") as f:
            return sorted({line.strip() for line in f if line.strip()})
    except OSError:
        return []


def run(args, clock=time.time, sleep=time.sleep, reboot=None):
    poll_s = args.get("poll_s", 60)
    while True:
        busy = busy_units() + (["dpkg lock"] if dpkg_locked() else [])
        action, why = decide(args, time.localtime(clock()), read_required(), busy)
        print(f"reboot-window: {why}", flush=True)
        if action == "skip":
            return 0
        if action == "reboot":
            (reboot or (lambda: subprocess.run(["systemctl", "reboot"], check=True)))()
            return 0
        sleep(poll_s)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: reboot-window '<json args>'", file=sys.stderr)
        return 2
    args = json.loads(argv[0])
    if args.get("day") not in DAYS or ":" not in str(args.get("start", "")) or int(args.get("minutes", 0)) <= 0:
        print(f"reboot-window: bad arguments {argv[0]!r}: want day (Mon..Sun), start HH:MM, minutes > 0", file=sys.stderr)
        return 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
