"""Debian packages the roles rely on."""

from __future__ import annotations

from pyinfra import host
from pyinfra.facts.deb import DebPackages
from pyinfra.operations import apt


def ensure_installed(packages: list[str], why: str) -> None:
    """Install missing packages; the apt index is refreshed only when something is missing,
    so a converged host makes no change."""
    installed = host.get_fact(DebPackages)
    missing = [p for p in packages if p not in installed]
    apt.packages(
        name=f"Packages for {why}: {', '.join(packages)}",
        packages=packages,
        update=bool(missing),
        no_recommends=True,
    )
