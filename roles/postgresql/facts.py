"""Facts about PostgreSQL that pyinfra lacks. Each runs as root and reads as the `postgres` OS
user (peer authentication over the local socket): no password is involved. A fact only reads."""

from __future__ import annotations

from pyinfra.api import FactBase, QuoteString, StringCommand


def psql(sql: str, database: str = "postgres") -> StringCommand:
    """`psql` as the postgres OS user, unaligned tuples only, failing quietly when the server is down."""
    return StringCommand(
        "runuser", "-u", "postgres", "--", "psql", "-XAtq", "-F", "'|'", "-d", QuoteString(database),
        "-c", QuoteString(sql), "2>/dev/null", "|| true",
    )


class PgNode(FactBase):
    """What one PostgreSQL cluster of the host actually is, read from the server and its control
    file, never from the inventory:

    .. code:: python

        {"installed": True, "data_dir_present": True, "running": True, "in_recovery": False,
         "system_identifier": "7301...", "timeline": 1, "cluster_state": "in production",
         "user_databases": ["epns_prod"], "receiver": {"status": "streaming", "sender_host": "10.0.1.10"}}

    ``in_recovery`` is None when the server is not running (then ``cluster_state`` from
    pg_controldata tells "shut down" from "shut down in recovery").
    """

    def command(self, version: str, cluster: str = "main") -> StringCommand:
        data_dir = f"/var/lib/postgresql/{version}/{cluster}"
        bindir = f"/usr/lib/postgresql/{version}/bin"
        port = f"$(pg_conftool -s {version} {cluster} show port 2>/dev/null || echo 5432)"
        return StringCommand(f"""
if [ ! -x {bindir}/pg_controldata ]; then echo installed=no; exit 0; fi
echo installed=yes
if [ -f {data_dir}/PG_VERSION ]; then echo data_dir_present=yes; else echo data_dir_present=no; exit 0; fi
LC_ALL=C {bindir}/pg_controldata -D {data_dir} 2>/dev/null | sed -n \\
  -e "s/^Database system identifier: *\\(.*\\)/system_identifier=\\1/p" \\
  -e "s/^Database cluster state: *\\(.*\\)/cluster_state=\\1/p" \\
  -e "s/^Latest checkpoint.s TimeLineID: *\\(.*\\)/timeline=\\1/p"
if pg_ctlcluster {version} {cluster} status >/dev/null 2>&1; then echo running=yes; else echo running=no; exit 0; fi
P="runuser -u postgres -- psql -XAtq -p {port} -d postgres"
echo in_recovery=$($P -c "SELECT pg_is_in_recovery()" 2>/dev/null)
echo user_databases=$($P -c "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database WHERE datname NOT IN ('postgres', 'template0', 'template1')" 2>/dev/null)
echo receiver=$($P -F '|' -c "SELECT status, sender_host FROM pg_stat_wal_receiver" 2>/dev/null)
""")

    def process(self, output: list[str]) -> dict:
        raw = dict(line.split("=", 1) for line in output if "=" in line)
        node: dict = {
            "installed": raw.get("installed") == "yes",
            "data_dir_present": raw.get("data_dir_present") == "yes",
            "running": raw.get("running") == "yes",
            "in_recovery": {"t": True, "f": False}.get(raw.get("in_recovery", "")),
            "system_identifier": raw.get("system_identifier") or None,
            "timeline": int(raw["timeline"]) if raw.get("timeline", "").isdigit() else None,
            "cluster_state": raw.get("cluster_state") or None,
            "user_databases": [d for d in raw.get("user_databases", "").split(",") if d],
            "receiver": None,
        }
        if raw.get("receiver"):
            status, _, sender = raw["receiver"].partition("|")
            node["receiver"] = {"status": status, "sender_host": sender}
        return node


class PgRoles(FactBase):
    """Roles of a running server with their flags and password verifier (SCRAM, never a
    password), or an empty dict when the server does not answer:

    .. code:: python

        {"replicator": {"login": True, "replication": True, "verifier": "SCRAM-SHA-256$4096:..."}}
    """

    default = dict

    def command(self) -> StringCommand:
        return psql("SELECT rolname, rolcanlogin, rolreplication, coalesce(rolpassword, '') FROM pg_authid")

    def process(self, output: list[str]) -> dict:
        roles = {}
        for line in output:
            name, login, replication, verifier = line.split("|", 3)
            roles[name] = {"login": login == "t", "replication": replication == "t", "verifier": verifier or None}
        return roles


class PgDatabases(FactBase):
    """Databases of a running server and their owners: ``{"epns_prod": "epns"}``."""

    default = dict

    def command(self) -> StringCommand:
        return psql("SELECT datname, pg_get_userbyid(datdba) FROM pg_database")

    def process(self, output: list[str]) -> dict:
        return dict(line.split("|", 1) for line in output if "|" in line)


class PgReplicationSlots(FactBase):
    """Physical replication slots: ``{"siaga_drc": {"active": True, "restart_lsn": "0/3000148"}}``."""

    default = dict

    def command(self) -> StringCommand:
        return psql("SELECT slot_name, active, coalesce(restart_lsn::text, '') FROM pg_replication_slots WHERE slot_type = 'physical'")

    def process(self, output: list[str]) -> dict:
        slots = {}
        for line in output:
            name, active, lsn = line.split("|", 2)
            slots[name] = {"active": active == "t", "restart_lsn": lsn or None}
        return slots


class PgSetting(FactBase):
    """The value a running server uses for one setting (``SHOW``), or None."""

    def command(self, setting: str) -> StringCommand:
        return psql(f"SHOW {setting}")

    def process(self, output: list[str]):
        return output[0] if output else None
