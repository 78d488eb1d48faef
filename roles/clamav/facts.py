"""Facts the clamav role needs and pyinfra lacks. A fact only reads."""

from __future__ import annotations

from pyinfra.api import FactBase, QuoteString, StringCommand


class UnitFileState(FactBase[str]):
    """`systemctl is-enabled UNIT`: enabled, disabled, static, masked, ... or "" when unknown."""

    def command(self, unit: str) -> StringCommand:
        return StringCommand("systemctl", "is-enabled", QuoteString(unit), "2>/dev/null; true")

    def process(self, output: list[str]) -> str:
        return output[0].strip() if output else ""
