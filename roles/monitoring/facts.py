"""Facts the monitoring role reads (PostgreSQL as the postgres OS user; read-only)."""

from __future__ import annotations

from pyinfra.api import FactBase, StringCommand

from roles.postgresql.facts import psql


class PgRoleMember(FactBase):
    """Whether database role `role` is a member of `group` (False also when it does not exist yet
    or the server is down)."""

    def command(self, role: str, group: str) -> StringCommand:
        return psql(f"SELECT pg_has_role('{role}', '{group}', 'MEMBER')")

    def process(self, output: list[str]) -> bool:
        return bool(output) and output[0].strip() == "t"
