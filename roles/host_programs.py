"""The programs siaga runs on the hosts (drc/hostside), shipped by the role that owns them.

Each is a real file in drc/hostside (standard library only), installed root-owned, mode 0755, in
/usr/local/lib/siaga, the way roles/backup ships its runner. Which program a role ships and where it
goes is said once, in drc/hostside/__init__.py (PROGRAMS).
"""

from __future__ import annotations

from pyinfra.operations import files

from drc.hostside import LIB, shipped_by


def lib_directory() -> None:
    """/usr/local/lib/siaga, made once per host by the role that runs first (roles/base)."""
    files.directory(name=f"{LIB} (siaga's programs)", path=LIB, user="root", group="root", mode="755")
    # The programs write no bytecode; one left by an older siaga is an unexplained file to AIDE.
    files.directory(name=f"{LIB}/__pycache__ absent", path=f"{LIB}/__pycache__", present=False)


def ship(role: str) -> None:
    """Install every host program of this role (drc.hostside.PROGRAMS) in /usr/local/lib/siaga."""
    for p in shipped_by(role):
        files.put(name=f"{p.path} ({p.why})", src=str(p.source), dest=p.path, user="root", group="root", mode="755")
