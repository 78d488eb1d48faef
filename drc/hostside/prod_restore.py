#!/usr/bin/python3
"""prod-restore '<json>': the part of `siaga backup restore` that runs ON the database host, as root.

Installed by roles/backup as /usr/local/lib/siaga/prod-restore (drc/hostside/__init__.py).
Stops PostgreSQL, `pgbackrest --delta restore` over its data directory (pulling from the
repository through pgBackRest's remote), starts it, waits until it is a primary again, clears
the recovery settings pgBackRest left behind and restarts it so that none of them is left pending
a restart (inside the outage the restore already is). Arguments (JSON, no secret):

    {"version": "<postgresql.version>", "stanza": "spse", "timeout_s": 3600, "restore_args": ["--set=...", ...]}

One JSON object on stdout: {"ok": bool, "seconds": float, "steps": [{"step", "ok", "output"}]}.
Standard library only (Debian's python3). SOP BK-7.
"""

import json
import subprocess
import sys
import time

# Written by pgBackRest into postgresql.auto.conf; left there, a standby copied from this primary
# would stop at the same target and promote itself.
RECOVERY_SETTINGS = ("restore_command", "recovery_target", "recovery_target_time", "recovery_target_action",
                     "recovery_target_timeline", "recovery_target_lsn", "recovery_target_name", "recovery_target_xid")
# stop, restore, start, promoted, recovery settings cleared, restarted
STEPS = 6
PROMOTE_WAIT_S = 600
# A primary with no setting pending a restart.
SETTLED_SQL = "SELECT pg_is_in_recovery()::text || ' ' || (SELECT count(*) FROM pg_settings WHERE pending_restart)"
SETTLED = "false 0"


def run(cmd, timeout):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/", stdin=subprocess.DEVNULL)
    return p.returncode, (p.stdout + p.stderr).strip()[-2000:]


def unit(a):
    return "postgresql@%s-main" % a["version"]


def restore_steps(a):
    """(name, command, timeout) of the steps that replace the data, in order."""
    return (
        ("stop", ["systemctl", "stop", unit(a)], 300),
        ("restore", ["runuser", "-u", "postgres", "--", "pgbackrest", "--stanza=" + a["stanza"], "--delta",
                     "--log-level-console=warn", *a["restore_args"], "restore"], a["timeout_s"]),
        ("start", ["systemctl", "start", unit(a)], 600),
    )


def reset_recovery_command():
    """psql resetting every recovery setting, then reloading the configuration."""
    sql = [x for g in RECOVERY_SETTINGS for x in ("-c", "ALTER SYSTEM RESET " + g)] + ["-c", "SELECT pg_reload_conf()"]
    return ["runuser", "-u", "postgres", "--", "psql", "-XAtq", "-v", "ON_ERROR_STOP=1", *sql]


def all_ok(steps):
    """Success only when every step ran and succeeded."""
    return len(steps) == STEPS and all(s["ok"] for s in steps)


def wait_for(run, sleep, clock, sql, want, wait_s):
    """Ask psql until it answers `want` or wait_s passed: (answered want, last answer)."""
    end = clock() + wait_s
    while True:
        rc, text = run(["runuser", "-u", "postgres", "--", "psql", "-XAtc", sql], 30)
        if rc == 0 and text.strip() == want:
            return True, text
        if clock() >= end:
            return False, text
        sleep(1)


def restore(a, run=run, sleep=time.sleep, clock=time.monotonic):
    out = {"steps": []}
    t0 = clock()
    for name, cmd, limit in restore_steps(a):
        rc, text = run(cmd, limit)
        out["steps"].append({"step": name, "ok": rc == 0, "output": text})
        if rc != 0:
            break
    else:
        ok, text = wait_for(run, sleep, clock, "SELECT pg_is_in_recovery()", "f", PROMOTE_WAIT_S)
        out["steps"].append({"step": "promoted", "ok": ok, "output": text})
        if ok:
            rc, text = run(reset_recovery_command(), 60)
            out["steps"].append({"step": "recovery settings cleared", "ok": rc == 0, "output": text})
        if out["steps"][-1]["ok"] and len(out["steps"]) == STEPS - 1:
            # The cleared recovery_target* settings only leave the server at a restart; until then they
            # are pending (pg_settings.pending_restart). Restart now, inside the outage the restore is.
            rc, text = run(["systemctl", "restart", unit(a)], 600)
            ok = rc == 0
            if ok:
                ok, text = wait_for(run, sleep, clock, SETTLED_SQL, SETTLED, PROMOTE_WAIT_S)
            out["steps"].append({"step": "restarted, nothing pending a restart", "ok": ok, "output": text})
    out["ok"] = all_ok(out["steps"])
    out["seconds"] = round(clock() - t0, 3)
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: prod-restore '<json args>'", file=sys.stderr)
        return 2
    print(json.dumps(restore(json.loads(argv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
