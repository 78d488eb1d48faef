"""nftables facts (pyinfra ships iptables facts only)."""

from __future__ import annotations

from pyinfra.api import FactBase, QuoteString, StringCommand

from .ruleset import table_comment


class NftablesTable(FactBase):
    """A loaded nftables table, or None if it is not loaded.

    .. code:: python

        {"comment": "siaga-firewall sha1=...", "lines": ["table inet siaga {", ...]}
    """

    def requires_command(self, family: str, table: str) -> str:
        return "nft"

    def command(self, family: str, table: str) -> StringCommand:
        return StringCommand("nft", "list", "table", family, QuoteString(table), "2>/dev/null", "|| true")

    def process(self, output: list[str]):
        if not output:
            return None
        return {"comment": table_comment(output), "lines": output}
