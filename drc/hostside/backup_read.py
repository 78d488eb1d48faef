#!/usr/bin/python3
"""backup-read '<json>': what `siaga backup` reads ON a backup host, as root (read-only).

Installed by roles/backup as /usr/local/lib/siaga/backup-read (drc/hostside/__init__.py). Reads the
runner's configuration (/etc/siaga/backup.json: which sets run here), its log (one JSON record per
line) and the time the repositories were initialised. Arguments (JSON, optional):
{"config": "/etc/siaga/backup.json"}. One JSON object on stdout:

    {"runs": [...], "records": [...], "bad_lines": 0, "initialised": "..." | null}
    or {"error": "cannot read ..."}

Standard library only (Debian's python3). SOP BK-3, BK-5.
"""

import json
import sys

CONFIG_JSON = "/etc/siaga/backup.json"
LOG_FILE = "/var/log/siaga/backup.jsonl"


def parse_log(lines):
    """The log's records and how many lines were not JSON (a torn last line, say)."""
    recs, bad = [], 0
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            recs.append(json.loads(line))
        except ValueError:
            bad += 1
    return recs, bad


def read(config=CONFIG_JSON):
    try:
        with open(config) as fh:
            cfg = json.load(fh)
    except (OSError, ValueError) as exc:
        return {"error": f"cannot read {config}: {exc}"}
    out = {"runs": cfg.get("runs", [])}
    log = cfg.get("log_file", LOG_FILE)
    try:
        with open(log, errors="replace") as fh:
            out["records"], out["bad_lines"] = parse_log(fh)
    except FileNotFoundError:  # no run yet
        out["records"], out["bad_lines"] = [], 0
    except OSError as exc:
        return {"error": f"cannot read {log}: {exc}"}
    try:
        with open(cfg["init_marker"]) as fh:
            out["initialised"] = fh.read().strip()
    except (KeyError, OSError):
        out["initialised"] = None
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = json.loads(argv[0]) if argv else {}
    print(json.dumps(read(args.get("config", CONFIG_JSON))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
