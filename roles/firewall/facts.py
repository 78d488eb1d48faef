"""nftables facts (pyinfra ships iptables facts only)."""

from __future__ import annotations

import re

from pyinfra.api import FactBase, QuoteString, StringCommand

COMMENT_RE = re.compile(r'^\s*comment "(.*)"\s*$')


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
        # The table's own comment, if any, is the line right after `table <family> <name> {`.
        match = COMMENT_RE.match(output[1]) if len(output) > 1 else None
        return {"comment": match.group(1) if match else None, "lines": output}
