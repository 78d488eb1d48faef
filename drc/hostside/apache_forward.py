#!/usr/bin/python3
"""apache-forward '<json args>': put or remove the switch-over's forward in this host's Apache.

Installed by roles/base as /usr/local/lib/siaga/apache-forward, run as root by the switch-over
(drc/runbooks/switchover.py) on the old site: {"mode": "on", "path": "/etc/apache2/siaga-forward.conf",
"conf": "<text rendered by roles/spse_app/forward.py>"} or {"mode": "off", "path": ...}. The file is
checked with `apache2ctl configtest` before Apache reloads; a forward Apache refuses is taken out
again, so the old site's Apache is never left broken. Standard library only; one JSON object out.
"""

import json
import os
import subprocess
import sys


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd="/", stdin=subprocess.DEVNULL)
    return p.returncode, (p.stdout + p.stderr).strip()[-400:]


def reload_checked():
    rc, out = run(["apache2ctl", "configtest"])
    if rc != 0:
        return False, f"configtest: {out}"
    rc, out = run(["systemctl", "reload", "apache2"])
    return rc == 0, out


def forward(a):
    path = a["path"]
    if a["mode"] == "off":
        if os.path.exists(path):
            os.unlink(path)
            ok, why = reload_checked()
            return {"ok": ok, "error": None if ok else why}
        return {"ok": True}
    tmp = path + ".siaga-new"
    with open(tmp, "w") as fh:
        fh.write(a["conf"])
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    ok, why = reload_checked()
    if not ok:
        os.unlink(path)
        reload_checked()
        return {"ok": False, "error": f"Apache refused the forward, taken out again: {why}"}
    return {"ok": True}


def main():
    try:
        out = forward(json.loads(sys.argv[1]))
    except (IndexError, ValueError, KeyError, OSError, subprocess.TimeoutExpired) as exc:
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(out))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
