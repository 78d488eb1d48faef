"""Writing the site file back after a runbook: the site file says what is true (issue 10 point 2).

A runbook changes one fact, `active_site`; the settings that follow it (drc.site.model
`derived_from_active_site`) are updated too where the admin wrote them out. The admin's comments,
key order and quoting are kept (ruamel.yaml round trip). The new text is validated as a whole
before it replaces the file (written beside it, fsynced, renamed), so a crash leaves the old file
or the new one, never half of one.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

from drc.site.model import SITE_ROLES, Site, derived_from_active_site, parse_site


def rewritten(path: str | Path, active: str, lost: str | None = None) -> tuple[str, str, Site]:
    """The site file's text now, its text with `active` as the active site and `lost` as the lost
    site (None: no lost_site key; comments kept), and the validated site that text describes.
    Nothing is written."""
    from ruamel.yaml import YAML

    if active not in SITE_ROLES:
        raise ValueError(f"active site {active!r}: use one of {', '.join(SITE_ROLES)}")
    path = Path(path)
    text = path.read_text()
    yaml = YAML()  # round-trip: comments and order kept
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)  # the example file's style: "  - item"
    yaml.width = 4096  # never re-wrap a long line
    data = yaml.load(text)
    derived = derived_from_active_site(active, lost)
    if data.get("active_site") == active and data.get("lost_site") == lost and all(
            (data.get(section) or {}).get(key, value) == value for (section, key), value in derived.items()):
        return text, text, parse_site(_plain(text), path, text)
    data["active_site"] = active
    keys = list(data)
    # ruamel keeps the comment lines after a key with that key: they move with the key before them.
    if lost and "lost_site" not in data:  # right after active_site, where an admin reads it
        after = data.ca.items.pop("active_site", None)
        data.insert(keys.index("active_site") + 1, "lost_site", lost)
        if after:
            data.ca.items["lost_site"] = after
    elif lost:
        data["lost_site"] = lost
    elif "lost_site" in data:
        after, before = data.ca.items.pop("lost_site", None), keys[keys.index("lost_site") - 1]
        data.pop("lost_site")
        if after:
            data.ca.items[before] = after
    for (section, key), value in derived.items():
        if isinstance(data.get(section), dict) and key in data[section]:
            data[section][key] = value
    out = io.StringIO()
    yaml.dump(data, out)
    new = out.getvalue()
    return text, new, parse_site(_plain(new), path, new)  # refused here, before anything changes


def with_active_site(path: str | Path, active: str, lost: str | None = None) -> Site:
    """The site as it will be once `active` serves (e.g. the new active site's firewall ruleset)."""
    return rewritten(path, active, lost)[2]


def set_active_site(path: str | Path, active: str, lost: str | None = None) -> Site:
    """Make `active` the active site (and `lost` the lost site, None: none) in the site file at
    `path`; returns the validated site. A file that already says so is left untouched."""
    path = Path(path)
    old, new, site = rewritten(path, active, lost)
    if new == old:
        return site
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(new)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return site


def _plain(text: str):
    import yaml

    return yaml.safe_load(text)
