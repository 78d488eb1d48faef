"""The platform a site runs on: a Debian release, and what siaga takes from it.

Both sites run the same platform: streaming replication and pgBackRest's remote need the same
PostgreSQL major and the same pgBackRest on every host. The PostgreSQL major and the pgBackRest
version come from the release itself (security updates with the OS, no third-party repository).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Platform:
    name: str          # the site file's value
    suite: str         # Debian's codename (apt suites, debootstrap)
    version_id: str    # VERSION_ID in /etc/os-release
    postgresql: str    # the release's PostgreSQL major
    pgbackrest: str    # the release's pgBackRest (major.minor)
    openssh: str       # the release's OpenSSH (major.minor)

    @property
    def label(self) -> str:
        return f"Debian {self.version_id} ({self.suite})"


# sshd penalises a source address after failed logins (PerSourcePenalties) from this version on.
PER_SOURCE_PENALTIES_FROM = (9, 8)
# pgBackRest stores changed blocks in incrementals (repo-block) from this version on.
BLOCK_INCREMENTAL_FROM = (2, 52)

PLATFORMS = {
    "debian12": Platform("debian12", "bookworm", "12", postgresql="15", pgbackrest="2.45", openssh="9.2"),
    "debian13": Platform("debian13", "trixie", "13", postgresql="17", pgbackrest="2.55", openssh="10.0"),
}
DEFAULT_PLATFORM = "debian13"


def platform(name: str) -> Platform:
    return PLATFORMS[name]


def version_tuple(version: str) -> tuple[int, ...]:
    """'2.55.1-1~deb12siaga1' -> (2, 55, 1): the upstream part of a Debian version, as numbers."""
    upstream = version.split(":", 1)[-1].split("-", 1)[0].split("~", 1)[0].split("+", 1)[0]
    out = []
    for part in upstream.split("."):
        digits = "".join(c for c in part if c.isdigit()) if part[:1].isdigit() else ""
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def block_incremental(version: str) -> bool:
    return version_tuple(version)[:2] >= BLOCK_INCREMENTAL_FROM


def os_release_problem(p: Platform, os_release: dict[str, str], host: str, site_file: str = "the site file") -> str:
    """'' when /etc/os-release (as key -> value) is the platform's release, else what to say."""
    got_id, got_version = os_release.get("ID", "?"), os_release.get("VERSION_ID", "?")
    if got_id == "debian" and got_version == p.version_id:
        return ""
    pretty = os_release.get("PRETTY_NAME") or f"{got_id} {got_version}"
    other = next((q for q in PLATFORMS.values() if got_id == "debian" and q.version_id == got_version), None)
    fix = (f"set 'platform: {other.name}' in {site_file} (both sites run the same platform), or reinstall {host} with {p.label}"
           if other else f"install {p.label} on {host}, or set 'platform' in {site_file} to one of {', '.join(PLATFORMS)}")
    return (f"{host} runs {pretty}, but {site_file} says platform '{p.name}' ({p.label}): nothing was changed. Fix: {fix}")


def parse_os_release(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            out[key.strip()] = value
    return out
