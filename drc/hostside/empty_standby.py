#!/usr/bin/python3
"""empty-standby '<json>': after a restore into production, a standby replaced by an empty cluster.

Installed by roles/backup as /usr/local/lib/siaga/empty-standby (drc/hostside/__init__.py); run as
root by `siaga backup restore` on each standby. The standby holds a replica of the state the
restore overwrote (also in the pre-restore backup) on the old timeline, so it cannot follow the
restored primary. It is replaced by a fresh cluster with no databases, as after installation (what
the data-tier deploy turns into a standby again), but only when it is what it should be: in
recovery (or shut down in recovery), of the same database system as the restored primary.
Anything else is refused and left untouched (exit 3). The cluster is started again (the deploy
needs it running). Arguments (JSON, no secret):

    {"version": "<the site's postgresql.version>", "cluster": "main", "system_identifier": "7412..."}

Prints `emptied` on success. Standard library only (Debian's python3). SOP BK-7.
"""

import json
import os
import pwd
import shutil
import subprocess
import sys

RECOVERY_STATES = ("shut down in recovery", "in archive recovery")


def run(cmd, timeout=300, env=None):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/", stdin=subprocess.DEVNULL,
                       env={**os.environ, **(env or {})})
    return p.returncode, p.stdout, p.stderr


def parse_controldata(text):
    """pg_controldata's `Name: value` lines as a dict."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def refusal(want, in_recovery, control):
    """Why this cluster must not be emptied, or None. in_recovery: psql's answer ('t', 'f') or
    'stopped'; control: parse_controldata() of its data directory."""
    system = control.get("Database system identifier", "")
    state = control.get("Database cluster state", "")
    if not want or system != want or (in_recovery != "t" and state not in RECOVERY_STATES):
        return (f"refused: not a standby of system {want or '(unknown)'} (in recovery: {in_recovery}, state: {state or '?'}, "
                f"system: {system or '?'})")
    return None


def data_dir(version, cluster):
    return f"/var/lib/postgresql/{version}/{cluster}"


def empty(a):
    """(exit code, message)."""
    version, cluster, want = str(a["version"]), a["cluster"], a.get("system_identifier", "")
    d = data_dir(version, cluster)
    rc, so, _ = run(["runuser", "-u", "postgres", "--", "psql", "-XAtqc", "SELECT pg_is_in_recovery()"], 60)
    in_recovery = so.strip() if rc == 0 else "stopped"
    _, control, _ = run([f"/usr/lib/postgresql/{version}/bin/pg_controldata", "-D", d], 60, env={"LC_ALL": "C"})
    why = refusal(want, in_recovery, parse_controldata(control))
    if why:
        return 3, why
    run(["pg_ctlcluster", version, cluster, "stop"], 300)
    shutil.rmtree(d)
    pw = pwd.getpwnam("postgres")
    os.mkdir(d, 0o700)
    os.chown(d, pw.pw_uid, pw.pw_gid)
    os.chmod(d, 0o700)
    for cmd in (["runuser", "-u", "postgres", "--", f"/usr/lib/postgresql/{version}/bin/initdb", "-D", d, "-A", "peer",
                 "--no-instructions"],
                ["pg_ctlcluster", version, cluster, "start"]):
        rc, so, se = run(cmd, 600)
        if rc != 0:
            return 1, f"{' '.join(cmd[-4:])}: exit {rc}: {(se or so).strip()[-500:]}"
    return 0, "emptied"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: empty-standby '<json args>'", file=sys.stderr)
        return 2
    code, message = empty(json.loads(argv[0]))
    print(message, file=sys.stdout if code == 0 else sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
