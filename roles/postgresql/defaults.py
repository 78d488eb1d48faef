"""Typed settings of the postgresql role (Debian's PostgreSQL of the site's platform, in Debian's layout)."""

from pydantic import BaseModel, ConfigDict, Field

PG_NAME = r"^[a-z_][a-z0-9_]{0,62}$"


class PostgresqlSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The major of the site's platform (Debian's own PostgreSQL: security updates come with the
    # OS, no third-party repository): Debian 13 17, Debian 12 15. Unset: the platform's; set, it
    # must be the platform's (drc/site/platform.py).
    version: str | None = Field(None, pattern=r"^\d+$")
    # Debian's cluster name: config in /etc/postgresql/<version>/<cluster>, outside the data
    # directory, so pg_rewind (fail-back) never overwrites it (LAB.md).
    cluster: str = Field("main", pattern=PG_NAME)
    # SPSE's production database and its owner role, as SPSE installs name them.
    database: str = Field("epns_prod", pattern=PG_NAME)
    owner: str = Field("epns", pattern=PG_NAME)
    # Other databases of the same owner, e.g. SPSE's training copy `epns_lat`.
    extra_databases: list[str] = Field(default_factory=list)
    # SPSE's connection pool plus admin and replication sessions.
    max_connections: int = Field(100, ge=10, le=5000)
    # WAL kept for a standby that briefly lost its slot or is rebuilt from a base backup.
    wal_keep_size: str = "1GB"
    # A DRC that stays away keeps WAL on primary through its slot; this cap stops it filling the
    # primary's disk (SOP IN-3). Past it the DRC must be rebuilt: `siaga status` shows it.
    max_slot_wal_keep_size: str = "20GB"
    # Walsenders for the DRC, pg_basebackup and a spare (a rebuild while the old one still runs).
    max_wal_senders: int = Field(10, ge=2)
    # Statements slower than this are logged: hanging transactions and growth are watched (SOP IN-4).
    log_min_duration_statement: str = "2s"
    # Site tuning (shared_buffers, work_mem, ...) without a code change; written last.
    extra_parameters: dict[str, str] = Field(default_factory=dict)
