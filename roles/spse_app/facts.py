"""Facts the spse_app role needs and pyinfra lacks. A fact only reads."""

from __future__ import annotations

from pyinfra.api import FactBase


class ApacheEnabled(FactBase):
    """Enabled Apache modules, sites and confs (Debian layout), or None without Apache:

    .. code:: python

        {"mods": ["proxy", "ssl", ...], "sites": ["siaga-spse"], "confs": ["siaga-security", ...]}
    """

    def command(self) -> str:
        return ("[ -d /etc/apache2 ] || exit 0; "
                "for f in /etc/apache2/mods-enabled/*.load; do [ -e \"$f\" ] && echo \"mod $(basename \"$f\" .load)\"; done; "
                "for f in /etc/apache2/sites-enabled/*.conf; do [ -e \"$f\" ] && echo \"site $(basename \"$f\" .conf)\"; done; "
                "for f in /etc/apache2/conf-enabled/*.conf; do [ -e \"$f\" ] && echo \"conf $(basename \"$f\" .conf)\"; done; true")

    def process(self, output: list[str]):
        out: dict = {"mods": [], "sites": [], "confs": []}
        for line in output:
            kind, _, name = line.partition(" ")
            out[{"mod": "mods", "site": "sites", "conf": "confs"}[kind]].append(name)
        return out


class SchemaVersion(FactBase):
    """Highest applied migration of the application's schema (0 = none), or None when the
    database does not answer."""

    def command(self, database: str) -> str:
        psql = f"runuser -u postgres -- psql -XAtq -d {database} -c"
        return (
            f"t=$({psql} \"SELECT to_regclass('schema_migration') IS NOT NULL\" 2>/dev/null) || exit 0; "
            f"if [ \"$t\" = t ]; then {psql} \"SELECT coalesce(max(version), 0) FROM schema_migration\"; else echo 0; fi"
        )

    def process(self, output: list[str]):
        return int(output[0]) if output and output[0].strip().isdigit() else None
