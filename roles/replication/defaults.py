"""Typed settings of the replication role (PostgreSQL streaming replication primary -> DRC)."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ReplicationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The site whose database is the primary; the other site's hosts follow it as hot standbys.
    # Follows `active_site` (one fact decides which site serves; runbooks change only that):
    # leave it unset. Set, it must agree with active_site (EM-2 step 3).
    source_site: Literal["primary", "drc"] | None = None
    # Role used only for replication connections (REPLICATION LOGIN, no database access).
    user: str = Field("replicator", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    # Each standby has its own physical slot `<slot_prefix><host>`: the primary keeps the WAL a
    # standby still needs (capped by postgresql.max_slot_wal_keep_size).
    slot_prefix: str = Field("siaga_", pattern=r"^[a-z_][a-z0-9_]{0,30}$")
    # Standby queries are not cancelled by vacuum on primary, at the cost of bloat there. Off:
    # the DRC serves no queries while it is standby.
    hot_standby_feedback: bool = False
    # How long the first copy (pg_basebackup) may take before the deploy gives up.
    basebackup_timeout_s: int = Field(3600, ge=60)
    # Where the replication password lives on the admin workstation (0600). Unset:
    # ~/.local/state/siaga/<site>/ (outside the repository).
    secrets_dir: str | None = None
