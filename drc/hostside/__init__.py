"""Programs that run ON the hosts with Debian's python3 (standard library only).

Each is a real file here (`drc/hostside/<module>.py`, `#!/usr/bin/python3`, a `main()`), linted
and unit-tested on the workstation like any module, and shipped by a role to
`/usr/local/lib/siaga/<name>` (root, 0755). The workstation runs it over SSH with its arguments as
one JSON word (never a secret: sudo logs command lines) through `drc.hosts.remote.run_program`.

This table is the one place that says which program exists, where it lives on a host and which
role ships it. It is data only: importable without pyinfra, and importing nothing from drc or roles
(roles read it to know what to ship; drc to know what to run).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# siaga's programs on every host (made by roles/base, the role that runs first).
LIB = "/usr/local/lib/siaga"
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class HostProgram:
    module: str  # drc/hostside/<module>.py
    role: str  # the role that ships it (roles/<role>/deploy.py calls roles.host_programs.ship(role))
    why: str

    @property
    def name(self) -> str:
        """The file's name on the host."""
        return self.module.replace("_", "-")

    @property
    def path(self) -> str:
        """Where the role installs it on a host."""
        return f"{LIB}/{self.name}"

    @property
    def source(self) -> Path:
        """The file on the workstation."""
        return HERE / f"{self.module}.py"


PROGRAMS: dict[str, HostProgram] = {p.module: p for p in (
    HostProgram("status_probe", "base", "siaga status: PostgreSQL, health, components and uploads of this host (every host)"),
    HostProgram("workstation_mirror", "base", "siaga workstation: the DRC's copy of the admin workstation (records, site file)"),
    HostProgram("reboot_window", "base", "siaga-reboot-window.service: reboot for a security update in the site's window only"),
    HostProgram("runbook_lock", "base", "siaga runbooks: the site-wide lock that keeps two runbooks from running at once"),
    HostProgram("pg_role", "base", "siaga runbooks: PostgreSQL's actual role read, and changed (stop, promote, follow)"),
    HostProgram("apache_forward", "base", "siaga switchover: the old site's Apache forwards to the new site during the DNS TTL"),
    HostProgram("uploads_digest", "base", "siaga switchover: size and sha256 of every upload, compared across the sites"),
    HostProgram("key_rotate", "base", "siaga secrets rotate <ssh key>: keys files, private keys, proofs (keys on stdin)"),
    HostProgram("backup_read", "backup", "siaga backup: this host's backup runs, log records and init time"),
    HostProgram("restore_probe", "backup", "siaga backup restore-test: scratch restores, checks and production queries"),
    HostProgram("prod_restore", "backup", "siaga backup restore: the production database restored in place, nothing left pending"),
    HostProgram("empty_standby", "backup", "siaga backup restore: a standby of the restored system replaced by an empty cluster"),
    HostProgram("fence", "fencing", "never two writable primaries: the guard before PostgreSQL starts, the fence, its release"),
    HostProgram("logbook_read", "logbook", "siaga logbook collect: SSH sessions and failed attempts, from the journal"),
    HostProgram("upload_scan", "clamav", "siaga-upload-scan: new and all uploads scanned by clamd, what it finds quarantined"),
    HostProgram("integrity_check", "file_integrity", "siaga-integrity-check: AIDE's check, siaga's deploys and Debian's updates told from tampering"),
    HostProgram("monitor_figures", "monitoring", "siaga-monitor-figures.timer: siaga's figures (backup age, WAL positions) for Prometheus"),
    HostProgram("secrets_host", "backup", "siaga secrets: restore from an offline copy with the escrow, rotations (secrets on stdin)"),
)}


def program(module: str) -> HostProgram:
    return PROGRAMS[module]


def shipped_by(role: str) -> list[HostProgram]:
    return [p for p in PROGRAMS.values() if p.role == role]
