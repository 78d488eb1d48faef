"""Typed settings of the uploads_sync role (uploaded documents, one site -> the other)."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class UploadsSyncSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Off: lsyncd and the full re-sync are stopped and the sync key is accepted nowhere. The
    # runbook for a computer virus sets it (EM-3.7: STOP data replication to the DRC).
    enabled: bool = True
    # The site whose uploads are copied to the other one (EM-3: "make sure DRC data is up to
    # date"). Follows `active_site`: leave it unset. Set, it must agree with active_site.
    source_site: Literal["primary", "drc"] | None = None
    # The account that receives the copy on the target. Unset: the application's account
    # (spse_app.user), so the copied files have the owner the DRC's application needs when it
    # takes over. It gets no shell: its only key is forced to rrsync, write-only, in the uploads.
    account: str | None = Field(None, pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    # Group of the receiving account that sshd lets in (AllowGroups) besides the admins.
    group: str = Field("siaga-sync", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    # Seconds lsyncd gathers file events before one rsync run: small, uploads lag stays low.
    delay_s: int = Field(1, ge=0, le=300)
    # Files removed on the source are removed on the target: the DRC holds what primary holds.
    # History is the backups' job (SOP BK-1, BK-9), not the mirror's.
    delete: bool = True
    # A full rsync also runs on this systemd calendar, catching anything lsyncd missed
    # (events lost while the WAN was cut or lsyncd restarted).
    full_resync_on_calendar: str = Field("hourly", pattern=r"^[A-Za-z0-9*:/.,~ -]+$")
    # Files not copied (the stand-in writes `.tmp-*` then renames).
    exclude: list[str] = Field(default_factory=lambda: [".tmp-*"])
    # Upper bound for one rsync transfer, KiB/s (0: no limit), so a backlog after a long WAN
    # cut does not starve the database replication on a thin link.
    bandwidth_limit_kbps: int = Field(0, ge=0)
    # Debian's rsync package ships the restricted-rsync helper here (rsync >= 3.2.4).
    rrsync_path: str = Field("/usr/bin/rrsync", pattern=r"^/[A-Za-z0-9/._-]+$")
    # Where the sync SSH key lives on the admin workstation. Unset: the replication secrets dir.
    secrets_dir: str | None = None
