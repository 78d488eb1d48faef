"""Which pgBackRest a site gets, and the one rule that keeps its repository readable: never install
a pgBackRest older than the one that wrote the repository (an older one cannot read what a newer
one wrote, e.g. Debian 12's 2.45 and a block-incremental repository of 2.55). Pure: unit-tested.
SOP BK-1, BK-8 (backups stay readable)."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from drc.site.platform import block_incremental, version_tuple

if TYPE_CHECKING:
    from drc.site import Site
    from roles.backup.defaults import PgbackrestApt

MOVE_DOC = "README.md, 'What an existing Debian 12 site does to move'"


def supplied(site: Site) -> str | None:
    """The pgBackRest (major.minor) the deploy installs; None: an apt repository's, not known before."""
    return None if site.backup.pgbackrest_apt else site.os.pgbackrest


def uses_block_incremental(site: Site) -> bool:
    """repo1-block (changed blocks only in an incremental): Debian 13's 2.55, or the apt repository's
    (which must offer 2.52 or newer: README). Debian 12's 2.45 stores whole changed files."""
    return site.backup.pgbackrest_apt is not None or block_incremental(site.os.pgbackrest)


def downgrade_problem(site: Site, installed: dict[str, str | None], recorded: str | None, repository: str,
                      site_file: str = "the site file", block_backups: bool = False) -> str:
    """'' or why the deploy stops: a host has, or the repository was written by, a pgBackRest newer
    than the one this deploy would install. `installed`: host -> its installed version (None: not
    installed); `recorded`: the newest version that wrote `repository` (siaga's record on the
    repository host), None if unknown; `block_backups`: the repository holds bundled backups (what
    block incremental writes; a repository of siaga before the record has no record)."""
    want = supplied(site)
    if want is None:
        return ""  # the apt repository's: apt never downgrades (its pin is below 1000)
    newer = {h: v for h, v in installed.items() if v and version_tuple(v)[:2] > version_tuple(want)[:2]}
    what = []
    if newer:
        what.append(", ".join(f"{h} has pgBackRest {v}" for h, v in sorted(newer.items())))
    if recorded and version_tuple(recorded)[:2] > version_tuple(want)[:2]:
        what.append(f"the repository {repository} was written by pgBackRest {recorded}")
    elif block_backups and not block_incremental(want):
        what.append(f"the repository {repository} holds block-incremental (bundled) backups")
    if not what:
        return ""
    return (f"{'; '.join(what)}, but platform '{site.platform}' provides pgBackRest {want} ({site.os.label}'s own), "
            f"which may not read what a newer one wrote: nothing was changed. Fix: keep the newer pgBackRest with "
            f"backup.pgbackrest_apt in {site_file} (the PostgreSQL project's apt repository or your mirror of it), or "
            f"move the hosts to Debian 13 (platform: debian13), or start a new repository (a new backup.repository_path) "
            f"after a verified offline copy of this one and remove the newer pgbackrest package from the hosts; see {MOVE_DOC}")


def apt_files(apt: PgbackrestApt, key: bytes, keyring: str) -> dict[str, str]:
    """The keyring's path (by the key's form) -> '', and the sources and pin files' paths -> content."""
    origin = urlsplit(apt.url).hostname or ""
    ring = f"{keyring}.{'asc' if key.lstrip().startswith(b'-----BEGIN PGP') else 'gpg'}"
    return {"keyring": ring,
            "source": f"deb [signed-by={ring}] {apt.url} {apt.suite} {apt.component}\n",
            "pin": pin_preferences(origin), "origin": origin}


def pin_preferences(origin: str) -> str:
    """apt preferences: only pgbackrest comes from the repository at `origin` (its host name)."""
    return (f"Package: *\nPin: origin \"{origin}\"\nPin-Priority: 100\n\n"
            f"Package: pgbackrest\nPin: origin \"{origin}\"\nPin-Priority: 600\n")
