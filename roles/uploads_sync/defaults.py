"""Typed settings of the uploads_sync role (uploaded documents, one site -> the other)."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class UploadsSyncSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The site whose uploads are copied to the other one. Runbooks reverse it after a
    # switch-over (EM-3: "make sure DRC data is up to date") and stop it for a virus (EM-3.7).
    source_site: Literal["primary", "drc"] = "primary"
    # Seconds lsyncd gathers file events before one rsync run: small, uploads lag stays low.
    delay_s: int = Field(1, ge=0, le=300)
    # Files removed on the source are removed on the target: the DRC holds what primary holds.
    # History is the backups' job (SOP BK-1, BK-9), not the mirror's.
    delete: bool = True
    # A full rsync also runs on this systemd calendar, catching anything lsyncd missed
    # (events lost while the WAN was cut or lsyncd restarted).
    full_resync_on_calendar: str = "hourly"
    # Files not copied (the stand-in writes `.tmp-*` then renames).
    exclude: list[str] = Field(default_factory=lambda: [".tmp-*"])
    # Where the sync SSH key lives on the admin workstation. Unset: the replication secrets dir.
    secrets_dir: str | None = None
