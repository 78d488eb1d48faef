"""The pyinfra host of a site's host name in this deploy: roles that read another host's facts
(a standby's primary, the backup repository, the uploads sync's peer) find it here."""

from pyinfra import state


def inventory_host(name: str):
    """None when the host is not in this run's inventory (a deploy limited to part of the site)."""
    for h in state.inventory:
        if (h.data.get("siaga_host") or h.name) == name:
            return h
    return None
