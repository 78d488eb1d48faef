"""Operations the replication role needs and pyinfra lacks. Each reads facts, yields commands."""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import FileUploadCommand, QuoteString, StringCommand, operation

from roles.postgresql.facts import PgReplicationSlots
from roles.postgresql.operations import as_postgres_sql
from roles.upload_staging import staging_path


@operation()
def slot(slot_name: str):
    """
    A physical replication slot on the primary (kept WAL capped by max_slot_wal_keep_size).

    + slot_name: the slot, one per standby
    """
    if slot_name in host.get_fact(PgReplicationSlots):
        host.noop(f"slot {slot_name} exists")
        return
    yield as_postgres_sql(f"SELECT pg_create_physical_replication_slot('{slot_name}')")


@operation()
def standby_build(script: str, already_standby: bool, script_path: str = "/usr/local/sbin/siaga-standby-build"):
    """
    Make this host a hot standby with pg_basebackup, unless the facts show it already is one of
    this primary. The script checks both servers again at the moment of the copy and refuses to
    wipe a server that holds databases.

    + script: the build script (rendered for this host)
    + already_standby: what the preflight read (pg_is_in_recovery + same system identifier)
    + script_path: where the script is kept on the host
    """
    if already_standby:
        host.noop("already a standby of this primary")
        return
    yield FileUploadCommand(StringIO(script), script_path, remote_temp_filename=staging_path(script_path))
    yield StringCommand("chmod", "700", QuoteString(script_path))
    yield StringCommand(QuoteString(script_path))
