"""Operations the clamav role needs and pyinfra lacks. Each reads facts and yields commands."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import QuoteString, StringCommand, operation

from .facts import UnitFileState


@operation()
def unit_masked(unit: str, masked: bool = True):
    """
    A systemd unit masked (stopped, never started, also not by a package's postinst) or unmasked.

    + unit: the unit's name, e.g. ``clamav-freshclam.service``
    + masked: whether it must be masked
    """
    state = host.get_fact(UnitFileState, unit=unit)
    if (state == "masked") == masked:
        host.noop(f"{unit} is {'masked' if masked else 'not masked'}")
        return
    yield StringCommand("systemctl", "mask" if masked else "unmask", *(["--now"] if masked else []), QuoteString(unit))
