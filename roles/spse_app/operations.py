"""Operations the spse_app role needs and pyinfra lacks. Each reads facts and yields commands."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation
from pyinfra.facts.files import File

from .facts import ApacheEnabled


@operation()
def apache_enabled(mods: list[str], sites: list[str], disable_sites: list[str], confs: list[str] = (), reload: bool = False):
    """
    Apache modules, sites and confs enabled (others listed disabled); the config is tested before
    Apache is reloaded, so a broken config never replaces a working one.

    + mods: modules that must be enabled
    + sites: sites (names in sites-available, without .conf) that must be enabled
    + disable_sites: sites that must be disabled
    + confs: confs (names in conf-available, without .conf) that must be enabled
    + reload: reload even when nothing here changed (a site file was rewritten)
    """
    current = host.get_fact(ApacheEnabled) or {"mods": [], "sites": [], "confs": []}
    commands = [StringCommand("a2enmod", "-q", QuoteString(m)) for m in mods if m not in current["mods"]]
    commands += [StringCommand("a2enconf", "-q", QuoteString(c)) for c in confs if c not in current["confs"]]
    commands += [StringCommand("a2ensite", "-q", QuoteString(s)) for s in sites if s not in current["sites"]]
    commands += [StringCommand("a2dissite", "-q", QuoteString(s)) for s in disable_sites if s in current["sites"]]
    if not commands and not reload:
        host.noop("Apache modules and sites are as wanted")
        return
    yield from commands
    yield "apache2ctl configtest"
    # A new module needs a restart; a site change only a graceful reload.
    yield "systemctl restart apache2" if any("a2enmod" in str(c) for c in commands) else "systemctl reload-or-restart apache2"


@operation()
def self_signed_certificate(cert: str, key: str, common_name: str, days: int = 825):
    """
    A self-signed certificate and its key, made on the host if either is missing (lab only).

    + cert, key: paths
    + common_name: CN and subjectAltName DNS name
    + days: validity
    """
    if host.get_fact(File, path=cert) and host.get_fact(File, path=key):
        host.noop(f"{cert} exists")
        return
    yield StringCommand(
        "openssl", "req", "-x509", "-newkey", "rsa:3072", "-nodes", "-days", str(days),
        "-subj", QuoteString(f"/CN={common_name}"), "-addext", QuoteString(f"subjectAltName=DNS:{common_name}"),
        "-keyout", QuoteString(key), "-out", QuoteString(cert), "2>/dev/null",
    )
    yield StringCommand("chmod", "600", QuoteString(key))
    yield StringCommand("chmod", "644", QuoteString(cert))
